"""Messages follow the learner's language through gettext; the catalogue and its compiled form agree."""

import ast
import gettext
import re

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

import generate
import i18n
import train
from conftest import REPO, run

PO = REPO / "locale" / "zh" / "LC_MESSAGES" / "minigpt.po"
MO = PO.with_suffix(".mo")
SCRIPTS = sorted(REPO.glob("*.py")) + sorted(REPO.glob("docs/*.py"))


def catalogue():
    with open(PO, "rb") as f:
        return read_po(f)


def code_messages():
    """Every string the code passes to _(), by file."""
    found = {}
    for path in SCRIPTS:
        for _lineno, message, _comments, _context in extract_from_file("python", path, keywords={"_": None}):
            found.setdefault(message, path.name)
    return found


def placeholders(text):
    return sorted(re.findall(r"\{[^{}]*\}", text))


def test_the_compiled_catalogue_is_the_po_file_compiled():
    # The messages, compared as gettext reads them: the bytes also hold the compiler's version header, which
    # differs between Babel releases while the messages are the same.
    with open(MO, "rb") as f:
        compiled = gettext.GNUTranslations(f)._catalog
    expected = {m.id: m.string for m in catalogue() if m.id and m.string and not m.fuzzy}
    shipped = {k: v for k, v in compiled.items() if k}  # "" is the header
    assert shipped == expected, "locale/*.mo is stale: run pybabel compile -d locale -D minigpt"


def test_every_message_in_the_code_has_a_chinese_translation_and_no_translation_is_orphaned():
    code = code_messages()
    po = {m.id: m for m in catalogue() if m.id}
    assert len(code) > 100
    untranslated = [f"{file}: {msg!r}" for msg, file in code.items() if msg not in po or not po[msg].string]
    assert not untranslated, "add these to " + str(PO) + ":\n" + "\n".join(untranslated)
    assert not set(po) - set(code), "no longer in the code: " + repr(sorted(set(po) - set(code)))
    assert not [m.id for m in po.values() if m.fuzzy]


def test_translations_keep_every_placeholder():
    for message in catalogue():
        if message.id:
            assert placeholders(message.string) == placeholders(message.id), message.id


def test_no_function_shadows_the_translation_function():
    """`for _ in ...` or `a, _ = ...` in a function that also calls _() would raise UnboundLocalError."""
    for path in SCRIPTS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            scoped = [node for node in ast.walk(function) if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp,
                                                                               ast.GeneratorExp, ast.Lambda))]
            inner = {id(n) for comp in scoped for n in ast.walk(comp)}
            stores = [n for n in ast.walk(function) if isinstance(n, ast.Name) and n.id == "_"
                      and isinstance(n.ctx, ast.Store) and id(n) not in inner]
            calls = [n for n in ast.walk(function) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "_"]
            assert not (stores and calls), f"{path.name}: {function.name} assigns _ and calls _()"


@pytest.mark.parametrize("env, expected", [
    ({"MINIGPT_LANG": "zh"}, "zh"),
    ({"MINIGPT_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),  # MINIGPT_LANG wins
    ({"LANG": "zh_CN.UTF-8"}, "zh"),
    ({"LANG": "zh_TW.UTF-8"}, "zh"),
    ({"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),  # LC_ALL before LANG
    ({"LANGUAGE": "en_GB:zh_CN", "LANG": "zh_CN.UTF-8"}, "en"),  # LANGUAGE first, its first entry
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "en_US.UTF-8"}, "en"),
])
def test_language_follows_the_environment(monkeypatch, env, expected):
    for name in i18n.LANGUAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert i18n.language() == expected


@pytest.mark.parametrize("env, line", [
    ({"LANG": "en_US.UTF-8"}, "error: no checkpoint at nowhere.pt; train one first: python3 train.py"),
    ({"LANG": "zh_CN.UTF-8"}, "错误：nowhere.pt 没有检查点；先训练一个：python3 train.py"),
    ({"MINIGPT_LANG": "zh", "LANG": "en_US.UTF-8"}, "错误：nowhere.pt 没有检查点"),
])
def test_a_script_speaks_the_learners_language(env, line, monkeypatch, capsys):
    # In this process: language() reads the environment on every call (test_scripts runs the real subprocess).
    for name in i18n.LANGUAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = run(generate, "--checkpoint", "nowhere.pt")
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(line) and len(err.splitlines()) == 1, err


def test_training_speaks_chinese_from_start_to_finish(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.setenv("MINIGPT_LANG", "zh")
    monkeypatch.chdir(tmp_path)
    status = run(train, "--data", tiny_text_file, "--out_dir", "out", "--time_budget", "0", "--max_iters", "4",
                 "--eval_interval", "2", "--eval_iters", "1", "--n_layer", "1", "--n_embd", "16", "--num_heads", "2",
                 "--block_size", "16", "--batch_size", "4", "--sample_tokens", "10", "--device", "cpu")
    out = capsys.readouterr().out
    assert status == 0
    assert "设备：cpu   配置：config.py   随机种子：1337" in out
    assert "模型：" in out and "训练：4 步，每步 64 个 token" in out
    assert re.search(r"第\s+4 步 \|\s+\d+ 秒 \| 训练 loss \d\.\d{4} \| 验证 loss \d\.\d{4}", out)
    assert "在整个验证集上为" in out and "生成样例（温度 0.8）：" in out
    monkeypatch.setenv("MINIGPT_LANG", "en")
    assert run(train, "--max_iters", "-1") == 2
    assert capsys.readouterr().err.strip() == "error: max_iters must be >= 0"
