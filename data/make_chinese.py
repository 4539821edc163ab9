"""Rebuild data/chinese.txt from the two poem collections in the project's shared data folder.

    python3 data/make_chinese.py --tang300 ../shared/data/tang300.txt --poems ../shared/data/tang_poems.txt

1. The 唐诗三百首 (tang300.txt), in their familiar school-book versions, come first, so that a prompt
   like 床前明月光 continues the poem a learner knows.
2. Then every poem by 李白, 杜甫, 王维 and 孟浩然 from the 56,221-poem collection (tang_poems.txt, the
   全唐诗 text), without the ones already in the 300 (same author and title), editorial notes in
   full-width brackets （…） removed, and poems that still hold editorial marks dropped.
3. Common variant characters are normalised to the standard simplified forms (VARIANTS below).

Deterministic: the same inputs give the same file, byte for byte.
"""

import argparse
import re
from pathlib import Path

POETS = ("李白", "杜甫", "王维", "孟浩然")
EDITORIAL_MARKS = set("（）○〖〗")
VARIANTS = {  # variant or traditional form -> the standard simplified form used in schoolbooks
    "疎": "疏", "鬬": "斗", "谿": "溪", "遶": "绕", "鴈": "雁", "竝": "并", "厓": "崖", "廻": "回", "迴": "回",
    "麤": "粗", "隣": "邻", "妬": "妒", "壻": "婿", "隄": "堤", "椀": "碗", "盌": "碗", "缾": "瓶", "牋": "笺",
    "鷰": "燕", "碁": "棋", "窻": "窗", "鞵": "鞋", "罇": "樽", "迺": "乃", "牀": "床", "峯": "峰", "羣": "群",
    "衆": "众", "毬": "球",
}


def poems(path):
    """The poems of a file laid out as: title line, author line, the poem's lines, a blank line."""
    text = Path(path).read_text(encoding="utf-8")
    return [block.strip("\n") for block in text.split("\n\n") if block.strip()]


def title_and_author(poem):
    title, author = poem.split("\n")[:2]
    return title, author


def normalise(text):
    return text.translate(str.maketrans(VARIANTS))


def build(tang300_path, poems_path):
    familiar = poems(tang300_path)
    known = {title_and_author(p) for p in familiar}
    selection = []
    for poem in poems(poems_path):
        if title_and_author(poem)[1] not in POETS or title_and_author(poem) in known:
            continue
        poem = re.sub(r"（[^）]*）", "", poem).strip("\n")  # editorial notes, which may span lines
        if not EDITORIAL_MARKS & set(poem):
            selection.append(poem)
    return normalise("\n\n".join(familiar + selection) + "\n"), len(familiar), len(selection)


def main():
    parser = argparse.ArgumentParser(description="Rebuild data/chinese.txt from tang300.txt and tang_poems.txt.")
    parser.add_argument("--tang300", required=True, help="the 唐诗三百首 file")
    parser.add_argument("--poems", required=True, help="the 56,221-poem collection")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "chinese.txt"))
    args = parser.parse_args()
    text, n_familiar, n_selection = build(args.tang300, args.poems)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {n_familiar} + {n_selection} poems, {len(text):,} characters, "
          f"{len(set(text)):,} distinct, {len(text.encode('utf-8')):,} bytes")


if __name__ == "__main__":
    main()
