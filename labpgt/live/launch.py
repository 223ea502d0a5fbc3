"""``--live`` on acquire, calibrate and train: start the view in its own process.

The view runs in a separate process (its own session, lower priority), never in a
thread of the measuring one; it reads the run's output as `labpgt view` would and the
run itself does not change. The URL is printed before the run starts.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from labpgt.errors import UserError

LIVE_OPTION = typer.Option(
    False,
    "--live",
    help="Also serve a live web page of this run (labpgt view) in a separate process; "
    "prints its URL. Needs labpgt\\[live].",
)
"""The ``--live`` flag of acquire, calibrate and train (one definition for the three)."""

STARTED: list[subprocess.Popen] = []
"""The views started by this process (kept: they outlive it, and are not reaped here)."""


def start_live_view(path: Path, kind: str, *, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start ``python -m labpgt.live`` on ``path`` (``kind``: acquire/calibration/train).

    Prints one line with the URL and the view's process id. The view waits for the file
    when the run has not created it yet, and stops a while after the run ended when no
    page is open (`labpgt.live.dashboard.LINGER_S`).
    """
    if importlib.util.find_spec("bokeh") is None:
        raise UserError("--live needs the live view's extra: pip install 'labpgt[live]'")
    from labpgt.live.dashboard import DEFAULT_PORT, free_port, url_for

    port = free_port(host, DEFAULT_PORT)
    log = Path(tempfile.gettempdir()) / f"labpgt-view-{os.getpid()}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labpgt.live",
                str(Path(path).resolve()),
                "--kind",
                kind,
                "--host",
                host,
                "--port",
                str(port),
                "--parent-pid",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C on the run does not reach the view
        )
    STARTED.append(proc)
    busy = f"; port {DEFAULT_PORT} is in use" if port != DEFAULT_PORT else ""
    print(
        f"live view: {url_for(host, port)} (view process {proc.pid}, log {log}{busy})",
        file=sys.stderr,
        flush=True,
    )
    return proc
