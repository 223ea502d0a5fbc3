"""Helpers several test modules share: the labpgt entry point run in process, as a test sees
a user's terminal, a tiny CSV data set and the shot counter of a run file being written."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from labpgt.cli.app import main


def exit_code(argv: list[str]) -> int:
    """The exit code of ``labpgt ARGV`` (0 when it returns normally, 1 for a message exit)."""
    try:
        main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, standard output, standard error on one line) of ``labpgt ARGS``."""
    capsys.readouterr()
    code = exit_code(list(args))
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """(exit code, standard error on one line) of ``labpgt ARGS``."""
    code, _, err = run_cli(capsys, *args)
    return code, err


def small_run(path: Path) -> Path:
    """A finished 6-shot run file of the embedded bench (noise off), written by `labpgt acquire`."""
    code = exit_code(
        ["acquire", "--sweep", "drive_hz=2.0e9:2.3e9:6", "--no-noise", "--out", str(path)]
    )
    assert code == 0, f"labpgt acquire exited {code}"
    return path


def cli_lines(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    """(exit code, the lines of standard error then standard output) of ``labpgt ARGV``."""
    capsys.readouterr()
    code = exit_code(argv)
    captured = capsys.readouterr()
    return code, (captured.err + captured.out).splitlines()


def stopped_acquire(out: Path, sweep: str, *, seed: int, stop_after: int, chunk_shots: int) -> None:
    """A run file left half done: the real acquire on the embedded bench, its shot list cut by
    Ctrl-C once ``stop_after`` shots are done."""
    from labpgt.acquisition import acquire, grid_inputs, parse_sweep
    from labpgt.embedded import embedded_bench
    from labpgt.features import FeatureSpec

    def stop(done: int, total: int, instrument_s: float) -> None:
        if done >= stop_after:
            raise KeyboardInterrupt

    inputs = grid_inputs([parse_sweep(sweep)])
    with (
        embedded_bench(seed=seed, features=FeatureSpec(bins=1)) as reservoir,
        pytest.raises(KeyboardInterrupt),
    ):
        acquire(reservoir, out, inputs, chunk_shots=chunk_shots, progress=stop)


def tiny_csv(path: Path) -> Path:
    """A 48-row, 3-column, 3-class CSV (header ``a,b,c,label``), the same every time."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    rows = [f"{a:.4f},{b:.4f},{c:.4f},{int(t)}" for (a, b, c), t in zip(x.tolist(), y, strict=True)]
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return path


def shots_done(path: Path) -> int:
    """Shots marked done in a run file another process may be writing (0 before it exists)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.asarray(f["shots/done"][...]).sum())
    except (OSError, KeyError):
        return 0
