"""The fault matrix: every injected fault against `labpgt acquire` and `labpgt train`.

Faults: drop, stall, error, garble (the virtual bench's `inject_fault`, striking each
of the three instruments once, one after the other, mid-run), SIGKILL of the bench's
process, SIGKILL of labpgt. Every run is on a deterministic virtual bench (noise,
drift and hysteresis off) and is compared with an uninterrupted run: no shot lost or
duplicated, no limit violated (the supply's log of every step it received), supply
OFF at 0 A at the end, and the result (resumed where the fault ended the run)
bit-identical. The outcomes are written to docs/reliability.md when the whole matrix
ran.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import shots_done, tiny_csv
from labpgt.instruments.bench import bench_config_from_resources, dump_bench
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

LABPGT = [sys.executable, "-m", "labpgt"]
ROLES = ("generator", "analyzer", "supply")
ENV = {**os.environ, "COLUMNS": "200"}
TIMEOUT_S = 1.0
"""Every instrument's timeout: a stall costs at most 2 s per instrument."""
LIMITS = {"ramp_rate_a_per_s": 50.0, "ramp_step_a": 0.02, "bias_min_a": 0.0, "bias_max_a": 2.5}
"""Small ramp steps: every bias change is several steps, each checked in the log."""
SWEEPS = ["--sweep", "bias_a=1.6:2.0:10", "--sweep", "drive_hz=2.0e9:2.3e9:30"]
SHOTS = 300
ARM_AFTER_SWEEPS = 100
"""acquire: faults strike after this many sweeps (a third of the run)."""
TRAIN = shlex.split(
    "--method boundary --directions rademacher --probes 1 --epochs 2 --seed 5 --channels 1 "
    "--bins 8 --hidden 4 --batch-size 12 --warmup-samples 16 --no-noise --no-drift"
)
RESULTS: dict[tuple[str, str], str] = {}
FAULTS = ["drop", "stall", "error", "garble", "kill-bench", "kill-labpgt"]
COMMANDS = ["acquire", "train"]

BENCH_SCRIPT = """
import json, sys
from labpgt.instruments.bench import bench_config_from_resources, dump_bench
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench
limits, timeout_s, path = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
with VirtualBench(RingModel(RingParams(noise=False, drift=False, hysteresis=False))) as vb:
    cfg = bench_config_from_resources(vb.resources, limits=limits, settle={"wait": False},
        timeouts_s={r: timeout_s for r in ("generator", "analyzer", "supply")})
    dump_bench(cfg, path)
    print("ready", flush=True)
    sys.stdin.read()  # serve until stdin closes
    print(json.dumps({"log": vb.supply_log, "final": [vb.supply.current_a, vb.supply.output_on]}))
"""


def _quiet_bench() -> VirtualBench:
    return VirtualBench(RingModel(RingParams(noise=False, drift=False, hysteresis=False)))


def _bench_file(vb: VirtualBench, path: Path) -> Path:
    cfg = bench_config_from_resources(
        vb.resources,
        families=vb.families,
        limits=LIMITS,
        settle={"wait": False},
        timeouts_s=dict.fromkeys(ROLES, TIMEOUT_S),
    )
    return dump_bench(cfg, path)


def _check_limits(log: list, what: str) -> float:
    """No step above the ramp step, no pair of steps faster than the rate; returns max step."""
    step, rate = LIMITS["ramp_step_a"], LIMITS["ramp_rate_a_per_s"]
    on = [(t, i) for t, i, output in log if output]
    biggest = 0.0
    for (_, i0), (_, i1) in zip(on, on[1:], strict=False):
        biggest = max(biggest, abs(i1 - i0))
        assert abs(i1 - i0) <= step + 1e-9, f"{what}: a step of {abs(i1 - i0):.4g} A"
    for a, (t0, i0) in enumerate(on):
        for t1, i1 in on[a + 1 : a + 40]:
            assert abs(i1 - i0) <= rate * (t1 - t0) + 1e-9, f"{what}: ramp too fast"
    assert all(LIMITS["bias_min_a"] <= i <= LIMITS["bias_max_a"] for _, i, _ in log)
    return biggest


def _arm_when(vb: VirtualBench, kind: str, sweeps: int) -> threading.Thread:
    """After `sweeps` sweeps, strike each instrument once, one after the other."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while vb.analyzer.sweeps < sweeps and time.monotonic() < deadline:
            time.sleep(0.002)
        for role in ROLES:
            vb.inject_fault(role, kind)
            while vb.faults[role].armed() and time.monotonic() < deadline:
                time.sleep(0.002)  # fired: on to the next instrument

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _datasets(path: Path) -> dict[str, np.ndarray]:
    names = ["inputs", "frequency_hz", "traces_dbm", "shots/settings", "shots/input_index"]
    names += ["shots/repeat_index", "shots/done"]
    with h5py.File(path, "r") as f:
        return {n: f[n][...] for n in names}


@pytest.fixture(scope="module")
def acquire_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("acquire-reference")
    with _quiet_bench() as vb:
        bench = _bench_file(vb, folder / "bench.toml")
        out = folder / "run.h5"
        r = subprocess.run(
            [*LABPGT, "acquire", "--bench", str(bench), *SWEEPS, "--chunk", "8", "--out", str(out)],
            capture_output=True, text=True, env=ENV, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        _check_limits(vb.supply_log, "reference")
    return _datasets(out)


def _same_acquisition(out: Path, reference: dict[str, np.ndarray]) -> None:
    """Every shot done, and every dataset bit-identical to the undisturbed run's."""
    got = _datasets(out)
    assert got["shots/done"].all() and got["shots/done"].size == SHOTS
    for name, want in reference.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def _train_args(bench: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [*LABPGT, "train", "--bench", str(bench), "--data", str(data), "--target", "label",
            *TRAIN, "--out", str(out), *extra]  # fmt: skip


def _spawn_train(bench: Path, data: Path, out: Path) -> subprocess.Popen:
    """`labpgt train` in a child process, its output merged into one text pipe."""
    proc = subprocess.Popen(
        _train_args(bench, data, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc


def _final(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("train-reference")
    data = tiny_csv(folder / "tiny.csv")
    with _quiet_bench() as vb:
        bench = _bench_file(vb, folder / "bench.toml")
        r = subprocess.run(
            _train_args(bench, data, folder / "run"), capture_output=True, text=True, env=ENV,
            timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        sweeps = vb.analyzer.sweeps
    state = _final(folder / "run")
    batches = (folder / "run" / "batches.csv").read_text()
    return {"state": state, "batches": batches, "sweeps": sweeps}


def _same_training(got: Path, reference: dict) -> None:
    a, b = reference["state"], _final(got)
    assert a["epoch"] == b["epoch"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key in ("queries", "forward_passes", "steps"):
        assert a["counters"][key] == b["counters"][key], key
    assert (got / "batches.csv").read_text() == reference["batches"]


def _supply_state(vb: VirtualBench) -> tuple[list, tuple[float, bool]]:
    """The supply's log of every step it received, and its final (current A, output on)."""
    return vb.supply_log, (vb.supply.current_a, vb.supply.output_on)


def _finished_safely(
    r: subprocess.CompletedProcess, what: str, supply_log: list, final: tuple[float, bool]
) -> float:
    """A run that ended in exit 0 without a traceback, on a bench left safe (every bias
    step within the limits, the supply at 0 A and off): the largest bias step, A."""
    _no_traceback(r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
    step_a = _check_limits(supply_log, what)
    assert final == (0.0, False), r.stderr[-3000:]
    return step_a


def _left_safe(step_a: float) -> str:
    """How every cell of the matrix ends: the largest bias step the supply saw (checked
    against the bench's limit) and its final state (asserted: 0 A, output off)."""
    return f"max bias step {step_a:.3g} A; supply 0 A, off"


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# -- the injected faults -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["drop", "stall", "error", "garble"])
def test_acquire_rides_out_an_injected_fault(kind: str, tmp_path: Path, acquire_reference):
    out = tmp_path / "run.h5"
    with _quiet_bench() as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml")
        _arm_when(vb, kind, ARM_AFTER_SWEEPS)
        t0 = time.monotonic()
        r = subprocess.run(
            [*LABPGT, "acquire", "--bench", str(bench), *SWEEPS, "--chunk", "8", "--out", str(out)],
            capture_output=True, text=True, env=ENV, timeout=300,
        )  # fmt: skip
        wall_s = time.monotonic() - t0
        fired = {role: dict(vb.faults[role].fired) for role in ROLES}
        assert all(fired[role].get(kind) == 1 for role in ROLES), fired  # struck mid-run
        step_a = _finished_safely(r, kind, *_supply_state(vb))
    _same_acquisition(out, acquire_reference)
    RESULTS[(kind, "acquire")] = (
        f"completed, exit 0; {SHOTS}/{SHOTS} shots, none lost or repeated; traces "
        f"bit-identical; {_left_safe(step_a)}; {wall_s:.1f} s"
    )


@pytest.mark.parametrize("kind", ["drop", "stall", "error", "garble"])
def test_train_rides_out_an_injected_fault(kind: str, tmp_path: Path, train_reference):
    data = tiny_csv(tmp_path / "tiny.csv")
    with _quiet_bench() as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml")
        # half-way through the reference run's sweeps (inside training proper)
        _arm_when(vb, kind, train_reference["sweeps"] // 2)
        t0 = time.monotonic()
        r = subprocess.run(
            _train_args(bench, data, tmp_path / "run"), capture_output=True, text=True, env=ENV,
            timeout=600,
        )  # fmt: skip
        wall_s = time.monotonic() - t0
        fired = {role: dict(vb.faults[role].fired) for role in ROLES}
        assert all(fired[role].get(kind) == 1 for role in ROLES), (fired, r.stderr[-3000:])
        step_a = _finished_safely(r, kind, *_supply_state(vb))
    _same_training(tmp_path / "run", train_reference)
    RESULTS[(kind, "train")] = (
        f"completed, exit 0; model, query counts and per-step log bit-identical; "
        f"{_left_safe(step_a)}; {wall_s:.1f} s"
    )


# -- SIGKILL of labpgt ------------------------------------------------------------------------


def test_acquire_killed_resumes_bit_identically(tmp_path: Path, acquire_reference):
    out = tmp_path / "run.h5"
    args = [*LABPGT, "acquire", "--bench", "BENCH", *SWEEPS, "--chunk", "8", "--out", str(out)]
    with _quiet_bench() as vb:
        bench = str(_bench_file(vb, tmp_path / "bench.toml"))
        args = [bench if a == "BENCH" else a for a in args]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        deadline = time.monotonic() + 120
        while shots_done(out) < 40:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = shots_done(out)
        assert killed_at < SHOTS
        magnet_left_a = vb.supply.current_a  # nobody ramped it down: the process died
        r = subprocess.run(
            [*args, "--resume"], capture_output=True, text=True, env=ENV, timeout=300
        )
        step_a = _finished_safely(r, "kill-labpgt", *_supply_state(vb))
    _same_acquisition(out, acquire_reference)
    RESULTS[("kill-labpgt", "acquire")] = (
        f"killed after {killed_at} shots (magnet left at {magnet_left_a:.3g} A by the dead "
        f"process); --resume: exit 0, {SHOTS}/{SHOTS} shots, bit-identical; {_left_safe(step_a)}"
    )


def test_train_killed_resumes_bit_identically(tmp_path: Path, train_reference):
    data = tiny_csv(tmp_path / "tiny.csv")
    out = tmp_path / "run"
    with _quiet_bench() as vb:
        bench = _bench_file(vb, tmp_path / "bench.toml")
        proc = _spawn_train(bench, data, out)
        for line in proc.stdout:  # killed after epoch 1's checkpoint, inside epoch 2
            if line.startswith("epoch 1:"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert _final(out)["epoch"] < train_reference["state"]["epoch"]
        r = subprocess.run(
            _train_args(bench, data, out, "--resume"), capture_output=True, text=True, env=ENV,
            timeout=600,
        )  # fmt: skip
        step_a = _finished_safely(r, "kill-labpgt", *_supply_state(vb))
    _same_training(out, train_reference)
    RESULTS[("kill-labpgt", "train")] = (
        f"killed in epoch 2; --resume: exit 0, model and per-step log bit-identical; "
        f"{_left_safe(step_a)}"
    )


# -- SIGKILL of the bench ---------------------------------------------------------------------


def _exit_text(code: int) -> str:
    if code == 3:
        return "exit 3 (the shutdown could not confirm RF off and the magnet at 0 A: reported)"
    return f"exit {code} (one-line error)"


class _BenchProcess:
    """The virtual bench in a process of its own (so that it can be killed)."""

    def __init__(self, bench_path: Path) -> None:
        self.path = bench_path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BENCH_SCRIPT, json.dumps(LIMITS), str(TIMEOUT_S),
             str(bench_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self) -> tuple[list, tuple[float, bool]]:
        """Stop serving: the supply's log of steps and its final (current A, output on)."""
        out, _ = self.proc.communicate(timeout=60)
        state = json.loads(out.strip().splitlines()[-1])
        return [tuple(step) for step in state["log"]], tuple(state["final"])


def test_acquire_survives_the_bench_being_killed(tmp_path: Path, acquire_reference):
    out = tmp_path / "run.h5"
    bench = tmp_path / "bench.toml"
    served = _BenchProcess(bench)
    args = [*LABPGT, "acquire", "--bench", str(bench), *SWEEPS, "--chunk", "8", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)  # fmt: skip
    deadline = time.monotonic() + 120
    while shots_done(out) < 40:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    served.kill()
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)
    gave_up_s = time.monotonic() - t0
    _no_traceback(err)
    # With the bench gone nothing can be confirmed safe: the loud report and exit 3.
    assert proc.returncode == 3, err
    assert "DANGER: the safe shutdown FAILED" in err
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["shutdown_failures"])[0]["failures"]
    partial = _datasets(out)
    kept = int(partial["shots/done"].sum())
    assert 40 <= kept < SHOTS
    # The bench comes back on other ports: a resume must be told that this is deliberate.
    served = _BenchProcess(bench)
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "recorded on another bench (resources differ)" in r.stderr
    r = subprocess.run([*args, "--resume", "--allow-bench-change"], capture_output=True,
                       text=True, env=ENV, timeout=300)  # fmt: skip
    step_a = _finished_safely(r, "kill-bench", *served.finish())
    _same_acquisition(out, acquire_reference)
    with h5py.File(out, "r") as f:
        resumes = json.loads(f.attrs["resumes"])
    assert resumes[-1]["bench_change"]["differs"] == ["resources"]
    RESULTS[("kill-bench", "acquire")] = (
        f"run stopped {gave_up_s:.1f} s after the kill, {_exit_text(proc.returncode)}, "
        f"{kept} shots kept; resume on the restarted bench refused (resources differ) until "
        f"--allow-bench-change (recorded); then {SHOTS}/{SHOTS} shots, bit-identical; "
        f"{_left_safe(step_a)}"
    )


def test_train_survives_the_bench_being_killed(tmp_path: Path, train_reference):
    data = tiny_csv(tmp_path / "tiny.csv")
    out = tmp_path / "run"
    bench = tmp_path / "bench.toml"
    served = _BenchProcess(bench)
    proc = _spawn_train(bench, data, out)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 1:"):
            served.kill()
            break
    t0 = time.monotonic()
    rest, _ = proc.communicate(timeout=120)
    gave_up_s = time.monotonic() - t0
    text = "".join(lines) + rest
    _no_traceback(text)
    assert proc.returncode == 3 and "DANGER: the safe shutdown FAILED" in text, text
    assert json.loads((out / "shutdown_failures.json").read_text())[0]["failures"]
    # The restarted bench is another bench file (ports); train resumes from its checkpoint.
    served = _BenchProcess(bench)
    r = subprocess.run(
        _train_args(bench, data, out, "--resume"), capture_output=True, text=True, env=ENV,
        timeout=600,
    )  # fmt: skip
    step_a = _finished_safely(r, "kill-bench", *served.finish())
    _same_training(out, train_reference)
    RESULTS[("kill-bench", "train")] = (
        f"run stopped {gave_up_s:.1f} s after the kill, {_exit_text(proc.returncode)}; "
        f"--resume on the restarted bench: exit 0, model and per-step log bit-identical; "
        f"{_left_safe(step_a)}"
    )


# -- the report -------------------------------------------------------------------------------


BEHAVIOUR = """
## What the operator sees

Exit status:

* 0: done.
* 2: one `error:` line: bad input, an instrument that failed or was given up on, a
  file that cannot be written (the cause named: disk full, permission denied, file too
  large). A run file keeps every shot so far; `--resume` finishes it.
* 3: `DANGER: the safe shutdown FAILED`: per instrument what may still be on, at the
  last known value (e.g. the magnet at up to 1.75 A), what to do, and why; recorded in
  the run file (attribute `shutdown_failures`) or the training run directory
  (`shutdown_failures.json`).
* 130: Ctrl-C: the run stopped and the bench was made safe.
* 143: SIGTERM: the same, and it says so.

* **Giving up on a stalled instrument.** The first exchange that gets no reply starts a
  stall; every retry, reconnect and restore of that instrument then shares 90 % of one
  more timeout. An ordinary exchange is given up on within 2x the instrument's timeout;
  a sweep within its wait (timeout + sweep time + margin) plus one timeout. At the safe
  shutdown a stalled instrument gets two more tries of 90 % of a timeout each.
* **Ctrl-C.** The first is acknowledged on stderr at once (within 1 s in
  tests/test_fault_handling.py, sent while a sweep was stalled) and starts the safe
  shutdown: RF off, magnet ramped to 0 A at the bench's rate, outputs off. Any further
  Ctrl-C (or SIGTERM) is answered with what is still being made safe and how long it
  will take; it never cuts the ramp short.
* **Every instrument's shutdown is attempted**, whatever happened to the one before.
* **SIGKILL of labpgt** cannot be caught: the magnet stays where it was (the matrix
  above shows it) until a `--resume` or the operator ramps it down.
* **Resume on another bench** (other resources, families, `*IDN?`, embedded seed or
  noise) is refused with both identities on one line; `--allow-bench-change` continues
  and records the change in the file's `resumes`.
* **Pre-flight.** Every acquisition prints its file size, memory and instrument time
  before it starts, and is refused with the numbers when it cannot fit on disk or in
  memory.
"""


def test_write_docs_reliability_md():
    """Runs last (file order): writes the table when every cell of the matrix has a result."""
    missing = [(f, c) for f in FAULTS for c in COMMANDS if (f, c) not in RESULTS]
    if missing:
        pytest.skip(f"matrix incomplete in this run ({len(missing)} cells missing)")
    lines = [
        "# Reliability: fault x command",
        "",
        "Written by `tests/test_fault_matrix.py` (do not edit by hand). Each cell is one run",
        "on the virtual bench (noise, drift and hysteresis off, every instrument's timeout",
        f"{TIMEOUT_S:g} s, ramp step {LIMITS['ramp_step_a']} A at {LIMITS['ramp_rate_a_per_s']}"
        " A/s), compared with an uninterrupted run.",
        "drop, stall, error and garble strike each instrument once, one after the other, mid-run;",
        '"kill-bench" is SIGKILL of the process serving the instruments, "kill-labpgt"',
        "SIGKILL of labpgt. Limits are checked on every step the supply received.",
        "",
        "| fault | command | outcome |",
        "|---|---|---|",
    ]
    for fault in FAULTS:
        for command in COMMANDS:
            lines.append(f"| {fault} | {command} | {RESULTS[(fault, command)]} |")
    lines += ["", *BEHAVIOUR.strip("\n").splitlines()]
    path = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
    path.write_text("\n".join(lines) + "\n")
    assert path.read_text().count("\n| ") == len(FAULTS) * len(COMMANDS) + 1
