"""`labpgt view RUN`: a live web page of an acquisition, a calibration or a training run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from labpgt.errors import UserError

console = Console(stderr=True)


def view_command(
    run: Path = typer.Argument(
        ..., help="Run to show: an acquire or calibrate file (.h5) or a train run directory."
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help="Port to serve on (default 5006, or the next free one).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. The default serves this machine only; from another "
        "machine use an SSH tunnel (ssh -L 5006:localhost:5006 bench-pc), see docs/live-view.md.",
    ),
    allow_origin: list[str] = typer.Option(
        [],
        "--allow-origin",
        help="Extra HOST:PORT a browser may load the page from (e.g. localhost:8000 when an "
        "SSH tunnel maps another local port).",
    ),
) -> None:
    """Serve a live web page of a run: spectrum, settings, response or training curves."""
    import importlib.util

    from labpgt.live.source import RunSource

    source = RunSource.open(run)  # one line for a missing, half-written or foreign file
    if importlib.util.find_spec("bokeh") is None:
        raise UserError("labpgt view needs the live view's extra: pip install 'labpgt[live]'")
    from labpgt.live.dashboard import serve

    serve(
        source,
        host=host,
        port=port,
        allow_origin=allow_origin,
        announce=lambda text: console.print(
            text + " (Ctrl-C stops it)", highlight=False, soft_wrap=True
        ),
    )


def register(app: typer.Typer) -> None:
    app.command("view")(view_command)
