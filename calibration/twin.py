"""A physics twin surrogate: the differentiable ring model with a few parameters fitted.

`TwinSurrogate` renders settings [drive_hz, drive_dbm, bias_a] to features through
`sim.ring.RingModel` (noise, drift and hysteresis off; float64 with autograd) and the same
feature extractor the reservoir uses. It starts from the model's default parameters
adjusted by what calibrate measures (field per ampere, noise floor), never from the bench's
own parameters, and fits to the calibration shots (dB error, full batch):

* by search (the model reads them as plain numbers): the propagation length (sets the mode
  spacing), the gain scale (how hard the modes saturate), the Adler locking range and the
  drive's through loss, one at a time on a grid, each candidate with the field offset
  re-scanned (the comb's position is periodic in the mode spacing, so a gradient from one
  start finds the nearest comb alignment, not the best);
* by Adam: field offset (Oe; the remanence and the field-per-ampere error at the operating
  bias), gain offset (dB), drive offset (dB: generator-to-ring coupling, scales the
  locking) and line level offset (dB: analyzer calibration).

A real ring's physics differs from the model's; the fitted parameters absorb what they can
and the rest shows in the held-out error (docs/calibration.md, "Physics twin").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from labpgt.calibration.surrogate import holdout_split
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.spectrum import render_trace
from torch import nn

from labpgt.features import FeatureExtractor, FeatureSpec

FITTED_OFFSETS = ("field_offset_oe", "gain_offset_db", "drive_offset_db", "level_offset_db")
"""The twin's gradient-fitted parameters, in the order of its `offsets` tensor."""

SEARCHED = {
    "propagation_length_m": (0.94, 1.06, 13, "scale"),
    "gain_scale_db": (0.6, 1.6, 11, "scale"),
    "locking_range_hz": (0.5, 1.6, 12, "scale"),
    "drive_through_loss_db": (-5.0, 5.0, 11, "shift"),
}
"""Model parameters fitted by grid search: (low, high, points, scale or shift of the start)."""

FIELD_SCAN_OE = (-8.0, 8.0, 0.25)
"""First field-offset scan (low, high, step), Oe: a few mode spacings (≈ 1.1 Oe each)."""


class TwinSurrogate(nn.Module):
    """Settings (..., 3) in Hz, dBm, A -> (..., F) features, through the ring model."""

    def __init__(self, params: RingParams, grid: AnalyzerGrid, spec: FeatureSpec) -> None:
        super().__init__()
        self.ring_params = params.model_copy(
            update={"noise": False, "drift": False, "hysteresis": False}
        )
        self.grid = grid
        self.spec = spec
        self._ring = RingModel(self.ring_params)
        self._extractor = FeatureExtractor(spec, grid.frequencies_hz())
        self.feature_dim = int(self._extractor.dim)
        self.offsets = nn.Parameter(torch.zeros(len(FITTED_OFFSETS), dtype=torch.float64))

    grey_box = False
    kind = "twin"

    def with_params(self, **update: float) -> TwinSurrogate:
        """A twin of other model parameters, carrying this one's offsets."""
        twin = TwinSurrogate(self.ring_params.model_copy(update=update), self.grid, self.spec)
        with torch.no_grad():
            twin.offsets.copy_(self.offsets)
        return twin

    def forward(self, settings: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        s = settings.to(torch.float64)
        lead = s.shape[:-1]
        s = s.reshape(-1, 3)
        o = self.offsets if offsets is None else offsets
        lines = self._ring.lines(
            s[:, 0],
            s[:, 1] + o[2],
            s[:, 2],
            field_offset_oe=o[0],
            gain_offset_db=o[1],
            remanence_sign=0.0,
        )
        power_mw = torch.pow(10.0, (lines.power_dbm + o[3]) / 10.0)
        needs_grad = torch.is_grad_enabled() and (s.requires_grad or o.requires_grad)
        trace = render_trace(
            lines.frequency_hz,
            power_mw,
            self.grid,
            self.ring_params,
            dtype=torch.float64 if needs_grad else torch.float32,
        )
        y = self._extractor(trace)
        return y.reshape(*lead, y.shape[-1])

    def line_sigma_hz(self) -> float:
        return float("nan")

    def architecture(self) -> dict[str, Any]:
        return {
            "kind": "twin",
            "ring_params": json.loads(self.ring_params.model_dump_json()),
            "grid": json.loads(self.grid.model_dump_json()),
            "features": json.loads(self.spec.model_dump_json()),
        }

    def fitted(self) -> dict[str, float]:
        """Every fitted figure: the searched model parameters and the offsets."""
        out = {name: float(getattr(self.ring_params, name)) for name in SEARCHED}
        out.update(
            {n: float(v) for n, v in zip(FITTED_OFFSETS, self.offsets.detach(), strict=True)}
        )
        return out


def build_twin(architecture: dict[str, Any], state: dict[str, torch.Tensor]) -> TwinSurrogate:
    """Rebuild a stored twin (inverse of `architecture()` and `state_dict()`)."""
    twin = TwinSurrogate(
        RingParams.model_validate(architecture["ring_params"]),
        AnalyzerGrid.model_validate(architecture["grid"]),
        FeatureSpec.model_validate(architecture["features"]),
    )
    twin.load_state_dict({k: torch.as_tensor(v, dtype=torch.float64) for k, v in state.items()})
    twin.eval()
    return twin


def twin_start(
    frequency_hz: Any, floor_dbm: float, line_sigma_hz: float, field_per_ampere_oe_per_a: float
) -> tuple[RingParams, AnalyzerGrid]:
    """The twin's starting parameters and analyzer grid from what calibrate measured.

    Model defaults, with the measured field per ampere; the grid is the analyzer's axis with
    the resolution bandwidth that displays the measured line width (the model draws lines
    with a standard deviation of max(RBW, 1.5 points) / 2.355), and the floor at the
    measured floor for that bandwidth.
    """
    axis = torch.as_tensor(frequency_hz, dtype=torch.float64).flatten()
    rbw = float(line_sigma_hz) * 2.0 * math.sqrt(2.0 * math.log(2.0))
    grid = AnalyzerGrid.from_start_stop(float(axis[0]), float(axis[-1]), rbw, axis.numel())
    floor_100k = float(floor_dbm) - 10.0 * math.log10(rbw / 100e3)
    params = RingParams(
        field_per_current_oe_per_a=float(field_per_ampere_oe_per_a),
        noise_floor_dbm_at_100khz=min(0.0, max(-200.0, floor_100k)),
        noise=False,
        drift=False,
        hysteresis=False,
    )
    return params, grid


@dataclass
class TwinFit:
    """A fitted twin and its errors (the fields `SurrogateFit` has, in the same units)."""

    model: TwinSurrogate
    validation_rmse: float
    train_rmse: float
    n_train: int
    n_validation: int
    validation_index: torch.Tensor
    fit_s: float
    context_validation_rmse: float = float("nan")
    """Held-out error on the context rows (evaluated only: the twin fits the window shots)."""
    context_validation_index: torch.Tensor | None = None


def _rmse(model: TwinSurrogate, x: torch.Tensor, y: torch.Tensor, o: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x, o) - y) ** 2).mean().sqrt())


def _scan_field(
    model: TwinSurrogate,
    x: torch.Tensor,
    y: torch.Tensor,
    centre: float | None,
    half: float = 1.0,
    step: float = 0.1,
) -> tuple[float, float]:
    """(best error, field offset) over the field scan (whole, or ±half Oe around ``centre``)."""
    if centre is None:
        lo, hi, step = FIELD_SCAN_OE
    else:
        lo, hi = centre - half, centre + half
    best = (math.inf, 0.0)
    o = model.offsets.detach().clone()
    for f in torch.arange(lo, hi + step / 2, step, dtype=torch.float64).tolist():
        o[0] = f
        e = _rmse(model, x, y, o)
        if e < best[0]:
            best = (e, f)
    return best


def _adam(model: TwinSurrogate, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Adam on the offsets (dB error); keeps the start when the steps did not improve it."""
    before = model.offsets.detach().clone()
    start = _rmse(model, x, y, before)
    opt = torch.optim.Adam([model.offsets], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    err = _rmse(model, x, y, model.offsets.detach())
    if err < start:
        return err
    with torch.no_grad():
        model.offsets.copy_(before)
    return start


def fit_twin(
    settings: torch.Tensor,
    features: torch.Tensor,
    *,
    start: RingParams,
    grid: AnalyzerGrid,
    spec: FeatureSpec,
    validation_fraction: float = 0.2,
    seed: int = 0,
    adam_steps: int = 100,
    rounds: int = 2,
    polish: int = 2,
    search_rows: int = 120,
    polish_steps: int = 30,
    context: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TwinFit:
    """Fit a `TwinSurrogate` to measured (settings, features).

    ``progress(done, total)`` hears each of its `twin_fit_steps(rounds)` steps. Held-out rows
    are drawn as `fit_surrogate` draws them (same seed and share), so the two kinds report
    errors on the same shots. ``context`` rows (calibrate: the response grid at the operating
    bias) are split the same way; their held-out share is evaluated, not fitted. The search
    runs on the first ``search_rows`` training rows, polishing (Adam) on all of them.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        x, y = settings.to(torch.float64), features.to(torch.float64)
        gen = torch.Generator().manual_seed(seed)
        val_idx, train_idx = holdout_split(x.shape[0], validation_fraction, gen)
        xt, yt = x[train_idx], y[train_idx]
        total = twin_fit_steps(rounds)
        step = iter(range(1, total + 1))
        tell = (lambda: None) if progress is None else (lambda: progress(next(step), total))
        model = TwinSurrogate(start, grid, spec)
        err, f = _scan_field(model, xt, yt, None)
        with torch.no_grad():
            model.offsets[0] = f
        tell()
        # Search on a subset of the training rows (speed); polish on all of them.
        search = _Search(xt[:search_rows], yt[:search_rows], xt, yt, polish, polish_steps)
        model = search.rounds(model, err, rounds, tell)
        _adam(model, xt, yt, adam_steps)
        tell()
        model.eval()
        val = _rmse(model, x[val_idx], y[val_idx], model.offsets.detach())
        train = _rmse(model, xt, yt, model.offsets.detach())
        ctx_err, ctx_val = float("nan"), None
        if context is not None and context[0].shape[0] >= 2:
            # the same draws as fit_surrogate's context split (after the main split)
            ctx_val, _ = holdout_split(context[0].shape[0], validation_fraction, gen)
            ctx_x, ctx_y = context[0].to(torch.float64), context[1].to(torch.float64)
            ctx_err = _rmse(model, ctx_x[ctx_val], ctx_y[ctx_val], model.offsets.detach())
        elapsed = time.perf_counter() - t0
        n_train, n_val = len(train_idx), len(val_idx)
        return TwinFit(model, val, train, n_train, n_val, val_idx, elapsed, ctx_err, ctx_val)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Search:
    """The parameter search: candidates scored on (xs, ys), the best polished on (x, y)."""

    xs: torch.Tensor
    ys: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    polish: int
    polish_steps: int

    def rounds(
        self, model: TwinSurrogate, err: float, rounds: int, tell: Callable[[], None]
    ) -> TwinSurrogate:
        """Each round tries every `SEARCHED` parameter in turn, keeping the best model."""
        for r in range(rounds):
            for name in SEARCHED:
                found = _candidates(model, name, r, self.xs, self.ys, self.polish_steps)
                ranked = [(err, model), *found]
                err, model = _polish_best(ranked, self.polish, self.x, self.y, self.polish_steps)
                tell()
        return model


def twin_fit_steps(rounds: int) -> int:
    """The steps `fit_twin` reports: the field scan, each searched parameter per round,
    the final polish."""
    return 2 + rounds * len(SEARCHED)


def _polish_best(
    ranked: list[tuple[float, TwinSurrogate]],
    polish: int,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> tuple[float, TwinSurrogate]:
    """Polish the ``polish`` best (error, model) candidates on (x, y); the best after it
    (the first entry, the model searched from, if none polishes to a finite error)."""
    best = (math.inf, ranked[0][1])
    ranked.sort(key=lambda c: c[0])
    for _, cand in ranked[:polish]:
        e = _adam(cand, x, y, steps)
        if e < best[0]:
            best = (e, cand)
    return best


def _candidates(
    model: TwinSurrogate,
    name: str,
    round_index: int,
    xs: torch.Tensor,
    ys: torch.Tensor,
    polish_steps: int,
) -> list[tuple[float, TwinSurrogate]]:
    """(error, model) of each searched value of parameter ``name`` (`SEARCHED`), with the
    field offset scanned for each (and, for the propagation length, polished)."""
    lo, hi, points, how = SEARCHED[name]
    base = float(getattr(model.ring_params, name))
    length = name == "propagation_length_m"
    if length and round_index > 0:  # second round: a finer grid around the first's value
        lo, hi, points = 0.99, 1.01, 9
    out = []
    for v in torch.linspace(lo, hi, points, dtype=torch.float64).tolist():
        value = base * v if how == "scale" else base + v
        try:
            cand = model.with_params(**{name: value})
        except ValueError:
            continue
        # The propagation length moves the whole comb: scan the field afresh,
        # and polish every candidate (the offsets change the ranking).
        centre = None if length else float(model.offsets.detach()[0])
        e, f = _scan_field(cand, xs, ys, centre)
        if length:
            e, f = _scan_field(cand, xs, ys, f, half=0.25, step=0.05)
        with torch.no_grad():
            cand.offsets[0] = f
        if length:
            e = min(e, _adam(cand, xs, ys, polish_steps))
        out.append((e, cand))
    return out
