"""PerturbationScheduler on real reservoirs: de-duplication, order, repeats, failures."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel

from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.reservoir import PartialMeasurementError, PhysicalReservoir, ReservoirOutput
from labpgt.scheduler import PerturbationScheduler
from labpgt.setting_bounds import SettingBounds, setting_keys
from labpgt.simulated_reservoir import SimulatedReservoir

QUIET = RingParams(noise=False, drift=False, hysteresis=False)


class Recording:
    """A reservoir that forwards to a real one and records what it was asked and answered."""

    def __init__(self, inner: SimulatedReservoir) -> None:
        self.inner = inner
        self.bounds = inner.bounds
        self.settle = inner.settle
        self.calls: list[torch.Tensor] = []
        self.outputs: list[ReservoirOutput] = []
        self.reconnects = 0

    frequency_hz = property(lambda self: self.inner.frequency_hz)
    feature_names = property(lambda self: self.inner.feature_names)
    feature_dim = property(lambda self: self.inner.feature_dim)

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        self.calls.append(settings.clone())
        out = self.inner.measure(settings)
        self.outputs.append(out)
        return out

    def reconnect(self) -> None:
        self.reconnects += 1

    def snapshot(self) -> dict[str, Any]:
        return self.inner.snapshot()

    def close(self) -> None:
        pass

    @property
    def shots(self) -> torch.Tensor:
        return torch.cat(self.calls)


class Faulty(Recording):
    """Fails on chosen settings: ``failures`` times each (None: always), optionally part-way."""

    def __init__(self, inner, bad: torch.Tensor, failures: int | None, partial: bool) -> None:
        super().__init__(inner)
        self.bad_key = setting_keys(bad.reshape(1, 3), inner.bounds)[0]
        self.left = failures
        self.partial = partial

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        hit = (setting_keys(settings, self.bounds) == self.bad_key).all(dim=1).nonzero()
        if hit.numel() and (self.left is None or self.left > 0):
            if self.left is not None:
                self.left -= 1
            i = int(hit[0])
            if self.partial:
                done = super().measure(settings[:i]) if i else _empty(self.feature_dim)
                raise PartialMeasurementError(done, settings[i], OSError("link dropped"))
            raise OSError("link dropped")
        return super().measure(settings)


def _empty(f: int) -> ReservoirOutput:
    z = torch.zeros(0, dtype=torch.float64)
    return ReservoirOutput(torch.zeros(0, f, dtype=torch.float64), z, z)


def _sim(params: RingParams = QUIET, seed: int = 0) -> SimulatedReservoir:
    grid = AnalyzerGrid(points=201)  # coarse: these tests are about scheduling, not spectra
    return SimulatedReservoir(RingModel(params, seed=seed), grid, features=FeatureSpec(bins=8))


def _step_settings(gen: torch.Generator, batch: int = 16, probes: int = 3, channels: int = 4):
    """(batch, probes, channels, 3): each channel its own bias from a small set, like training."""
    f = 2.0e9 + 3e8 * torch.rand(batch, probes, channels, generator=gen, dtype=torch.float64)
    p = -30.0 + 25.0 * torch.rand(batch, probes, channels, generator=gen, dtype=torch.float64)
    b = torch.tensor([1.6, 1.7, 1.8, 1.9], dtype=torch.float64)[:channels].expand(batch, probes, -1)
    return torch.stack([f, p, b], dim=-1)


def test_protocol_is_satisfied():
    assert isinstance(_sim(), PhysicalReservoir)
    assert isinstance(Recording(_sim()), PhysicalReservoir)


def test_deduplicates_within_resolution_and_restores_the_callers_order():
    gen = torch.Generator().manual_seed(0)
    resolution = torch.tensor(SettingBounds().resolution, dtype=torch.float64)
    base = torch.round(_step_settings(gen, batch=4).reshape(-1, 3) / resolution) * resolution
    # duplicates: exact copies and copies shifted by less than half a resolution step
    jitter = torch.tensor([0.3, 0.004, 4e-5], dtype=torch.float64)
    settings = torch.cat([base, base[:20], base[5:15] + jitter, base[30:32]])
    settings = settings[torch.randperm(settings.shape[0], generator=gen)]
    rec = Recording(_sim())
    sched = PerturbationScheduler(rec)
    feats = sched.run(settings.reshape(2, -1, 3))
    assert feats.shape == (2, settings.shape[0] // 2, 8)
    assert rec.shots.shape[0] == base.shape[0]  # each distinct setting measured once
    assert sched.last.requested == settings.shape[0] and sched.last.unique == base.shape[0]
    # Each row gets the features of the first caller row with its key (the quiet ring is
    # deterministic, so measuring that row on its own must give the same numbers).
    keys = setting_keys(settings, rec.bounds)
    first = (keys[:, None] == keys[None]).all(-1).float().argmax(dim=1)
    assert (first != torch.arange(first.numel())).sum() == settings.shape[0] - base.shape[0]
    expected = _sim().measure(settings[first]).features
    torch.testing.assert_close(feats.reshape(-1, 8), expected)


def test_orders_bias_first_with_far_fewer_transitions_than_naive():
    gen = torch.Generator().manual_seed(1)
    settings = _step_settings(gen, batch=8)
    naive = PerturbationScheduler(_sim(), reorder=False, deduplicate=False)
    smart_res = Recording(_sim())
    smart = PerturbationScheduler(smart_res)
    naive.run(settings)
    smart.run(settings)
    shots = smart_res.shots
    assert (shots[1:, 2] >= shots[:-1, 2]).all()  # bias never goes back
    same_bias = shots[1:, 2] == shots[:-1, 2]
    assert (shots[1:, 0][same_bias] >= shots[:-1, 0][same_bias]).all()  # then frequency
    assert smart.last.bias_transitions == 4
    assert naive.last.bias_transitions == settings[..., 0].numel()
    assert naive.last.instrument_time_s > 3 * smart.last.instrument_time_s


def test_bias_sweep_runs_downward_when_starting_near_the_top():
    gen = torch.Generator().manual_seed(2)
    rec = Recording(_sim())
    sched = PerturbationScheduler(rec)
    sched.run(torch.tensor([[2.1e9, -10.0, 2.4]], dtype=torch.float64))
    sched.run(_step_settings(gen, batch=4))
    second = torch.cat(rec.calls[1:])
    assert (second[1:, 2] <= second[:-1, 2]).all() and second[0, 2] == 1.9


def test_repeats_are_back_to_back_and_averaged_in_db():
    rec = Recording(_sim(RingParams(), seed=5))  # noise on: repeats differ
    sched = PerturbationScheduler(rec, repeats=3)
    settings = torch.tensor(
        [[2.2e9, -10.0, 1.8], [2.1e9, -20.0, 1.8], [2.2e9, -10.0, 1.8]], dtype=torch.float64
    )
    feats = sched.run(settings)
    shots = rec.shots
    assert shots.shape[0] == 6 and sched.last.queries == 6 and sched.last.repeats == 4
    torch.testing.assert_close(shots[0], shots[2])  # 2.1 GHz first, three times in a row
    raw = torch.cat([o.features for o in rec.outputs])
    assert not torch.equal(raw[0], raw[1])
    torch.testing.assert_close(feats[1], raw[:3].mean(dim=0))
    torch.testing.assert_close(feats[0], raw[3:].mean(dim=0))
    torch.testing.assert_close(feats[2], feats[0])
    # a repeat changes nothing: one sweep, no settle
    times = torch.cat([o.instrument_time_s for o in rec.outputs])
    sweep_s = rec.inner.grid.sweep_time_s
    torch.testing.assert_close(times[1], torch.tensor(sweep_s, dtype=torch.float64))


@pytest.mark.parametrize("partial", [False, True])
def test_transient_failure_is_retried_after_reconnect(partial: bool):
    gen = torch.Generator().manual_seed(3)
    settings = _step_settings(gen, batch=4)
    bad = settings[2, 1, 3]
    res = Faulty(_sim(), bad, failures=2, partial=partial)
    sched = PerturbationScheduler(res, retries=2, chunk_size=8)
    feats = sched.run(settings)
    assert res.reconnects == 2 and sched.last.retries == 2
    torch.testing.assert_close(feats, PerturbationScheduler(_sim()).run(settings))
    assert sched.last.queries == settings[..., 0].numel()


@pytest.mark.parametrize("partial", [False, True])
def test_persistent_failure_raises_measurement_error_naming_the_setting(partial: bool):
    gen = torch.Generator().manual_seed(4)
    settings = _step_settings(gen, batch=4)
    bad = settings[1, 0, 2]
    res = Faulty(_sim(), bad, failures=None, partial=partial)
    sched = PerturbationScheduler(res, retries=1, chunk_size=16)
    with pytest.raises(MeasurementError, match=f"drive_hz={bad[0].item():.10g} Hz") as info:
        sched.run(settings)
    assert "link dropped" in str(info.value)
    torch.testing.assert_close(info.value.setting, bad)


def test_out_of_bounds_is_refused_before_anything_moves():
    rec = Recording(_sim())
    settings = torch.tensor([[2.1e9, -10.0, 1.8], [2.1e9, 3.0, 1.8]], dtype=torch.float64)
    with pytest.raises(UserError, match="drive_dbm=3 dBm is outside"):
        PerturbationScheduler(rec).run(settings)
    assert rec.calls == []


def test_counters_progress_and_instrument_time():
    gen = torch.Generator().manual_seed(6)
    settings = _step_settings(gen, batch=4)
    seen: list[tuple[int, int, float]] = []
    res = _sim()
    sched = PerturbationScheduler(res, chunk_size=10, progress=lambda *a: seen.append(a))
    sched.run(settings)
    n = settings[..., 0].numel()
    assert [s[0] for s in seen] == [*range(10, n, 10), n] and all(s[1] == n for s in seen)
    expected_s = 4 * res.settle.bias_s + (n - 4) * res.settle.drive_s + n * res.grid.sweep_time_s
    assert seen[-1][2] == pytest.approx(expected_s)
    assert sched.last.instrument_time_s == pytest.approx(expected_s)
    sched.run(settings)
    assert sched.stats.runs == 2 and sched.stats.queries == 2 * n
    assert 0 < sched.stats.overhead_s < sched.stats.wall_s


def test_measure_shots_keeps_the_given_order():
    rec = Recording(_sim())
    shots = torch.tensor([[2.2e9, -10.0, 1.9], [2.1e9, -10.0, 1.7]] * 2, dtype=torch.float64)
    out = PerturbationScheduler(rec).measure_shots(shots)
    torch.testing.assert_close(rec.shots, shots)
    assert out.features.shape == (4, 8)
