"""`SimulatedReservoir`: the `PhysicalReservoir` over an in-process simulated ring."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from labpgt.features import FeatureSpec
from labpgt.reservoir import FeatureReservoir, ReservoirOutput
from labpgt.setting_bounds import SettingBounds, SettleTimes
from labpgt.sim.grid import AnalyzerGrid

if TYPE_CHECKING:
    from labpgt.sim.ring import RingModel


class SimulatedReservoir(FeatureReservoir):
    """`PhysicalReservoir` over an in-process `sim.ring.RingModel`.

    ``measure`` runs the ring's stateful bench path (drift, hysteresis, noise,
    simulated clock) in the order given, with the same settle rule and
    instrument-time accounting as `InstrumentReservoir`: settle (bias change ->
    bias_s, else drive change -> drive_s) plus the grid's sweep time per shot.
    Timestamps are the Unix time of the call plus the simulated instrument
    time elapsed up to each shot's trace.
    """

    def __init__(
        self,
        ring: RingModel,
        grid: AnalyzerGrid = AnalyzerGrid(),
        features: FeatureSpec = FeatureSpec(),
        bounds: SettingBounds = SettingBounds(),
        settle: SettleTimes = SettleTimes(),
        keep_traces: bool = False,
    ) -> None:
        super().__init__(grid.frequencies_hz(), features, bounds, settle, keep_traces)
        self.ring = ring
        self.grid = grid

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        t0 = time.time()
        settings, keys, settle_s = self._plan(settings)
        trace = self.ring.measure(
            settings[:, 0], settings[:, 1], settings[:, 2], self.grid, settle_s=settle_s
        )
        if keys.shape[0]:
            self._previous_key = keys[-1].clone()
        instrument_s = settle_s + float(trace.sweep_time_s)
        traces = trace.power_dbm.to(torch.float64)
        return self._output(traces, instrument_s, t0 + torch.cumsum(instrument_s, dim=0))

    def differentiable_features(self, settings: torch.Tensor) -> torch.Tensor:
        """(N, 3) settings -> (N, F) features of the noise-free ring; autograd flows to settings.

        Pure (no drift, hysteresis state, clock or RNG is touched): the backprop
        reference and gradient checks use it.
        """
        s = settings.to(torch.float64)
        traces = self.ring.evaluate(s[:, 0], s[:, 1], s[:, 2], self.grid)
        return self.extractor(traces)

    def reconnect(self) -> None:
        """Nothing to reconnect in-process; the next shot re-settles everything."""
        self._previous_key = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "reservoir": "simulated",
            "ring_params": self.ring.params.model_dump(),
            "grid": self.grid.model_dump(),
            "features": self.feature_spec.model_dump(),
            "bounds": self.bounds.model_dump(),
            "settle": self.settle.model_dump(),
        }

    def close(self) -> None:
        """Nothing to make safe in-process."""

    def state_dict(self) -> dict[str, Any]:
        """Ring state (clock, drift, hysteresis, RNG) and the last shot: resume bit-identically."""
        previous = self._previous_key.clone() if self._previous_key is not None else None
        return {"ring": self.ring.state_dict(), "previous_key": previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ring.load_state_dict(state["ring"])
        previous = state.get("previous_key")
        self._previous_key = previous.clone() if previous is not None else None
