"""`labpgt calibrate` end to end on the embedded virtual bench (small grid), and bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import h5py
import pytest
from cli_runner import cli_error, exit_code, run_cli
from labpgt.calibration import load_calibration

from labpgt.catalog import inspect_run
from labpgt.live.source import RunSource

SMALL = ["--grid", "small", "--surrogate-steps", "200", "--seed", "1"]


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "calib.h5"
    assert exit_code(["calibrate", "--out", str(out), *SMALL]) == 0
    return out


def test_calibrate_writes_file_and_plots(calib, capsys):
    cal = load_calibration(calib)
    assert cal.summary["instrument_time_s"] > 0 and cal.summary["wall_s"] > 0
    snap = cal.snapshot
    assert snap["reservoir"] == "instrument"
    assert snap["bench"]["analyzer"]["identity"]["model"] == "N9020A"
    assert snap["provenance"]["grid"] == "small"
    # kernel features (the default) carry no drive bin: the calm window cannot be told
    # apart, and the file and the summary say which window was used
    with h5py.File(calib, "r") as h5:
        assert json.loads(h5.attrs["operating"])["window"] == "sensitivity"
    for name in ("response.png", "hysteresis.png", "surrogate.png"):
        png = calib.parent / "calib_plots" / name
        assert png.stat().st_size > 10_000, name


def test_check_passes_without_drift_and_fails_with_injected_drift(calib, capsys):
    assert exit_code(["calibrate", "--check", str(calib), "--seed", "1"]) == 0
    calm = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calm["within_tolerance"] and abs(calm["frequency_drift_mhz"]) < 1.0
    code = exit_code(["calibrate", "--check", str(calib), "--seed", "1", "--inject-drift-oe", "3"])
    drifted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1
    assert not drifted["within_tolerance"] and drifted["frequency_drift_mhz"] > 6.0
    # a tolerance wide enough lets the same drift pass
    wide = ["--tolerance-mhz", "50", "--tolerance-db", "20", "--inject-drift-oe", "3"]
    assert exit_code(["calibrate", "--check", str(calib), "--seed", "1", *wide]) == 0


def test_refuses_file_from_another_bench(calib, tmp_path, capsys):
    other = tmp_path / "other.h5"
    shutil.copy(calib, other)
    with h5py.File(other, "r+") as h5:
        snap = json.loads(h5.attrs["snapshot"])
        snap["bench"]["analyzer"]["identity"]["serial"] = "MY99999999"
        h5.attrs["snapshot"] = json.dumps(snap)
    assert exit_code(["calibrate", "--check", str(other)]) == 2
    err = capsys.readouterr().err
    assert "another bench" in err and "MY99999999" in err


def test_refuses_incompatible_version(calib, tmp_path, capsys):
    old = tmp_path / "old.h5"
    shutil.copy(calib, old)
    with h5py.File(old, "r+") as h5:
        h5.attrs["format"] = "labpgt-calibration/0"
    assert exit_code(["calibrate", "--check", str(old)]) == 2
    assert "labpgt-calibration/0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --out"),
        (["--grid", "huge", "--out", "x.h5"], "--grid must be one of"),
        (["--check", "missing.h5"], "does not exist"),
        (["--check", "c.h5", "--tolerance-mhz", "0"], "must be > 0"),
        (["--surrogate", "spline", "--out", "x.h5"], "--surrogate must be one of"),
        (["--window", "widest", "--out", "x.h5"], "--window must be one of"),
    ],
)
def test_bad_input_is_refused(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert exit_code(["calibrate", *args]) == 2
    assert message in capsys.readouterr().err


def test_refuses_to_overwrite(calib, capsys):
    assert exit_code(["calibrate", "--out", str(calib), *SMALL]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_calibration_on_a_bench_file_stores_its_metadata_table(tmp_path):
    import json

    import h5py
    from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
    from labpgt.sim.params import RingParams
    from labpgt.sim.ring import RingModel
    from labpgt.sim.virtual import VirtualBench

    out = tmp_path / "calib.h5"
    with VirtualBench(RingModel(RingParams(noise=False, drift=False), seed=1)) as vb:
        cfg = bench_config_from_resources(vb.resources, settle={"wait": False})
        table = {"operator": "bench owner", "magnet": "M2"}
        bench = dump_bench(cfg.model_copy(update={"metadata": table}), tmp_path / "bench.toml")
        args = ["calibrate", "--bench", str(bench), "--out", str(out), "--grid", "small"]
        assert exit_code([*args, "--surrogate-steps", "20", "--no-plots", "--operator", "me"]) == 0
    with h5py.File(out, "r") as f:
        meta = json.loads(f["entry"].attrs["metadata"])
    assert meta["operator"] == "me" and meta["extra"] == {"magnet": "M2"}


def _calibrate_process(out, *extra: str):
    """A real `labpgt calibrate` on the embedded bench (small grid), in its own process."""
    argv = [sys.executable, "-m", "labpgt", "calibrate", "--out", str(out), *SMALL, *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _shots_seen(source) -> tuple[int, int, str] | None:
    snap = source.poll()
    return None if snap is None else (snap.shots_done, snap.shots_total, snap.status)


def test_the_file_holds_the_shots_measured_so_far_while_calibrate_runs(tmp_path):
    out = tmp_path / "calib.h5"
    proc = _calibrate_process(out, "--no-plots")
    source = RunSource(out, "calibration", min_read_s=0.0)  # another reader, as a view is
    seen: list[tuple[int, int, str]] = []
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            got = _shots_seen(source)
            if got is not None and got[0] > 0 and "measuring" in got[2]:
                seen.append(got)
            time.sleep(0.02)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    done = [n for n, _, _ in seen]
    assert len(set(done)) >= 2, seen  # the count grew while calibrate ran
    assert done == sorted(done)
    cal = load_calibration(out)
    total = cal.summary["shots"]
    assert all(t == total and 0 < n <= total for n, t, _ in seen), seen
    assert done[0] < total, seen
    with h5py.File(out, "r") as h5:  # the rows stored as measured are the analysed ones
        sweep = h5["measured/bias_sweep"]
        assert sweep["done"][...].all()
        assert (sweep["settings"][...] == h5["bias_sweep/settings"][...]).all()
        assert (sweep["traces_dbm"][...] == h5["bias_sweep/traces_dbm"][...]).all()


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_calibration_cut_short_leaves_a_readable_file_marked_incomplete(how, tmp_path, capsys):
    out = tmp_path / "cut.h5"
    proc = _calibrate_process(out, "--no-plots")
    source = RunSource(out, "calibration", min_read_s=0.0)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            got = _shots_seen(source)
            if got is not None and got[0] > 0 and "measuring" in got[2]:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "calibrate ended before a shot was seen"
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    entry = inspect_run(out)
    assert entry.command == "calibrate" and entry.status == "incomplete", entry
    assert 0 < entry.shots_done < entry.shots_planned and not entry.ok
    stopped = "interrupted (Ctrl-C)" if how == "ctrl-c" else "did not finish"
    assert stopped in entry.detail
    snap = RunSource.open(out).poll()  # the view opens it and shows what was measured
    assert snap is not None
    assert "INCOMPLETE" in snap.status and snap.shots_done == entry.shots_done
    assert snap.spectrum_dbm.size and snap.settings.shape == (entry.shots_done, 3)
    code, listing, _ = run_cli(capsys, "runs", str(tmp_path), "--json")
    assert code == 0 and json.loads(listing)[0]["status"] == "incomplete"
    for argv in (["show", str(out), "--no-plot"], ["calibrate", "--check", str(out)]):
        code, err = cli_error(capsys, *argv)
        assert code == 2 and err.startswith("error:") and err.count("error:") == 1, err
        assert "incomplete calibration" in err and "Traceback" not in err, err
    with pytest.raises(Exception, match="incomplete calibration"):
        load_calibration(out)
