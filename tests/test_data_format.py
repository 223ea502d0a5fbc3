"""The run file as a NeXus file: default plot chain, units, dimension scales, trace order,
metadata, settings snapshots, old layout, and reading while acquire writes.

Every file here is written by the real `labpgt acquire` on the embedded virtual bench.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run_cli

from labpgt.acquisition import acquire, grid_inputs, parse_sweep
from labpgt.cli.app import main
from labpgt.embedded import embedded_bench
from labpgt.features import FeatureSpec
from labpgt.records import SettingsSnapshot
from labpgt.setting_bounds import SETTING_NAMES
from labpgt.storage import RunFile, fixed_settings

SWEEPS = ["--sweep", "drive_hz=2.05e9:2.25e9:12", "--sweep", "bias_a=1.7,1.9"]
SHOTS = 12 * 2 * 2


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nexus") / "run.h5"
    main_args = ["acquire", *SWEEPS, "--repeats", "2", "--seed", "4", "--no-noise"]
    main_args += ["--out", str(out), "--sample", "YIG ring 3", "--operator", "A. N. Other"]
    main_args += ["--notes", "after the magnet swap", "--meta", "cryostat=K2"]
    main_args += ["--meta", "wafer=7"]
    try:
        main(main_args)
    except SystemExit as exc:
        assert not exc.code, exc
    return out


def _numeric_datasets(h5: h5py.File) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
            found.append(obj)

    h5.visititems(visit)
    return found


def test_default_plot_chain_units_and_dimension_scales(run_file: Path):
    with h5py.File(run_file, "r") as h5:
        # NeXus default chain: root @default -> NXentry @default -> NXdata @signal/@axes
        assert h5.attrs["NX_class"] == "NXroot"
        entry = h5[h5.attrs["default"]]
        assert entry.attrs["NX_class"] == "NXentry"
        data = entry[entry.attrs["default"]]
        assert data.attrs["NX_class"] == "NXdata"
        signal = data[data.attrs["signal"]]
        axes = [str(a) for a in data.attrs["axes"]]
        assert signal.shape == (SHOTS, len(axes) and h5["frequency_hz"].size)
        for dim, name in enumerate(axes):
            assert int(data.attrs[f"{name}_indices"]) == dim
            assert data[name].shape == (signal.shape[dim],)
        assert signal.attrs["units"] == "dBm" and data["frequency_hz"].attrs["units"] == "Hz"
        assert signal.attrs["interpretation"] == "spectrum"
        # the NXdata members are the datasets of the first layout (hard links), not copies
        assert signal == h5["traces_dbm"] and data["frequency_hz"] == h5["frequency_hz"]
        # units on every numeric dataset
        missing = [d.name for d in _numeric_datasets(h5) if "units" not in d.attrs]
        assert missing == []
        assert h5["shots/timestamp_s"].attrs["units"] == "s"
        assert list(h5["shots/settings"].attrs["column_units"]) == ["Hz", "dBm", "A"]
        # frequency is a dimension scale on the traces' second axis, the shot index on the first
        assert h5py.h5ds.is_scale(h5["frequency_hz"].id)
        assert signal.dims[1][0] == h5["frequency_hz"]
        assert signal.dims[0][0] == h5["shots/shot_index"]
        for name in ("done", "timestamp_s", "instrument_time_s", "input_index"):
            assert h5[f"shots/{name}"].dims[0][0] == h5["shots/shot_index"]


def test_silx_finds_the_default_plot_in_real_units(run_file: Path):
    nxdata = pytest.importorskip("silx.io.nxdata")
    with h5py.File(run_file, "r") as h5:
        default = nxdata.get_default(h5)
        assert default is not None and default.is_valid
        assert default.signal.shape == (SHOTS, h5["frequency_hz"].size)
        assert default.signal.attrs["units"] == "dBm"
        assert default.axes[1].attrs["units"] == "Hz"
        np.testing.assert_array_equal(default.axes[1][...], h5["frequency_hz"][...])


def test_shot_settings_are_in_trace_order(run_file: Path):
    with h5py.File(run_file, "r") as h5:
        traces = h5["traces_dbm"][...].astype(np.float64)
        f_hz = h5["frequency_hz"][...]
        settings = h5["shots/settings"][...]
        inputs = h5["inputs"][...]
        for col, name in enumerate(SETTING_NAMES):
            column = h5[f"entry/data/{name}"]
            np.testing.assert_array_equal(column[...], settings[:, col])
            np.testing.assert_array_equal(column[...], inputs[h5["shots/input_index"][...], col])
    # Physics says which row is which: the drive tone stands far above the floor at the
    # drive frequency of its own row (29 dB or more on this ring), not at another row's.
    drive_bin = np.abs(f_hz[None, :] - settings[:, :1]).argmin(axis=1)
    rows = np.arange(traces.shape[0])
    floor = np.median(traces, axis=1)
    assert (traces[rows, drive_bin] - floor > 20).all()
    assert (traces[::-1][rows, drive_bin] - floor > 20).mean() < 0.5


def test_metadata_and_snapshots_from_the_command_line(run_file: Path):
    with h5py.File(run_file, "r") as h5:
        entry = h5["entry"]
        assert entry["sample/name"].asstr()[()] == "YIG ring 3"
        assert entry["sample"].attrs["NX_class"] == "NXsample"
        assert entry["user/name"].asstr()[()] == "A. N. Other"
        assert entry["notes/data"].asstr()[()] == "after the magnet swap"
        assert entry["metadata/cryostat"].asstr()[()] == "K2"
        assert entry["metadata/wafer"].asstr()[()] == "7"
        assert entry["start_time"].asstr()[()] <= entry["end_time"][()].decode()
        meta = json.loads(entry.attrs["metadata"])
        assert meta["extra"] == {"cryostat": "K2", "wafer": "7"}
    with RunFile.open(run_file) as run:
        snaps = run.snapshots()
        assert [s["reason"] for s in snaps] == ["start", "end"]
        assert snaps[-1]["shots_done"] == SHOTS
        bench = snaps[-1]["snapshot"]["reservoir"]["bench"]
        assert bench["analyzer"]["identity"]["model"]


def test_bad_metadata_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "run.h5"
    code, _, err = run_cli(capsys, "acquire", *SWEEPS, "--out", str(out), "--meta", "no-equals")
    assert code == 2 and "--meta 'no-equals': expected key=value" in err
    code, _, err = run_cli(capsys, "acquire", *SWEEPS, "--out", str(out), "--meta", "sample=x")
    assert code == 2 and "use --sample" in err
    assert not out.exists()


def test_a_changed_fixed_setting_is_snapshot(tmp_path: Path):
    """The video bandwidth turned by hand mid-run shows up as a 'change' snapshot."""
    out = tmp_path / "run.h5"
    inputs = grid_inputs([parse_sweep("drive_hz=2.05e9:2.25e9:16")])
    with embedded_bench(seed=1, noise=False, drift=False, features=FeatureSpec(bins=1)) as res:
        before = res.bench.analyzer.vbw_hz

        def turn_knob(done: int, total: int, instrument_s: float) -> None:
            if done == 8:
                res.bench.analyzer.vbw_hz = before / 10

        acquire(res, out, inputs, chunk_shots=4, progress=turn_knob, snapshot_interval_s=0.0)
    with RunFile.open(out) as run:
        snaps = run.snapshots()
    assert [s["reason"] for s in snaps] == ["start", "change", "end"]
    change = snaps[1]
    assert change["shots_done"] == 12  # seen after the first chunk measured with it
    for stored in snaps[1:]:  # the change and end snapshots are the record, field for field
        record = SettingsSnapshot.model_validate(stored["snapshot"])
        assert json.loads(record.to_json()) == stored["snapshot"]
    vbw = [s["snapshot"]["reservoir"]["bench"]["analyzer"]["settings"]["vbw_hz"] for s in snaps]
    assert vbw == [before, before / 10, before / 10]
    # shot-by-shot settings (drive frequency, bias current) are not "fixed": no change there
    start, end = snaps[0]["snapshot"]["reservoir"], snaps[2]["snapshot"]["reservoir"]
    end["bench"]["analyzer"]["settings"]["vbw_hz"] = before
    assert fixed_settings(start) == fixed_settings(end)


def test_file_of_the_first_layout_is_read_and_listed(
    run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A file as labpgt wrote it before the NeXus part: show and runs read it as before."""
    old = tmp_path / "old.h5"
    with h5py.File(run_file, "r") as src, h5py.File(old, "w") as dst:
        for key in ("format", "created_utc", "snapshot", "sweeps", "resumes", "setting_names"):
            dst.attrs[key] = src.attrs[key]
        for name in ("frequency_hz", "inputs", "traces_dbm"):
            dst[name] = src[name][...]
        for name in ("settings", "input_index", "repeat_index", "done", "timestamp_s"):
            dst[f"shots/{name}"] = src[f"shots/{name}"][...]
        dst["shots/instrument_time_s"] = src["shots/instrument_time_s"][...]
    with RunFile.open(old) as run:
        assert not run.has_nexus and run.shots_done == SHOTS
        assert [s["reason"] for s in run.snapshots()] == ["start"]
    code, out, _ = run_cli(capsys, "runs", str(tmp_path), "--json")
    assert code == 0
    (row,) = [r for r in json.loads(out) if r["path"].endswith("old.h5")]
    assert row["status"] == "complete" and "no NeXus part" in row["detail"] and row["ok"]


def test_a_run_is_readable_while_acquire_writes_it(tmp_path: Path):
    out = tmp_path / "live.h5"
    cmd = [sys.executable, "-m", "labpgt", "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:300"]
    cmd += ["--sweep", "bias_a=1.7,1.9", "--seed", "2", "--no-noise", "--chunk", "4"]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while len(seen) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if not out.exists():
                continue
            try:
                run = RunFile.open(out)  # read-only, no lock: the writer holds its own
            except Exception as exc:  # still being created: the header is not there yet
                assert "half-written" in str(exc) or "HDF5" in str(exc), exc
                continue
            with run:
                done = run.done
                traces = run.h5["traces_dbm"][...]
                # every shot marked done has its whole trace; none of the others is half there
                assert np.isfinite(traces[done]).all()
                if 0 < done.sum() < done.size and (not seen or done.sum() > seen[-1]):
                    seen.append(int(done.sum()))
                    assert run.has_nexus and run.h5["entry/data"].attrs["signal"] == "traces_dbm"
        assert len(seen) >= 2, f"no growing partial file seen: {seen}"
        from labpgt.catalog import inspect_run

        if proc.poll() is None:
            assert inspect_run(out).status in ("being written", "complete")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_torch_and_numpy_agree_on_the_run_file_api(run_file: Path):
    with RunFile.open(run_file) as run:
        assert run.metadata["sample"] == "YIG ring 3"
        assert torch.equal(run.settings[:, 0], torch.from_numpy(run.h5["entry/data/drive_hz"][...]))


def test_the_h5py_example_of_docs_data_format_runs(run_file: Path, capsys: pytest.CaptureFixture):
    """docs/data-format.md's reading example, run as printed on a real run file."""
    text = (Path(__file__).parents[1] / "docs" / "data-format.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert 'path = "run.h5"' in code and "import labpgt" not in code
    exec(compile(code.replace('"run.h5"', repr(str(run_file))), "data-format.md", "exec"), {})
    out = capsys.readouterr().out
    assert f"{SHOTS} of {SHOTS} shots; first peak" in out and "(dBm)" in out


def test_show_lists_metadata_and_snapshots(run_file: Path, capsys: pytest.CaptureFixture):
    code, out, err = run_cli(capsys, "show", str(run_file), "--no-plot")
    assert code == 0, err
    text = " ".join(out.replace("│", " ").split())
    assert "sample YIG ring 3" in text and "operator A. N. Other" in text
    assert "metadata cryostat=K2, wafer=7" in text
    assert "settings snapshots 2 (start, end)" in text


def test_bench_file_metadata_is_stored_and_the_command_line_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
    from labpgt.sim.params import RingParams
    from labpgt.sim.ring import RingModel
    from labpgt.sim.virtual import VirtualBench

    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(vb.resources, settle={"wait": False})
        table = {"sample": "ring B", "cryostat": "K3", "wafer": 7, "cooled": True}
        bench = dump_bench(cfg.model_copy(update={"metadata": table}), tmp_path / "bench.toml")
        out = tmp_path / "run.h5"
        code, _, err = run_cli(
            capsys, "acquire", "--bench", str(bench), "--sweep", "drive_hz=2.1e9:2.2e9:3",
            "--meta", "cryostat=K2", "--out", str(out),
        )  # fmt: skip
        assert code == 0, err
        bad = tmp_path / "bad.toml"
        bad.write_text(bench.read_text().replace("cooled = true", '"two words" = 1'))
        code, _, err = run_cli(
            capsys, "acquire", "--bench", str(bad), "--sweep", "drive_hz=2.1e9:2.2e9:3",
            "--out", str(tmp_path / "bad.h5"),
        )  # fmt: skip
    assert code == 2 and err.startswith("error: bench file [metadata] key 'two words'"), err
    assert not (tmp_path / "bad.h5").exists()
    with h5py.File(out, "r") as h5:
        meta = json.loads(h5["entry"].attrs["metadata"])
    assert meta["sample"] == "ring B"
    assert meta["extra"] == {"cryostat": "K2", "wafer": "7", "cooled": "true"}
