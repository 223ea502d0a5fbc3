"""Issue 15: what labpgt does when a fault strikes - identity on resume, failed shutdowns,
the time to give up on a stalled instrument, Ctrl-C, write failures, lenient error text."""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import cli_error, shots_done
from labpgt.instruments.bench import Bench, bench_config_from_resources, dump_bench
from labpgt.instruments.instrument_errors import ExecutionError
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

from labpgt.acquisition import acquire, grid_inputs, parse_sweep
from labpgt.cli.app import EXIT_UNSAFE
from labpgt.errors import MeasurementError
from labpgt.features import FeatureSpec
from labpgt.instrument_reservoir import InstrumentReservoir

LABPGT = [sys.executable, "-m", "labpgt"]
ROLES = ("generator", "analyzer", "supply")


def _bench_file(vb: VirtualBench, path: Path, timeout_s: float = 5.0, **limits: float) -> Path:
    cfg = bench_config_from_resources(
        vb.resources,
        families=vb.families,
        timeouts_s=dict.fromkeys(ROLES, timeout_s),
        limits={"ramp_rate_a_per_s": 50.0, "ramp_step_a": 0.25, **limits},
        settle={"wait": False},
    )
    return dump_bench(cfg, path)


def _when(condition, then, timeout_s: float = 120.0) -> threading.Thread:
    """Run `then()` in a thread as soon as `condition()` holds (polled every 5 ms)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _supply_at(vb: VirtualBench, current_a: float) -> bool:
    """The virtual supply has received its ramp's last step to `current_a`, output on."""
    log = vb.supply_log
    return bool(log) and log[-1][1] == current_a and log[-1][2]


# -- D4: lenient error text ---------------------------------------------------------------


def test_non_ascii_error_text_is_the_instruments_error_not_a_garbled_reply():
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(vb.resources, timeouts_s=dict.fromkeys(ROLES, 10.0))
        with Bench.open(cfg, handle_signals=False) as bench:
            vb.generator.push_error(-222, "Données hors limites (°C)")
            with pytest.raises(ExecutionError) as info:
                bench.generator.frequency_hz = 2.1e9
            assert info.value.code == -222
            assert "Données hors limites (°C)" in info.value.message


# -- D1: resume against another bench -------------------------------------------------------

SMALL = ["--sweep", "drive_hz=2.0e9:2.3e9:6", "--no-noise", "--chunk", "2"]


def test_resume_on_another_bench_is_refused_and_a_deliberate_change_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run.h5"
    code, err = cli_error(capsys, "acquire", *SMALL, "--seed", "3", "--out", str(out))
    assert code == 0, err
    with h5py.File(out, "r") as f:
        identity = json.loads(f.attrs["snapshot"])["identity"]
    assert identity["sim"] == {"seed": 3, "noise": False}
    assert identity["idn"]["generator"].startswith("Keysight")
    before = out.read_bytes()
    # another seed of the embedded bench: refused before any instrument opens, naming both
    code, err = cli_error(
        capsys, "acquire", "--resume", "--no-noise", "--seed", "4", "--out", str(out)
    )
    assert code == 2
    assert "recorded on another bench (sim differ)" in err
    assert (
        "recorded: embedded virtual bench; seed 3" in err
        and "now: embedded virtual bench; seed 4" in err
    )
    assert "--allow-bench-change" in err
    # one line, and nothing that says the run started (no pre-flight, no progress)
    assert err.count("error:") == 1 and "pre-flight" not in err and "shots" not in err
    assert out.read_bytes() == before  # nothing written, nothing appended
    # a real bench file (the virtual bench behind sockets): resources and identities differ
    with VirtualBench(
        RingModel(RingParams(noise=False, drift=False)), supply_family="keysight_e36xx"
    ) as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml")
        code, err = cli_error(
            capsys, "acquire", "--resume", "--bench", str(bench), "--out", str(out)
        )
        assert code == 2 and "recorded on another bench (resources, families" in err
        assert "keysight_e36xx" in err and "kepco_bop" in err
    # the deliberate change is allowed and recorded
    code, err = cli_error(
        capsys,
        "acquire",
        "--resume",
        "--no-noise",
        "--seed",
        "4",
        "--allow-bench-change",
        "--out",
        str(out),
    )
    assert code == 0, err
    with h5py.File(out, "r") as f:
        resumes = json.loads(f.attrs["resumes"])
    assert len(resumes) == 1
    change = resumes[0]["bench_change"]
    assert change["differs"] == ["sim"]
    assert change["from"]["sim"]["seed"] == 3 and change["to"]["sim"]["seed"] == 4


def test_a_zero_byte_file_is_never_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "run.h5"
    out.write_bytes(b"")
    code, err = cli_error(capsys, "acquire", "--resume", "--no-noise", "--out", str(out))
    assert code == 2 and "is empty (0 bytes), not a run file" in err
    code, err = cli_error(capsys, "acquire", *SMALL, "--out", str(out))
    assert code == 2 and "already exists" in err
    assert out.stat().st_size == 0


# -- D2: a failed safe shutdown is loud -----------------------------------------------------


def test_a_supply_stalled_during_ramp_down_is_reported_with_exit_3_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run.h5"
    sweeps = ["--sweep", "drive_hz=2.0e9:2.3e9:1000", "--sweep", "bias_a=1.75"]
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml", timeout_s=1.0)
        # Bias fixed at 1.75 A: after the first ramp the supply hears nothing until the
        # shutdown, whose first ramp-down step then stalls (the step is taken, its reply
        # never comes). Armed once the analyzer has swept: by then the ramp's last step has
        # had its reply (armed as soon as the step is logged, a loaded machine could let the
        # stall swallow that reply, and the run would fail at its start instead).
        _when(
            lambda: _supply_at(vb, 1.75) and vb.analyzer.sweeps >= 2,
            lambda: vb.inject_fault("supply", "stall", 1000),
        )
        args = ["acquire", "--bench", str(bench), *sweeps, "--chunk", "4", "--out", str(out)]
        code, err = cli_error(capsys, *args)
        assert code == EXIT_UNSAFE, err
        assert "DANGER: the safe shutdown FAILED" in err
        assert "magnet output may still be ON at up to 1.75 A" in err
        assert "ramp the current to 0 A at no more than 50 A/s" in err
        assert f"exit status {EXIT_UNSAFE}" in err
        # the truth on the server: the magnet is still energised
        assert vb.supply.output_on and 1.4 <= vb.supply.current_a <= 1.75, vb.supply_log[-5:]
        assert vb.generator.rf_on is False  # RF went off first, whatever the supply did
    with h5py.File(out, "r") as f:
        record = json.loads(f.attrs["shutdown_failures"])
    assert record[0]["failures"][0]["role"] == "supply"
    assert "1.75 A" in record[0]["failures"][0]["still_on"]


def test_every_instrument_is_shut_down_even_when_one_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run.h5"
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml", timeout_s=1.0)
        # The generator stalls mid-run (the run gives up on it) and again at the shutdown.
        _when(lambda: _supply_at(vb, 1.8), lambda: vb.inject_fault("generator", "stall", 1000))
        sweep = ["--sweep", "drive_hz=2.0e9:2.3e9:1000"]
        args = ["acquire", "--bench", str(bench), *sweep, "--chunk", "4", "--out", str(out)]
        code, err = cli_error(capsys, *args)
        assert code == EXIT_UNSAFE, err
        assert "generator" in err and "RF output may still be ON" in err
        assert "supply (" not in err  # the supply was made safe
        assert vb.supply.output_on is False and vb.supply.current_a == 0.0
        assert "the run had stopped first: measurement at" in err and "gave up" in err


# -- D3: the time to give up on a stalled instrument ----------------------------------------


@pytest.mark.parametrize("role", ["generator", "supply"])
def test_a_stalled_instrument_is_given_up_on_within_twice_its_timeout(role: str, tmp_path: Path):
    timeout_s = 2.0
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(
            vb.resources,
            timeouts_s=dict.fromkeys(ROLES, timeout_s),
            limits={"ramp_rate_a_per_s": 50.0, "ramp_step_a": 0.25},
            settle={"wait": False},
        )
        armed: list[float] = []

        def arm(done: int, total: int, instrument_s: float) -> None:
            if done >= 8 and not armed:
                vb.inject_fault(role, "stall", 10_000)
                armed.append(time.monotonic())

        inputs = grid_inputs(
            [parse_sweep("bias_a=1.6,1.8"), parse_sweep("drive_hz=2.0e9:2.3e9:40")]
        )
        with Bench.open(cfg, handle_signals=False) as bench:
            reservoir = InstrumentReservoir(bench, FeatureSpec(bins=1), keep_traces=True)
            with pytest.raises(MeasurementError, match=f"{role} .*gave up"):
                acquire(reservoir, tmp_path / "run.h5", inputs, chunk_shots=4, progress=arm)
            gave_up_s = time.monotonic() - armed[0]
            vb.faults[role].clear()
        # the read and its one retry each wait the full timeout; the 0.5 s beyond is the
        # reconnect and the scheduler on a loaded machine (4.005 s was seen on 2 busy cores)
        assert gave_up_s <= 2 * timeout_s + 0.5, f"gave up after {gave_up_s:.2f} s"
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["shots/done"][...].sum() >= 8  # what was measured is kept


def test_a_stalled_sweep_is_given_up_on_within_its_wait_plus_one_timeout(tmp_path: Path):
    timeout_s = 1.0
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(
            vb.resources, timeouts_s=dict.fromkeys(ROLES, timeout_s), settle={"wait": False}
        )
        armed: list[float] = []

        def arm(done: int, total: int, instrument_s: float) -> None:
            if done >= 4 and not armed:
                vb.inject_fault("analyzer", "stall", 10_000)
                armed.append(time.monotonic())

        with Bench.open(cfg, handle_signals=False) as bench:
            bench.analyzer.sweep_margin_s = 0.5
            wait_s = timeout_s + bench.analyzer.sweep_time_s + 0.5
            reservoir = InstrumentReservoir(bench, FeatureSpec(bins=1), keep_traces=True)
            inputs = grid_inputs([parse_sweep("drive_hz=2.0e9:2.3e9:40")])
            with pytest.raises(MeasurementError, match="analyzer .*gave up"):
                acquire(reservoir, tmp_path / "run.h5", inputs, chunk_shots=4, progress=arm)
            gave_up_s = time.monotonic() - armed[0]
            vb.faults["analyzer"].clear()
        # the sweep's wait, then its retry's timeout; the 0.5 s beyond is the reconnect and the
        # scheduler, as above (2.49-2.54 s was seen against 2.51 s on idle cores): waiting a
        # second full wait (1.5 s more) would still fail
        assert gave_up_s <= wait_s + timeout_s + 0.5, f"gave up after {gave_up_s:.2f} s"


class _Lines:
    """A subprocess's stderr, line by line with arrival times, read in a thread."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put((time.monotonic(), line))

    def wait_for(self, text: str, timeout_s: float = 60.0) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                at, line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"{text!r} not seen; got {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return at


def test_ctrl_c_is_acknowledged_at_once_and_a_second_one_never_skips_the_ramp(tmp_path: Path):
    out = tmp_path / "run.h5"
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        # A slow magnet (0.5 A/s): ramping 1.8 A down takes about 4 s, time for a second Ctrl-C.
        bench = _bench_file(vb, tmp_path / "bench.toml", ramp_rate_a_per_s=0.5, ramp_step_a=0.05)
        proc = subprocess.Popen(
            [*LABPGT, "acquire", "--bench", str(bench), "--sweep", "drive_hz=2.0e9:2.3e9:4000",
             "--chunk", "4", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = _Lines(proc.stderr)
        deadline = time.monotonic() + 120
        while shots_done(out) < 8:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        vb.inject_fault("analyzer", "stall", 10_000)  # Ctrl-C lands in a stalled sweep
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        acknowledged = lines.wait_for("SIGINT received")
        assert acknowledged - sent <= 1.0
        while vb.supply.current_a > 1.5:  # the ramp-down is under way
            assert proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        lines.wait_for("SIGINT again: the safe shutdown keeps running and cannot be skipped")
        assert "ramping the magnet from" in lines.seen[-1] and "s left" in lines.seen[-1]
        proc.wait(timeout=120)
        assert proc.returncode == 130
        lines.wait_for("finish it with --resume")
        log = list(vb.supply_log)
        assert log[-1][1:] == (0.0, False)  # ramped to 0 A, then off
        down = [c for _, c, on in log if on]
        assert all(abs(b - a) <= 0.05 + 1e-9 for a, b in zip(down, down[1:], strict=False))
    with h5py.File(out, "r") as f:
        done = f["shots/done"][...]
        assert 8 <= done.sum() < done.size
        assert np.isfinite(f["traces_dbm"][...][done]).all()


# -- D5: write failures --------------------------------------------------------------------


def _file_size_limit(n_bytes: int):
    def limit() -> None:  # in the child: a write past n_bytes fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


def _datasets(path: Path) -> dict[str, np.ndarray]:
    names = ["inputs", "frequency_hz", "traces_dbm", "shots/settings", "shots/done"]
    with h5py.File(path, "r") as f:
        return {n: f[n][...] for n in names}


def test_write_failures_are_one_line_and_the_file_stays_resumable(tmp_path: Path):
    args = [*LABPGT, "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:300", "--seed", "2",
            "--no-noise", "--chunk", "4"]  # fmt: skip
    out = tmp_path / "run.h5"
    # creating the file fails: one line with the cause, no file left behind
    r = subprocess.run(
        [*args, "--out", str(out)], preexec_fn=_file_size_limit(200_000),
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "file too large (file size limit reached)" in r.stderr and not out.exists()
    # a complete reference, and a partial run killed after a few chunks
    reference = tmp_path / "reference.h5"
    assert subprocess.run([*args, "--out", str(reference)], capture_output=True).returncode == 0
    proc = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.DEVNULL)
    while shots_done(out) < 12:
        assert proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    size = out.stat().st_size
    # resuming with the disk "full" past 60 % of the file: writes fail mid-run
    r = subprocess.run(
        [*args, "--resume", "--out", str(out)], preexec_fn=_file_size_limit(int(size * 0.6)),
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file too large" in errors[0] and "--resume" in errors[0]
    partial = _datasets(out)  # still opens with plain h5py
    assert 12 <= partial["shots/done"].sum() < partial["shots/done"].size
    r = subprocess.run([*args, "--resume", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got, want = _datasets(out), _datasets(reference)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# -- D6 / D7: one-line errors and rough edges -----------------------------------------------


def test_a_sweep_too_large_is_refused_with_the_numbers_before_any_allocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run.h5"
    code, err = cli_error(
        capsys, "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:200000", "--sweep",
        "bias_a=0:2:300000", "--out", str(out),
    )  # fmt: skip
    assert code == 2
    assert "pre-flight: 60000000000 shots x 1001 points: file 247 TB" in err
    assert "error: the run file would need 247 TB" in err and "free" in err
    assert not out.exists()
    code, err = cli_error(capsys, "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:6", "--no-noise",
                     "--out", str(out))  # fmt: skip
    assert code == 0 and "pre-flight: 6 shots x 1001 points: file" in err
    assert "instrument time about" in err


def test_user_text_is_printed_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    name = tmp_path / ":b: [bold]x[/bold].csv"
    code, err = cli_error(capsys, "acquire", "--inputs", str(name), "--out", str(tmp_path / "r.h5"))
    assert code == 2 and f"file {name} does not exist" in err


def test_train_on_an_unreachable_bench_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"TCPIP::127.0.0.1::{probe.getsockname()[1]}::SOCKET"
    cfg = bench_config_from_resources(dict.fromkeys(ROLES, dead))
    bench = dump_bench(cfg, tmp_path / "bench.toml")
    code, err = cli_error(capsys, "train", "--bench", str(bench), "--method", "pgt",
                          "--epochs", "1", "--out", str(tmp_path / "t"))  # fmt: skip
    assert code == 2 and err.startswith("error: instrument: generator") and "cannot connect" in err


def test_sigterm_says_why(tmp_path: Path):
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(
        [*LABPGT, "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:4000", "--no-noise", "--chunk", "4",
         "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while shots_done(out) < 8:
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "SIGTERM received" in err
    assert "terminated by signal 15 (SIGTERM)" in err and "--resume" in err
    assert "Traceback" not in err


def test_allow_remote_warns_that_there_is_no_authentication():
    proc = subprocess.Popen(
        [*LABPGT, "sim", "serve", "--host", "0.0.0.0", "--allow-remote"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "WARNING: --allow-remote: the virtual bench servers have NO authentication" in err


def test_an_interrupt_the_program_caught_leaves_ctrl_c_working(capfd: pytest.CaptureFixture[str]):
    """After a Ctrl-C is caught and the bench used again, the next Ctrl-C interrupts again."""

    def ctrl_c() -> bool:
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
        except KeyboardInterrupt:
            return True
        return False

    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(vb.resources, timeouts_s=dict.fromkeys(ROLES, 10.0))
        with Bench.open(cfg) as bench:  # handlers installed: this is the main thread
            assert ctrl_c()
            bench.generator.power_dbm = -12.0  # the program carried on
            assert vb.generator.power_dbm == -12.0
            assert ctrl_c()  # interrupts again, not held back as during a shutdown
        assert "SIGINT received" in capfd.readouterr().err


def _catches(pid: int, signum: int) -> bool:
    """The process has a handler for `signum` (Linux: SigCgt in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_while_starting_up_says_why(tmp_path: Path):
    proc = subprocess.Popen(
        [*LABPGT, "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:4000", "--no-noise",
         "--out", str(tmp_path / "run.h5")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGTERM):  # labpgt's own handler is in place
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    # the start-up handler answered (the bench's own comes seconds later, after imports)
    assert "SIGTERM received: stopping (no instrument is open)" in err, err
    assert "Traceback" not in err
