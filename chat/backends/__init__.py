"""Chat backends: `echo` (Mimi round trip), `moshi` (the speech LM), `remote` (another server)."""

from __future__ import annotations

from dataclasses import dataclass

from mimi_moshi_chat.backends.base import FRAME_SIZE, ChatBackend, ChatSession, StepOutput

#: Names accepted by `load_backend` and `moshi serve --backend`.
BACKENDS = ("moshi", "echo", "remote")


@dataclass(frozen=True)
class BackendOptions:
    """Where a backend's model comes from; local files override the Hugging Face repo."""

    device: str = "cpu"  # torch device of the models
    hf_repo: str | None = None  # Hugging Face repo of the official files (moshi backend)
    mimi_weights: str | None = None  # local Mimi safetensors
    mimi_config: str | None = None  # local Mimi JSON config (official schema)
    lm_weights: str | None = None  # local Moshi LM safetensors
    lm_config: str | None = None  # local Moshi LM JSON config (official lm_kwargs schema)
    tokenizer: str | None = None  # local SentencePiece model
    remote_url: str | None = None  # server the remote backend relays to
    echo_delay_frames: int = 12  # echo delay in 80 ms frames


def load_backend(name: str, options: BackendOptions) -> ChatBackend:
    """Build a backend by name, loading its models.

    Args:
        name: one of `BACKENDS`.
        options: model files, device, remote URL.

    Raises:
        ValueError: an unknown name or a missing option.
    """
    if name == "echo":
        from mimi_moshi_chat.backends.echo import EchoBackend

        return EchoBackend.from_files(options.mimi_weights, options.mimi_config, device=options.device,
                                      delay_frames=options.echo_delay_frames)
    if name == "moshi":
        from mimi_moshi_chat.backends.moshi import MoshiBackend

        return MoshiBackend.from_options(options)
    if name == "remote":
        from mimi_moshi_chat.backends.remote import RemoteBackend

        if not options.remote_url:
            raise ValueError("the remote backend needs --remote-url ws://host:port")
        return RemoteBackend(options.remote_url)
    raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "FRAME_SIZE", "BackendOptions", "ChatBackend", "ChatSession", "StepOutput", "load_backend"]
