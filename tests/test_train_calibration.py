"""`labpgt train --calibration`: a calibration from the embedded bench normalises training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from labpgt.calibration import load_calibration

from labpgt.cli.app import main


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small-grid calibration on the embedded virtual bench, shared by the tests."""
    path = tmp_path_factory.mktemp("calibration") / "calib.h5"
    main(["calibrate", "--grid", "small", "--out", str(path)])
    return path


def test_calibration_file_sets_the_feature_normalisation(
    calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    main(
        [
            "train",
            "--task",
            "iris",
            "--method",
            "boundary",
            "--calibration",
            str(calib),
            "--max-queries",
            "2000",
            "--out",
            str(run),
        ]
    )
    out = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"featurenormalisationfrom{calib}" in out
    assert "warm-upbatch" not in out

    cal = load_calibration(calib)
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    torch.testing.assert_close(
        state["reservoir.normaliser.mean"].reshape(-1),
        torch.as_tensor(cal.feature_mean).reshape(-1).to(state["reservoir.normaliser.mean"]),
    )
    torch.testing.assert_close(
        state["reservoir.normaliser.std"].reshape(-1),
        torch.as_tensor(cal.feature_std).reshape(-1).to(state["reservoir.normaliser.std"]),
    )


def test_calibration_from_the_bench_is_refused_on_fast_sim(
    calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--task",
                "iris",
                "--fast-sim",
                "--calibration",
                str(calib),
                "--max-queries",
                "2000",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert exit_info.value.code == 2
    assert "recalibrate on this bench" in " ".join(capsys.readouterr().err.split())
