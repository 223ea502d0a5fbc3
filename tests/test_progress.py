"""Progress that tells the truth, read off the terminal the real commands draw on.

Each command's console is replaced by one that records a terminal 80 characters wide
(every refresh of the bar is in the recording); the commands run for real on the
embedded virtual bench.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from labpgt.cli.app import main
from labpgt.cli.progress import advance_to, make_progress, new_task
from labpgt.training.trainer import planned_steps

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen(monkeypatch: pytest.MonkeyPatch, module: object) -> io.StringIO:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    monkeypatch.setattr(module, "console", console)
    return buffer


def _frames(buffer: io.StringIO) -> str:
    return ANSI.sub("", buffer.getvalue().replace("\r", "\n"))


def _run(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, args


def test_acquire_bar_knows_its_total_and_never_passes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from labpgt.cli.commands import acquire as command

    screen = _screen(monkeypatch, command)
    sweeps = ["--sweep", "drive_hz=2.0e9:2.3e9:60", "--sweep", "bias_a=1.7,1.9"]
    _run("acquire", *sweeps, "--repeats", "2", "--chunk", "8", "--out", str(tmp_path / "r.h5"))
    text = _frames(screen)
    counts = re.findall(r"(\d+)/(\S+) shots", text)
    assert counts, text
    assert {total for _, total in counts} == {"240"}  # from the first frame on: never "?"
    assert all(int(done) <= 240 for done, _ in counts)
    assert ("240", "240") in counts
    assert "ETA" in text and "instr." in text
    assert "…" not in text


def test_resumed_acquire_counts_from_the_shots_already_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from labpgt.acquisition import acquire, grid_inputs, parse_sweep
    from labpgt.cli.commands import acquire as command
    from labpgt.embedded import embedded_bench
    from labpgt.features import FeatureSpec

    out = tmp_path / "r.h5"

    def stop(done: int, total: int, instrument_s: float) -> None:
        if done >= 16:
            raise KeyboardInterrupt

    inputs = grid_inputs([parse_sweep("drive_hz=2.0e9:2.3e9:40")])
    with (
        embedded_bench(seed=0, features=FeatureSpec(bins=1)) as reservoir,
        pytest.raises(KeyboardInterrupt),
    ):
        acquire(reservoir, out, inputs, chunk_shots=8, progress=stop)
    screen = _screen(monkeypatch, command)
    _run("acquire", "--resume", "--allow-bench-change", "--out", str(out), "--chunk", "8")
    counts = re.findall(r"(\d+)/(\S+) shots", _frames(screen))
    assert counts[0] == ("16", "40") and counts[-1] == ("40", "40")
    assert all(total == "40" and int(done) >= 16 for done, total in counts)


def test_calibrate_shows_the_surrogate_fit_and_tables_fit_80_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from labpgt.cli.commands import calibrate as command

    screen = _screen(monkeypatch, command)
    monkeypatch.setenv("COLUMNS", "80")  # the result tables' own console
    figures = _collect_figures(monkeypatch)
    capsys.readouterr()
    _run(
        "calibrate",
        "--out",
        str(tmp_path / "c.h5"),
        "--grid",
        "small",
        "--surrogate-steps",
        "400",
        "--no-noise",
    )
    bars = _frames(screen)
    fit = re.findall(r"surrogate fit\s.*?(\d+)/(\d+) steps", bars)
    assert fit and fit[0][1] == "400" and ("400", "400") in fit
    assert all(int(done) <= 400 for done, _ in fit)
    for stage in ("bias sweep", "response grid", "surrogate sampling", "feature maps", "plots"):
        assert stage in bars, stage
    tables = capsys.readouterr().out
    assert "calibration →" in tables and "feature maps" in tables
    assert "…" not in tables
    assert max(len(line) for line in tables.splitlines()) <= 80
    flat = " ".join(tables.replace("│", " ").split())
    assert "surrogate error, whole drive grid at the operating bias" not in tables  # folded
    assert "whole drive grid" in flat
    # the plots: a title, and units on every axis that carries data
    assert len(figures) == 3
    for figure in figures:
        _check_labelled(figure)


def _collect_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure closed from now on (the plots close each after saving)."""
    import matplotlib.pyplot as plt

    figures: list = []
    close = plt.close

    def keep(fig: object = None) -> None:
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return figures


def _check_labelled(figure: object) -> None:
    assert figure._suptitle is not None and figure._suptitle.get_text().strip()
    for ax in figure.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel().endswith(")"), ax.get_xlabel()
        assert re.search(r"\([^)]+\)$", ax.get_ylabel()) or ax.get_ylabel() == "", ax
        if ax.get_ylabel() == "":  # a panel sharing its row's y axis
            assert ax.get_shared_y_axes().get_siblings(ax) != [ax]


def test_run_png_is_titled_with_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "r.h5"
    _run("acquire", "--sweep", "bias_a=1.7,1.9", "--out", str(out))
    figures = _collect_figures(monkeypatch)
    _run("show", str(out), "--plot", str(tmp_path / "r.png"))
    (figure,) = figures
    _check_labelled(figure)
    assert "mean spectrum per setting" in figure._suptitle.get_text()
    assert len(figure.axes[0].lines) == 2  # two settings: two spectra, not a one-row strip


def test_a_count_past_the_estimate_raises_the_total():
    progress = Progress(console=Console(file=io.StringIO()))
    task = progress.add_task("x", total=46)
    advance_to(progress, task, 47)
    assert progress.tasks[0].total == 47 and progress.tasks[0].completed == 47


def test_a_phase_without_count_shows_no_question_mark():
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    with make_progress(console) as progress:
        new_task(progress, "preparing", None, unit="", instrument_s=None)
        progress.refresh()
    assert "?" not in ANSI.sub("", buffer.getvalue())


def test_planned_steps_match_a_budget_with_a_short_last_batch():
    # 100 rows in batches of 32: 32, 32, 32, 4 rows; a step costs 10 queries per row.
    def cost(rows: int) -> int:
        return 10 * rows

    assert planned_steps(100, 32, 3, cost, None) == 12
    # 2000 queries: each epoch costs 320 + 320 + 320 + 40 = 1000, so two whole epochs (8
    # steps) fit exactly and the first step of the third would pass: 8, where 2000 // 320
    # (the old count) says 6, and the bar showed 8/6.
    assert planned_steps(100, 32, 3, cost, 2000) == 8
    assert planned_steps(100, 32, 3, cost, 1999) == 7
    assert planned_steps(100, 32, 3, cost, 2000) > 2000 // cost(32)


def test_ctrl_c_is_acknowledged_on_screen(tmp_path: Path):
    """Ctrl-C during a fast-sim training run (no bench, so no bench signal handler)."""
    cmd = [sys.executable, "-m", "labpgt", "train", "--task", "digits", "--fast-sim"]
    cmd += ["--epochs", "50", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(8)  # imports, task, bench: well inside the run
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
