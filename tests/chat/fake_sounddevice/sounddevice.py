"""A stand-in for the `sounddevice` package, for tests of microphone/speaker clients.

Put this folder first on PYTHONPATH. `InputStream` plays the float32 .npy file named by
FAKE_SD_INPUT as the microphone, block by block in real time (looping); `OutputStream` pulls
blocks from the client's callback in real time and saves everything played to the .npy file
named by FAKE_SD_OUTPUT (rewritten every few blocks and on exit).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np


class _Stream:
    def __init__(self, samplerate, channels, blocksize, callback, dtype="float32", **kwargs):
        self.samplerate = samplerate
        self.channels = channels
        self.blocksize = blocksize
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._finish()

    def _finish(self):
        pass

    def _run(self):
        period = self.blocksize / self.samplerate
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            delay = start + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._block(k)
            k += 1


class InputStream(_Stream):
    def _block(self, k):
        source = np.load(os.environ["FAKE_SD_INPUT"]).astype(np.float32) if k == 0 else self._source
        self._source = source
        n = self.blocksize
        idx = (np.arange(n) + k * n) % len(source)
        self.callback(np.repeat(source[idx][:, None], self.channels, axis=1), n, None, None)


class OutputStream(_Stream):
    def _block(self, k):
        if k == 0:
            self._played = []
        out = np.zeros((self.blocksize, self.channels), dtype=np.float32)
        self.callback(out, self.blocksize, None, None)
        self._played.append(out[:, 0].copy())
        if k % 5 == 4:
            self._finish()

    def _finish(self):
        if getattr(self, "_played", None):
            path = os.environ["FAKE_SD_OUTPUT"]
            np.save(path + ".tmp.npy", np.concatenate(self._played))
            os.replace(path + ".tmp.npy", path)
