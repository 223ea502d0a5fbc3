"""A differentiable surrogate of the ring: settings (N, 3) -> features (N, F).

A small MLP fitted to the calibration measurements. It carries its own input
scaling (the calibrated setting ranges mapped to [-1, 1]) and output scaling
(per-feature mean/std), so callers feed raw settings in Hz, dBm, A and get
features in the reservoir's units. Training uses it for physics-aware training
(PAT): the forward pass runs on the ring, the backward pass through this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class SurrogateConfig(BaseModel):
    """Architecture and fit of the surrogate MLP."""

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


class RingSurrogate(nn.Module):
    """MLP from raw settings [drive_hz, drive_dbm, bias_a] to raw features.

    Input scaling: ``(settings - centre) / half_width`` (from the calibrated ranges).
    Output scaling: ``net(x) * feature_std + feature_mean``. Float64 throughout so a
    gradient with respect to a drive frequency of ~2e9 Hz keeps its precision.
    """

    def __init__(self, feature_dim: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.hidden = int(hidden)
        self.layers = int(layers)
        blocks: list[nn.Module] = []
        width_in = 3
        for _ in range(layers):
            blocks += [nn.Linear(width_in, hidden), nn.SiLU()]
            width_in = hidden
        blocks.append(nn.Linear(width_in, feature_dim))
        self.net = nn.Sequential(*blocks).double()
        self.register_buffer("input_centre", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("input_half_width", torch.ones(3, dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(feature_dim, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(feature_dim, dtype=torch.float64))

    def forward(self, settings: torch.Tensor) -> torch.Tensor:
        """(N, 3) settings in Hz, dBm, A -> (N, F) features; differentiable."""
        x = (settings.to(torch.float64) - self.input_centre) / self.input_half_width
        return self.net(x) * self.feature_std + self.feature_mean

    def architecture(self) -> dict[str, int]:
        return {"feature_dim": self.feature_dim, "hidden": self.hidden, "layers": self.layers}


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


def fit_surrogate(
    settings: torch.Tensor,
    features: torch.Tensor,
    *,
    ranges: torch.Tensor,
    config: SurrogateConfig | None = None,
) -> SurrogateFit:
    """Fit a `RingSurrogate` to measured (settings, features) pairs.

    ``ranges`` is (3, 2): low/high of each setting, used for the input scaling (a
    setting at a range's low end maps to -1). A random ``validation_fraction`` of
    the rows is held out; the model kept is the one with the lowest validation
    error seen during training (early stopping on the held-out set would bias the
    reported error, so the split for model selection is taken from the training
    rows, and the reported error uses rows the fit never touched).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP only loses to thread hand-offs (badly, on a busy box)
    try:
        return _fit(settings, features, ranges, config or SurrogateConfig())
    finally:
        torch.set_num_threads(threads)


def _fit(
    settings: torch.Tensor, features: torch.Tensor, ranges: torch.Tensor, cfg: SurrogateConfig
) -> SurrogateFit:
    settings = settings.to(torch.float64)
    features = features.to(torch.float64)
    n = settings.shape[0]
    if n < 10:
        raise ValueError(f"need at least 10 measured settings to fit a surrogate, got {n}")
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(cfg.validation_fraction * n)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    # A slice of the training rows chooses the stopping point, never the reported rows.
    n_sel = max(1, len(train_idx) // 8)
    sel_idx, fit_idx = train_idx[:n_sel], train_idx[n_sel:]

    torch.manual_seed(cfg.seed)
    model = RingSurrogate(features.shape[1], cfg.hidden, cfg.layers)
    ranges = ranges.to(torch.float64)
    centre = ranges.mean(dim=1)
    half = ((ranges[:, 1] - ranges[:, 0]) / 2).clamp_min(1e-12)
    # A setting held constant (zero width) still needs a finite scale.
    half = torch.where(half > 1e-9 * centre.abs().clamp_min(1.0), half, torch.ones_like(half))
    model.input_centre.copy_(centre)
    model.input_half_width.copy_(half)
    model.feature_mean.copy_(features[fit_idx].mean(dim=0))
    model.feature_std.copy_(features[fit_idx].std(dim=0).clamp_min(1e-6))

    x_fit, y_fit = settings[fit_idx], features[fit_idx]
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
                err = _rmse(model(settings[sel_idx]), features[sel_idx])
            if err < best_err:
                best_err = err
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        val = _rmse(model(settings[val_idx]), features[val_idx])
        train = _rmse(model(settings[train_idx]), features[train_idx])
    return SurrogateFit(model, val, train, len(train_idx), n_val, val_idx)


def _rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred - target) ** 2).mean().sqrt())


def surrogate_state(model: RingSurrogate) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(architecture, state_dict) — what the store writes."""
    return model.architecture(), {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_surrogate(architecture: dict[str, Any], state: dict[str, torch.Tensor]) -> RingSurrogate:
    """Rebuild a stored surrogate (inverse of `surrogate_state`)."""
    model = RingSurrogate(
        int(architecture["feature_dim"]), int(architecture["hidden"]), int(architecture["layers"])
    )
    model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float64) for k, v in state.items()})
    model.eval()
    return model
