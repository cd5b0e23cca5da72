"""The Mimi codec: SEANet encoder -> transformer -> stride-2 downsample -> split RVQ, and back.

Every path runs the streaming code: a whole-file `encode`/`decode` creates a fresh state and
feeds the input through it in chunks of `chunk_frames` frames, so memory does not grow with
the length and the result cannot drift from frame-by-frame streaming. Within a call the SEANets
take the audio in pieces of `seanet_chunk_frames` frames: their activations are what grows with
a chunk (64 channels at 24 kHz), while the transformers' few-row GEMMs run faster the more rows
a call has (a 60 s encode's transformer: 2.3 s in 2 s chunks, 1.2-1.35 s in 10 s chunks).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..config import MimiConfig
from ..modules.conv import CausalConv1d, CausalConvTranspose1d, ConvState, ConvTrState
from ..modules.gemm import EmptyWhenCopied, numba_paused
from ..modules.seanet import SeanetDecoder, SeanetEncoder, SeanetState
from ..modules.transformer import Transformer, TransformerState
from ..quantization.rvq import SplitResidualVQ
from .speedups import Speedups, apply_speedups

DEFAULT_CHUNK_FRAMES = 125  # 10 s per whole-file chunk: the transformers' 250-step context
DEFAULT_SEANET_CHUNK_FRAMES = 25  # 2 s: the SEANets take a longer call in pieces this long


@dataclass
class EncoderState:
    """Streaming state of the encode path (audio -> codes)."""

    seanet: SeanetState
    transformer: TransformerState
    downsample: ConvState

    def reset(self) -> None:
        """Back to the start of a stream."""
        self.seanet.reset()
        self.transformer.reset()
        self.downsample.reset()


@dataclass
class DecoderState:
    """Streaming state of the decode path (codes -> audio)."""

    upsample: ConvTrState
    transformer: TransformerState
    seanet: SeanetState

    def reset(self) -> None:
        """Back to the start of a stream."""
        self.upsample.reset()
        self.transformer.reset()
        self.seanet.reset()


@dataclass
class MimiState:
    """Streaming state of a whole Mimi model; encoder and decoder streams are independent."""

    batch_size: int
    encoder: EncoderState
    decoder: DecoderState

    def reset(self) -> None:
        """Back to the start of both streams."""
        self.encoder.reset()
        self.decoder.reset()


class MimiModel(nn.Module):
    """Mimi neural speech codec (24 kHz mono <-> 12.5 Hz frames of up to 32 codes).

    Args:
        config: the architecture; MimiConfig() is the official Mimi.
        num_codebooks: codebooks `encode` returns by default (8 in the official use).
    """

    def __init__(self, config: MimiConfig | None = None, num_codebooks: int = 8) -> None:
        super().__init__()
        self.config = config = config if config is not None else MimiConfig()
        self._num_codebooks = 0
        stride = config.resample_stride
        dim = config.seanet.dimension
        self.encoder = SeanetEncoder(config.seanet)
        self.encoder_transformer = Transformer(config.transformer)
        self.downsample = CausalConv1d(dim, dim, 2 * stride, stride=stride, bias=False,
                                       pad_mode="replicate")
        self.quantizer = SplitResidualVQ(config.quantizer)
        self.upsample = CausalConvTranspose1d(dim, dim, 2 * stride, stride=stride, groups=dim,
                                              bias=False)
        self.decoder_transformer = Transformer(config.transformer)
        self.decoder = SeanetDecoder(config.seanet)
        self.num_codebooks = num_codebooks
        #: frames per call when whole-file `encode`/`decode` feed the streaming code (bounds memory)
        self.chunk_frames = DEFAULT_CHUNK_FRAMES
        #: frames per SEANet call within a longer call (their activations are the large ones)
        self.seanet_chunk_frames = DEFAULT_SEANET_CHUNK_FRAMES
        self._stream: MimiState | None = None
        self._speedups = Speedups()
        self._decoder_precision = "fp32"
        apply_speedups(self, self._speedups)
        # loading replaces the parameters (assign=True) or their values: lay them out again
        self.register_load_state_dict_post_hook(lambda module, _keys: apply_speedups(module, module._speedups))

    # ----------------------------------------------------------------- properties
    @property
    def sample_rate(self) -> int:
        """Audio sample rate in Hz (24000)."""
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Codec frames per second (12.5)."""
        return self.config.frame_rate

    @property
    def frame_size(self) -> int:
        """Audio samples per frame (1920)."""
        return self.config.frame_size

    @property
    def channels(self) -> int:
        """Audio channels (1)."""
        return self.config.channels

    @property
    def cardinality(self) -> int:
        """Entries per codebook (2048)."""
        return self.config.quantizer.bins

    @property
    def total_codebooks(self) -> int:
        """Codebooks the quantizer has (32)."""
        return self.config.quantizer.n_q

    @property
    def num_codebooks(self) -> int:
        """Codebooks `encode` returns when not told otherwise."""
        return self._num_codebooks

    @num_codebooks.setter
    def num_codebooks(self, n: int) -> None:
        self._num_codebooks = self._check_num_codebooks(n)

    @property
    def speedups(self) -> Speedups:
        """The speedups in use (see `set_speedups`)."""
        return self._speedups

    def set_speedups(self, speedups: Speedups | None) -> None:
        """Choose the speedups: Speedups() = the default set, Speedups.all(), None = the plain path.

        They change how results are computed, not the codes (audio moves by < 1e-6).
        Not inside `streaming()`.

        Args:
            speedups: a Speedups, or None for Speedups.none().
        """
        if speedups is None:
            speedups = Speedups.none()
        if not isinstance(speedups, Speedups):
            raise ValueError(f"speedups: expected a Speedups or None, got {type(speedups).__name__}")
        if self._stream is not None:
            raise ValueError("set_speedups() inside streaming(): leave the streaming context first")
        self._speedups = speedups
        apply_speedups(self, speedups)

    @property
    def decoder_precision(self) -> str:
        """"fp32" (default) or "fp16": see `set_decoder_precision`."""
        return self._decoder_precision

    def set_decoder_precision(self, precision: str) -> None:
        """Let the decoder's weight-bound GEMMs read float16 weights ("fp16") or not ("fp32").

        With "fp16" the decoder's few-step convolutions (the upsample and the SEANet layers
        that the `matmul_conv` speedup runs as one GEMM: all of a streamed frame's wide ones)
        multiply fp32 activations by float16 copies of their weights, accumulating in fp32
        (FBGEMM, x86-64 CPU inference). They read half the bytes: streamed decoding gets about
        1.15x faster (docs/performance.md). The decoder transformer stays fp32: its fused
        numba kernel (the `fused_layer` speedup) runs faster than FBGEMM's float16 GEMMs.
        Codes never change (encoding does not use the decoder); the audio does, by about
        1e-3 relative (docs/performance.md gives the measured SNR).

        Args:
            precision: "fp32" or "fp16".
        Raises:
            ValueError: another value, or "fp16" on a PyTorch build without FBGEMM.
        """
        from ..modules.gemm import check_precision

        precision = check_precision(precision)
        for part in (self.upsample, self.decoder):
            for m in part.modules():
                if hasattr(m, "gemm_precision"):
                    m.gemm_precision = precision
        self._decoder_precision = precision

    @property
    def is_streaming(self) -> bool:
        """True inside `with model.streaming(...)`."""
        return self._stream is not None

    def _check_num_codebooks(self, n: object) -> int:
        lo = self.config.quantizer.n_q_semantic
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= self.total_codebooks:
            raise ValueError(f"num_codebooks {n!r}: expected an int in {lo}..{self.total_codebooks}")
        return n

    def _param(self) -> torch.Tensor:
        return self.encoder.model[0].weight

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int, ring_cache: bool = False) -> MimiState:
        """A fresh streaming state for `batch_size` streams (what `streaming()` uses).

        Args:
            batch_size: number of parallel streams B.
            ring_cache: reproduce the reference's streaming attention cache (see `streaming`).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: expected a positive int")
        enc = EncoderState(self.encoder.init_state(batch_size),
                           self.encoder_transformer.init_state(batch_size, ring_cache),
                           self.downsample.init_state(batch_size))
        dec = DecoderState(self.upsample.init_state(batch_size),
                           self.decoder_transformer.init_state(batch_size, ring_cache),
                           self.decoder.init_state(batch_size))
        return MimiState(batch_size, enc, dec)

    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1, ring_cache: bool = False) -> Iterator[MimiState]:
        """Stream: inside, `encode` takes whole frames and `decode` any frames, state kept.

        Args:
            batch_size: number of parallel streams B; every call must use this B.
            ring_cache: False (default): the output equals the whole-input path at any length.
                True: reproduce kyutai's streaming exactly, whose 250-entry ring cache makes
                its output drift from its own whole-input output after 250 steps (10 s).
        Yields:
            the MimiState (call `.reset()` on it to start new streams).
        """
        if self._stream is not None:
            raise ValueError("already streaming: streaming() contexts cannot be nested")
        self._stream = self.init_state(batch_size, ring_cache)
        try:
            yield self._stream
        finally:
            self._stream = None

    @torch.no_grad()
    def warmup(self, batch_size: int = 1) -> None:
        """Stream one frame of silence through encode and decode on a throwaway state, so
        that the first real streamed frame does not pay for one-time work: compiling the
        numba kernels of the speedups for this thread budget (~30 s on 2 cores the first time
        after installing, ~1 s from numba's cache after that) and packing weights. Servers
        call it at start. Outside `streaming()` only; changes no result.

        Args:
            batch_size: the batch size the streams will use.
        """
        if self._stream is not None:
            raise ValueError("warmup() inside streaming(): call it before opening the stream")
        p = self._param()
        with self.streaming(batch_size):
            self.decode(self.encode(torch.zeros(batch_size, self.channels, self.frame_size,
                                                dtype=p.dtype, device=p.device)))

    def copy_sharing_weights(self) -> MimiModel:
        """A model for another stream (a server's session): its own module objects, so its own
        `streaming()` state, while the parameters, buffers and what the speedups derive from
        them (packed and reordered weights, the SEANet programs, the distance tables) are this
        model's own objects. Memory holds them once however many copies stream, and after
        `warmup()` on this model a copy's first frame costs what any frame does (a plain deep
        copy rebuilds them: ~200-450 ms for the full-size model). A weight changed on one is
        changed on both. Streams of the copies may run in separate threads.

        Raises:
            ValueError: called inside `streaming()`.
        """
        if self._stream is not None:
            raise ValueError("copy_sharing_weights() inside streaming(): copy the model before opening the stream")
        memo: dict[int, object] = {}
        for module in self.modules():
            for value in (*module._parameters.values(), *module._buffers.values(), *vars(module).values()):
                if isinstance(value, (torch.Tensor, EmptyWhenCopied)):
                    memo[id(value)] = value
        return copy.deepcopy(self, memo)

    # --------------------------------------------------------------------- checks
    def _check_wav(self, wav: object) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor):
            raise ValueError(f"wav: expected a torch.Tensor [B, 1, T], got {type(wav).__name__}")
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"wav shape {tuple(wav.shape)}: expected [B, {self.channels}, T]")
        if not wav.dtype.is_floating_point:
            raise ValueError(f"wav dtype {wav.dtype}: expected a floating point tensor")
        if wav.shape[0] == 0:
            raise ValueError("wav batch size 0: expected B >= 1")
        p = self._param()
        return wav.to(device=p.device, dtype=p.dtype)

    def _check_codes(self, codes: object) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes: expected a torch.Tensor [B, K, F], got {type(codes).__name__}")
        if codes.dim() != 3:
            raise ValueError(f"codes shape {tuple(codes.shape)}: expected [B, K, F]")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes dtype {codes.dtype}: expected an integer tensor")
        if codes.shape[0] == 0:
            raise ValueError("codes batch size 0: expected B >= 1")
        lo = self.config.quantizer.n_q_semantic
        if not lo <= codes.shape[1] <= self.total_codebooks:
            raise ValueError(f"codes have K={codes.shape[1]} codebooks: expected {lo}..{self.total_codebooks}")
        if codes.numel():
            cmin, cmax = int(codes.min()), int(codes.max())
            if cmin < 0 or cmax >= self.cardinality:
                bad = cmin if cmin < 0 else cmax
                raise ValueError(f"code value {bad}: expected codes in 0..{self.cardinality - 1}")
        return codes.to(device=self._param().device, dtype=torch.long)

    def _check_batch(self, b: int) -> None:
        assert self._stream is not None
        if b != self._stream.batch_size:
            raise ValueError(f"batch size {b}: this stream was opened with batch_size "
                             f"{self._stream.batch_size}")

    # --------------------------------------------------------------------- encode
    def _in_pieces(self, seanet: nn.Module, x: torch.Tensor, state: SeanetState,
                   steps_per_frame: int) -> torch.Tensor:
        """A streamed SEANet call over [B, C, T] as consecutive calls of at most
        `seanet_chunk_frames` frames (`steps_per_frame` input steps each), joined in time."""
        step = max(1, self.seanet_chunk_frames) * steps_per_frame
        if x.shape[-1] <= step:
            return seanet(x, state)
        return torch.cat([seanet(x[..., i: i + step], state) for i in range(0, x.shape[-1], step)], -1)

    def _latent_chunk(self, x: torch.Tensor, state: EncoderState) -> torch.Tensor:
        """[B, 1, T] audio -> [B, D, T / frame_size] the latent the quantizer encodes."""
        emb = self._in_pieces(self.encoder, x, state.seanet, self.frame_size)
        emb = self.encoder_transformer(emb, state.transformer)
        return self.downsample(emb, state.downsample)

    def _encode_chunk(self, x: torch.Tensor, state: EncoderState, n_q: int) -> torch.Tensor:
        return self.quantizer.encode(self._latent_chunk(x, state), n_q)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Encode audio to codes.

        Outside streaming, T may be any length: the audio is padded with zeros at the end
        to whole frames, so F = ceil(T / frame_size). Inside `streaming()`, T must be a
        positive multiple of frame_size and the state carries over to the next call.

        Args:
            wav: [B, 1, T] float audio at `sample_rate`.
            num_codebooks: K, 1..32; None for `self.num_codebooks`.
        Returns:
            codes: [B, K, F] int64 in 0..2047.
        """
        n_q = self.num_codebooks if num_codebooks is None else self._check_num_codebooks(num_codebooks)
        wav = self._check_wav(wav)
        B, _, T = wav.shape
        fs = self.frame_size
        if self._stream is not None:
            self._check_batch(B)
            if T == 0 or T % fs:
                raise ValueError(f"input length {T} is not a positive multiple of the frame size "
                                 f"{fs}; buffer audio to whole frames when streaming")
            return self._encode_chunk(wav, self._stream.encoder, n_q)
        frames = -(-T // fs)
        state = self.init_state(B).encoder
        step = self.chunk_frames * fs
        chunks = []
        with numba_paused():  # few-row kernels: only for a short last chunk, not worth compiling
            for i in range(0, frames * fs, step):
                chunk = wav[..., i: i + step]
                if chunk.shape[-1] % fs:  # the last, partial frame: pad with zeros like the reference
                    chunk = torch.nn.functional.pad(chunk, (0, fs - chunk.shape[-1] % fs))
                chunks.append(self._encode_chunk(chunk, state, n_q))
        if not chunks:
            return torch.zeros(B, n_q, 0, dtype=torch.long, device=wav.device)
        return torch.cat(chunks, dim=-1)

    # --------------------------------------------------------------------- decode
    @torch.no_grad()
    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes to the quantized latent that feeds the decoder.

        Args:
            codes: [B, K, F] int codes in 0..2047, 1 <= K <= 32.
        Returns:
            [B, D, F] float latent (D = 512 for Mimi).
        """
        return self.quantizer.decode(self._check_codes(codes))

    def _decode_chunk(self, codes: torch.Tensor, state: DecoderState) -> torch.Tensor:
        emb = self.quantizer.decode(codes)
        emb = self.upsample(emb, state.upsample)
        emb = self.decoder_transformer(emb, state.transformer)
        return self._in_pieces(self.decoder, emb, state.seanet, self.config.resample_stride)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes to audio; inside `streaming()` the state carries over between calls.

        Args:
            codes: [B, K, F] int codes in 0..2047, 1 <= K <= 32.
        Returns:
            wav: [B, 1, F * frame_size] float audio.
        """
        codes = self._check_codes(codes)
        B, _, F = codes.shape
        if self._stream is not None:
            self._check_batch(B)
            if F == 0:
                p = self._param()
                return torch.zeros(B, self.channels, 0, dtype=p.dtype, device=p.device)
            return self._decode_chunk(codes, self._stream.decoder)
        p = self._param()
        out = torch.empty(B, self.channels, F * self.frame_size, dtype=p.dtype, device=p.device)
        state = self.init_state(B).decoder
        n = self.chunk_frames
        with numba_paused():  # as in encode
            for i in range(0, F, n):
                j = min(F, i + n)
                out[..., i * self.frame_size: j * self.frame_size] = self._decode_chunk(codes[..., i:j], state)
        return out
