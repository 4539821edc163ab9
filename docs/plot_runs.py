"""Plot validation loss against wall-clock seconds for several train.py runs (their log.csv files).

    python3 docs/plot_runs.py out-a/log.csv "AdamW" out-b/log.csv "Muon" --out docs/curve.png
    MINIGPT_LANG=zh python3 docs/plot_runs.py ... --out docs/curve_zh.png     # Chinese labels

Made the curves in README.md, README_en.md and docs/speedrun.md from recorded runs.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from i18n import _, language  # noqa: E402  (after the path above)
from plots import pyplot  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="pairs of LOG_CSV LABEL")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    if len(args.runs) % 2:
        sys.exit("give the runs as pairs: LOG_CSV LABEL ...")
    plt = pyplot(chinese=language() == "zh")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for path, label in zip(args.runs[::2], args.runs[1::2]):
        rows = list(csv.DictReader(open(path)))
        seconds = [float(r["seconds"]) for r in rows]
        val = [float(r["val_loss"]) for r in rows]
        full = [float(r["full_val_loss"]) for r in rows if r.get("full_val_loss")]
        if full:  # the whole-split score of the run's best model goes in the legend, where labels can't collide
            label = _("{label}: {loss:.3f}").format(label=label, loss=full[0])
        ax.plot(seconds, val, marker="o", markersize=3, label=label)
    ax.set_xlabel(_("seconds of training"))
    ax.set_ylabel(_("val loss"))
    ax.set_ylim(top=min(ax.get_ylim()[1], 2.6))
    ax.set_title(args.title or _("Validation loss on a 2-core CPU"))
    ax.grid(True, alpha=0.3)
    ax.legend(title=_("number: the best model's loss on the whole validation split"), title_fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(_("wrote {path}").format(path=args.out))


if __name__ == "__main__":
    main()
