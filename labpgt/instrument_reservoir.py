"""InstrumentReservoir: the `PhysicalReservoir` over the three drivers of a `Bench`.

Per shot: set the bias current (the driver ramps it within the bench limits)
if it changed, set drive frequency and power if they changed, wait the settle
time, trigger one sweep and read the trace. Settle follows the same rule as
`SimulatedReservoir`: a bias change waits ``settle.bias_s``, else a drive
change waits ``settle.drive_s``. The wait is slept only when the bench file
says ``settle.wait = true``; it always counts as instrument time, which per
shot is settle plus the analyzer's reported sweep time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.reservoir import FeatureReservoir, PartialMeasurementError, ReservoirOutput
from labpgt.setting_bounds import (
    SETTING_NAMES,
    SettingBounds,
    SettleTimes,
)

if TYPE_CHECKING:
    from labpgt.instruments.bench import Bench

_DRIVE_HZ = SETTING_NAMES.index("drive_hz")
_DRIVE_DBM = SETTING_NAMES.index("drive_dbm")
_BIAS_A = SETTING_NAMES.index("bias_a")


class InstrumentReservoir(FeatureReservoir):
    """Drive settings -> measured features on a real or virtual bench (see module docstring)."""

    def __init__(
        self,
        bench: Bench,
        features: FeatureSpec = FeatureSpec(),
        *,
        bounds: SettingBounds | None = None,
        settle: SettleTimes | None = None,
        wait: bool | None = None,
        keep_traces: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bench = bench
        limits = SettingBounds.from_limits(bench.cfg.limits)
        if bounds is not None:
            bounds.check_within(limits, "the bench file's limits")
        cfg_settle = bench.cfg.settle
        frequency_hz = torch.from_numpy(np.asarray(bench.analyzer.frequencies_hz()))
        super().__init__(
            frequency_hz.to(torch.float64),
            features,
            bounds or limits,
            settle or SettleTimes(bias_s=cfg_settle.bias_s, drive_s=cfg_settle.drive_s),
            keep_traces,
        )
        self.wait = cfg_settle.wait if wait is None else wait
        self._sleep = sleep
        self.sweep_time_s = float(bench.analyzer.sweep_time_s)
        self._outputs_on = False
        self.virtual_bench: Any = None
        """The `sim.virtual.VirtualBench` behind an embedded reservoir (None on a real bench)."""

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        """Measure (N, 3) settings in order; a failing shot raises `PartialMeasurementError`."""
        settings, keys, settle_s = self._plan(settings)
        n = settings.shape[0]
        traces = torch.empty(n, self._frequency_hz.numel(), dtype=torch.float64)
        stamps = torch.empty(n, dtype=torch.float64)
        for i in range(n):
            try:
                self._apply(settings[i], keys[i])
                if self.wait and settle_s[i] > 0:
                    self._sleep(float(settle_s[i]))
                _, power_dbm = self.bench.analyzer.read_trace()
            except Exception as exc:
                self._previous_key = None  # the instrument state is unknown now
                done = self._output(traces[:i], settle_s[:i] + self.sweep_time_s, stamps[:i])
                raise PartialMeasurementError(done, settings[i].clone(), exc) from exc
            stamps[i] = time.time()
            if power_dbm.shape[0] != traces.shape[1]:
                raise UserError(
                    f"the analyzer returned {power_dbm.shape[0]} points; the reservoir was "
                    f"opened with {traces.shape[1]} (was the analyzer reconfigured?)"
                )
            traces[i] = torch.from_numpy(np.asarray(power_dbm, dtype=np.float64))
            self._previous_key = keys[i].clone()
        return self._output(traces, settle_s + self.sweep_time_s, stamps)

    def _apply(self, setting: torch.Tensor, key: torch.Tensor) -> None:
        prev = self._previous_key
        changed = [True] * 3 if prev is None else (key != prev).tolist()
        # One overlapped step: every limit checked before a byte is sent, the generator's
        # exchange in flight while the supply ramps; unchanged values are not re-sent.
        self.bench.apply(
            frequency_hz=float(setting[_DRIVE_HZ]) if changed[_DRIVE_HZ] else None,
            power_dbm=float(setting[_DRIVE_DBM]) if changed[_DRIVE_DBM] else None,
            current_a=float(setting[_BIAS_A]) if changed[_BIAS_A] else None,
        )
        if not self._outputs_on:
            # Settings first, then outputs: the supply ramps up from 0 A to the setpoint
            # and RF comes on at the requested frequency and power, never a stale one.
            self.bench.enable_outputs()
            self._outputs_on = True

    def reconnect(self) -> None:
        """Reopen every instrument's session (each driver restores its last settings).

        The next shot re-applies every setting and waits the bias settle, because
        what the instruments hold after a dropped link is not known for sure.
        """
        self._previous_key = None
        for instrument in self.bench.instruments.values():
            instrument.conn.close()
            instrument.sync()  # the next exchange reopens the session and restores it
        self.sweep_time_s = float(self.bench.analyzer.sweep_time_s)
        self._outputs_on = bool(self.bench.supply.output_on) and bool(self.bench.generator.rf_on)

    def snapshot(self) -> dict[str, Any]:
        return {
            "reservoir": "instrument",
            "bench": self.bench.snapshot(),
            "features": self.feature_spec.model_dump(),
            "bounds": self.bounds.model_dump(),
            "settle": {**self.settle.model_dump(), "wait": self.wait},
            "sweep_time_s": self.sweep_time_s,
        }

    def close(self) -> None:
        """RF off, bias ramped to 0 A, output off, sessions closed (the Bench does it)."""
        self._outputs_on = False
        self.bench.close()
