"""Shared test configuration."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cli_errors_follow_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the CLI's error console write to the current sys.stderr (capsys) in every test.

    Rich resolves sys.stderr at each write only while the console's ``_file`` is None;
    setting ``_file`` (not the ``file`` property) keeps monkeypatch's undo from pinning
    the console to a finished test's capture stream.
    """
    from labpgt.cli import app

    monkeypatch.setattr(app.err_console, "_file", None)
