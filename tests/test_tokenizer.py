import pytest
import torch

from utils import CharTokenizer

from conftest import TINY_TEXT


@pytest.mark.parametrize("text", [
    "hello world",
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "emoji 🙂🚀 and mixed 中文 text",
    "windows\r\nline\r\nendings\ttabs",
])
def test_round_trip(text):
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_vocabulary_is_the_sorted_set_of_characters():
    tok = CharTokenizer("hello world")
    assert tok.vocab_size == 8
    assert list(tok.stoi) == sorted(set("hello world"))
    assert tok.stoi == {ch: i for i, ch in enumerate(sorted(set("hello world")))}
    assert tok.itos == {i: ch for ch, i in tok.stoi.items()}
    # Same text, same ids, whatever the order the characters first appear in.
    assert CharTokenizer("dlrow olleh").stoi == tok.stoi


def test_unknown_characters_raise_a_clear_value_error():
    tok = CharTokenizer("hello world")
    with pytest.raises(ValueError) as err:
        tok.encode("xyz123")
    message = str(err.value)
    for ch in "xyz123":
        assert repr(ch) in message
    assert "only knows the 8 characters seen in its training text" in message


def test_decode_of_an_unknown_id_is_a_value_error():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="ids go from 0 to 2"):
        tok.decode([0, 7])


def test_decode_accepts_a_tensor():
    tok = CharTokenizer("abc")
    assert tok.decode(torch.tensor([2, 1, 0])) == "cba"


def test_rebuilt_from_checkpoint_stoi_gives_the_same_ids():
    tok = CharTokenizer(TINY_TEXT)
    rebuilt = CharTokenizer.from_stoi(dict(tok.stoi))
    assert rebuilt.vocab_size == tok.vocab_size
    assert rebuilt.itos == tok.itos
    assert rebuilt.encode(TINY_TEXT[:500]) == tok.encode(TINY_TEXT[:500])


def test_vectorised_encoding_matches_a_plain_lookup():
    text = TINY_TEXT + "中文🙂"
    tok = CharTokenizer(text)
    assert tok.encode_array(text).tolist() == [tok.stoi[ch] for ch in text]


def test_empty_text_cannot_make_a_tokenizer():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")
