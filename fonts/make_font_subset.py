"""Make fonts/MiniGPT-CJK.otf: the part of Noto Sans CJK SC that this repo's pictures need.

matplotlib ships no Chinese font, so on a fresh machine every Chinese label would be drawn as an
empty box. The whole Noto Sans CJK font is about 16 MB per weight; this keeps only the characters of
the shipped corpora (data/chinese.txt, data/input.txt), of the Chinese text in the scripts and
message catalogues, ASCII, and the CJK and full-width punctuation blocks: about 5,000 characters in
under 2 MB. A learner's own text may hold characters outside it; plots then fall back to a system
CJK font for those (plots.pyplot).

Noto Sans CJK is licensed under the SIL Open Font License 1.1 (fonts/OFL.txt). The subset is a
"Modified Version" under that licence, so it gets its own family name, keeps the copyright and
licence records, and is distributed under the same licence.

    pip install fonttools                      # once
    python3 fonts/make_font_subset.py          # from Debian/Ubuntu's fonts-noto-cjk
    python3 fonts/make_font_subset.py --source NotoSansCJKsc-Regular.otf --extra my_text.txt
"""

import argparse
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
SC_INDEX = 2  # in Noto's .ttc collections: JP, KR, SC, TC, HK, then the Mono ones
OUTPUT = REPO_DIR / "fonts" / "MiniGPT-CJK.otf"
FAMILY = "MiniGPT CJK"

TEXT_SOURCES = ["data/chinese.txt", "data/input.txt", "*.py", "locale/*/LC_MESSAGES/*.po", "docs/**/*.md",
                "static/*"]
BLOCKS = [
    (0x20, 0x7E),  # ASCII
    (0x2000, 0x206F),  # general punctuation: dashes, quotes, ellipsis
    (0x2190, 0x21FF),  # arrows
    (0x2460, 0x24FF),  # circled numbers
    (0x25A0, 0x25FF),  # geometric shapes
    (0x2713, 0x2717),  # check and cross marks
    (0x3000, 0x303F),  # CJK punctuation: 、。「」《》…
    (0xFF00, 0xFFEF),  # full-width forms: ，：！？（）
]


def characters(extra_files):
    chars = {chr(c) for start, end in BLOCKS for c in range(start, end + 1)}
    paths = [p for pattern in TEXT_SOURCES for p in sorted(REPO_DIR.glob(pattern)) if p.is_file()]
    for path in paths + [Path(p) for p in extra_files]:
        chars |= set(path.read_text(encoding="utf-8", errors="ignore"))
    return {c for c in chars if c.isprintable()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Noto Sans CJK SC (.otf, or the .ttc collection)")
    parser.add_argument("--extra", nargs="*", default=[], help="more UTF-8 text files whose characters to keep")
    args = parser.parse_args()
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont
    except ImportError:
        sys.exit("this script needs fontTools: pip install fonttools")
    if not Path(args.source).exists():
        sys.exit(f"{args.source} not found: install fonts-noto-cjk (Debian/Ubuntu) or pass --source")

    font = TTFont(args.source, fontNumber=SC_INDEX if args.source.endswith(".ttc") else -1)
    wanted = characters(args.extra)
    cmap = font.getBestCmap()
    kept = sorted(ord(c) for c in wanted if ord(c) in cmap)
    options = subset.Options()
    options.layout_features = ["kern", "palt", "halt"]  # spacing only: no vertical forms or variants
    options.hinting = False  # matplotlib renders at 100+ dpi, where hints add little
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=kept)
    subsetter.subset(font)
    rename(font)
    OUTPUT.parent.mkdir(exist_ok=True)
    font.save(OUTPUT)
    missing = len(wanted) - len(kept)
    print(f"wrote {OUTPUT.relative_to(REPO_DIR)}: {len(kept):,} characters, {OUTPUT.stat().st_size / 1e6:.2f} MB "
          f"({missing} wanted characters are not in the source font)")


def rename(font):
    """The OFL asks a Modified Version not to pass itself off as the original: give it its own names,
    keeping the copyright (ID 0), trademark (7) and licence (13, 14) records as they are."""
    names = {1: FAMILY, 3: f"{FAMILY.replace(' ', '')}-Regular;subset of Noto Sans CJK SC", 4: f"{FAMILY} Regular",
             6: f"{FAMILY.replace(' ', '')}-Regular", 16: FAMILY, 17: "Regular"}
    table = font["name"]
    for record in list(table.names):
        if record.nameID in names:
            table.setName(names[record.nameID], record.nameID, record.platformID, record.platEncID, record.langID)
    if "CFF " in font:  # the outlines' own copy of the names
        cff = font["CFF "].cff
        cff.fontNames = [names[6]]
        top = cff.topDictIndex[0]
        top.FullName, top.FamilyName = names[4], FAMILY


if __name__ == "__main__":
    main()
