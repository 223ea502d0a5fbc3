"""`labpgt train --calibration CAL --drift-every N`: the calibration's drift check between
epochs, on the embedded virtual bench (real loopback SCPI), its shots apart from the budget."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from labpgt.cli.app import main
from labpgt.training.config import make_config
from labpgt.training.environment import open_backend
from labpgt.training.trainer import TrainHooks, train

DRIFT_COLUMNS = ("drift_frequency_mhz", "drift_level_db", "drift_within_tolerance")
HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
FIELD_STEP_OE = 2.0
"""A field step the drift check must see: ≈ 8 MHz of comb shift (tests/test_calibration.py)."""


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small-grid calibration of the embedded virtual bench (seed 0), shared."""
    path = tmp_path_factory.mktemp("calibration") / "calib.h5"
    main(["calibrate", "--grid", "small", "--no-plots", "--out", str(path)])
    return path


def _train_args(calib: Path, out: Path, *extra: str) -> list[str]:
    """`labpgt train` of iris by the boundary method with ``calib``, into ``out``."""
    task = ["--task", "iris", "--method", "boundary"]
    return ["train", *task, "--calibration", str(calib), "--out", str(out), *extra]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_drift_checks_fill_their_columns_and_stay_out_of_the_budget(
    calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 4000 queries: epoch 1 (2280) and part of epoch 2, with and without drift checks
    budget = ["--epochs", "3", "--max-queries", "4000"]
    main(_train_args(calib, tmp_path / "plain", *budget))
    capsys.readouterr()
    main(_train_args(calib, tmp_path / "drift", *budget, "--drift-every", "1"))
    screen = " ".join(capsys.readouterr().out.split())

    plain, drift = _rows(tmp_path / "plain"), _rows(tmp_path / "drift")
    assert not set(DRIFT_COLUMNS) & set(plain[0])  # a run without checks: the file as before
    assert [r["queries"] for r in drift] == [r["queries"] for r in plain]
    assert [r["epoch"] for r in drift] == ["0", "1", "2"]
    assert all(r[c] == "nan" for r in drift[:1] for c in DRIFT_COLUMNS)  # epoch 0: no check
    for row in drift[1:]:
        f_mhz, l_db = float(row["drift_frequency_mhz"]), float(row["drift_level_db"])
        assert math.isfinite(f_mhz) and abs(f_mhz) < 1.0, row
        assert math.isfinite(l_db) and abs(l_db) < 1.0, row
        assert row["drift_within_tolerance"] == "1"
    per_check = int(drift[1]["drift_queries"])
    assert per_check > 0 and int(drift[2]["drift_queries"]) == 2 * per_check

    assert "drift check after epoch 1: frequency drift" in screen
    assert "within tolerance" in screen
    assert f"{2 * per_check} drift queries, not in the training budget" in screen
    summary = json.loads((tmp_path / "drift" / "summary.json").read_text())
    assert summary["stop_reason"] == "query budget reached"
    assert summary["drift_checks"]["checks"] == 2
    assert summary["drift_checks"]["drift_queries"] == 2 * per_check
    assert (
        "drift_queries"
        not in json.loads((tmp_path / "plain" / "summary.json").read_text())["final"]
    )


def test_a_field_step_between_epochs_is_caught_and_stops_the_run(
    calib: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = make_config(
        task="iris",
        method="boundary",
        calibration=str(calib),
        epochs=3,
        drift_every=1,
        on_drift="stop",
        out=str(out),
    )
    with open_backend(config) as backend:
        ring = backend.reservoir.virtual_bench.ring

        def step_the_field(row: object) -> None:
            if row.epoch == 1:  # type: ignore[attr-defined]
                ring.inject_drift(field_oe=FIELD_STEP_OE)

        result = train(config, backend, resume=False, hooks=TrainHooks(on_epoch=step_the_field))

    assert result.stop_reason.startswith("drift beyond tolerance after epoch 2: frequency")
    first, second = result.metrics[1], result.metrics[2]
    assert first.drift_within_tolerance == 1.0 and abs(first.drift_frequency_mhz) < 1.0
    assert second.drift_within_tolerance == 0.0 and abs(second.drift_frequency_mhz) > 4.0
    assert [m.epoch for m in result.metrics] == [0, 1, 2]  # stopped after the epoch
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2


def test_stop_on_drift_ends_the_command_cleanly_with_its_reason(
    calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A calibration taken with the field 2 Oe off: the bench trained on has drifted from it.
    offset = tmp_path / "offset.h5"
    main(["calibrate", "--grid", "small", "--no-plots", "--out", str(offset)]
         + ["--inject-drift-oe", str(FIELD_STEP_OE)])  # fmt: skip
    capsys.readouterr()
    run = tmp_path / "run"
    main(_train_args(offset, run, "--epochs", "3", "--drift-every", "1", "--on-drift", "stop"))
    screen = " ".join(capsys.readouterr().out.split())  # returned: exit code 0

    reason = json.loads((run / "summary.json").read_text())["stop_reason"]
    assert reason.startswith("drift beyond tolerance after epoch 1: frequency")
    assert f"({reason})" in screen
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[1]["drift_within_tolerance"] == "0"
    assert abs(float(rows[1]["drift_frequency_mhz"])) > 1.0
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1

    # the drift checks measure apart from training: a stopped run may go on, warned
    main(_train_args(offset, run, "--epochs", "2", "--drift-every", "1", "--resume"))
    assert "BEYOND TOLERANCE" in " ".join(capsys.readouterr().out.split())
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == "epochs done"
    assert [r["drift_within_tolerance"] for r in _rows(run)] == ["nan", "0", "0"]


def test_a_resumed_fast_sim_run_with_drift_checks_continues_bit_identically(
    tmp_path: Path,
) -> None:
    # A calibration of the in-process ring is one --fast-sim accepts (same reservoir kind).
    sim_calib = tmp_path / "sim.h5"
    main(["calibrate", "--fast-sim", "--grid", "small", "--no-plots", "--out", str(sim_calib)])
    common = ["--fast-sim", "--drift-every", "1", "--lr-schedule", "constant"]
    log = ["--tensorboard", str(tmp_path / "log")] if HAVE_TENSORBOARD else []
    main(_train_args(sim_calib, tmp_path / "whole", *common, "--epochs", "2", *log))
    main(_train_args(sim_calib, tmp_path / "split", *common, "--epochs", "1"))
    main(_train_args(sim_calib, tmp_path / "split", *common, "--epochs", "2", "--resume"))

    clocks = ("wall_s",)
    whole, split = _rows(tmp_path / "whole"), _rows(tmp_path / "split")
    assert [{k: v for k, v in r.items() if k not in clocks} for r in split] == [
        {k: v for k, v in r.items() if k not in clocks} for r in whole
    ]
    assert [r["drift_within_tolerance"] for r in whole] == ["nan", "1", "1"]
    if HAVE_TENSORBOARD:  # the checks' figures are epoch scalars, on the epochs checked
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "log"))
        acc.Reload()
        logged = [(e.step, e.value) for e in acc.Scalars("epoch/drift_frequency_mhz")]
        expected = [(int(r["epoch"]), float(r["drift_frequency_mhz"])) for r in whole[1:]]
        assert [step for step, _ in logged] == [step for step, _ in expected]
        for (_, got), (_, want) in zip(logged, expected, strict=True):
            assert got == pytest.approx(want, rel=1e-5)


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `main(args)` is refused with (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_drift_checks_need_a_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--task", "iris", "--drift-every", "1", "--out", str(tmp_path / "run")]
    assert "--drift-every re-measures the reference settings" in _refused(args, capsys)
    assert "add --calibration" in _refused(args, capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--drift-every", "-1"], "--drift-every -1"),
        (["--drift-every", "1", "--benches", "2"], "it is not supported"),
        (["--drift-every", "1", "--on-drift", "halt"], "--on-drift 'halt'"),
        (["--drift-every", "1", "--drift-tolerance-mhz", "0"], "--drift-tolerance-mhz 0"),
        (["--drift-every", "1", "--drift-tolerance-db", "-1"], "--drift-tolerance-db -1"),
        (["--drift-every", "1", "--fast-sim"], "recalibrate on this bench"),
    ],
)
def test_bad_drift_options_are_one_line(
    calib: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = _train_args(calib, tmp_path / "run", "--epochs", "1", *extra)
    assert message in _refused(args, capsys)
    assert not (tmp_path / "run" / "metrics.csv").exists()  # nothing trained
