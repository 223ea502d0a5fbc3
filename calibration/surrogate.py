"""A differentiable surrogate of the ring: settings (N, 3) -> features (N, F).

Two forms, one class (`RingSurrogate`):

* **grey-box** (what `labpgt calibrate` fits): the drive tone is a spectral line at exactly
  the drive frequency. The surrogate draws it analytically into the feature bins (a
  Gaussian line of fitted width on the analyzer's own frequency axis, averaged in dB over
  each bin's trace points, exactly as `labpgt.features` bins a trace), so the step a bin
  takes when the tone crosses its edge is not something the network has to learn. A small
  MLP learns the rest: the tone's level (dB relative to the drive power) and the smooth
  background (the ring's comb and whatever the drive does to it).
* **plain MLP** (no analyzer axis given; e.g. peak features or a caller's own data).

Either carries its own input scaling (the calibrated setting ranges mapped to [-1, 1]) and
output scaling (per-feature mean/std), so callers feed raw settings in Hz, dBm, A and get
features in the reservoir's units. Training uses it for physics-aware training (PAT): the
forward pass runs on the ring, the backward pass through this model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

_LINE_WINDOW_SIGMAS = 8.0
"""A drawn line touches the trace points within this many standard deviations of it."""
_LEVEL_SCALE_DB = 10.0
"""The network's level output is in units of this many dB (keeps it O(1))."""


class SurrogateConfig(BaseModel):
    """Architecture and fit of the surrogate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden: int = Field(64, ge=4, le=1024, description="Units per hidden layer.")
    layers: int = Field(3, ge=1, le=8, description="Number of hidden layers.")
    steps: int = Field(3000, ge=10, le=200_000, description="Adam steps (full batch).")
    learning_rate: float = Field(3e-3, gt=0, le=1.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay.")
    validation_fraction: float = Field(
        0.2, gt=0, lt=0.9, description="Share of measured settings held out for validation."
    )
    seed: int = Field(0, description="Seed of the split and of the initial weights.")
    twin_rounds: int = Field(
        2, ge=0, le=5, description="Search rounds of the twin's model parameters (kind twin)."
    )


@dataclass(frozen=True)
class LineGeometry:
    """What the grey-box surrogate needs to draw a line into the feature bins.

    ``point_bin`` (P,) is the feature bin of each trace point (-1: in none) and
    ``point_weight`` (P,) its weight in that bin's mean (1 / points in the bin), as in
    `labpgt.features.FeatureExtractor`; ``floor_dbm`` the measured noise floor and
    ``sigma_hz`` a first estimate of the displayed line's standard deviation (fitted on).
    """

    frequency_hz: torch.Tensor
    point_bin: torch.Tensor
    point_weight: torch.Tensor
    floor_dbm: float
    sigma_hz: float

    @classmethod
    def from_bin_weights(
        cls,
        frequency_hz: torch.Tensor,
        bin_weights: torch.Tensor,
        floor_dbm: float,
        sigma_hz: float,
    ) -> LineGeometry:
        """From a (P, F) averaging matrix (each row one-hot times 1 / bin count, or zero)."""
        w = bin_weights.to(torch.float64)
        weight, index = w.max(dim=1)
        index = torch.where(weight > 0, index, torch.full_like(index, -1))
        return cls(
            frequency_hz.to(torch.float64).flatten(), index, weight, float(floor_dbm), sigma_hz
        )


class RingSurrogate(nn.Module):
    """Settings [drive_hz, drive_dbm, bias_a] (..., 3) -> raw features (..., F).

    Input scaling: ``(settings - centre) / half_width`` (from the calibrated ranges).
    Output: ``net(x)[:F] * feature_std + feature_mean``, plus, with ``points > 0``, the
    drive line drawn into the bins at level ``drive_dbm + 10 dB * net(x)[F]``. Float64
    throughout so a gradient with respect to a drive frequency of ~2e9 Hz keeps its
    precision.
    """

    def __init__(self, feature_dim: int, hidden: int = 64, layers: int = 3, points: int = 0):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.points = int(points)
        blocks: list[nn.Module] = []
        width_in = 3
        for _ in range(layers):
            blocks += [nn.Linear(width_in, hidden), nn.SiLU()]
            width_in = hidden
        blocks.append(nn.Linear(width_in, feature_dim + (1 if self.points else 0)))
        self.net = nn.Sequential(*blocks).double()
        self.register_buffer("input_centre", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("input_half_width", torch.ones(3, dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(feature_dim, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(feature_dim, dtype=torch.float64))
        if self.points:
            p = self.points
            self.register_buffer("axis_hz", torch.zeros(p, dtype=torch.float64))
            self.register_buffer("point_bin", torch.full((p,), -1, dtype=torch.int64))
            self.register_buffer("point_weight", torch.zeros(p, dtype=torch.float64))
            self.register_buffer("floor_dbm", torch.zeros((), dtype=torch.float64))
            self.log_sigma_hz = nn.Parameter(torch.zeros((), dtype=torch.float64))

    @property
    def grey_box(self) -> bool:
        """True when the drive line is drawn analytically."""
        return self.points > 0

    def set_geometry(self, geometry: LineGeometry) -> None:
        """Load the analyzer axis, bin membership, floor and initial line width."""
        if geometry.frequency_hz.numel() != self.points:
            raise ValueError(
                f"line geometry has {geometry.frequency_hz.numel()} points, model {self.points}"
            )
        with torch.no_grad():
            self.axis_hz.copy_(geometry.frequency_hz)
            self.point_bin.copy_(geometry.point_bin)
            self.point_weight.copy_(geometry.point_weight)
            self.floor_dbm.fill_(geometry.floor_dbm)
            self.log_sigma_hz.fill_(math.log(geometry.sigma_hz))

    def forward(self, settings: torch.Tensor) -> torch.Tensor:
        """(..., 3) settings in Hz, dBm, A -> (..., F) features; differentiable."""
        s = settings.to(torch.float64)
        lead = s.shape[:-1]
        s = s.reshape(-1, 3)
        out = self.net((s - self.input_centre) / self.input_half_width)
        y = out[:, : self.feature_dim] * self.feature_std + self.feature_mean
        if self.points:
            level_dbm = s[:, 1] + _LEVEL_SCALE_DB * out[:, self.feature_dim]
            y = y + self.drive_line(s[:, 0], level_dbm)
        return y.reshape(*lead, self.feature_dim)

    def drive_line(self, drive_hz: torch.Tensor, level_dbm: torch.Tensor) -> torch.Tensor:
        """(N,) line frequencies and levels -> (N, F) what the line adds to each bin, dB.

        Each trace point near the line rises from the floor by 10·log10(1 + line/floor);
        a bin's feature is the mean of its points, so the line adds the weighted sum.
        """
        axis = self.axis_hz
        step = axis[1] - axis[0]
        sigma = self.log_sigma_hz.exp()
        half = int(math.ceil(_LINE_WINDOW_SIGMAS * float(sigma.detach()) / float(step)))
        centre = torch.round((drive_hz.detach() - axis[0]) / step).to(torch.int64)
        index = centre.unsqueeze(1) + torch.arange(-half, half + 1, device=axis.device)
        inside = (index >= 0) & (index < self.points)
        index = index.clamp(0, self.points - 1)
        shape = torch.exp(-0.5 * ((axis[index] - drive_hz.unsqueeze(1)) / sigma) ** 2)
        relative = torch.pow(10.0, (level_dbm - self.floor_dbm) / 10.0).unsqueeze(1)
        rise_db = 10.0 * torch.log10(1.0 + relative * shape)
        weight = torch.where(inside, self.point_weight[index], torch.zeros_like(rise_db))
        bins = self.point_bin[index]
        weight = torch.where(bins >= 0, weight, torch.zeros_like(weight))
        added = torch.zeros(drive_hz.shape[0], self.feature_dim + 1, dtype=rise_db.dtype)
        # Points in no bin go to a spare column that is dropped.
        target = torch.where(bins >= 0, bins, torch.full_like(bins, self.feature_dim))
        added = added.scatter_add(1, target, rise_db * weight)
        return added[:, : self.feature_dim]

    def line_sigma_hz(self) -> float:
        """Fitted standard deviation of the drawn line, Hz (NaN for a plain MLP)."""
        return float(self.log_sigma_hz.detach().exp()) if self.points else float("nan")

    def architecture(self) -> dict[str, int]:
        return {
            "feature_dim": self.feature_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "points": self.points,
        }


@dataclass
class SurrogateFit:
    """A fitted surrogate and how well it predicts settings it never saw."""

    model: RingSurrogate
    validation_rmse: float
    """Held-out RMS error over all features, in the features' unit (dB for dB features)."""
    train_rmse: float
    """RMS error on the training settings, same unit."""
    n_train: int
    n_validation: int
    validation_index: torch.Tensor
    """Row indices (into the fitted data) that were held out."""
    context_validation_rmse: float = float("nan")
    """Held-out RMS error on the context rows (NaN without them), same unit."""
    context_validation_index: torch.Tensor | None = None
    """Row indices (into the context rows) that were held out."""


def fit_surrogate(
    settings: torch.Tensor,
    features: torch.Tensor,
    *,
    ranges: torch.Tensor,
    config: SurrogateConfig | None = None,
    geometry: LineGeometry | None = None,
    context: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SurrogateFit:
    """Fit a `RingSurrogate` to measured (settings, features) pairs.

    ``progress(steps_done, steps_total)`` is called at each check of the fit (100 times).

    ``ranges`` is (3, 2): low/high of each setting, used for the input scaling (a
    setting at a range's low end maps to -1). With ``geometry`` (bin features on a
    known analyzer axis) the surrogate is the grey-box form, else a plain MLP. A random
    ``validation_fraction`` of the rows is held out; the model kept is the one with the
    lowest error seen during training on a slice of the *training* rows (early stopping
    on the held-out rows would bias the reported error), and the reported error uses
    rows the fit never touched.

    ``context`` (settings, features) are further rows from outside the domain the
    validation error is for (calibrate: the response grid at the operating bias, around
    the operating window), so the surrogate also covers them. They are split the same way;
    their training share is fitted, their held-out share gives `context_validation_rmse`,
    and neither enters the stopping rule or `validation_rmse`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP only loses to thread hand-offs (badly, on a busy box)
    try:
        cfg = config or SurrogateConfig()
        return _fit(settings, features, ranges, cfg, geometry, context, progress)
    finally:
        torch.set_num_threads(threads)


def holdout_split(
    n: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out rows, the other rows) of ``n`` rows: a random ``fraction`` of them (at
    least one) held out, drawn from ``generator``. Both surrogate kinds split with it, so
    they report their errors on the same shots."""
    perm = torch.randperm(n, generator=generator)
    n_val = max(1, int(round(fraction * n)))
    return perm[:n_val], perm[n_val:]


def _fit(
    settings: torch.Tensor,
    features: torch.Tensor,
    ranges: torch.Tensor,
    cfg: SurrogateConfig,
    geometry: LineGeometry | None,
    context: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SurrogateFit:
    settings = settings.to(torch.float64)
    features = features.to(torch.float64)
    n = settings.shape[0]
    if n < 10:
        raise ValueError(f"need at least 10 measured settings to fit a surrogate, got {n}")
    gen = torch.Generator().manual_seed(cfg.seed)
    val_idx, train_idx = holdout_split(n, cfg.validation_fraction, gen)
    # A slice of the training rows chooses the stopping point, never the reported rows.
    n_sel = max(1, len(train_idx) // 8)
    sel_idx, fit_idx = train_idx[:n_sel], train_idx[n_sel:]
    x_fit, y_fit = settings[fit_idx], features[fit_idx]
    ctx_x = ctx_y = ctx_val = None
    if context is not None and context[0].shape[0] >= 2:
        ctx_x, ctx_y = context[0].to(torch.float64), context[1].to(torch.float64)
        ctx_val, ctx_fit = holdout_split(ctx_x.shape[0], cfg.validation_fraction, gen)
        x_fit = torch.cat([x_fit, ctx_x[ctx_fit]])
        y_fit = torch.cat([y_fit, ctx_y[ctx_fit]])
    torch.manual_seed(cfg.seed)
    model = _scaled_model(features.shape[1], cfg, geometry, ranges, y_fit)
    _train(model, x_fit, y_fit, settings[sel_idx], features[sel_idx], cfg, progress)
    with torch.no_grad():
        val = _rmse(model(settings[val_idx]), features[val_idx])
        train = _rmse(model(settings[train_idx]), features[train_idx])
        ctx_err = float("nan")
        if ctx_val is not None:
            ctx_err = _rmse(model(ctx_x[ctx_val]), ctx_y[ctx_val])
    return SurrogateFit(model, val, train, len(train_idx), len(val_idx), val_idx, ctx_err, ctx_val)


def _scaled_model(
    feature_dim: int,
    cfg: SurrogateConfig,
    geometry: LineGeometry | None,
    ranges: torch.Tensor,
    y_fit: torch.Tensor,
) -> RingSurrogate:
    """A fresh surrogate with its input scaling (``ranges``) and feature standardisation."""
    points = 0 if geometry is None else geometry.frequency_hz.numel()
    model = RingSurrogate(feature_dim, cfg.hidden, cfg.layers, points)
    if geometry is not None:
        model.set_geometry(geometry)
    ranges = ranges.to(torch.float64)
    centre = ranges.mean(dim=1)
    half = ((ranges[:, 1] - ranges[:, 0]) / 2).clamp_min(1e-12)
    # A setting held constant (zero width; calibrate's bias) is no input at all: an infinite
    # scale maps it to 0, so the surrogate claims no slope along it (it saw no variation).
    half = torch.where(
        half > 1e-9 * centre.abs().clamp_min(1.0), half, torch.full_like(half, math.inf)
    )
    model.input_centre.copy_(centre)
    model.input_half_width.copy_(half)
    model.feature_mean.copy_(y_fit.mean(dim=0))
    model.feature_std.copy_(y_fit.std(dim=0).clamp_min(1e-6))
    return model


def _train(
    model: RingSurrogate,
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_sel: torch.Tensor,
    y_sel: torch.Tensor,
    cfg: SurrogateConfig,
    progress: Callable[[int, int], None] | None,
) -> None:
    """AdamW with a cosine schedule; keeps (loads) the state with the lowest error on the
    selection rows (x_sel, y_sel) seen at the checks, then eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    best_err, best_state = math.inf, None
    check_every = max(1, cfg.steps // 100)
    for step in range(cfg.steps):
        opt.zero_grad()
        # Loss in standardised units so every feature counts alike.
        pred = model(x_fit)
        loss = (((pred - y_fit) / model.feature_std) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
        if step % check_every == check_every - 1 or step == cfg.steps - 1:
            with torch.no_grad():
                err = _rmse(model(x_sel), y_sel)
            if err < best_err:
                best_err = err
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            if progress is not None:
                progress(step + 1, cfg.steps)
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()


def _rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred - target) ** 2).mean().sqrt())


def surrogate_state(model: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(architecture, state_dict) — what the store writes."""
    return model.architecture(), {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_surrogate(architecture: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild a stored grey-box or MLP surrogate (inverse of `surrogate_state`; plain MLP
    for older files). A twin is rebuilt by `calibration.twin.build_twin`."""
    model = RingSurrogate(
        int(architecture["feature_dim"]),
        int(architecture["hidden"]),
        int(architecture["layers"]),
        int(architecture.get("points", 0)),
    )
    model.load_state_dict(
        {
            k: torch.as_tensor(v) if k == "point_bin" else torch.as_tensor(v, dtype=torch.float64)
            for k, v in state.items()
        }
    )
    model.eval()
    return model
