"""`moshi serve`: the full-duplex chat server (websocket API + web page)."""

from __future__ import annotations

import click

from mimi_moshi_cli._app import fail
from mimi_moshi_cli._options import model_file_options


@click.command()
@click.option("--backend", type=click.Choice(["moshi", "echo", "remote"]), default="moshi", show_default=True,
              help="moshi: the speech LM; echo: your voice back through Mimi; remote: relay to another server.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8998, show_default=True, help="Port (0: any free one).")
@click.option("--device", default="cpu", show_default=True, help="Torch device of the models, e.g. cuda.")
@model_file_options
@click.option("--echo-delay", type=click.IntRange(0, 1000), default=12, show_default=True,
              help="Echo backend: delay in 80 ms frames.")
@click.option("--ssl", "ssl_dir", type=click.Path(exists=True, file_okay=False),
              help="Serve https/wss with DIR/cert.pem and DIR/key.pem.")
@click.option("--max-sessions", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Sessions served at once; more get an error.")
@click.option("-v", "--verbose", is_flag=True, help="Log every frame.")
def serve(backend: str, host: str, port: int, device: str, hf_repo: str | None, mimi_weights: str | None,
          mimi_config: str | None, lm_weights: str | None, lm_config: str | None, tokenizer: str | None,
          remote_url: str | None, echo_delay: int, ssl_dir: str | None, max_sessions: int, verbose: bool) -> None:
    """Serve full-duplex chat at http://HOST:PORT/ (web page) and ws://HOST:PORT/api/chat."""
    import logging
    import sys

    from rich.logging import RichHandler

    from mimi_moshi_chat.backends import BackendOptions, load_backend
    from mimi_moshi_chat.server import run_server

    if sys.stderr.isatty():
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                            handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if backend == "remote" and not remote_url:
        fail("--backend remote needs --remote-url ws://host:port")
    options = BackendOptions(device=device, hf_repo=hf_repo, mimi_weights=mimi_weights, mimi_config=mimi_config,
                             lm_weights=lm_weights, lm_config=lm_config, tokenizer=tokenizer, remote_url=remote_url,
                             echo_delay_frames=echo_delay)
    run_server(load_backend(backend, options), host=host, port=port, ssl_dir=ssl_dir, max_sessions=max_sessions)
