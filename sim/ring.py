"""The simulated magnonic auto-oscillation ring: a pure differentiable core plus bench state.

`RingModel.lines` / `RingModel.evaluate` are pure functions of the drive settings
(batched, differentiable with noise off). `RingModel.measure` is what the virtual
bench calls: it walks the shots in order through the magnet's hysteresis, the slow
drift and the analyzer noise, all driven by one seeded `torch.Generator`.

The physics lives in `sim.dispersion` (field, MSSW band, loop phase, losses, eigenmodes),
`sim.competition` (gain saturation and mode competition), `sim.injection` (locking,
pulling, idlers) and `sim.spectrum` (the analyzer display). docs/ring-physics.md explains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from labpgt.sim import dispersion
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring_lines import RingConditions, ring_lines
from labpgt.sim.spectrum import _WINDOW_SIGMAS, draw_trace, noise_draws, render_trace

TensorLike = torch.Tensor | float


class RingError(ValueError):
    """Bad input to the simulated ring (shape, non-finite value, negative time)."""


@dataclass
class Lines:
    """Spectral lines at the analyzer input for N settings."""

    frequency_hz: torch.Tensor
    """(N, L) line frequencies in Hz."""
    power_dbm: torch.Tensor
    """(N, L) line powers in dBm (very negative for lines that are not there)."""
    kind: tuple[str, ...]
    """One label per column: "drive" (drive tone plus locked power), "mode", "idler"."""


@dataclass
class Trace:
    """One analyzer sweep per shot."""

    frequency_hz: torch.Tensor
    """(P,) trace frequency axis in Hz."""
    power_dbm: torch.Tensor
    """(N, P) displayed power in dBm."""
    sweep_time_s: float
    """Duration of one sweep, 2.5 * span / RBW^2, in s."""
    time_s: torch.Tensor
    """(N,) simulated clock at the start of each shot's sweep, in s."""


_STATE_NUMBERS = (
    "time_s",
    "field_drift_oe",
    "gain_drift_db",
    "remanence_sign",
    "extreme_a",
    "bias_a",
)
"""The floats of `RingModel.state_dict` (each kept as the attribute `_<name>`)."""
_STATE_KEYS = (*_STATE_NUMBERS, "rng_state")


class RingModel:
    """Simulated ring. See docs/architecture.md (sim.ring) for the contract."""

    def __init__(self, params: RingParams | None = None, *, seed: int = 0) -> None:
        self._params = params if params is not None else RingParams()
        self._generator = torch.Generator().manual_seed(int(seed))
        self._time_s = 0.0
        self._field_drift_oe = 0.0
        self._gain_drift_db = 0.0
        # The magnet starts as if it had last come down to 0 A.
        self._remanence_sign = 1.0
        self._extreme_a = 0.0
        self._bias_a = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def params(self) -> RingParams:
        return self._params

    @property
    def time_s(self) -> float:
        """Simulated clock, s."""
        return self._time_s

    @property
    def remanence_sign(self) -> float:
        """Sign of H_rem now (-1, +1), or 0.0 with hysteresis switched off."""
        return self._remanence_sign if self._params.hysteresis else 0.0

    @property
    def drift_state(self) -> tuple[float, float]:
        """Current (field offset in Oe, gain offset in dB) from drift and injected steps."""
        return self._field_drift_oe, self._gain_drift_db

    # ------------------------------------------------------------------ pure core
    def field_oe(
        self, bias_a: TensorLike, remanence_sign: TensorLike | None = None
    ) -> torch.Tensor:
        """Field H = k*I + sign*H_rem in Oe (sign defaults to the current hysteresis state)."""
        bias = _as_tensor(bias_a, "bias_a")
        sign = self.remanence_sign if remanence_sign is None else remanence_sign
        return dispersion.field_oe(bias, _as_tensor(sign, "remanence_sign"), self._params)

    def lines(
        self,
        drive_hz: TensorLike,
        drive_dbm: TensorLike,
        bias_a: TensorLike,
        *,
        rf_on: bool | torch.Tensor = True,
        field_offset_oe: TensorLike | None = None,
        gain_offset_db: TensorLike | None = None,
        remanence_sign: TensorLike | None = None,
    ) -> Lines:
        """Lines at the analyzer input for N settings (pure, differentiable)."""
        frequency_hz, power_mw = self._lines_mw(
            drive_hz, drive_dbm, bias_a, rf_on, field_offset_oe, gain_offset_db, remanence_sign
        )
        return Lines(
            frequency_hz=frequency_hz,
            power_dbm=10.0 * torch.log10(power_mw + 1e-30),
            kind=self.line_kinds,
        )

    @property
    def line_kinds(self) -> tuple[str, ...]:
        m = self._params.mode_count
        return ("drive",) + ("mode",) * m + ("idler",) * m

    def evaluate(
        self,
        drive_hz: TensorLike,
        drive_dbm: TensorLike,
        bias_a: TensorLike,
        grid: AnalyzerGrid,
        *,
        rf_on: bool | torch.Tensor = True,
        field_offset_oe: TensorLike | None = None,
        gain_offset_db: TensorLike | None = None,
        remanence_sign: TensorLike | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Analyzer traces (N, P) float64 in dBm; noisy only when a generator is given.

        dtype: precision of the mode competition and the trace arithmetic (frequencies
        are always float64). None: float64 when autograd needs it, else float32 (the
        fast path: a few times faster; it differs from float64 by ~1e-5 dB, rarely by
        ~0.01 dB where two modes nearly tie); pass torch.float64 for finite-difference
        checks without autograd. `lines` is always float64.
        """
        if dtype is None:
            inputs = (drive_hz, drive_dbm, bias_a, rf_on, field_offset_oe, gain_offset_db)
            needs_grad = torch.is_grad_enabled() and any(
                isinstance(v, torch.Tensor) and v.requires_grad for v in (*inputs, remanence_sign)
            )
            dtype = torch.float64 if needs_grad else torch.float32
        frequency_hz, power_mw = self._lines_mw(
            drive_hz,
            drive_dbm,
            bias_a,
            rf_on,
            field_offset_oe,
            gain_offset_db,
            remanence_sign,
            competition_dtype=dtype,
        )
        if generator is not None and not self._params.noise:
            generator = None
        return render_trace(
            frequency_hz, power_mw, grid, self._params, generator=generator, dtype=dtype
        )

    def _lines_mw(
        self,
        drive_hz: TensorLike,
        drive_dbm: TensorLike,
        bias_a: TensorLike,
        rf_on: bool | torch.Tensor,
        field_offset_oe: TensorLike | None,
        gain_offset_db: TensorLike | None,
        remanence_sign: TensorLike | None,
        competition_dtype: torch.dtype = torch.float64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sign = self.remanence_sign if remanence_sign is None else remanence_sign
        settings = _broadcast(
            drive_hz=drive_hz,
            drive_dbm=drive_dbm,
            bias_a=bias_a,
            remanence_sign=sign,
            field_offset_oe=0.0 if field_offset_oe is None else field_offset_oe,
            gain_offset_db=0.0 if gain_offset_db is None else gain_offset_db,
            rf_on=rf_on,
        )
        return self._lines_core(*settings, competition_dtype)

    def _lines_core(
        self,
        fin: torch.Tensor,
        dbm: torch.Tensor,
        bias: torch.Tensor,
        sign_t: torch.Tensor,
        dfield: torch.Tensor,
        dgain: torch.Tensor,
        rf: torch.Tensor,
        competition_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`_lines_mw` on checked (N,) float64 tensors."""
        field = dispersion.field_oe(bias, sign_t, self._params) + dfield
        fast = competition_dtype == torch.float32
        return ring_lines(self._params, RingConditions(fin, dbm, field, dgain, rf), fast=fast)

    # ------------------------------------------------------------------ true values
    def mode_frequencies_hz(self, bias_a: float) -> torch.Tensor:
        """(M,) small-signal eigenmode frequencies at this bias and the current state, Hz."""
        with torch.no_grad():
            field = self.field_oe(float(bias_a)) + self._field_drift_oe
            return dispersion.frequency_of_k(
                dispersion.solve_modes(field, self._params), field.unsqueeze(-1), self._params
            )

    def fmr_hz(self, bias_a: float) -> float:
        """Bottom of the MSSW band at this bias and the current state, Hz."""
        field = self.field_oe(float(bias_a)) + self._field_drift_oe
        return float(dispersion.fmr_hz(field, self._params))

    def mode_spacing_hz(self, bias_a: float) -> float:
        """Spacing of the eigenmodes around the gain maximum at this bias, Hz (true value)."""
        _, f, net = self._modes_now(bias_a)
        j = int(net[1:-1].argmax()) + 1
        return float((f[j + 1] - f[j - 1]) / 2.0)

    def group_delay_s(self, bias_a: float) -> float:
        """Round-trip group delay at the mode of largest net gain, s."""
        k, f, net = self._modes_now(bias_a)
        j = int(net.argmax())
        with torch.no_grad():
            return float(dispersion.group_delay_s(k[j], f[j], self._params))

    def _modes_now(self, bias_a: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M,) eigenmodes at this bias and the current state: wavenumbers (rad/m),
        frequencies (Hz) and net round-trip gain less the fixed terms (-propagation loss, dB)."""
        p = self._params
        with torch.no_grad():
            field = self.field_oe(float(bias_a)) + self._field_drift_oe
            k = dispersion.solve_modes(field, p)
            f = dispersion.frequency_of_k(k, field, p)
            return k, f, -dispersion.propagation_loss_db(k, f, field, p)

    # ------------------------------------------------------------------ bench state
    def advance(self, dt_s: float) -> None:
        """Advance the simulated clock by dt_s; with drift on, field and gain random-walk."""
        dt = float(dt_s)
        if not math.isfinite(dt) or dt < 0:
            raise RingError(f"dt_s must be a finite time >= 0 s, got {dt_s}")
        self._time_s += dt
        if self._params.drift and dt > 0:
            z_field, z_gain = torch.randn(2, generator=self._generator, dtype=torch.float64)
            field_step, gain_step = self._drift_step(dt, float(z_field), float(z_gain))
            self._field_drift_oe += field_step
            self._gain_drift_db += gain_step

    def _drift_step(self, dt: Any, z_field: Any, z_gain: Any) -> tuple[Any, Any]:
        """Random-walk steps of the field (Oe) and gain (dB) offsets over dt s, for standard
        normal draws z (floats, or tensors of one step each)."""
        p = self._params
        return (
            p.field_drift_oe_per_min * (dt / 60.0) ** 0.5 * z_field,
            p.gain_drift_db_per_hour * (dt / 3600.0) ** 0.5 * z_gain,
        )

    def set_bias(self, bias_a: float) -> None:
        """Record a new bias current; updates the remanence sign (hysteresis rule).

        The remanent field lags the direction of travel: once the current has risen
        more than `hysteresis_threshold_a` above its lowest value since the last flip,
        H_rem becomes negative; once it has fallen that much below its highest value,
        positive. Smaller reversals leave the sign alone.
        """
        current = float(bias_a)
        if not math.isfinite(current):
            raise RingError(f"bias_a must be finite, got {bias_a}")
        threshold = self._params.hysteresis_threshold_a
        if self._remanence_sign < 0:
            self._extreme_a = max(self._extreme_a, current)
            if current < self._extreme_a - threshold:
                self._remanence_sign, self._extreme_a = 1.0, current
        else:
            self._extreme_a = min(self._extreme_a, current)
            if current > self._extreme_a + threshold:
                self._remanence_sign, self._extreme_a = -1.0, current
        self._bias_a = current

    def inject_drift(self, field_oe: float = 0.0, gain_db: float = 0.0) -> None:
        """Add a step to the field (Oe) and gain (dB) offsets (works with drift off too)."""
        self._field_drift_oe += float(field_oe)
        self._gain_drift_db += float(gain_db)

    def measure(
        self,
        drive_hz: TensorLike,
        drive_dbm: TensorLike,
        bias_a: TensorLike,
        grid: AnalyzerGrid,
        *,
        rf_on: bool | torch.Tensor = True,
        settle_s: TensorLike = 0.0,
    ) -> Trace:
        """Measure N shots in order: per shot set_bias, settle, sweep, advance by the sweep.

        One shot (what the virtual analyzer asks for) runs on NumPy arrays
        in NumPy float64, ~1 ms instead of ~5 ms through torch; N > 1 shots run as one
        torch batch in float32 (`evaluate`'s fast path). They draw the same random
        numbers and differ by float32 rounding: median ~3e-6 dB, up to ~0.02 dB where
        two modes nearly tie.
        """
        settings = dict(
            drive_hz=drive_hz, drive_dbm=drive_dbm, bias_a=bias_a, settle_s=settle_s, rf_on=rf_on
        )
        numbers = _plain_numbers(**settings)
        if numbers is not None:  # the virtual analyzer's call: no tensors on the way
            if numbers[3] < 0:
                raise RingError("settle_s must be >= 0 s")
            return self._measure_one(*numbers, grid)
        fin, dbm, bias, settle, rf = _broadcast(**settings)
        if (settle < 0).any():
            raise RingError("settle_s must be >= 0 s")
        if fin.shape[0] == 1:
            return self._measure_one(
                float(fin), float(dbm), float(bias), float(settle), float(rf), grid
            )
        return self._measure_batch(fin, dbm, bias, settle, rf, grid)

    def _measure_batch(
        self,
        fin: torch.Tensor,
        dbm: torch.Tensor,
        bias: torch.Tensor,
        settle: torch.Tensor,
        rf: torch.Tensor,
        grid: AnalyzerGrid,
    ) -> Trace:
        """`measure` of (N,) checked float64 settings as one torch batch."""
        n = fin.shape[0]
        sweep_s = grid.sweep_time_s
        signs = torch.empty(n, dtype=torch.float64)
        for i, current in enumerate(bias.tolist()):
            self.set_bias(current)
            signs[i] = self.remanence_sign
        # Each shot advances the clock twice: by its settle time, then by the sweep.
        steps = torch.stack([settle.detach(), torch.full_like(settle, sweep_s)], dim=1)
        clock = self._time_s + torch.cumsum(steps.reshape(-1), 0)
        shot_time = clock[0::2]
        field_path = torch.full((2 * n,), self._field_drift_oe, dtype=torch.float64)
        gain_path = torch.full((2 * n,), self._gain_drift_db, dtype=torch.float64)
        if self._params.drift:
            z = torch.randn(2 * n, 2, generator=self._generator, dtype=torch.float64)
            field_steps, gain_steps = self._drift_step(steps.reshape(-1), z[:, 0], z[:, 1])
            field_path = field_path + torch.cumsum(field_steps, 0)
            gain_path = gain_path + torch.cumsum(gain_steps, 0)
        generator = self._generator if self._params.noise else None
        with torch.no_grad():
            # evaluate(...) without autograd (float32 fast path) on the checked settings
            frequency_hz, power_mw = self._lines_core(
                fin, dbm, bias, signs, field_path[0::2], gain_path[0::2], rf, torch.float32
            )
            power = render_trace(
                frequency_hz, power_mw, grid, self._params, generator=generator, dtype=torch.float32
            )
        self._time_s = float(clock[-1])
        self._field_drift_oe = float(field_path[-1])
        self._gain_drift_db = float(gain_path[-1])
        return Trace(
            frequency_hz=grid.frequencies_hz(),
            power_dbm=power,
            sweep_time_s=sweep_s,
            time_s=shot_time,
        )

    def _measure_one(
        self, fin: float, dbm: float, bias: float, settle: float, rf: float, grid: AnalyzerGrid
    ) -> Trace:
        """`measure` of one shot on NumPy float64 arrays (the same physics, ~5x faster).

        The same state updates, the same random draws in the same order and the same
        clock and drift sums as the batched code, so seeds and `state_dict` carry over.
        """
        p = self._params
        sweep_s = grid.sweep_time_s
        self.set_bias(bias)
        field, gain = self._field_drift_oe, self._gain_drift_db
        field_end, gain_end = field, gain
        if p.drift:
            (zf_settle, zg_settle), (zf_sweep, zg_sweep) = torch.randn(
                2, 2, generator=self._generator, dtype=torch.float64
            ).tolist()
            field_settle, gain_settle = self._drift_step(settle, zf_settle, zg_settle)
            field_sweep, gain_sweep = self._drift_step(sweep_s, zf_sweep, zg_sweep)
            field, field_end = field + field_settle, field + (field_settle + field_sweep)
            gain, gain_end = gain + gain_settle, gain + (gain_settle + gain_sweep)
        total_field = dispersion.field_oe(bias, self.remanence_sign, p) + field
        # NumPy scalars, not arrays of one element: ~10x cheaper per operation
        numbers = (np.float64(v) for v in (fin, dbm, total_field, gain, rf))
        lines = ring_lines(p, RingConditions(*numbers))
        line_hz, line_mw = (np.reshape(v, (1, -1)) for v in lines)
        generator = self._generator if p.noise else None
        draws = noise_draws(1, line_hz.shape[1], grid.points, p, generator)
        jitter, scatter = (None if d is None else d.numpy().astype(np.float64) for d in draws)
        trace = draw_trace(line_hz, line_mw, grid, p, jitter, scatter, np.float64, _WINDOW_SIGMAS)
        shot_time = self._time_s + settle
        self._time_s = self._time_s + (settle + sweep_s)
        self._field_drift_oe, self._gain_drift_db = field_end, gain_end
        return Trace(
            frequency_hz=grid.frequencies_hz(),
            power_dbm=torch.from_numpy(trace),
            sweep_time_s=sweep_s,
            time_s=torch.tensor([shot_time], dtype=torch.float64),
        )

    def state_dict(self) -> dict[str, Any]:
        """Clock, drift, hysteresis and RNG state: load it to continue bit-identically."""
        state: dict[str, Any] = {key: getattr(self, f"_{key}") for key in _STATE_NUMBERS}
        state["rng_state"] = self._generator.get_state().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; raises RingError naming a missing key."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise RingError(f"ring state is missing {', '.join(missing)}")
        for key in _STATE_NUMBERS:
            setattr(self, f"_{key}", float(state[key]))
        self._generator.set_state(state["rng_state"].clone())


def _as_tensor(value: TensorLike | bool, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value if value.dtype == torch.float64 else value.to(torch.float64)
    try:
        return torch.tensor(float(value), dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise RingError(f"{name} must be a number or a tensor, got {value!r}") from exc


def _plain_numbers(**inputs: TensorLike | bool) -> list[float] | None:
    """The inputs as checked floats when none is a tensor (one setting, as the virtual
    instruments give it), else None."""
    if any(isinstance(value, torch.Tensor) for value in inputs.values()):
        return None
    numbers = []
    for name, value in inputs.items():
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise RingError(f"{name} must be a number or a tensor, got {value!r}") from exc
        if not math.isfinite(number):
            raise RingError(f"{name} contains a non-finite value")
        numbers.append(number)
    return numbers


def _broadcast(**inputs: TensorLike | bool) -> tuple[torch.Tensor, ...]:
    """Inputs as float64 tensors broadcast to one (N,) shape (N = 1 for plain numbers)."""
    numbers = _plain_numbers(**inputs)
    if numbers is not None:  # one tensor for all, instead of one tensor and a check each
        return torch.tensor(numbers, dtype=torch.float64).reshape(len(numbers), 1).unbind(0)
    tensors = [_as_tensor(value, name) for name, value in inputs.items()]
    try:
        out = torch.broadcast_tensors(*tensors)
    except RuntimeError as exc:
        shapes = {name: tuple(t.shape) for name, t in zip(inputs, tensors, strict=True)}
        raise RingError(f"inputs do not broadcast to one batch: shapes {shapes}") from exc
    if out[0].ndim == 0:
        out = tuple(t.reshape(1) for t in out)
    if out[0].ndim != 1:
        raise RingError(f"inputs must be scalars or (N,) tensors, got shape {tuple(out[0].shape)}")
    for name, t in zip(inputs, out, strict=True):
        if not torch.isfinite(t.detach()).all():
            raise RingError(f"{name} contains a non-finite value")
    return out
