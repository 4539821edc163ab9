"""Fine-tuning: train.py --init_from starts a new run from a trained model, on a text with new characters."""

import math

import pytest
import torch

import chat
import checkpoint
import eval_qa
import generate
import prepare_qa_data
import train
from conftest import REPO, assert_clean_error, run
from serving import load as playground_load
from utils import CharTokenizer

TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "32", "--batch_size", "16",
       "--eval_iters", "4", "--learning_rate", "1e-2", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]
POEMS = (REPO / "data" / "chinese.txt").read_text(encoding="utf-8")


def ckpt_of(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Poems → a toy model; Q&A about those poems (digits, +, - and ？ are new characters); the model fine-tuned
    on it, and one trained on it from scratch for as many steps."""
    folder = tmp_path_factory.mktemp("finetune")
    poems = folder / "poems.txt"
    poems.write_text("\n\n".join(POEMS.split("\n\n")[:60]) + "\n", encoding="utf-8")
    assert run(prepare_qa_data, "--poems", poems, "--num_poems", "60", "--three_digit", "100", "--out",
               folder / "qa.txt", "--heldout", folder / "heldout.tsv") == 0
    assert run(train, "--data", poems, "--out_dir", folder / "poems", "--max_iters", "150", "--eval_interval",
               "150", *TOY) == 0
    for name, extra in (("tuned", ["--init_from", folder / "poems" / "ckpt.pt"]), ("scratch", [])):
        assert run(train, "--data", folder / "qa.txt", "--out_dir", folder / name, "--max_iters", "40",
                   "--eval_interval", "20", *extra, *TOY) == 0
    return folder


def test_a_grown_vocabulary_keeps_every_old_id():
    old = CharTokenizer("床前明月光")
    grown, added = old.extended("床前明月光，37+58？")
    assert added == sorted("，37+58？") and len(added) == 7 and grown.vocab_size == old.vocab_size + 7
    ids = old.encode("明月光床前")
    assert grown.encode("明月光床前") == ids and grown.decode(ids) == old.decode(ids)
    assert [grown.stoi[ch] for ch in added] == list(range(old.vocab_size, old.vocab_size + 7))
    assert old.extended("月光")[1] == []


def test_the_fine_tuned_model_starts_from_the_trained_rows_and_the_mean_for_new_ones(tmp_path, monkeypatch, capsys,
                                                                                     runs):
    monkeypatch.chdir(tmp_path)
    source = ckpt_of(runs / "poems" / "ckpt.pt")
    assert run(train, "--init_from", source_path := runs / "poems" / "ckpt.pt", "--data", runs / "qa.txt",
               "--max_iters", "0", *TOY) == 0
    out = capsys.readouterr().out
    started = ckpt_of(tmp_path / "out" / "last.pt")  # step 0: the weights as loaded
    old_vocab, new_vocab = source["vocab_size"], started["vocab_size"]
    added = [ch for ch, i in started["tokenizer_stoi"].items() if i >= old_vocab]
    assert new_vocab > old_vocab and set("0123456789+-") <= set(added)
    assert f"{len(added)} new ones from" in out and f"its {old_vocab} characters keep their ids" in out
    assert f"weights from {source_path}" in out
    assert {ch: i for ch, i in started["tokenizer_stoi"].items() if i < old_vocab} == source["tokenizer_stoi"]
    for name, tensor in source["model_state_dict"].items():
        loaded = started["model_state_dict"][name]
        if name in checkpoint.VOCAB_ROWS:
            assert torch.equal(loaded[:old_vocab], tensor)
            assert torch.allclose(loaded[old_vocab:], tensor.mean(0).expand(new_vocab - old_vocab, -1))
        else:
            assert torch.equal(loaded, tensor), name
    assert started["init_from"] == str(source_path) and started["step"] == 0


def test_fine_tuning_learns_the_new_format_faster_than_training_from_scratch(runs):
    tuned, scratch = ckpt_of(runs / "tuned" / "ckpt.pt"), ckpt_of(runs / "scratch" / "ckpt.pt")
    assert tuned["step"] == scratch["step"] == 40
    # The same validation text, scored on every character: the model that read the poems first is far ahead.
    assert tuned["full_val_loss"] < scratch["full_val_loss"] - 0.3, (tuned["full_val_loss"], scratch["full_val_loss"])
    # A fresh run: its own step count, schedule and history. At step 0 the poem model is worse than a random one
    # (it has never seen a digit, and is sure of what it knows); 20 steps later it is already far ahead.
    assert [row[0] for row in tuned["history"]] == [0, 20, 40]
    assert tuned["history"][1][4] < scratch["history"][1][4] - 0.3


def test_a_fine_tuned_checkpoint_works_in_every_consumer(runs, capsys):
    ckpt = runs / "tuned" / "ckpt.pt"
    assert run(generate, "--checkpoint", ckpt, "--prompt", "37+58", "--max_new_tokens", "20", "--device", "cpu") == 0
    assert capsys.readouterr().out.startswith("37+58")
    assert run(chat, "37+58等于多少？", "--checkpoint", ckpt, "--device", "cpu") == 0
    assert capsys.readouterr().out.startswith("答：")
    table = runs / "qa.md"
    assert run(eval_qa, "--checkpoint", ckpt, "--heldout", runs / "heldout.tsv", "--train_text", runs / "qa.txt",
               "--out", table, "--device", "cpu") == 0
    assert "| 2-digit addition" in table.read_text(encoding="utf-8")
    loaded = playground_load(ckpt, "cpu")
    assert loaded.is_qa and loaded.card["init_from"] == str(runs / "poems" / "ckpt.pt")
    # And the run resumes like any other.
    assert run(train, "--resume", "--out_dir", runs / "tuned", "--max_iters", "50", "--device", "cpu") == 0
    assert ckpt_of(runs / "tuned" / "last.pt")["step"] == 50


def test_fine_tuning_refuses_what_it_cannot_honour(tmp_path, monkeypatch, capsys, runs):
    monkeypatch.chdir(tmp_path)
    source = runs / "poems" / "ckpt.pt"
    flags = ["--init_from", source, "--data", runs / "qa.txt", "--max_iters", "5", *TOY]
    for extra, phrases in (
        (["--n_layer", "3"], ["fine-tunes the model as it was trained", "--n_layer 3 (it has 2)", "Drop"]),
        (["--preset", "tiny"], ["can't take --preset tiny"]),
        (["--resume"], ["give one of them"]),
        (["--out_dir", runs / "poems"], ["would overwrite the model it starts from", "another --out_dir"]),
    ):
        assert_clean_error(run(train, *flags, *extra), capsys.readouterr().err, *phrases)
    status = run(train, "--init_from", tmp_path / "missing.pt", "--data", runs / "qa.txt", *TOY)
    assert_clean_error(status, capsys.readouterr().err, "no checkpoint at")
    assert not (tmp_path / "out").exists()
    assert math.isfinite(ckpt_of(source)["full_val_loss"])  # the source is untouched
