"""Ogg/Opus streams of 24 kHz mono audio, through the `sphn` Opus library.

`OpusEncoder` turns PCM chunks into Ogg pages; `OpusDecoder` turns received bytes back
into PCM after `split_pages` has checked them, so a corrupt message is reported and
dropped instead of corrupting the rest of the stream.
"""

from __future__ import annotations

import numpy as np
import sphn

from mimi_moshi_chat.ogg import split_pages

#: Sample rate of every audio stream of the protocol.
SAMPLE_RATE = 24000


class OpusEncoder:
    """PCM in, Ogg/Opus bytes out (the first call's bytes carry the stream headers).

    Args:
        sample_rate: Hz of the PCM given to `encode`.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._writer = sphn.OpusStreamWriter(sample_rate)

    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode a chunk of audio; returns b"" while the encoder waits for more samples.

        Args:
            pcm: [T] float32 in [-1, 1].
        """
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        if pcm.ndim != 1:
            raise ValueError(f"pcm has shape {tuple(pcm.shape)}, expected one channel [T]")
        return bytes(self._writer.append_pcm(pcm))


class OpusDecoder:
    """Ogg/Opus bytes in, PCM out; each bad message raises `ValueError` and leaves the stream usable.

    Args:
        sample_rate: Hz of the PCM returned by `decode`.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._sample_rate = sample_rate
        self._reader = sphn.OpusStreamReader(sample_rate)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode the pages `data` completes.

        Args:
            data: whole pages of an Ogg/Opus stream.

        Returns:
            [T] float32, possibly empty.

        Raises:
            ValueError: `data` is not valid Ogg, or Opus could not decode it.
        """
        pages = split_pages(data)
        if not pages:
            return np.zeros(0, dtype=np.float32)
        try:
            pcm = self._reader.append_bytes(b"".join(p.data for p in pages))
        except Exception as e:  # the library raises its own errors for undecodable packets
            self._reader = sphn.OpusStreamReader(self._sample_rate)
            raise ValueError(f"undecodable Opus data: {e}") from e
        return np.asarray(pcm, dtype=np.float32).reshape(-1)
