"""Advanced project 3, step 1: a Python corpus, made offline from this machine's standard library.

    python3 prepare_code_data.py                      # writes data/code.txt (3 MB of Python)
    python3 train.py --data data/code.txt --out_dir out-code
    python3 eval_code.py                              # does what it writes parse?

The standard library's own .py files (found with sysconfig, so no download) are read in sorted
order, so the corpus is the same every time on the same Python version. Test suites, site-packages
and files that are not UTF-8 are skipped, and the corpus stops at --max_bytes. Each file is
separated from the next by two blank lines and a comment naming it.
"""

import argparse
import sysconfig
from pathlib import Path

from cli import HelpFormatter, UserError, run_main
from i18n import _
from utils import REPO_DIR

SKIPPED_FOLDERS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Build data/code.txt from the Python standard library's sources.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--max_bytes", type=int, default=3_000_000, help="stop once the corpus reaches this size")
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="where the .py files are")
    parser.add_argument("--out", default=str(REPO_DIR / "data" / "code.txt"), help="where to write the corpus")
    return parser.parse_args(argv)


def source_files(stdlib):
    """The standard library's .py files in sorted order, without tests and installed packages."""
    root = Path(stdlib)
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if SKIPPED_FOLDERS & set(parts[:-1]) or parts[-1].startswith("test_"):
            continue
        yield path


def main(argv=None):
    args = parse_args(argv)
    if args.max_bytes < 1000:
        raise UserError(_("--max_bytes must be at least 1000, got {value}").format(value=args.max_bytes))
    if not Path(args.stdlib).is_dir():
        raise UserError(_("no standard library at {path}; pass --stdlib with the folder holding os.py").format(
            path=args.stdlib))
    pieces, size, used, skipped = [], 0, 0, 0
    for path in source_files(args.stdlib):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            skipped += 1
            continue
        piece = f"# file: {path.relative_to(args.stdlib).as_posix()}\n{text.rstrip()}\n\n\n"
        if size + len(piece.encode("utf-8")) > args.max_bytes:
            break
        pieces.append(piece)
        size += len(piece.encode("utf-8"))
        used += 1
    if not pieces:
        raise UserError(_("found no usable .py files under {path} within --max_bytes {max_bytes}").format(
            path=args.stdlib, max_bytes=args.max_bytes))
    text = "".join(pieces)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(_("wrote {path}: {used} files from {stdlib} ({skipped} not UTF-8, skipped), {size:,} bytes, {distinct} "
            "distinct characters").format(path=args.out, used=used, stdlib=args.stdlib, skipped=skipped, size=size,
                                          distinct=len(set(text))))
    print(_("next: python3 train.py --data data/code.txt --out_dir out-code"))


if __name__ == "__main__":
    run_main(main)
