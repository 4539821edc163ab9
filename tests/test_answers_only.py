"""train.py --loss_on answers: in question-and-answer text, no prediction inside a question is trained."""

import pytest
import torch
import torch.nn.functional as F

import bpe
import train
from conftest import assert_clean_error, run
from model import GPTModel
from qa_format import QUESTION_PATTERN, example, question_mask
from checkpoint import load_model
from start import Corpus, answers_only, question_targets
from utils import CharTokenizer, estimate_loss, full_split_scores, get_batch, train_val_split

TEXT = "".join(example(f"{a}+{b}等于多少？", a + b) + "床前明月光，疑是地上霜。\n\n" for a in range(10, 40)
               for b in range(10, 13))
TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "1", "--block_size", "64", "--batch_size", "8",
       "--eval_iters", "2", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]


def corpus_of(text, tokenizer):
    train_text, val_text = train_val_split(text)
    return Corpus(tokenizer, torch.tensor(tokenizer.encode(train_text)), torch.tensor(tokenizer.encode(val_text)),
                  len(text), len(val_text))


def test_question_tokens_get_no_loss_and_every_other_token_the_usual_one(tmp_path):
    data = tmp_path / "qa.txt"
    data.write_text(TEXT, encoding="utf-8")
    tokenizer = CharTokenizer(TEXT)
    corpus = corpus_of(TEXT, tokenizer)
    targets = answers_only(corpus, data)["train"]
    in_question = torch.from_numpy(question_mask(TEXT[: len(corpus.train)]))
    assert torch.equal(targets == -1, in_question)  # a character tokenizer: the mask, character for character
    assert torch.equal(targets[~in_question], corpus.train[~in_question])
    assert "".join(tokenizer.decode(corpus.train[in_question])).startswith("问：10+10等于多少？\n答：问：10+11")

    torch.manual_seed(0)
    model = GPTModel(tokenizer.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=32)
    x, y_all = get_batch(corpus.train, 8, 32, "cpu", torch.Generator().manual_seed(1))
    _, y = get_batch(corpus.train, 8, 32, "cpu", torch.Generator().manual_seed(1), targets)
    logits, loss = model(x, y)
    each = F.cross_entropy(logits.flatten(0, 1), y_all.flatten(), reduction="none")
    trained = y.flatten() != -1
    assert 0 < trained.sum() < trained.numel()  # this batch has both
    assert torch.equal(y.flatten()[trained], y_all.flatten()[trained])
    assert torch.allclose(loss, each[trained].mean())  # the usual loss on answers and plain text, none on questions
    # and an evaluation scores the same predictions
    evaluated = estimate_loss(model, {"train": corpus.train}, 1, 8, 32, "cpu", seed=1, targets={"train": targets})
    assert evaluated["train"] == pytest.approx(model(x, y)[1].item(), rel=1e-5)


def test_with_bpe_the_tokens_without_loss_are_exactly_the_questions(tmp_path):
    data = tmp_path / "qa.txt"
    data.write_text(TEXT, encoding="utf-8")
    tokenizer = bpe.BPETokenizer(bpe.train(TEXT, 300))
    corpus = corpus_of(TEXT, tokenizer)
    targets = answers_only(corpus, data)["train"]
    train_text = train_val_split(TEXT)[0]
    questions = "".join(m.group() for m in QUESTION_PATTERN.finditer(train_text))
    assert tokenizer.decode(corpus.train[targets == -1]) == questions
    assert len(corpus.train[targets == -1]) < len(questions)  # merged tokens, not characters


def test_train_loss_on_answers_end_to_end_and_its_bad_input(tmp_path, capsys):
    data = tmp_path / "qa.txt"
    data.write_text(TEXT * 3, encoding="utf-8")
    assert run(train, "--data", data, "--out_dir", tmp_path / "out", "--loss_on", "answers", "--max_iters", "40",
               "--eval_interval", "20", *TOY) == 0
    out = capsys.readouterr().out
    assert "loss on answers only:" in out and "are in questions, neither trained nor scored" in out
    saved = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert saved["config"]["loss_on"] == "answers"
    losses = [row[3] for row in saved["history"]]  # train loss
    assert losses[-1] < losses[0]
    # Evaluations score what is trained (a run once kept the checkpoint whose questions scored best, half-way):
    # the whole-split number in ckpt.pt is the answers' and plain text's loss, below the loss over every token.
    model, tokenizer = load_model(tmp_path / "out" / "ckpt.pt", "cpu")
    val = torch.tensor(tokenizer.encode(train_val_split(TEXT * 3)[1]))
    every_token = full_split_scores(model, val, 64, 8, "cpu", tokenizer.chars_per_token)[0]
    answers = full_split_scores(model, val, 64, 8, "cpu", tokenizer.chars_per_token,
                                question_targets(val, train_val_split(TEXT * 3)[1], tokenizer))[0]
    assert saved["full_val_loss"] == pytest.approx(answers, rel=1e-4) and answers < every_token

    plain = tmp_path / "plain.txt"
    plain.write_text("床前明月光，疑是地上霜。\n" * 200, encoding="utf-8")
    assert_clean_error(run(train, "--data", plain, "--out_dir", tmp_path / "o2", "--loss_on", "answers", *TOY),
                       capsys.readouterr().err, "has no questions", "prepare_qa_data.py")
    assert_clean_error(run(train, "--data", data, "--out_dir", tmp_path / "o3", "--loss_on", "questions", *TOY),
                       capsys.readouterr().err, "loss_on must be all or answers")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
