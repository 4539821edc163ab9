"""What TUTORIAL.md quotes is what the commands print. A block marked `<!-- output: COMMAND -->` is run under
MINIGPT_LANG=zh and each quoted line must appear in the output, in order ("..." skips lines; `| mask: REGEX` hides
what depends on the machine, in the quote and the output alike). The 常见错误 rows listed in `<!-- errors: ... -->`
must be the one line the command really prints."""

import contextlib
import importlib
import inspect
import io
import re
import shlex

import pytest

import cli
from conftest import REPO

TUTORIAL = (REPO / "TUTORIAL.md").read_text(encoding="utf-8")
BLOCKS = [(command.strip(), [m.strip() for m in masks.split("| mask:")[1:]], quote)
          for command, masks, quote in re.findall(r"<!-- output: ([^|>]+?)((?: \| mask: [^|>]+?)*) -->\n```text\n(.*?)\n```",
                                                  TUTORIAL, flags=re.S)]
# The same files as the commands write, in the test's folder instead of the repo's data/; a training quoted for its
# start-up lines, stopped before its first step.
IN_THIS_FOLDER = {"python3 prepare_qa_data.py": ["--out", "data/qa.txt", "--heldout", "data/qa_heldout.tsv"],
                  "python3 train.py --tokenizer bpe --vocab_size 2048": ["--max_iters", "0", "--sample_tokens", "0"]}
# A second or two of training instead of ten minutes: the lines quoted don't depend on it.
QUICK = ["--time_budget", "0", "--max_iters", "1", "--eval_interval", "1", "--eval_iters", "1", "--n_layer", "1",
         "--n_embd", "16", "--num_heads", "2", "--block_size", "16", "--batch_size", "2", "--sample_tokens", "0",
         "--device", "cpu"]


def run_in(folder, command, *extra):
    """(exit status, stdout, stderr) of a command as a learner runs it, in Chinese, from `folder`; in this process
    (a fresh interpreter per command would cost two seconds each just to import torch)."""
    argv = shlex.split(command)
    module = importlib.import_module(argv[1].removesuffix(".py"))
    args = [*argv[2:], *extra]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MINIGPT_LANG", "zh")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.run_main(lambda: module.main(args) if inspect.signature(module.main).parameters else module.main())
                status = 0
            except SystemExit as e:
                status = e.code or 0
    return status, out.getvalue(), err.getvalue()


def masked(text, masks):
    for mask in masks:
        text = re.sub(mask, "⟨…⟩", text, flags=re.M)
    return text


def missing_lines(quote, output):
    """The quoted lines not found in the output in order ("..." in a quote skips any lines)."""
    lines, at, missing = output.splitlines(), 0, []
    for line in quote.splitlines():
        if line.strip() in ("...", "……"):
            continue
        found = next((i for i in range(at, len(lines)) if lines[i].rstrip() == line.rstrip()), None)
        if found is None:
            missing.append(line)
        else:
            at = found + 1
    return missing


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    """A folder laid out like the repo's root with its data, the Q&A text, and two quickly trained models: a
    Shakespeare one in out/ and a poems one in out-chinese/."""
    folder = tmp_path_factory.mktemp("learner")
    (folder / "data").mkdir()
    for name in ("input.txt", "chinese.txt"):
        (folder / "data" / name).symlink_to(REPO / "data" / name)
    return folder


@pytest.fixture(scope="module")
def outputs(learner):
    """Each marked command's output, run once."""
    out = {}
    for command in dict.fromkeys(command for command, _, _ in BLOCKS):
        if "--init_from" in command:
            continue  # run by the test below, after the models it starts from exist
        status, stdout, stderr = run_in(learner, command, *IN_THIS_FOLDER.get(command, []))
        assert status == 0, stderr[-2000:]
        out[command] = stdout
    return out


def test_the_tutorial_marks_the_outputs_of_every_day_and_the_qa_data():
    assert {"python3 day1_tokenizer.py", "python3 day1_bpe.py", "python3 day2_embedding.py", "python3 day3_attention.py",
            "python3 day4_train_small.py", "python3 prepare_qa_data.py"} <= {c for c, _, _ in BLOCKS}


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{c.split()[1]}-{i}" for i, (c, _, _) in enumerate(BLOCKS)])
def test_each_quoted_output_is_what_the_command_prints(index, outputs, learner):
    command, masks, quote = BLOCKS[index]
    if "--init_from" in command:  # the poem text, a model pretrained on it quickly, and the Q&A text first
        prepare = IN_THIS_FOLDER["python3 prepare_qa_data.py"]
        assert run_in(learner, "python3 prepare_qa_data.py --knowledge_out data/qa_poems.txt", *prepare)[0] == 0
        assert run_in(learner, "python3 train.py --data data/qa_poems.txt --out_dir out-qa-poems", *QUICK)[0] == 0
        status, output, stderr = run_in(learner, command, *QUICK)
        assert status == 0, stderr[-2000:]
    else:
        output = outputs[command]
    assert missing_lines(masked(quote, masks), masked(output, masks)) == []


def test_an_edited_quote_fails():
    output = "第 1 行\n第 2 行：12 个\n第 3 行\n"
    assert missing_lines("第 1 行\n...\n第 3 行", output) == []
    assert missing_lines("第 1 行\n第 2 行：13 个", output) == ["第 2 行：13 个"]  # one digit changed
    assert missing_lines("第 3 行\n第 1 行", output) == ["第 1 行"]  # out of order
    assert masked("loss 2.1393 in 7.1 s", [r"\d+\.\d{4}"]) == "loss ⟨…⟩ in 7.1 s"


ERROR_ROWS = dict((int(n), c.strip()) for n, c in re.findall(r"(\d+): ([^|>]+)", re.search(
    r"<!-- errors: (.*?) -->", TUTORIAL).group(1)))


def error_rows():
    table = TUTORIAL[TUTORIAL.index("<!-- errors:"):].split("\n\n")[0].splitlines()[3:]
    return [re.findall(r"`(错误：[^`]*)`", row.split(" | ")[0]) for row in table]


def test_the_common_errors_are_the_lines_the_scripts_print(learner, outputs):
    rows = error_rows()
    assert len(ERROR_ROWS) >= 5
    empty = learner / "empty"
    empty.mkdir(exist_ok=True)
    assert run_in(learner, "python3 train.py", *QUICK)[0] == 0  # out/ckpt.pt: a Shakespeare model
    for number, command in ERROR_ROWS.items():
        quick = [] if "train.py" not in command else [x for flag, value in zip(QUICK[::2], QUICK[1::2])
                                                       if flag not in command for x in (flag, value)]
        status, _, stderr = run_in(empty if number == 1 else learner, command, *quick)
        printed = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        shown = rows[number - 1]
        assert status != 0 and shown, (number, command)
        patterns = ["^" + ".*".join(map(re.escape, line.split("…"))) + "$" for line in shown]
        assert any(re.match(p, printed) for p in patterns), f"row {number}: TUTORIAL shows {shown}, {command} prints {printed!r}"
