"""Run the labpgt entry point in process, as a test sees a user's terminal."""

from __future__ import annotations

import pytest

from labpgt.cli.app import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, standard output, standard error on one line) of ``labpgt ARGS``."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())
