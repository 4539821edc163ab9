"""The READMEs can't rot: every command they show names a script that exists and flags its argparse accepts."""

import re
from pathlib import Path
import shlex

import pytest

from conftest import REPO, check_command_parses, shown_commands

READMES = {name: (REPO / name).read_text(encoding="utf-8") for name in ("README.md", "README_en.md")}
COMMANDS = sorted({command for text in READMES.values() for command in shown_commands(text)})


@pytest.mark.parametrize("command", COMMANDS)
def test_each_readme_command_names_a_script_that_accepts_its_flags(command):
    check_command_parses(command)


def test_both_readmes_show_the_same_scripts_and_ci_runs_their_test_command():
    def scripts(text):
        return {"train.py" if c.startswith("torchrun") else shlex.split(c)[1] for c in shown_commands(text)}

    assert scripts(READMES["README.md"]) == scripts(READMES["README_en.md"])
    install_and_train = "python3 -m pip install -r requirements.txt && python3 train.py && python3 generate.py"
    install_and_test = "python3 -m pip install -r requirements-dev.txt && python3 -m pytest -q"
    for text in READMES.values():
        assert install_and_train in text and install_and_test in text
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == install_and_test  # CI runs exactly the README's test command
    assert len(COMMANDS) >= 20


def test_every_relative_link_of_every_page_resolves():
    pages = [*REPO.glob("*.md"), *sorted((REPO / "docs").glob("**/*.md")), REPO / "data" / "README.md",
             REPO / "locale" / "README.md"]
    broken = [f"{page.relative_to(REPO)}: {target}" for page in pages
              for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
              if not target.startswith(("http", "#", "mailto:")) and not (page.parent / target.split("#")[0]).exists()]
    assert not broken


def test_the_front_pages_stay_a_first_minute_long():
    # Detail belongs under docs/ (STYLE.md, 19): the Chinese page within 8,000 characters, the English within 12,000.
    assert len((REPO / "README.md").read_text(encoding="utf-8")) <= 8000
    assert len((REPO / "README_en.md").read_text(encoding="utf-8")) <= 12000


def test_no_command_a_learner_copies_overwrites_a_committed_file():
    # `eval_qa.py --out docs/qa.md` once rewrote a committed page: a learner's git status showed it modified.
    import subprocess

    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split())
    tracked |= {str(Path(p).parent) for p in tracked}  # and the folders that hold them
    pages = [REPO / "README.md", REPO / "README_en.md", REPO / "TUTORIAL.md", *sorted((REPO / "docs").glob("*.md"))]
    writes = []
    for page in pages:
        for command in shown_commands(page.read_text(encoding="utf-8")):
            argv = shlex.split(command)
            writes += [(page.name, argv[i + 1]) for i, flag in enumerate(argv[:-1]) if flag in ("--out", "--out_dir")]
    assert writes, "the pages show commands that write files"
    assert [(page, path) for page, path in writes if path.rstrip("/") in tracked] == []
