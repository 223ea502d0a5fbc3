"""InstrumentReservoir on the virtual bench (real drivers over loopback sockets)."""

from __future__ import annotations

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel

from labpgt.embedded import embedded_bench
from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.instrument_reservoir import InstrumentReservoir
from labpgt.reservoir import PhysicalReservoir
from labpgt.scheduler import PerturbationScheduler
from labpgt.setting_bounds import SettingBounds
from labpgt.simulated_reservoir import SimulatedReservoir

GRID = AnalyzerGrid(points=401)
SETTINGS = torch.tensor(
    [
        [2.10e9, -10.0, 1.8],
        [2.15e9, -20.0, 1.8],
        [2.13e9, -5.0, 1.7],
        [2.13e9, -5.0, 1.7],
        [2.25e9, -15.0, 2.0],
    ],
    dtype=torch.float64,
)


def _quiet(**kw):
    return embedded_bench(
        seed=7, noise=False, drift=False, hysteresis=False, grid=GRID, handle_signals=False, **kw
    )


@pytest.mark.parametrize("spec", [FeatureSpec(bins=24), FeatureSpec(kind="peaks", peaks=3)])
def test_virtual_bench_and_in_process_ring_give_the_same_features(spec: FeatureSpec):
    ring = RingModel(RingParams(noise=False, drift=False, hysteresis=False), seed=7)
    sim = SimulatedReservoir(ring, GRID, spec)
    with _quiet(features=spec) as bench_res:
        assert isinstance(bench_res, PhysicalReservoir)
        assert bench_res.feature_names == sim.feature_names
        torch.testing.assert_close(bench_res.frequency_hz, sim.frequency_hz)
        got = bench_res.measure(SETTINGS)
    want = sim.measure(SETTINGS)
    # traces cross the socket as float32: agreement to float32 precision
    torch.testing.assert_close(got.features, want.features, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(got.instrument_time_s, want.instrument_time_s)


def test_settle_is_slept_only_when_asked_and_always_counted():
    slept: list[float] = []
    with _quiet() as res:
        waiting = InstrumentReservoir(res.bench, FeatureSpec(bins=4), wait=True, sleep=slept.append)
        out = waiting.measure(SETTINGS)
        sweep_s = float(res.bench.analyzer.sweep_time_s)
        no_wait = InstrumentReservoir(res.bench, FeatureSpec(bins=4), sleep=slept.append)
        assert no_wait.wait is False  # the embedded bench file says settle.wait = false
        n_slept = len(slept)
        no_wait.measure(SETTINGS)
        assert len(slept) == n_slept
    bias_s, drive_s = res.settle.bias_s, res.settle.drive_s
    settle = [bias_s, drive_s, bias_s, 0.0, bias_s]
    assert slept == pytest.approx([s for s in settle if s > 0])
    expected = torch.tensor(settle, dtype=torch.float64) + sweep_s
    torch.testing.assert_close(out.instrument_time_s, expected)
    assert (out.timestamps_s[1:] >= out.timestamps_s[:-1]).all()


def test_outputs_follow_settings_and_close_leaves_the_bench_safe():
    with _quiet() as res:
        vb = res.virtual_bench
        res.measure(SETTINGS[:1])
        state = vb.generator.source_state()
        assert state.rf_on and state.frequency_hz == 2.1e9 and state.power_dbm == -10.0
        assert vb.supply.output_on and vb.supply.current_a == pytest.approx(1.8)
        res.close()
        assert not vb.generator.source_state().rf_on
        assert not vb.supply.output_on and vb.supply.current_a == 0.0


def test_bounds_wider_than_the_bench_limits_are_refused():
    with _quiet() as res:
        with pytest.raises(UserError, match=r"bias_a \[0, 3\] exceed the bench file's limits"):
            InstrumentReservoir(res.bench, bounds=SettingBounds(bias_a=(0.0, 3.0)))
        with pytest.raises(UserError, match="drive_dbm=5 dBm is outside"):
            res.measure(torch.tensor([[2.1e9, 5.0, 1.8]], dtype=torch.float64))


@pytest.mark.parametrize(("role", "kind"), [("generator", "error"), ("analyzer", "garble")])
def test_scheduler_retries_injected_faults_after_reconnect(role: str, kind: str):
    settings = SETTINGS.reshape(5, 1, 3)
    with _quiet(features=FeatureSpec(bins=8)) as res:
        clean = PerturbationScheduler(res).run(settings)
        res.virtual_bench.inject_fault(role, kind, count=1)
        sched = PerturbationScheduler(res, retries=2)
        again = sched.run(settings)
        assert res.virtual_bench.faults[role].fired[kind] == 1
    assert sched.last.retries == 1
    torch.testing.assert_close(again, clean, rtol=1e-6, atol=1e-4)


def test_a_fault_that_persists_raises_measurement_error_naming_the_setting():
    with _quiet(features=FeatureSpec(bins=8)) as res:
        res.virtual_bench.inject_fault("analyzer", "garble", count=50)
        sched = PerturbationScheduler(res, retries=2)
        with pytest.raises(
            MeasurementError, match="drive_hz=2130000000 Hz, drive_dbm=-5 dBm, bias_a=1.7 A"
        ):
            sched.run(SETTINGS)
        # the bench is still usable once the fault clears
        res.virtual_bench.faults["analyzer"].clear()
        res.reconnect()
        assert res.measure(SETTINGS[:1]).features.shape == (1, 8)


def test_ctrl_c_while_a_sweep_is_in_flight_leaves_the_analyzer_in_step(mocker):
    """Shot 1's trace is handed on while shot 2 sweeps; a Ctrl-C in that moment ends the
    measurement with the analyzer's session marked for renewal at once (not when the
    traceback is let go), so the next exchange - here while the exception is still being
    handled, as the safe shutdown would run - gets its own reply, not the sweep's."""
    import labpgt.instrument_reservoir as module

    with _quiet() as res:
        analyzer = res.bench.analyzer
        res.measure(SETTINGS[:1])  # outputs on, sessions warm
        real_time = module.time.time
        calls = iter(range(10))

        def interrupted_second_stamp() -> float:
            if next(calls) == 1:
                raise KeyboardInterrupt
            return real_time()

        mocker.patch.object(module.time, "time", interrupted_second_stamp)
        try:
            res.measure(SETTINGS)
        except KeyboardInterrupt:
            mocker.stopall()
            assert analyzer.sweep_time_s > 0  # a query answered by its own reply
            assert analyzer.conn.reconnects == 1
            _, trace = analyzer.read_trace()
            assert trace.shape == (GRID.points,)
        else:
            pytest.fail("the interrupt did not reach the caller")
