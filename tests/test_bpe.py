"""BPE: the readable trainer against Hugging Face's tokenizers, and a BPE model through every script."""

import csv
import math

import pytest
import torch

import bpe
import chat
import eval_qa
import generate
import prepare_qa_data
import start
import train
import visualize_attention
from checkpoint import load_model
from conftest import REPO, TINY_TEXT, assert_clean_error, run
from model import GPTModel
from utils import CharTokenizer, full_split_loss, full_split_scores, tokenizer_from_checkpoint

tokenizers = pytest.importorskip("tokenizers", reason="the fast path: pip install -r requirements-hf.txt")

POEMS = (REPO / "data" / "chinese.txt").read_text(encoding="utf-8")
ENGLISH, CHINESE = TINY_TEXT[:12000], POEMS[:6000]
SAMPLE = TINY_TEXT[15000:16500] + POEMS[20000:20500] + " naïve café, 😀 \t tabs\n\n  and  spaces "
TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "32", "--batch_size", "16",
       "--eval_iters", "4", "--learning_rate", "1e-2", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]


@pytest.mark.parametrize("text, vocab_size", [(ENGLISH, 330), (CHINESE, 330), (ENGLISH[:4000] + CHINESE[:3000], 400)])
def test_the_readable_bpe_learns_the_librarys_merges_and_encodes_to_its_ids(text, vocab_size):
    readable, fast = bpe.train(text, vocab_size), bpe.train_fast(text, vocab_size)
    assert len(readable) == vocab_size - 256 and readable == fast
    tokenizer, library = bpe.BPETokenizer(readable), bpe.library_tokenizer(fast)
    ids = tokenizer.encode(SAMPLE)
    assert ids == library.encode(SAMPLE).ids == tokenizer.encode_array(SAMPLE).tolist()
    assert tokenizer.decode(ids) == library.decode(ids) == SAMPLE  # bytes: nothing is unknown, nothing lost
    assert len(ids) < len(SAMPLE.encode("utf-8"))  # the merges do shorten it


def test_equally_frequent_pairs_go_to_the_smaller_ids_in_both():
    # "ab", " cd", " ab", " cd": (a, b), (Ġ, c) and (c, d) are each seen twice; a, b = ids 64, 65 come first.
    text = "ab cd ab cd"
    a, b, c, d, space = (bpe.ID_OF_BYTE[ord(ch)] for ch in "abcd ")
    merges = bpe.train(text, 259)
    assert merges == bpe.train_fast(text, 259) == [(a, b), (c, d), (space, 257)]  # then " cd", seen twice


def test_bytes_are_numbered_as_gpt2_numbers_them():
    assert bpe.ID_OF_BYTE[ord("!")] == 0 and bpe.ID_OF_BYTE[ord("a")] == 64 and bpe.ID_OF_BYTE[ord(" ")] == 220
    assert bpe.BYTE_CHARS[ord(" ")] == "Ġ" and bpe.BYTE_CHARS[ord("\n")] == "Ċ"
    assert sorted(bpe.ID_OF_BYTE.values()) == list(range(256))
    assert bpe.words("to be, or\n\nnot") == ["to", " be", ",", " or", "\n", "\n", "not"]


def test_a_stream_never_shows_half_a_character():
    tokenizer = bpe.BPETokenizer(bpe.train(CHINESE, 300))  # few merges: most characters span several tokens
    text = POEMS[30000:30300]
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.token_text(i) for i in ids)  # some tokens hold part of a character
    decoder = tokenizer.decoder()
    pieces = [decoder.decode([i]) for i in ids]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_characters_per_token_count_each_character_once():
    tokenizer = bpe.BPETokenizer(bpe.train(ENGLISH[:3000] + CHINESE[:2000], 320))
    ids = tokenizer.encode(SAMPLE)
    assert int(tokenizer.chars_per_token[ids].sum()) == len(SAMPLE)
    assert tokenizer_from_checkpoint({"tokenizer": tokenizer.to_checkpoint()}).encode(SAMPLE) == ids
    assert CharTokenizer(SAMPLE).chars_per_token.tolist() == [1] * CharTokenizer(SAMPLE).vocab_size


def test_bits_per_character_is_the_loss_in_bits_over_the_characters():
    torch.manual_seed(0)
    chars = CharTokenizer(ENGLISH)
    model = GPTModel(chars.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=8)
    data = torch.tensor(chars.encode(ENGLISH[:500]))
    loss, bpc = full_split_scores(model, data, 8, 4, "cpu", chars.chars_per_token)
    assert loss == pytest.approx(full_split_loss(model, data, 8, 4, "cpu")) and bpc == pytest.approx(loss / math.log(2))
    tokenizer = bpe.BPETokenizer(bpe.train(ENGLISH, 300))
    model = GPTModel(tokenizer.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=8)
    text = ENGLISH[:500]
    data = torch.tensor(tokenizer.encode(text))
    loss, bpc = full_split_scores(model, data, 8, 4, "cpu", tokenizer.chars_per_token)
    predicted = len(text) - len(tokenizer.token_text(int(data[0])))  # every character after the first token's
    assert bpc == pytest.approx(loss * (len(data) - 1) / math.log(2) / predicted)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy BPE model on Q&A about a few poems, and its held-out questions."""
    folder = tmp_path_factory.mktemp("bpe")
    poems = folder / "poems.txt"
    poems.write_text("\n\n".join(POEMS.split("\n\n")[:30]) + "\n", encoding="utf-8")
    assert run(prepare_qa_data, "--poems", poems, "--num_poems", "30", "--three_digit", "100", "--out",
               folder / "qa.txt", "--heldout", folder / "heldout.tsv") == 0
    assert run(train, "--data", folder / "qa.txt", "--out_dir", folder / "out", "--tokenizer", "bpe", "--vocab_size",
               "320", "--max_iters", "60", "--eval_interval", "30", *TOY) == 0
    return folder


def test_a_bpe_run_saves_its_merges_and_bits_per_character(runs):
    ckpt = torch.load(runs / "out" / "ckpt.pt", weights_only=True)
    assert ckpt["tokenizer"]["kind"] == "bpe" and len(ckpt["tokenizer"]["merges"]) == 64 and ckpt["vocab_size"] == 320
    assert "tokenizer_stoi" not in ckpt and ckpt["config"]["tokenizer"] == "bpe"
    model, tokenizer = load_model(runs / "out" / "ckpt.pt")
    text = (runs / "qa.txt").read_text(encoding="utf-8")
    val = text[int(0.9 * len(text)):]  # the merges were learned from the other 90%, the split scored here
    ids = torch.tensor(tokenizer.encode(val))
    loss, bpc = full_split_scores(model, ids, model.block_size, 64, "cpu", tokenizer.chars_per_token)
    assert ckpt["full_val_loss"] == pytest.approx(loss, rel=1e-4) and ckpt["full_val_bpc"] == pytest.approx(bpc, rel=1e-4)
    assert bpc < loss / math.log(2)  # a token is more than one character on average here
    with open(runs / "out" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "30", "60"] and all(r["val_bpc"] for r in rows)
    assert float(rows[-1]["full_val_bpc"]) == pytest.approx(bpc, abs=1e-4)


def test_a_bpe_model_works_in_every_consumer(runs, capsys, tmp_path):
    ckpt = runs / "out" / "ckpt.pt"
    outputs = []
    for stream in ([], ["--stream"]):  # streamed token by token, a character split across tokens waits for its end
        assert run(generate, "--checkpoint", ckpt, "--prompt", "问：床前明月光", "--max_new_tokens", "40", "--stop",
                   "\\n\\n", "--device", "cpu", *stream) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith("问：床前明月光")
    assert run(chat, "37+58等于多少？", "--checkpoint", ckpt, "--device", "cpu") == 0
    assert capsys.readouterr().out.startswith("答：")
    table = tmp_path / "qa.md"
    assert run(eval_qa, "--checkpoint", ckpt, "--heldout", runs / "heldout.tsv", "--train_text", runs / "qa.txt",
               "--out", table, "--device", "cpu") == 0
    assert "| 2-digit addition" in table.read_text(encoding="utf-8")
    drawn = {}
    original = visualize_attention.draw
    visualize_attention.draw = lambda maps, labels, panels, path: drawn.update(labels=labels)
    try:
        assert run(visualize_attention, "--checkpoint", ckpt, "--prompt", "37+58等于多少？", "--device", "cpu") == 0
    finally:
        visualize_attention.draw = original
    _, tokenizer = load_model(ckpt)
    assert drawn["labels"] == [tokenizer.token_text(i) for i in tokenizer.encode("37+58等于多少？")]
    assert len(drawn["labels"]) < len("37+58等于多少？".encode("utf-8"))
    # And it resumes with its own merges.
    assert run(train, "--resume", "--out_dir", runs / "out", "--max_iters", "70", "--device", "cpu") == 0
    assert torch.load(runs / "out" / "last.pt", weights_only=True)["step"] == 70


def test_bpe_flags_that_cannot_work_are_one_clear_line(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for flags, phrases in (
        (["--vocab_size", "512"], ["--vocab_size", "--tokenizer bpe"]),
        (["--tokenizer", "bpe", "--vocab_size", "100"], ["vocab_size must be from 256"]),
        (["--tokenizer", "words"], ["tokenizer must be char or bpe"]),
        (["--init_from", runs / "out" / "ckpt.pt", "--tokenizer", "char"], ["--tokenizer char (it has bpe)"]),
        (["--init_from", runs / "out" / "ckpt.pt", "--vocab_size", "512"], ["--vocab_size 512 (it has 320)"]),
    ):
        status = run(train, "--data", runs / "qa.txt", "--max_iters", "1", *flags, *TOY)
        assert_clean_error(status, capsys.readouterr().err, *phrases)
        assert not (tmp_path / "out").exists()


def test_without_the_library_the_readable_bpe_learns_the_same_merges_or_says_what_to_install(
        tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)

    def missing(*args):
        raise ImportError("no tokenizers")

    monkeypatch.setattr(start, "train_fast", missing)
    assert run(train, "--data", tiny_text_file, "--tokenizer", "bpe", "--vocab_size", "300", "--max_iters", "1",
               *TOY) == 0
    captured = capsys.readouterr()
    assert "tokenizers is not installed" in captured.out and "BPE merges" in captured.err  # a note and a bar
    text = tiny_text_file.read_text(encoding="utf-8")
    saved = torch.load(tmp_path / "out" / "last.pt", weights_only=True)["tokenizer"]["merges"]
    assert [tuple(m) for m in saved] == bpe.train_fast(text[: int(0.9 * len(text))], 300)
    monkeypatch.setattr(start, "READABLE_BPE_LIMIT", 1000)  # too long for the readable trainer
    status = run(train, "--data", tiny_text_file, "--tokenizer", "bpe", "--vocab_size", "300", "--out_dir",
                 tmp_path / "big", *TOY)
    assert_clean_error(status, capsys.readouterr().err, "needs Hugging Face's tokenizers",
                       "pip install -r requirements-hf.txt")
    assert not (tmp_path / "big").exists()
