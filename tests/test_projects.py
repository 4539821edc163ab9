"""Day 5 and advanced projects 2 (Q&A) and 3 (code): every script end to end, at toy sizes."""

import ast
import builtins

import pytest
import torch

import chat
import config
import day5_experiments
import eval_code
import eval_qa
import prepare_code_data
import prepare_qa_data
import train
from conftest import REPO, TINY_TEXT, assert_clean_error, run

TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "1", "--block_size", "32", "--batch_size", "16",
       "--eval_iters", "2", "--learning_rate", "3e-3", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]
POEMS = (REPO / "data" / "chinese.txt").read_text(encoding="utf-8")


@pytest.fixture
def poems_file(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text("\n\n".join(POEMS.split("\n\n")[:40]) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- day 5


def test_day5_quick_writes_a_table_per_experiment_and_the_pictures(tmp_path, monkeypatch, capsys, poems_file):
    monkeypatch.chdir(tmp_path)
    shakespeare = tmp_path / "input.txt"
    shakespeare.write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.setattr(day5_experiments, "SHAKESPEARE", shakespeare)
    monkeypatch.setattr(day5_experiments, "POEMS", poems_file)
    toy = dict(n_embd=16, num_heads=2, n_layer=1)
    for name in ("tiny", "small", "medium", "default"):  # the real sizes take minutes; the script's logic doesn't change
        monkeypatch.setitem(config.PRESETS, name, {**config.PRESETS[name], **toy})
    status = run(day5_experiments, "--quick", "--scale", "0.02", "--out", "report", "--device", "cpu")
    assert status == 0
    out = capsys.readouterr().out
    assert "快速模式" in out and "【实验1】" in out and "【实验4】" in out and "有 GPU 的话" in out
    assert "tiny / small / medium" in out
    assert day5_experiments.parse_args([]).out == "out-day5"  # a learner's run leaves docs/day5 as it is
    report = (tmp_path / "report" / "README.md").read_text(encoding="utf-8")
    for heading in ("Experiment 1: model size", "Experiment 2: learning rate", "Experiment 3: sampling",
                    "Experiment 4: your own data"):
        assert heading in report
    assert "Equal wall-clock time" in report and "Equal steps" in report
    assert report.count("| tiny |") == 2 and "(tuned)" in report and "| top_p 0.9 |" in report
    assert "converged fastest" in report and "床前明月光" in report
    for picture in ("exp1_model_size.png", "exp2_learning_rate.png"):
        assert (tmp_path / "report" / picture).stat().st_size > 10_000


def test_day5_sampling_measures():
    assert day5_experiments.words("Hark, thou art  o'er-come! 3rd") == ["Hark", "thou", "art", "o'er", "come", "rd"]
    assert day5_experiments.distinct_ngrams("abcabc", 3) == 3  # abc, bca, cab
    from model import GPTModel

    model = GPTModel(5, n_embd=8, num_heads=2, n_layer=1, block_size=4)
    ids = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    # The sample's NLL is the whole-split evaluation's scoring (utils.token_losses): windows of block_size one after
    # the other, each token predicted from the tokens before it in its window, counted from the sample's start.
    expected = {}
    with torch.no_grad():
        for t in range(1, len(ids)):
            context = torch.tensor([ids[4 * ((t - 1) // 4) : t]])
            expected[t] = -torch.log_softmax(model(context)[0][0, -1], -1)[ids[t]].item()
    for start in (1, 5):
        by_hand = [expected[t] for t in range(start, len(ids))]
        assert day5_experiments.sample_nll(model, ids, start) == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_day5_needs_experiment_2_before_3(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run(day5_experiments, "--only", "3", "--quick", "--out", "r"), capsys.readouterr().err,
                       "run experiment 2 first")


# ---------------------------------------------------------------- project 2: Q&A


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    """Q&A data from 40 poems and a few 3-digit sums, and a toy model trained on it briefly."""
    folder = tmp_path_factory.mktemp("qa")
    poems = folder / "poems.txt"
    poems.write_text("\n\n".join(POEMS.split("\n\n")[:40]) + "\n", encoding="utf-8")
    flags = ["--poems", poems, "--num_poems", "40", "--three_digit", "200", "--rewrites", "2", "--out", folder / "qa.txt",
             "--heldout", folder / "heldout.tsv"]
    assert run(prepare_qa_data, *flags) == 0
    assert run(train, "--data", folder / "qa.txt", "--out_dir", folder / "out", "--max_iters", "60",
               "--eval_interval", "60", *TOY) == 0
    return folder


def test_qa_data_is_deterministic_well_formed_and_holds_questions_out(qa, tmp_path):
    text = (qa / "qa.txt").read_text(encoding="utf-8")
    assert "问：37+58等于多少？\n答：95\n\n" in text or "37+58" in (qa / "heldout.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in (qa / "heldout.tsv").read_text(encoding="utf-8").splitlines()]
    kinds = {kind for kind, _, _ in rows}
    assert kinds == {"add2", "add3", "sub2", "sub3", "poem_next", "poem_author", "poem_line_author"}
    for kind, question, answer in rows:
        assert f"问：{question}\n" not in text  # never asked in training
        if kind.startswith(("add", "sub")):
            a, op, b = question.replace("等于多少？", "").partition("+" if "+" in question else "-")
            assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert len([r for r in rows if r[0] == "add2"]) == 810  # a tenth of the 8,100 two-digit sums
    assert "床前明月光，疑是地上霜" in text or "静夜思" not in POEMS[:2000]  # the poems' own text is in the mix

    again = tmp_path / "again.txt"
    flags = ["--poems", qa / "poems.txt", "--num_poems", "40", "--three_digit", "200", "--rewrites", "2", "--out", again,
             "--heldout", tmp_path / "again.tsv"]
    assert run(prepare_qa_data, *flags) == 0
    assert again.read_bytes() == (qa / "qa.txt").read_bytes()  # the same seed, the same file


def held_out_rows(path):
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_every_held_out_fact_is_in_the_text_but_no_held_out_question(text, rows, poems):
    """The held-out rule of prepare_qa_data.py, rewrites included."""
    for kind, question, answer in rows:
        assert question not in text  # not as a question, nor any sentence that holds its words whole
    sentences = text.split("\n")
    for kind, question, answer in rows:
        if kind == "poem_next":  # the line pair is stated in a plain sentence
            line = question[1 : question.index("」")]
            assert any(f"「{line}」" in s and f"「{answer}」" in s and "问：" not in s for s in sentences)
        elif kind == "poem_line_author":  # ... and so is who wrote the line
            line = question[1 : question.index("」")]
            assert any(f"「{line}」" in s and answer in s and "问：" not in s for s in sentences)
        elif kind == "poem_author":
            title = question[1 : question.index("》")]
            assert any(f"《{title}》" in s and answer in s and "问：" not in s for s in sentences)
    assert all(p["text"] in text for p in poems)  # and every poem as it is written


def test_rewritten_poems_state_every_held_out_fact_and_ask_no_held_out_question(qa):
    text = (qa / "qa.txt").read_text(encoding="utf-8")
    rows = held_out_rows(qa / "heldout.tsv")
    poems = prepare_qa_data.read_poems(qa / "poems.txt", 40)
    assert_every_held_out_fact_is_in_the_text_but_no_held_out_question(text, rows, poems)
    assert len([r for r in rows if r[0] == "poem_line_author"]) > len([r for r in rows if r[0] == "poem_author"])
    # Two rewrites of a poem are worded and ordered differently
    rewrites = [block for block in text.split("\n\n") if "李白《静夜思》" in block or "在李白的《静夜思》" in block
                or "《静夜思》是李白" in block or "李白写了《静夜思》" in block or "——李白的《静夜思》" in block]
    assert len(rewrites) == 2 and rewrites[0] != rewrites[1]


def test_another_seed_holds_out_other_questions_with_the_same_guarantees(qa, tmp_path):
    flags = ["--poems", qa / "poems.txt", "--num_poems", "40", "--three_digit", "200", "--seed", "1",
             "--out", tmp_path / "qa.txt", "--heldout", tmp_path / "heldout.tsv", "--knowledge_out", tmp_path / "k.txt"]
    assert run(prepare_qa_data, *flags) == 0
    rows, first = held_out_rows(tmp_path / "heldout.tsv"), held_out_rows(qa / "heldout.tsv")
    for kind in ("add2", "sub2", "poem_next", "poem_line_author"):
        mine, theirs = ({q for k, q, _ in r if k == kind} for r in (rows, first))
        assert len(mine) == len(theirs) and mine != theirs, kind
    text = (tmp_path / "qa.txt").read_text(encoding="utf-8")
    poems = prepare_qa_data.read_poems(qa / "poems.txt", 40)
    assert_every_held_out_fact_is_in_the_text_but_no_held_out_question(text, rows, poems)
    knowledge = (tmp_path / "k.txt").read_text(encoding="utf-8")  # the poem text alone, to pretrain on
    assert "问：" not in knowledge and all(p["text"] in knowledge for p in poems)
    assert sorted(knowledge.split("\n\n")) == sorted(b for b in text.split("\n\n") if "问：" not in b)


def test_more_or_fewer_3_digit_questions_leave_the_other_held_out_questions_as_they_were(qa, tmp_path):
    def heldout(three_digit):
        path = tmp_path / f"heldout-{three_digit}.tsv"
        assert run(prepare_qa_data, "--poems", qa / "poems.txt", "--num_poems", "40", "--three_digit", three_digit,
                   "--out", tmp_path / "qa.txt", "--heldout", path) == 0
        return {line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(("add3", "sub3"))}

    assert heldout(200) == heldout(50)  # so two mixes are scored on the same questions


def test_eval_qa_reports_exact_match_and_a_baseline(qa, capsys):
    out = qa / "qa.md"
    flags = ["--checkpoint", qa / "out" / "ckpt.pt", "--heldout", qa / "heldout.tsv", "--train_text", qa / "qa.txt",
             "--out", out, "--device", "cpu"]
    assert run(eval_qa, *flags) == 0
    table = out.read_text(encoding="utf-8")
    for label in eval_qa.kinds().values():
        assert f"| {label} |" in table
    assert "(always " in table  # the most-frequent-author baseline


def test_eval_qa_speaks_chinese_under_a_chinese_locale(qa, monkeypatch, capsys):
    monkeypatch.setenv("MINIGPT_LANG", "zh")
    assert run(eval_qa, "--checkpoint", qa / "out" / "ckpt.pt", "--heldout", qa / "heldout.tsv", "--train_text",
               qa / "qa.txt", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "| 问题 | 留出的题数 | 完全答对 | 基线 |" in out and "| 两位数加法（例如 37+58） |" in out
    assert "死记硬背" in out and "question" not in out


def test_eval_qa_shows_a_right_and_a_wrong_answer_of_each_kind():
    rows = [("add2", "1+1等于多少？", "2"), ("add2", "2+2等于多少？", "4"), ("add2", "3+3等于多少？", "6"),
            ("poem_next", "「甲」的下一句是什么？", "乙"), ("poem_author", "《丙》的作者是谁？", "丁")]
    answers = {"1+1等于多少？": "3", "2+2等于多少？": "4", "3+3等于多少？": "6", "「甲」的下一句是什么？": "乙",
               "《丙》的作者是谁？": "戊"}
    assert eval_qa.pick_examples(rows, answers) == [
        ("add2", "2+2等于多少？", "4", "4"), ("add2", "1+1等于多少？", "2", "3"),  # right first, then wrong
        ("poem_next", "「甲」的下一句是什么？", "乙", "乙"), ("poem_author", "《丙》的作者是谁？", "丁", "戊")]


def test_answer_all_stops_at_the_end_marker_and_batches_by_length():
    class Parrot:  # a stand-in model that always continues with "42\n\n" and then noise
        def generate_stream(self, idx, max_new_tokens, temperature):
            for ch in "42\n\nxyz"[:max_new_tokens]:
                yield torch.full((idx.shape[0], 1), stoi[ch])

    from utils import CharTokenizer

    tok = CharTokenizer("问答：\n0123456789+等于多少？xyz")
    stoi = tok.stoi
    answers = eval_qa.answer_all(Parrot(), tok, ["1+1等于多少？", "10+10等于多少？"], 1, 7, "cpu")
    assert answers == {"1+1等于多少？": "42", "10+10等于多少？": "42"}


def test_chat_one_shot_interactive_and_bad_input(qa, monkeypatch, capsys):
    ckpt = qa / "out" / "ckpt.pt"
    assert run(chat, "37+58等于多少？", "--checkpoint", ckpt, "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert out.startswith("答：") and out.endswith("\n") and "\n\n" not in out[:-1]

    assert_clean_error(run(chat, "   ", "--checkpoint", ckpt), capsys.readouterr().err, "the question is empty")
    assert_clean_error(run(chat, "Who are you?", "--checkpoint", ckpt), capsys.readouterr().err,
                       "never seen", "'W'")
    assert_clean_error(run(chat, "1+1等于多少？", "--checkpoint", qa / "missing.pt"), capsys.readouterr().err,
                       "no checkpoint")

    typed = iter(["1+1等于多少？", "", "Hello", KeyboardInterrupt])

    def fake_input(prompt_text):
        item = next(typed)
        if item is KeyboardInterrupt:
            raise KeyboardInterrupt  # Ctrl-C at the prompt: leave quietly
        print(prompt_text + item)
        return item

    monkeypatch.setattr(builtins, "input", fake_input)
    assert run(chat, "--checkpoint", ckpt, "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "问：1+1等于多少？\n答：" in out
    assert "(the question is empty" in out and "never seen 'H'" in out  # said, and the chat went on


def test_chat_refuses_a_checkpoint_trained_on_other_text(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "2", "--eval_interval", "2", *TOY) == 0
    assert_clean_error(run(chat, "hello", "--checkpoint", "out/ckpt.pt"), capsys.readouterr().err,
                       "was not trained on Q&A text")
    assert_clean_error(run(eval_qa, "--checkpoint", "out/ckpt.pt", "--heldout", tiny_text_file),
                       capsys.readouterr().err, "expected kind, question and answer")


# ---------------------------------------------------------------- project 3: code


def test_code_corpus_is_deterministic_capped_and_has_no_tests(tmp_path, capsys):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    assert run(prepare_code_data, "--max_bytes", "60000", "--out", first) == 0
    assert run(prepare_code_data, "--max_bytes", "60000", "--out", second) == 0
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 60000
    files = [line[len("# file: "):] for line in text.splitlines() if line.startswith("# file: ")]
    assert files == sorted(files) and files
    assert not any("/test" in f or f.startswith("test") for f in files)
    assert_clean_error(run(prepare_code_data, "--stdlib", tmp_path / "nowhere"), capsys.readouterr().err,
                       "no standard library")


def test_top_level_block_is_cut_by_indentation():
    sample = "def f(a,\n        b):\n\n    return a + b\nclass C:\n    pass\n"
    assert eval_code.top_level_block(sample) == "def f(a,\n        b):\n\n    return a + b\n"
    assert eval_code.top_level_block("def f():\n    return (1 +\n") is None  # ran out inside the block
    method_style = "def f(self):\n        return 1\n    def g(self):\n        pass\n"
    assert eval_code.top_level_block(method_style) == "def f(self):\n        return 1\n"  # the next method ends it
    assert eval_code.parses(eval_code.top_level_block(sample))
    assert not eval_code.parses("def f(:\n    pass\n")
    ast.parse(eval_code.top_level_block(sample))


def test_train_a_code_model_and_measure_its_parse_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(prepare_code_data, "--max_bytes", "80000", "--out", "code.txt") == 0
    assert run(train, "--data", "code.txt", "--out_dir", "out-code", "--max_iters", "30", "--eval_interval", "30",
               *TOY) == 0
    capsys.readouterr()
    flags = ["--samples", "2", "--max_new_tokens", "40", "--temperatures", "0.5", "1.0", "--out", "code.md",
             "--device", "cpu"]
    assert run(eval_code, *flags) == 0
    table = (tmp_path / "code.md").read_text(encoding="utf-8")
    assert "| 0.5 |" in table and "| 1 |" in table and "Best val loss" in table
    assert_clean_error(run(eval_code, "--temperatures", "-1"), capsys.readouterr().err, "temperature")
