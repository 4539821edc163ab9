"""Chinese labels render with the repo's own font, with no CJK font installed."""

import warnings

import pytest
from matplotlib.ft2font import FT2Font

import plots
import utils
from conftest import REPO

LABELS = "床前明月光，疑是地上霜。训练 loss：注意力权重（因果掩码）"


def charmap():
    return set(FT2Font(str(plots.BUNDLED_FONT)).get_charmap())


def test_the_font_subset_is_small_and_covers_the_shipped_chinese_text():
    assert plots.BUNDLED_FONT.stat().st_size < 2_000_000
    assert (REPO / "fonts" / "OFL.txt").read_text(encoding="utf-8").count("SIL OPEN FONT LICENSE Version 1.1") == 1
    covered = charmap()
    poems = set((REPO / "data" / "chinese.txt").read_text(encoding="utf-8")) - set("\n")
    missing = [ch for ch in poems if ord(ch) not in covered]
    assert len(missing) / len(poems) < 0.01  # a few rare characters (outside Noto's GB set) at most
    assert all(ord(ch) in covered for ch in LABELS + "，。：；？！、（）「」《》")


def test_every_character_of_the_chinese_messages_is_in_the_font():
    # Pictures take their Chinese labels (axis names, titles, legends) from the message catalogue: 交叉熵 once
    # showed its last character as an empty box, because the subset was made before that message existed.
    from babel.messages.pofile import read_po

    with open(REPO / "locale" / "zh" / "LC_MESSAGES" / "minigpt.po", encoding="utf-8") as f:
        text = "".join(message.string for message in read_po(f) if message.id)
    covered = charmap()
    missing = sorted({ch for ch in text if ch.isprintable() and not ch.isascii() and ord(ch) not in covered})
    assert not missing, f"not in fonts/MiniGPT-CJK.otf: {''.join(missing)}; run python3 fonts/make_font_subset.py"


@pytest.mark.parametrize("chinese", [True, False])
def test_a_chinese_label_is_drawn_with_a_font_that_has_its_glyphs(monkeypatch, chinese):
    monkeypatch.setattr(plots, "installed_cjk_fonts", lambda font_manager=None: [])  # as on a bare machine
    plt = plots.pyplot(chinese=chinese)
    from matplotlib import font_manager

    fig, ax = plt.subplots()
    ax.set_title(LABELS)
    ax.set_xticks([0, 1], ["词 1", "词 2"])
    # The fonts matplotlib will use for this text, in fallback order: the bundled font must be the first
    # one that has each character.
    fonts = font_manager.fontManager._find_fonts_by_props(ax.title.get_fontproperties())
    for ch in set(LABELS) - set(" "):
        first = next(path for path in fonts if ord(ch) in set(FT2Font(path).get_charmap()))
        assert first.endswith("MiniGPT-CJK.otf") or (not chinese and ch.isascii()), (ch, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would fail here
        fig.canvas.draw()
    plt.close(fig)


def test_unplottable_names_only_characters_no_font_has(monkeypatch):
    monkeypatch.setattr(plots, "installed_cjk_fonts", lambda font_manager=None: [])
    assert plots.unplottable("床前明月光 hello") == ""
    assert plots.unplottable("龘𪚥") == "".join(sorted(ch for ch in "龘𪚥" if ord(ch) not in charmap()))
    monkeypatch.setattr(plots, "installed_cjk_fonts", lambda font_manager=None: ["Noto Sans CJK SC"])
    assert plots.unplottable("𪚥") == ""  # a system CJK font is trusted with the rest
