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
        """Measure (N, 3) settings in order; a failing shot raises `PartialMeasurementError`.

        The shots go through `Bench.shots`: while the analyzer sweeps one shot, the next
        one's values are checked and its messages built, so the time between a trace
        and the next sweep is the instruments' exchanges alone.
        """
        settings, keys, settle_s = self._plan(settings)
        n = settings.shape[0]
        points = self._frequency_hz.numel()
        powers: list[np.ndarray] = []
        stamps: list[float] = []
        shots = self.bench.shots(self._changed_values(settings, keys), self._before_sweep(settle_s))
        try:
            for power_dbm in shots:
                stamps.append(time.time())
                if power_dbm.shape[0] != points:
                    raise UserError(
                        f"the analyzer returned {power_dbm.shape[0]} points; the reservoir was "
                        f"opened with {points} (was the analyzer reconfigured?)"
                    )
                powers.append(power_dbm)
        except UserError:
            self._previous_key = None  # what the instruments hold is not what was planned
            raise
        except Exception as exc:
            i = len(powers)
            self._previous_key = None  # the instrument state is unknown now
            done = self._output(
                _as_traces(powers, points), settle_s[:i] + self.sweep_time_s, _stamps(stamps)
            )
            raise PartialMeasurementError(done, settings[i].clone(), exc) from exc
        finally:
            # A loop left early (an error, Ctrl-C) has a sweep in flight: its generator is
            # closed now, not when the traceback lets it go, so the analyzer's session is
            # marked for renewal before the safe shutdown or anything else talks to it.
            shots.close()
        if n:
            self._previous_key = keys[-1].clone()
        return self._output(
            _as_traces(powers, points), settle_s + self.sweep_time_s, _stamps(stamps)
        )

    def _changed_values(
        self, settings: torch.Tensor, keys: torch.Tensor
    ) -> list[tuple[float | None, float | None, float | None]]:
        """Each shot's (drive Hz, drive dBm, bias A), None where unchanged from the shot before.

        Unchanged values are not re-sent. Before the first shot of a measurement the
        previous shot is the last one measured (none after a reconnect or a failure).
        """
        if keys.shape[0] == 0:
            return []
        before = self._previous_key
        first = torch.ones(1, 3, dtype=torch.bool) if before is None else keys[:1] != before
        changed = torch.cat([first, keys[1:] != keys[:-1]]).tolist()
        order = (_DRIVE_HZ, _DRIVE_DBM, _BIAS_A)
        return [
            tuple(row[k] if flags[k] else None for k in order)  # type: ignore[misc]
            for row, flags in zip(settings.tolist(), changed, strict=True)
        ]

    def _before_sweep(self, settle_s: torch.Tensor) -> Callable[[int], None]:
        """What runs between a shot's settings and its sweep: outputs on, then settle."""
        settle = settle_s.tolist()

        def before_sweep(i: int) -> None:
            if not self._outputs_on:
                # Settings first, then outputs: the supply ramps up from 0 A to the setpoint
                # and RF comes on at the requested frequency and power, never a stale one.
                self.bench.enable_outputs()
                self._outputs_on = True
            if self.wait and settle[i] > 0:
                self._sleep(settle[i])

        return before_sweep

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


def _as_traces(powers: list[np.ndarray], points: int) -> torch.Tensor:
    """(N, points) float64 traces from the shots' power arrays."""
    if not powers:
        return torch.empty(0, points, dtype=torch.float64)
    return torch.from_numpy(np.stack(powers).astype(np.float64, copy=False))


def _stamps(stamps: list[float]) -> torch.Tensor:
    return torch.tensor(stamps, dtype=torch.float64)
