"""The pages render as written: every table row has its header's cells, no stray line joins a table, no row is cut
off from its table, and no fenced block is left open (read with markdown-it-py, as GitHub's renderer reads them)."""

import re

import pytest

from conftest import REPO

markdown_it = pytest.importorskip("markdown_it", reason="pip install -r requirements-dev.txt")

PAGES = sorted([REPO / "README.md", REPO / "README_en.md", REPO / "TUTORIAL.md", *REPO.glob("docs/**/*.md")])


def cells(line):
    """The cells of a table row as GitHub counts them: | outside `code` and not escaped as \\| separates them."""
    text = re.sub(r"`[^`]*`", "code", line.strip())  # a | inside inline code is text
    text = text.replace("\\|", "")
    return text.strip("|").count("|") + 1


def problems(page):
    source = page.read_text(encoding="utf-8")
    lines = source.splitlines()
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(source)
    found = []
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            start, end = token.map
            header = cells(lines[start])
            for number in range(start, end):
                if number != start + 1 and cells(lines[number]) != header:
                    found.append(f"{page.name}:{number + 1}: {cells(lines[number])} cells, the header has {header}: "
                                 f"{lines[number][:60]!r}")
        elif token.type == "paragraph_open" and lines[token.map[0]].lstrip().startswith("|") \
                and lines[token.map[0]].count("|") >= 3:
            found.append(f"{page.name}:{token.map[0] + 1}: a table row outside any table (a blank line above it?)")
        elif token.type == "fence":
            last = lines[token.map[1] - 1].strip() if token.map[1] - 1 < len(lines) else ""
            if token.map[1] - token.map[0] < 2 or not last.startswith(token.markup):
                found.append(f"{page.name}:{token.map[0] + 1}: a fenced block that is never closed")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_page_renders_as_written(page):
    assert problems(page) == []


def test_the_checks_catch_what_broke_tutorial_md(tmp_path):
    broken = tmp_path / "broken.md"
    broken.write_text("| a | b |\n| --- | --- |\n| 1 | 2 |\nwrote docs/x.png\n\n| c | d |\n\n| 3 | `x | y` |\n\n"
                      "```bash\npython3 train.py\n", encoding="utf-8")
    found = problems(broken)
    assert any("broken.md:4: 1 cells" in p for p in found)  # the stray line became a row
    assert any("broken.md:8: a table row outside" in p for p in found)  # a row cut off by a blank line
    assert any("never closed" in p for p in found)
