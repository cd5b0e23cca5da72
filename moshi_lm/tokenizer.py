"""SentencePiece text tokenizer of Moshi (`tokenizer_spm_32k_3.model` in the official repos).

Moshi's text stream is mostly padding: id 3 ("no word here") and id 0 (end of padding /
unknown) fill the steps between words and are never shown. Word pieces start with "▁",
which stands for a space.
"""

from __future__ import annotations

import os

import sentencepiece

#: Text ids that are never shown (padding and end-of-padding/unknown).
HIDDEN_IDS = frozenset({0, 3})


class TextTokenizer:
    """Wrapper over a SentencePiece model.

    Args:
        path: the `.model` file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"text tokenizer {path} not found")
        self.path = os.fspath(path)
        self.sp = sentencepiece.SentencePieceProcessor(model_file=self.path)

    @property
    def vocab_size(self) -> int:
        """Number of pieces."""
        return self.sp.get_piece_size()

    def piece(self, token: int) -> str | None:
        """Text to show for one generated token: "▁" as a space; None for hidden ids.

        Args:
            token: a text token id.
        Raises:
            ValueError: the id is outside the vocabulary.
        """
        token = int(token)
        if token in HIDDEN_IDS:
            return None
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"text token {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.sp.id_to_piece(token).replace("\u2581", " ")

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        return list(self.sp.encode(text))

    def decode(self, tokens: list[int]) -> str:
        """Text of a token sequence, hidden ids dropped."""
        return self.sp.decode([int(t) for t in tokens if int(t) not in HIDDEN_IDS])
