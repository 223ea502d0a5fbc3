"""Loop overhead of the drivers against the virtual bench (issue 3).

A *cycle* is what one hardware-in-the-loop query costs: set the drive frequency
and power on the generator, set the bias on the supply, run one single sweep on
the analyzer and read its 1001-point trace as an IEEE 488.2 binary block. All of
it goes through the real drivers (`instruments.bench.Bench`), pyvisa-py and
loopback TCP sockets to the virtual bench servers. A cycle is three exchanges:
the generator's `SOUR:FREQ;:SOUR:POW;` + read-backs + `SYST:ERR?`, the supply's
ramp step with its read-back and `SYST:ERR?`, and the analyzer's
`INIT;*OPC?;:TRAC:DATA? TRACE1`. `--sets` chooses how the drive and bias are set:
`shots` (default: `Bench.shots`, the loop `InstrumentReservoir.measure` runs for
acquire, calibrate and train: `Bench.apply`'s exchanges, with each next shot's checks
and messages done while the analyzer sweeps), `apply` (`Bench.apply` per cycle, the
generator's and the supply's exchanges overlapped), `set_cw` (one after the other),
`properties` (frequency and power as two property sets: four exchanges per cycle).

The bias moves by up to 0.02 A per cycle at a ramp rate of 10 A/s: the driver
spaces steps by step/rate x 1.1 + 1 ms, so some cycles wait for the ramp; that
wait is reported on its own.

1. No simulated delay: full cycles per second end to end, the ring model's
   compute included (target >= 300/s); the loop alone (model time taken out) is
   printed as information.
2. Real-time sweeps of 20 ms: wall time / instrument time (information), where
   instrument time is the sum of the sweep times the analyzer reports.
   Beside it, the bare-socket floor measured in the same run against the same
   kind of server: the same three exchanges written as raw SCPI text on plain
   sockets (`labpgt.sim.raw_client.RawClient`: no driver, no pyvisa), with the
   generator's and the supply's exchanges overlapped as `Bench.apply` does.
   The target (issue 14): the drivers' overhead per cycle above the floor <= 10 %
   of the floor's own, printed as the ratio drivers' overhead / floor's overhead
   (target <= 1.10). Driver and floor runs alternate (`--floor-runs` of each) and
   each side is pooled over its runs; a 95 % bootstrap interval of the ratio over the
   cycles, the same ratio of the medians, and each side's client CPU per cycle (thread
   time of the benchmark's process) are printed too.
3. The loop alone: sections 1 and 2 with one precomputed trace served.
4. The machine: how much slower a small piece of Python runs right after one
   sweep time without running it (asleep, or spinning), which every real-time
   cycle pays on its critical path.

With `--steps`, only a diagnostic runs: the client CPU (thread time) of each step
of a real-time cycle, the drivers' (`Bench.apply` and `read_trace` called as their
public parts) beside the floor's, to show where the drivers' own time goes.

Usage: .venv/bin/python benchmarks/loop_overhead.py [--cycles 600] [--realtime-cycles 300]
       [--sets shots|apply|set_cw|properties] [--floor-runs 3] [--steps]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import time
from multiprocessing.connection import Connection

import numpy as np
import pyvisa_py
import torch
from labpgt.instruments.bench import Bench, bench_config_from_resources
from labpgt.instruments.bias_supply import KepcoBOP
from labpgt.instruments.signal_generator import KeysightMXG
from labpgt.instruments.spectrum_analyzer import KeysightX
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

SPAN_HZ = 300e6
POINTS = 1001
SWEEP_S = 0.020
TARGET_CPS = 300.0
TARGET_OVER_FLOOR = 1.10
"""Drivers' real-time overhead per cycle / the bare-socket floor's (issue 14: <= 10 % above)."""


def rbw_for_sweep(span_hz: float, sweep_s: float) -> float:
    """RBW giving the analyzer's auto sweep time `sweep_s` (sweep = 2.5 span / RBW^2)."""
    return math.sqrt(2.5 * span_hz / sweep_s)


def settings(n: int, seed: int) -> np.ndarray:
    """n cycles of (drive Hz, drive dBm, bias A), bias moving by <= one ramp step."""
    rng = np.random.default_rng(seed)
    drive_hz = rng.uniform(2.05e9, 2.25e9, n)
    drive_dbm = rng.uniform(-30.0, -5.0, n)
    bias_a = 1.5 + np.cumsum(rng.uniform(-0.02, 0.02, n)).clip(-0.4, 0.4)
    return np.stack([drive_hz, drive_dbm, bias_a], axis=1)


def _serve(realtime: bool, pipe: Connection, fixed_trace: bool = False) -> None:
    """Child process: the virtual bench, as `labpgt sim serve` runs it (its own interpreter).

    With `fixed_trace` (section 3 only), the ring's `measure` computes its first
    trace and then hands back that same trace: the loop is timed without the
    model's CPU load, which on a busy 2-core machine also delays every wake-up.
    """
    torch.set_num_threads(1)
    ring = RingModel(RingParams(), seed=0)
    if fixed_trace:
        first: list = []
        measure = ring.measure

        def measure_once(*args: object, **kwargs: object):  # noqa: ANN202 - a Trace
            if not first:
                first.append(measure(*args, **kwargs))
            return first[0]

        ring.measure = measure_once  # type: ignore[method-assign]
    with VirtualBench(ring, realtime=realtime) as vb:
        pipe.send(vb.resources)
        while True:
            message = pipe.recv()
            if message == "stats":
                pipe.send((vb.analyzer.model_compute_s, vb.analyzer.sweeps))
            elif message == "stop":
                return


def run(
    realtime: bool, cycles: int, rbw_hz: float, sets: str, fixed_trace: bool = False
) -> dict[str, float]:
    ours, theirs = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(
        target=_serve, args=(realtime, theirs, fixed_trace), daemon=True
    )
    server.start()
    try:
        resources = ours.recv()
        cfg = bench_config_from_resources(
            resources,
            limits={"ramp_rate_a_per_s": 10.0, "ramp_step_a": 0.05},
            analyzer_defaults={
                "center_hz": 2.15e9,
                "span_hz": SPAN_HZ,
                "rbw_hz": rbw_hz,
                "points": POINTS,
            },
        )
        rows = settings(cycles + 10, seed=1)
        with Bench.open(cfg) as bench:
            gen, sa, supply = bench.generator, bench.analyzer, bench.supply
            gen.frequency_hz, gen.power_dbm = rows[0, 0], rows[0, 1]
            bench.enable_outputs()
            supply.current_a = 1.5
            sweep_s = sa.sweep_time_s
            for f_hz, p_dbm, i_a in rows[:10]:  # warm-up: sessions, caches, allocator
                gen.set_cw(f_hz, p_dbm)
                supply.current_a = i_a
                sa.read_trace()
            ours.send("stats")
            compute0_s, _ = ours.recv()
            ramp0_s = supply.ramp_wait_s
            ends: list[float] = []
            steps_ns: list[list[int]] = []
            cpu0_s = time.thread_time()
            t0 = time.perf_counter()
            if sets == "properties":
                for f_hz, p_dbm, i_a in rows[10:]:
                    gen.frequency_hz = f_hz
                    gen.power_dbm = p_dbm
                    supply.current_a = i_a
                    _, trace_dbm = sa.read_trace()
                    ends.append(time.perf_counter())
            elif sets == "set_cw":
                for f_hz, p_dbm, i_a in rows[10:]:
                    gen.set_cw(f_hz, p_dbm)
                    supply.current_a = i_a
                    _, trace_dbm = sa.read_trace()
                    ends.append(time.perf_counter())
            elif sets == "shots":
                for trace_dbm in bench.shots([tuple(row) for row in rows[10:]]):  # noqa: B007
                    ends.append(time.perf_counter())
            elif sets == "steps":
                for f_hz, p_dbm, i_a in rows[10:]:
                    steps_ns.append(_apply_in_steps(bench, f_hz, p_dbm, i_a))
                    ends.append(time.perf_counter())
                trace_dbm = sa.read_trace()[1]
            else:
                for f_hz, p_dbm, i_a in rows[10:]:
                    bench.apply(f_hz, p_dbm, i_a)
                    _, trace_dbm = sa.read_trace()
                    ends.append(time.perf_counter())
            wall_s = time.perf_counter() - t0
            cpu_s = time.thread_time() - cpu0_s
            ramp_s = supply.ramp_wait_s - ramp0_s
            ours.send("stats")
            compute1_s, _ = ours.recv()
            compute_s = compute1_s - compute0_s
            assert trace_dbm.shape == (POINTS,) and np.isfinite(trace_dbm).all()
    finally:
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
    cycle_s = np.diff([t0, *ends])
    over_s = cycle_s - (sweep_s if realtime else 0.0)
    return {
        "cycles": cycles,
        "median_overhead_s": float(np.median(over_s)),
        "p90_overhead_s": float(np.percentile(over_s, 90)),
        "overheads_s": over_s,
        "wall_s": wall_s,
        "cycles_per_s": cycles / wall_s,
        "ms_per_cycle": 1e3 * wall_s / cycles,
        "sweep_s": sweep_s,
        "compute_s": compute_s,
        "ramp_s": ramp_s,
        "loop_s": wall_s - compute_s,
        "loop_cycles_per_s": cycles / (wall_s - compute_s),
        "exchange_s": wall_s - compute_s - ramp_s,
        "instrument_s": cycles * sweep_s if realtime else 0.0,
        "client_cpu_s": cpu_s,
        "steps_ns": steps_ns,
    }


DRIVER_STEPS = (
    "check the drive values (check_controls)",
    "check the bias value (check_controls)",
    "send the drive settings (send_controls, overlap=True)",
    "bias exchange: ramp step, read-back, SYST:ERR? (send_controls)",
    "drive read-backs and SYST:ERR? (finish)",
    "sweep and trace (read_trace)",
)
FLOOR_STEPS = (
    "format and send the drive message",
    "format and send the bias message",
    "read the bias reply",
    "read the drive reply",
    "sweep and trace",
)


def _apply_in_steps(bench: Bench, f_hz: float, p_dbm: float, i_a: float) -> list[int]:
    """`Bench.apply` and `read_trace` as their public parts; the thread time (ns) of each."""
    gen, supply = bench.generator, bench.supply
    marks = [time.thread_time_ns()]
    checked = gen.check_controls(frequency_hz=f_hz, power_dbm=p_dbm)
    marks.append(time.thread_time_ns())
    bias = supply.check_controls(current_a=i_a)
    marks.append(time.thread_time_ns())
    with gen.conn.lock, supply.conn.lock:
        finish = gen.send_controls(checked, overlap=True)
        marks.append(time.thread_time_ns())
        supply.send_controls(bias)
        marks.append(time.thread_time_ns())
        finish()
        marks.append(time.thread_time_ns())
    bench.analyzer.read_trace()
    marks.append(time.thread_time_ns())
    return np.diff(marks).tolist()


def _message(*units: str) -> str:
    """One program message of several units, each from the root (`;:`; common commands `;`)."""
    message = units[0]
    for unit in units[1:]:
        message += f";{unit}" if unit.startswith("*") else f";:{unit.lstrip(':')}"
    return message


def run_floor(cycles: int, rbw_hz: float, steps: bool = False) -> dict[str, float]:
    """Real-time cycles as raw SCPI on plain sockets: the floor under any driver.

    With `steps`, the thread time after each step of a cycle is noted (`FLOOR_STEPS`).
    """
    ours, theirs = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(target=_serve, args=(True, theirs), daemon=True)
    server.start()
    try:
        resources = ours.recv()
        gen = RawClient(resources["generator"])
        sa = RawClient(resources["analyzer"])
        supply = RawClient(resources["supply"])
        try:
            # The drivers' own declared SCPI (their controls' commands), sent without them.
            gen_cls, sa_cls, supply_cls = KeysightMXG, KeysightX, KepcoBOP
            supply_setup = [
                *supply_cls.setup_commands,
                supply_cls.compliance_v.set_text(20.0),
                supply_cls.output_on.set_text(True),
                supply_cls.current_a.set_text(1.5),
            ]
            assert supply.ask(_message(*supply_setup, "*OPC?")) == "1"
            assert gen.ask(_message(gen_cls.rf_on.set_text(True), "*OPC?")) == "1"
            setup = _message(
                sa_cls.continuous.set_text(False),
                *sa_cls.binary_setup,
                sa_cls.center_hz.set_text(2.15e9),
                sa_cls.span_hz.set_text(SPAN_HZ),
                sa_cls.rbw_hz.set_text(rbw_hz),
                sa_cls.points.set_text(POINTS),
                sa_cls.sweep_time_s.get_command,
            )
            sweep_s = float(sa.ask(setup))
            frequency, power = gen_cls.frequency_hz, gen_cls.power_dbm
            drive = _message(
                frequency.set_command,
                power.set_command,
                frequency.get_command,
                power.get_command,
                "SYST:ERR?",
            )
            current = supply_cls.current_a
            bias = _message(current.set_command, current.get_command, "SYST:ERR?")
            sweep = _message(sa_cls.init_command, sa_cls.trace_query)
            rows = settings(cycles + 10, seed=1)
            ends: list[float] = []
            steps_ns: list[list[int]] = []
            marks: list[int] | None = None
            t0 = cpu0_s = 0.0
            for index, (f_hz, p_dbm, i_a) in enumerate(rows):
                if index == 10:  # after the same warm-up as the drivers get
                    cpu0_s = time.thread_time()
                    t0 = time.perf_counter()
                if steps and index >= 10:
                    marks = [time.thread_time_ns()]
                    steps_ns.append(marks)
                gen.send(drive.format(f"{f_hz:.12g}", f"{p_dbm:.12g}"))
                if marks is not None:  # --steps only
                    marks.append(time.thread_time_ns())
                supply.send(bias.format(f"{i_a:.12g}"))
                if marks is not None:  # --steps only
                    marks.append(time.thread_time_ns())
                assert supply.read_line().endswith('+0,"No error"')
                if marks is not None:  # --steps only
                    marks.append(time.thread_time_ns())
                assert gen.read_line().endswith('+0,"No error"')
                if marks is not None:  # --steps only
                    marks.append(time.thread_time_ns())
                sa.send(sweep)
                assert sa.read_exact(2) == b"1;"
                trace = np.frombuffer(sa.read_block(), dtype="<f4")
                if marks is not None:  # --steps only
                    marks.append(time.thread_time_ns())
                if index >= 10:
                    ends.append(time.perf_counter())
            assert trace.shape == (POINTS,)
            wall_s = time.perf_counter() - t0
            cpu_s = time.thread_time() - cpu0_s
        finally:
            for client in (gen, sa, supply):
                client.close()
    finally:
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
    over_s = np.diff([t0, *ends]) - sweep_s
    return {
        "cycles": cycles,
        "wall_s": wall_s,
        "sweep_s": sweep_s,
        "instrument_s": cycles * sweep_s,
        "median_overhead_s": float(np.median(over_s)),
        "p90_overhead_s": float(np.percentile(over_s, 90)),
        "overheads_s": over_s,
        "client_cpu_s": cpu_s,
        "steps_ns": [np.diff(m).tolist() for m in steps_ns],
    }


def pooled(results: list[dict]) -> dict[str, float]:
    """Several runs as one: total wall and instrument time, every cycle's overhead."""
    over_s = np.concatenate([r["overheads_s"] for r in results])
    return {
        "runs": len(results),
        "cycles": sum(r["cycles"] for r in results),
        "wall_s": sum(r["wall_s"] for r in results),
        "instrument_s": sum(r["instrument_s"] for r in results),
        "client_cpu_s": sum(r["client_cpu_s"] for r in results),
        "median_overhead_s": float(np.median(over_s)),
        "p90_overhead_s": float(np.percentile(over_s, 90)),
        "overheads_s": over_s,
    }


def ratio_interval(
    drivers_s: np.ndarray, floor_s: np.ndarray, draws: int = 2000
) -> tuple[float, float]:
    """95 % bootstrap interval of mean(drivers' overheads) / mean(floor's), cycles resampled."""
    rng = np.random.default_rng(0)
    d = rng.choice(drivers_s, size=(draws, drivers_s.size)).mean(axis=1)
    f = rng.choice(floor_s, size=(draws, floor_s.size)).mean(axis=1)
    low, high = np.percentile(d / f, [2.5, 97.5])
    return float(low), float(high)


def _spread(result: dict[str, float]) -> str:
    """Typical cycle vs the mean the ratio uses: scheduling spikes show as the difference."""
    return (
        f"overhead per cycle (information): median {1e3 * result['median_overhead_s']:.2f} ms, "
        f"90th percentile {1e3 * result['p90_overhead_s']:.2f} ms"
    )


def _small_work() -> None:
    """A small piece of the Python a cycle runs (~60 us warm): format settings, parse, decode."""
    for i in range(8):
        message = f"SOUR:FREQ {2.1e9 + i:.0f};:SOUR:POW {-10.5 + i:.2f};:SYST:ERR?"
        reply = message.replace("SOUR", "+2.1E+09").split(";")
        float(reply[0].split()[-1].replace("+2.1E+09:FREQ", "1"))
        np.frombuffer(message.encode().ljust(64), dtype=np.float32).sum()


def cold_code_penalty(repeats: int = 200, pause_s: float = SWEEP_S) -> dict[str, float]:
    """Median time of `_small_work` back to back, after a 20 ms sleep, after a 20 ms spin.

    Section 4: code that has not run for one sweep runs several times slower on
    this VM, even when the process spun (never slept) in between, so its caches were
    emptied from outside. Every cycle of the real-time loop starts that way.
    """
    out = {}
    for mode in ("back to back", "after sleeping", "after spinning"):
        times = []
        for _ in range(repeats):
            if mode == "after sleeping":
                time.sleep(pause_s)
            elif mode == "after spinning":
                end = time.perf_counter() + pause_s
                while time.perf_counter() < end:
                    pass
            t0 = time.perf_counter()
            _small_work()
            times.append(time.perf_counter() - t0)
        out[mode] = float(np.median(times))
    return out


def steps_report(cycles: int, runs: int) -> None:
    """Where the client's CPU goes in a real-time cycle: median thread time of each step.

    Drivers (`Bench.apply` and `read_trace` called as their public parts) and floor
    runs alternate, `runs` of each; the steps' medians are taken over all cycles.
    """
    load_start = os.getloadavg()
    real_rbw = rbw_for_sweep(SPAN_HZ, SWEEP_S)
    driver_ns: list[list[int]] = []
    floor_ns: list[list[int]] = []
    for _ in range(max(runs, 1)):
        driver_ns += run(True, cycles, real_rbw, "steps")["steps_ns"]
        floor_ns += run_floor(cycles, real_rbw, steps=True)["steps_ns"]
    print("loop_overhead --steps: client CPU (thread time) per step of a real-time cycle")
    for side, names, rows in (
        ("drivers", DRIVER_STEPS, driver_ns),
        ("floor", FLOOR_STEPS, floor_ns),
    ):
        medians_us = np.median(np.array(rows), axis=0) / 1e3
        totals_us = np.array(rows).sum(axis=1) / 1e3
        print(
            f"{side} ({len(rows)} cycles): median of the cycle total {np.median(totals_us):.0f} us"
        )
        for name, median_us in zip(names, medians_us, strict=True):
            print(f"   {median_us:7.1f} us  {name}")
    print(
        f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.1f}' for x in load_start)}; "
        f"at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=600, help="cycles without delay")
    parser.add_argument("--realtime-cycles", type=int, default=300, help="real-time cycles per run")
    parser.add_argument(
        "--sets",
        choices=("shots", "apply", "set_cw", "properties"),
        default="shots",
        help="how drive and bias are set each cycle (default: Bench.shots, the loop "
        "InstrumentReservoir.measure runs for acquire, calibrate and train)",
    )
    parser.add_argument(
        "--floor-runs",
        type=int,
        default=3,
        help="real-time runs of the drivers and of the floor, alternated (load drifts alike)",
    )
    parser.add_argument(
        "--steps",
        action="store_true",
        help="only the client CPU of each step of a real-time cycle, drivers and floor",
    )
    args = parser.parse_args()
    load_start = os.getloadavg()
    if args.steps:
        steps_report(args.realtime_cycles, args.floor_runs)
        return

    fast_rbw = 300e3
    fast = run(False, args.cycles, fast_rbw, args.sets)
    real_rbw = rbw_for_sweep(SPAN_HZ, SWEEP_S)
    real = run(True, args.realtime_cycles, real_rbw, args.sets)
    # Drivers and floor alternate, D F D F ..., so a machine whose load drifts during
    # the run weighs on both alike; each side is pooled over its runs.
    driver_runs, floor_runs = [real], []
    for index in range(max(args.floor_runs, 1)):
        floor_runs.append(run_floor(args.realtime_cycles, real_rbw))
        if index < args.floor_runs - 1:
            driver_runs.append(run(True, args.realtime_cycles, real_rbw, args.sets))
    drivers, floor = pooled(driver_runs), pooled(floor_runs)
    ratio = real["wall_s"] / real["instrument_s"]
    floor_ratio = floor["wall_s"] / floor["instrument_s"]
    fast_fixed = run(False, args.cycles, fast_rbw, args.sets, fixed_trace=True)
    real_fixed = run(True, args.realtime_cycles, real_rbw, args.sets, fixed_trace=True)

    grid = AnalyzerGrid(center_hz=2.15e9, span_hz=SPAN_HZ, rbw_hz=real_rbw, points=POINTS)
    how = {
        "shots": "Bench.shots, the next shot prepared during each sweep",
        "apply": "Bench.apply",
        "set_cw": "set_cw",
        "properties": "two property sets",
    }
    how = how[args.sets]
    print(
        f"loop_overhead: set drive Hz + dBm ({how}), set bias, single sweep, "
        "1001-point REAL,32 trace"
    )
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, pyvisa-py {pyvisa_py.__version__}, loopback TCP"
    )
    print()
    print(f"1. no simulated delay ({fast['cycles']} cycles, RBW {fast_rbw / 1e3:.0f} kHz)")
    ok = fast["cycles_per_s"] >= TARGET_CPS
    print(
        f"   end to end (ring model included): {fast['cycles_per_s']:.0f} cycles/s "
        f"({fast['ms_per_cycle']:.2f} ms/cycle); target >= {TARGET_CPS:.0f}/s: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    print(
        f"   of which the ring model (sim.ring.measure, server side) took "
        f"{1e3 * fast['compute_s'] / fast['cycles']:.2f} ms/cycle"
    )
    print(
        f"   loop overhead alone (drivers + pyvisa-py + sockets + SCPI servers, model excluded; "
        f"information, not the target): {1e3 * fast['loop_s'] / fast['cycles']:.2f} ms/cycle = "
        f"{fast['loop_cycles_per_s']:.0f} cycles/s"
    )
    print(
        f"   of which waiting for the bias ramp rate {1e3 * fast['ramp_s'] / fast['cycles']:.2f} "
        f"ms/cycle, exchanges and client {1e3 * fast['exchange_s'] / fast['cycles']:.2f} ms/cycle"
    )
    print(
        f"2. real-time sweeps ({real['cycles']} cycles, span {SPAN_HZ / 1e6:.0f} MHz, "
        f"RBW {real_rbw / 1e3:.1f} kHz, sweep {1e3 * real['sweep_s']:.2f} ms; "
        f"grid says {1e3 * grid.sweep_time_s:.2f} ms)"
    )
    print(
        f"   ring model {1e3 * real['compute_s'] / real['cycles']:.2f} ms/cycle "
        "(runs inside the sweep time, as a real analyzer measures while it sweeps)"
    )
    print(
        f"   wall {real['wall_s']:.3f} s / instrument {real['instrument_s']:.3f} s = "
        f"{ratio:.3f} ({1e3 * (real['wall_s'] - real['instrument_s']) / real['cycles']:.2f} ms "
        "overhead/cycle; information: the target is judged against the floor below)"
    )
    print(f"   {_spread(real)}")
    driver_over_s = (drivers["wall_s"] - drivers["instrument_s"]) / drivers["cycles"]
    floor_over_s = (floor["wall_s"] - floor["instrument_s"]) / floor["cycles"]
    over_floor = driver_over_s / floor_over_s if floor_over_s > 0 else math.inf
    print(
        f"   drivers over {drivers['runs']} runs ({drivers['cycles']} cycles): wall / instrument "
        f"= {drivers['wall_s'] / drivers['instrument_s']:.3f} "
        f"({1e3 * driver_over_s:.2f} ms overhead/cycle)"
    )
    print(
        f"   bare-socket floor, same run, alternated with those ({floor['runs']} runs, "
        f"{floor['cycles']} cycles of raw SCPI on plain sockets, no driver, no pyvisa): "
        f"wall / instrument = {floor_ratio:.3f} ({1e3 * floor_over_s:.2f} ms overhead/cycle)"
    )
    print(f"   drivers {_spread(drivers)}")
    print(f"   floor {_spread(floor)}")
    low, high = ratio_interval(drivers["overheads_s"], floor["overheads_s"])
    print(
        f"   drivers' overhead / floor's overhead = {1e3 * driver_over_s:.2f} / "
        f"{1e3 * floor_over_s:.2f} ms = {over_floor:.3f} (95 % interval over the cycles "
        f"{low:.3f}-{high:.3f}); target <= {TARGET_OVER_FLOOR:.2f} "
        f"(<= 10 % above the floor): {'PASS' if over_floor <= TARGET_OVER_FLOOR else 'FAIL'}"
    )
    driver_cpu_us = 1e6 * drivers["client_cpu_s"] / drivers["cycles"]
    floor_cpu_us = 1e6 * floor["client_cpu_s"] / floor["cycles"]
    print(
        "   client CPU per cycle (information: this process's thread time, the Python and "
        f"system calls on the client's side): drivers {driver_cpu_us:.0f} us, "
        f"floor {floor_cpu_us:.0f} us"
    )
    median_ratio = drivers["median_overhead_s"] / floor["median_overhead_s"]
    print(
        f"   the same with medians (information; the means carry the scheduling spikes of a "
        f"loaded machine): {1e3 * drivers['median_overhead_s']:.2f} / "
        f"{1e3 * floor['median_overhead_s']:.2f} ms = {median_ratio:.3f}"
    )
    n, n_rt = fast_fixed["cycles"], real_fixed["cycles"]
    print("3. the loop alone: the same cycles with one precomputed trace served (no model CPU)")
    print(
        f"   no delay: {fast_fixed['cycles_per_s']:.0f} cycles/s "
        f"({fast_fixed['ms_per_cycle']:.2f} ms/cycle), of which waiting for the bias ramp "
        f"rate {1e3 * fast_fixed['ramp_s'] / n:.2f} ms/cycle, exchanges and client "
        f"{1e3 * fast_fixed['exchange_s'] / n:.2f} ms/cycle"
    )
    print(
        f"   real-time: wall / instrument = "
        f"{real_fixed['wall_s'] / real_fixed['instrument_s']:.3f} "
        f"({1e3 * (real_fixed['wall_s'] - real_fixed['instrument_s']) / n_rt:.2f} ms "
        "overhead/cycle)"
    )
    print(f"   {_spread(real_fixed)}")
    cold = cold_code_penalty()
    warm = cold["back to back"]
    print(
        "4. the machine: median time of the same small piece of Python (format, parse, decode) "
        f"back to back {1e6 * warm:.0f} us; after {1e3 * SWEEP_S:.0f} ms asleep "
        f"{1e6 * cold['after sleeping']:.0f} us ({cold['after sleeping'] / warm:.1f}x); "
        f"after {1e3 * SWEEP_S:.0f} ms spinning {1e6 * cold['after spinning']:.0f} us "
        f"({cold['after spinning'] / warm:.1f}x)"
    )
    print(
        f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.1f}' for x in load_start)}; "
        f"at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
