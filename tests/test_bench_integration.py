"""Drivers against the virtual bench: pyvisa-py over real loopback sockets and a pty."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from labpgt.instruments.bench import Bench, bench_config_from_resources, dump_bench, load_bench
from labpgt.instruments.instrument_errors import ExecutionError, LimitError
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

FAST_LIMITS = {"ramp_rate_a_per_s": 20.0, "ramp_step_a": 0.1}
GRID = AnalyzerGrid(center_hz=2.15e9, span_hz=300e6, rbw_hz=300e3, points=1001)


def quiet_ring() -> RingModel:
    return RingModel(RingParams(noise=False, drift=False))


def config(vb: VirtualBench, **limits: float):
    return bench_config_from_resources(
        vb.resources,
        families=vb.families,
        limits={**FAST_LIMITS, **limits},
        analyzer_defaults=GRID.model_dump(),
    )


def assert_rate_respected(log, rate, step) -> None:
    """No step above `step`; between any two logged setpoints no faster than `rate`.

    Exact, with no allowance for a late server thread: the supply logs a step before it
    replies, and the driver times the next step from that reply.
    """
    on = [(t, i) for t, i, output in log if output]
    for (_, i0), (_, i1) in zip(on, on[1:], strict=False):
        assert abs(i1 - i0) <= step + 1e-9
    for a, (t0, i0) in enumerate(on):
        for t1, i1 in on[a + 1 :]:
            assert abs(i1 - i0) <= rate * (t1 - t0) + 1e-9, (i0, i1, t1 - t0)


def supply_state(vb: VirtualBench) -> tuple[float, bool]:
    return vb.supply.current_a, vb.supply.output_on


@pytest.mark.parametrize(
    ("families", "serial"),
    [
        (("keysight_mxg", "keysight_x", "kepco_bop"), False),
        (("rs_smb", "rs_fsx", "keysight_e36xx"), True),
        (("keysight_mxg", "rs_fsx", "kepco_bop"), True),
    ],
    ids=["keysight-tcp", "rs-e36xx-serial", "kepco-serial"],
)
def test_trace_matches_ring_evaluate(families, serial):
    gen_family, sa_family, supply_family = families
    with VirtualBench(
        quiet_ring(),
        serial_supply=serial,
        generator_family=gen_family,
        analyzer_family=sa_family,
        supply_family=supply_family,
    ) as vb:
        if serial:
            assert vb.resources["supply"].startswith("ASRL")
        with Bench.open(config(vb), handle_signals=False) as bench:
            assert bench.generator.family == gen_family
            assert bench.supply.family == supply_family
            bench.generator.frequency_hz = 2.1e9
            bench.generator.power_dbm = -10.0
            bench.enable_outputs()
            bench.supply.current_a = 1.8
            f_hz, p_dbm = bench.analyzer.read_trace()
            expected = vb.ring.evaluate(2.1e9, -10.0, 1.8, GRID)[0].numpy()
            np.testing.assert_allclose(f_hz, GRID.frequencies_hz().numpy())
            # float32 on the wire: agreement to its resolution at these levels.
            np.testing.assert_allclose(p_dbm, expected, atol=2e-4)
            assert p_dbm.max() > -40.0  # a real line, not just the floor
            assert bench.supply.measured_current_a == pytest.approx(1.8)
            assert bench.analyzer.trace_format == "real32"
        assert supply_state(vb) == (0.0, False)
        assert vb.generator.rf_on is False


def test_identity_snapshot_and_nodelay():
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        snap = bench.snapshot()
        assert snap["generator"]["identity"]["model"] == "N5183B"
        assert snap["analyzer"]["identity"]["model"] == "N9020A"
        assert snap["supply"]["identity"]["vendor"] == "KEPCO"
        assert snap["analyzer"]["settings"]["points"] == 1001
        assert snap["analyzer"]["settings"]["sweep_time_s"] == pytest.approx(GRID.sweep_time_s)
        assert snap["limits"]["ramp_rate_a_per_s"] == 20.0
        for instrument in bench.instruments.values():
            assert instrument.conn._transport.nodelay is True


def test_binary_trace_with_newline_bytes_is_not_cut():
    # A noisy (seeded) floor: 4,004 varied bytes per trace, so "\n" bytes occur.
    newlines = 0
    with (
        VirtualBench(RingModel(RingParams(), seed=3)) as vb,
        Bench.open(config(vb), handle_signals=False) as bench,
    ):
        for _ in range(3):
            _, p_dbm = bench.analyzer.read_trace()
            assert p_dbm.shape == (1001,) and np.isfinite(p_dbm).all()
            newlines += p_dbm.astype("<f4").tobytes().count(b"\n")
    assert newlines > 0, "no trace contained a 0x0A byte; the test would prove nothing"


def test_ramp_rate_and_step_never_exceeded():
    rate, step = 4.0, 0.05
    with VirtualBench(quiet_ring()) as vb:
        with Bench.open(config(vb, ramp_rate_a_per_s=rate, ramp_step_a=step)) as bench:
            bench.supply.output_on = True
            bench.supply.current_a = 0.6
            bench.supply.current_a = 0.3
            bench.supply.current_a = 0.55
        log = [(t, i) for t, i, on in vb.supply_log if on]
        assert log[-1][0] - log[0][0] >= 0.85 * (0.6 + 0.3 + 0.25 + 0.55) / rate
    assert len(log) > 20
    assert_rate_respected(vb.supply_log, rate, step)
    assert supply_state(vb) == (0.0, False)


def test_limit_refusal_sends_nothing():
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        before = len(vb.supply_log)
        with pytest.raises(LimitError, match=r"supply: current_a=3 A refused"):
            bench.supply.current_a = 3.0
        with pytest.raises(LimitError, match=r"generator: power_dbm=5 dBm refused"):
            bench.generator.power_dbm = 5.0
        assert len(vb.supply_log) == before
        assert vb.generator.power_dbm != 5.0


def test_outputs_off_after_an_exception():
    with VirtualBench(quiet_ring()) as vb:
        with pytest.raises(RuntimeError, match="boom"), Bench.open(config(vb)) as bench:
            bench.generator.power_dbm = -5.0
            bench.enable_outputs()
            bench.supply.current_a = 1.5
            assert supply_state(vb) == (1.5, True) and vb.generator.rf_on
            raise RuntimeError("boom")
        assert supply_state(vb) == (0.0, False)
        assert vb.generator.rf_on is False
        assert bench.closed


def test_bench_file_round_trip_opens(tmp_path):
    with VirtualBench(quiet_ring()) as vb:
        path = dump_bench(config(vb), tmp_path / "bench.toml")
        cfg = load_bench(path)
        assert cfg == config(vb)
        t0 = time.perf_counter()
        with Bench.open(path, handle_signals=False) as bench:
            assert bench.cfg.analyzer_defaults.points == 1001
        assert time.perf_counter() - t0 < 5.0


def test_evaluate_reference_is_noise_free():
    ring = quiet_ring()
    a = ring.evaluate(torch.tensor([2.1e9]), -10.0, 1.0, GRID)
    b = ring.evaluate(torch.tensor([2.1e9]), -10.0, 1.0, GRID)
    assert torch.equal(a, b)


def test_two_benches_in_one_process_do_not_close_each_other():
    # pyvisa shares one resource manager per VISA library: closing the first bench
    # must leave the second one's sessions open.
    with VirtualBench(quiet_ring()) as vb1, VirtualBench(quiet_ring()) as vb2:
        first = Bench.open(config(vb1), handle_signals=False)
        with Bench.open(config(vb2), handle_signals=False) as second:
            assert first.rm is second.rm
            first.close()
            second.generator.set_cw(2.1e9, -12.0)
            _, p_dbm = second.analyzer.read_trace()
            assert p_dbm.shape == (GRID.points,)
            assert second.analyzer.conn.reconnects == 0
        assert vb2.generator.rf_on is False


def test_set_cw_against_the_virtual_generator():
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        assert bench.generator.set_cw(2.1e9, -12.5) == (2.1e9, -12.5)
        assert (vb.generator.frequency_hz, vb.generator.power_dbm) == (2.1e9, -12.5)
        with pytest.raises(LimitError):
            bench.generator.set_cw(2.1e9, 50.0)
        assert vb.generator.power_dbm == -12.5


def test_apply_overlaps_generator_and_supply_and_keeps_every_check():
    rate, step = 4.0, 0.05
    cfg = {"ramp_rate_a_per_s": rate, "ramp_step_a": step}
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb, **cfg)) as bench:
        bench.enable_outputs()
        bench.apply(2.1e9, -12.0, 0.3)  # a ramp of six steps under the generator's reply
        assert (vb.generator.frequency_hz, vb.generator.power_dbm) == (2.1e9, -12.0)
        assert bench.generator._last["power_dbm"] == -12.0
        assert supply_state(vb) == (0.3, True) and bench.supply._setpoint_a == 0.3
        # A refused value (any of the three) sends nothing to either instrument.
        log_before = len(vb.supply_log)
        for args in ((2.1e9, 5.0, 0.35), (2.1e9, -12.0, 3.0), (9e9, -12.0, 0.35)):
            with pytest.raises(LimitError):
                bench.apply(*args)
        assert len(vb.supply_log) == log_before and vb.generator.frequency_hz == 2.1e9
        # A generator error is raised after the supply's setting went through.
        vb.inject_fault("generator", "error")
        with pytest.raises(ExecutionError) as info:
            bench.apply(2.2e9, -11.0, 0.35)
        assert info.value.instrument == "generator" and info.value.code == -200
        assert supply_state(vb) == (0.35, True) and vb.generator.frequency_hz == 2.1e9
        # A supply error is raised too, and the generator's exchange still completes.
        vb.inject_fault("supply", "error")
        with pytest.raises(ExecutionError) as info:
            bench.apply(2.2e9, -11.0, 0.4)
        assert info.value.instrument == "supply"
        assert vb.generator.frequency_hz == 2.2e9 and vb.supply.current_a == 0.35
        # None leaves a value as it is.
        bench.apply(power_dbm=-10.5)
        assert (vb.generator.frequency_hz, vb.generator.power_dbm) == (2.2e9, -10.5)
        bench.apply(current_a=0.4)
        assert vb.supply.current_a == 0.4
        # A dropped generator link during the overlap: the settings are redone.
        vb.inject_fault("generator", "drop")
        bench.apply(2.15e9, -10.0, 0.4)
        assert (vb.generator.frequency_hz, vb.generator.power_dbm) == (2.15e9, -10.0)
        assert bench.generator.conn.reconnects == 1
        _, p_dbm = bench.analyzer.read_trace()
        assert p_dbm.shape == (GRID.points,)
    assert_rate_respected(vb.supply_log, rate, step)


def test_single_step_applies_respect_the_rate():
    # Each set is one step sent with its read-back; the next step waits from the reply,
    # which the supply sends after logging the step, so the logged spacing can never be
    # shorter than step / rate - not even by a late server wake-up.
    rate, step = 2.0, 0.05
    cfg = {"ramp_rate_a_per_s": rate, "ramp_step_a": step}
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb, **cfg)) as bench:
        bench.supply.output_on = True
        start = len(vb.supply_log)
        for k in range(1, 21):
            bench.apply(current_a=0.01 * k)
        log = vb.supply_log[start:]
    assert [round(i, 6) for _, i, _ in log] == [round(0.01 * k, 6) for k in range(1, 21)]
    assert_rate_respected(log, rate, step)


def test_apply_without_a_bias_sends_nothing_to_the_supply() -> None:
    """Shots at an unchanged bias (current_a=None) are the generator's alone: no exchange with
    the supply at all (not even an error-queue query), so a stalled supply cannot stop them."""
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        bench.apply(2.1e9, -10.0, 1.0)
        sent: list[str] = []
        conn = bench.supply.conn
        write, query = conn.write, conn.query
        conn.write = lambda message, *a, **k: (sent.append(message), write(message, *a, **k))[1]
        conn.query = lambda message, *a, **k: (sent.append(message), query(message, *a, **k))[1]
        bench.apply(2.2e9, -10.0, None)
        bench.apply(2.3e9, None, None)
        assert sent == []
        bench.apply(None, None, 1.0)  # the same bias asked again: read back and checked
        assert sent and sent[-1].endswith("SYST:ERR?")


def test_shots_prepare_each_next_shot_during_the_sweep_and_raise_a_refusal_when_due() -> None:
    """`Bench.shots`: every shot's settings reach the instruments before its sweep; the next
    shot's values are checked while the analyzer sweeps, and a trace is given once the next
    sweep has started; a refused value raises only when its shot is due, after the traces
    before it, and sends nothing."""
    rows = [(2.10e9, -12.0, 0.2), (2.20e9, None, 0.25), (None, -11.0, None), (9e9, -10.0, 0.3)]
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        bench.enable_outputs()
        taken: list[tuple[float, float, float]] = []
        sweeping = [0]  # sweeps started and not yet read
        during_sweep: list[tuple[str, int]] = []
        start_sweep, prepare = bench.analyzer.start_sweep, bench.prepare

        def start_sweep_noted():
            finish = start_sweep()
            sweeping[0] += 1

            def finish_noted():
                sweeping[0] -= 1
                return finish()

            return finish_noted

        def prepare_noted(setting):
            during_sweep.append(("prepare", sweeping[0]))
            return prepare(setting)

        bench.analyzer.start_sweep, bench.prepare = start_sweep_noted, prepare_noted
        traces = []
        with pytest.raises(LimitError, match=r"generator: frequency_hz=9e\+09 Hz refused"):
            for power_dbm in bench.shots(
                rows,
                before_sweep=lambda i: taken.append(
                    (vb.generator.frequency_hz, vb.generator.power_dbm, vb.supply.current_a)
                ),
            ):
                during_sweep.append(("trace", sweeping[0]))
                traces.append(power_dbm)
        assert len(traces) == 3 and all(t.shape == (GRID.points,) for t in traces)
        assert taken == [(2.10e9, -12.0, 0.2), (2.20e9, -12.0, 0.25), (2.20e9, -11.0, 0.25)]
        # the first shot is prepared before any sweep; each next one, and every trace but
        # the last, while a sweep runs
        assert during_sweep == [("prepare", 0), ("prepare", 1), ("trace", 1), ("prepare", 1),
                                ("trace", 1), ("prepare", 1), ("trace", 0)]  # fmt: skip
        # the refused shot sent nothing: the instruments still hold the third shot's values
        assert (vb.generator.frequency_hz, vb.supply.current_a) == (2.20e9, 0.25)
        # the same traces as one shot at a time; the analyzer's link is in step
        for row, trace in zip(rows[:3], traces, strict=True):
            bench.apply(*row)
            np.testing.assert_allclose(bench.analyzer.read_trace()[1], trace)
        assert bench.analyzer.conn.reconnects == 0


def test_shots_left_early_leave_the_analyzer_usable() -> None:
    """A caller that stops taking traces leaves a sweep's reply unread: the next exchange
    renews the session instead of taking that trace for its own reply."""
    rows = [(2.1e9, -12.0, 0.2), (2.2e9, -12.0, 0.2), (2.3e9, -12.0, 0.2)]
    with VirtualBench(quiet_ring()) as vb, Bench.open(config(vb), handle_signals=False) as bench:
        bench.enable_outputs()
        shots = bench.shots(rows)
        next(shots)
        shots.close()  # the second shot's sweep was started and is not read
        assert bench.analyzer.sweep_time_s > 0  # a plain query gets its own reply
        assert bench.analyzer.conn.reconnects == 1
        _, trace = bench.analyzer.read_trace()
        assert trace.shape == (GRID.points,) and not bench.analyzer.drain_errors()


def test_e36xx_voltage_range_is_a_declared_control() -> None:
    """The E36xx's output range is a setting like any other: set through the one setter path
    (LOW/HIGH only, refused in one line otherwise), read back by its name and saved in the
    snapshot that goes with the data."""
    families = ("rs_smb", "rs_fsx", "keysight_e36xx")
    with (
        VirtualBench(quiet_ring(), generator_family=families[0], analyzer_family=families[1],
                     supply_family=families[2]) as vb,
        Bench.open(config(vb), handle_signals=False) as bench,
    ):  # fmt: skip
        supply = bench.supply
        assert supply.snapshot()["settings"]["voltage_range"] == "P20V"  # chosen by setup
        supply.voltage_range = "low"
        assert supply.voltage_range == "P8V"
        with pytest.raises(ValueError, match=r"voltage_range='MEDIUM' refused: one of LOW, HIGH"):
            supply.voltage_range = "MEDIUM"
        assert supply.voltage_range == "P8V"
        assert bench.generator.family == "rs_smb" and not supply.drain_errors()
