"""The shape of the code: entry points on top, the modules they share below, and no script that
imports another (what two scripts share lives in a module both import)."""

import ast

from conftest import REPO

FILES = {path.stem: path for path in REPO.glob("*.py")}
SCRIPTS = {name for name, path in FILES.items() if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")}


def local_imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(FILES)


def test_no_script_imports_another_script():
    imported = {name: sorted(local_imports(path) & SCRIPTS) for name, path in FILES.items()}
    # The one exception: day 5 runs its experiments as train.py runs, calling train.main(argv) as a function.
    assert {name: found for name, found in imported.items() if found} == {"day5_experiments": ["train"]}
    assert {"train", "generate", "playground", "bench", "day4_train_small"} <= SCRIPTS  # the check sees them


def test_the_modules_form_layers_without_cycles():
    modules = {name: local_imports(FILES[name]) - SCRIPTS for name in set(FILES) - SCRIPTS}
    done, order = set(), []
    while len(done) < len(modules):
        ready = sorted(name for name, deps in modules.items() if name not in done and deps <= done)
        assert ready, f"an import cycle among {sorted(set(modules) - done)}"
        done |= set(ready)
        order.append(ready)
    assert order[0] == ["files", "i18n", "qa_format"]  # what depends on nothing in the repo
    assert modules["model"] <= {"device", "i18n", "sampling"}  # the network stands on its own: no checkpoints
    assert modules["sampling"] <= {"i18n"}  # choosing tokens needs logits, not the model that made them
    assert "checkpoint" not in modules["token_cache"]  # a text cache sits below the model: files.py is enough
    # The server in rooms: the page's API and the OpenAI API each stand on serving.py, and only server.py joins them.
    assert {"page_api", "openai_api"} <= modules["server"]
    assert "openai_api" not in modules["page_api"] and "page_api" not in modules["openai_api"]
    assert "serving" in modules["page_api"] & modules["openai_api"]


def test_the_files_a_learner_reads_first_stay_short():
    # Past ~450 lines a file holds more than one concept (STYLE.md, 20): nanoGPT's train.py is 336.
    lengths = {name: len(FILES[name].read_text(encoding="utf-8").splitlines())
               for name in ("train", "start", "server", "serving", "page_api", "openai_api")}
    assert {name: n for name, n in lengths.items() if n > 450} == {}
