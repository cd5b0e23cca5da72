"""Text tokenizer: pieces with "▁" shown as a space; ids 0 and 3 never shown."""

from __future__ import annotations

import pytest

from moshi_lm.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def tok(fixtures_dir):
    return TextTokenizer(fixtures_dir / "tokenizer_tiny.model")


def test_special_ids_hidden(tok):
    assert tok.vocab_size == 1000
    assert tok.piece(0) is None and tok.piece(3) is None
    assert tok.sp.id_to_piece(1) == "<s>" and tok.piece(1) == "<s>"


def test_word_pieces_show_a_space(tok):
    with_space = [i for i in range(4, 1000) if tok.sp.id_to_piece(i).startswith("\u2581")]
    assert with_space, "the fixture tokenizer has word-initial pieces"
    for i in with_space[:50]:
        shown = tok.piece(i)
        assert shown == " " + tok.sp.id_to_piece(i)[1:]
        assert "\u2581" not in shown


def test_round_trip_and_decode_drops_hidden(tok):
    ids = tok.encode("bada kolu")
    assert ids and all(isinstance(i, int) for i in ids)
    assert tok.decode([3, 0] + ids + [3]) == tok.decode(ids)
    assert "".join(tok.piece(i) or "" for i in [3] + ids + [0]).strip() == tok.decode(ids)


def test_bad_ids_and_missing_file(tok, tmp_path):
    with pytest.raises(ValueError, match="text token 1000 is outside the vocabulary"):
        tok.piece(1000)
    with pytest.raises(FileNotFoundError):
        TextTokenizer(tmp_path / "missing.model")
