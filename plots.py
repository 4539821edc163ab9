"""Pictures: matplotlib with no display, Chinese labels drawn with the repo's own font, and the loss curve."""

import logging
from pathlib import Path

from i18n import _, language

BUNDLED_FONT = Path(__file__).resolve().parent / "fonts" / "MiniGPT-CJK.otf"  # a subset of Noto Sans CJK SC: fonts/make_font_subset.py
BUNDLED_FONT_NAME = "MiniGPT CJK"
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS"]


def pyplot(chinese=False):
    """matplotlib.pyplot on the non-interactive Agg backend: saving PNGs works with no display.

    The repo's own CJK font (fonts/MiniGPT-CJK.otf) is registered, so Chinese labels render on a
    machine with no Chinese font installed; system CJK fonts follow it, for a learner's characters
    that the subset lacks. The fonts are listed as font.family itself: matplotlib falls back glyph by
    glyph along that list (not along the list behind a generic name like "sans-serif"). chinese=True
    puts the CJK fonts first, so Chinese text gets Chinese punctuation and spacing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # no chatter about font weights
    if BUNDLED_FONT.exists() and BUNDLED_FONT_NAME not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(BUNDLED_FONT))
    cjk = [BUNDLED_FONT_NAME, *installed_cjk_fonts(font_manager)]
    plt.rcParams["font.family"] = [*cjk, "DejaVu Sans"] if chinese else ["DejaVu Sans", *cjk]
    plt.rcParams["axes.unicode_minus"] = False  # the CJK font's hyphen-minus, not a missing U+2212
    return plt


def installed_cjk_fonts(font_manager=None):
    """The fonts from CJK_FONTS that matplotlib can find on this machine."""
    if font_manager is None:
        from matplotlib import font_manager
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in CJK_FONTS if name in installed]


def is_cjk(ch):
    """True for Chinese, Japanese and Korean characters and their punctuation (U+2E80 onwards)."""
    return ord(ch) >= 0x2E80


def unplottable(text):
    """The characters of text that neither the bundled font nor a system CJK font can draw
    (empty when a system CJK font is installed: it is trusted to have them)."""
    from matplotlib.ft2font import FT2Font

    if installed_cjk_fonts():
        return ""
    covered = set(FT2Font(str(BUNDLED_FONT)).get_charmap()) if BUNDLED_FONT.exists() else set()
    return "".join(sorted({ch for ch in text if is_cjk(ch) and ord(ch) not in covered}))


def plot_losses(steps, train_losses, val_losses, path, title="Training progress", lang=None):
    """Save a train/val loss curve as a PNG, labelled in `lang` (default: the learner's language)."""
    lang = lang or language()
    plt = pyplot(chinese=lang == "zh")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, train_losses, marker="o", label=_("train loss", lang))
    ax.plot(steps, val_losses, marker="s", label=_("val loss", lang))
    ax.set_xlabel(_("step", lang))
    ax.set_ylabel(_("cross-entropy loss", lang))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(panels, ylabel, path, size=(8, 4.5), markersize=6):
    """Save side-by-side line charts as a PNG: panels is a list of (title, x label, [(label, xs, ys), ...])."""
    plt = pyplot(chinese=language() == "zh")
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (title, xlabel, lines) in zip(axes[0], panels):
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="o", markersize=markersize, label=label)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
