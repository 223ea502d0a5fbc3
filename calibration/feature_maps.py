"""How good is a feature map for training through the ring? Smoothness, SNR and rank, measured.

One set of shots serves every candidate map (each map is computed from the same
traces): the drive frequency is walked over the encoding range at N base points;
at each, the shots f - h, f - h/2, f, f + h/2, f + h are taken ``repeats`` times
(h is the step a boundary estimator probes with, ``δ · span / 2`` for the
affine encoding). Per map:

- **smoothness**: cosine between the central differences at step h and at step
  h/2 (shot-averaged), over every base point and feature. A map smooth at the
  scale h gives ≈ 1; one whose derivative lives at bin edges gives far less,
  because the two steps see different edges.
- **SNR**: per feature, the variance of its shot-averaged value across the base
  points over the variance between repeats of one setting; the median over the
  features, in dB.
- **rank**: how many singular values of the centred (base points × features)
  matrix exceed 1 % of the largest — how many independent directions the map
  offers a linear readout — and **diversity**, 1 − the mean |correlation|
  between features.

`choose_map` keeps the map in use (labpgt train's default unless told otherwise)
when it qualifies — smoothness ≥ 0.8 and SNR ≥ 10 dB — since the training study
chose that default on accuracy; otherwise it takes the smoothest qualifying map,
and with none qualifying the smoothest of all.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor, FeatureSpec
from labpgt.records import Record

CANDIDATES: tuple[FeatureSpec, ...] = (
    FeatureSpec(kind="kernel", bins=16, kernel_width=0.5),
    FeatureSpec(kind="kernel", bins=8, kernel_width=0.5),
    FeatureSpec(kind="kernel", bins=32, kernel_width=0.5),
    FeatureSpec(kind="kernel", bins=16, kernel_width=0.25),
    FeatureSpec(kind="bins", bins=16),
    FeatureSpec(kind="bins", bins=8),
    FeatureSpec(kind="peaks", peaks=4),
)
"""The maps `labpgt calibrate` measures; the first is labpgt train's default."""

SMOOTHNESS_MIN = 0.8
SNR_MIN_DB = 10.0


class MapAssessment(Record):
    """The measured figures of one feature map (see the module docstring)."""

    spec: dict[str, Any]
    name: str
    smoothness: float
    snr_db: float
    rank: int
    diversity: float
    features: int


def plan_settings(
    drive_range_hz: tuple[float, float],
    *,
    power_dbm: float,
    bias_a: float,
    step_hz: float,
    base_points: int = 40,
    repeats: int = 3,
) -> torch.Tensor:
    """(base_points · 5 · repeats, 3) settings: the walk, offsets and repeats, in that nesting."""
    lo, hi = drive_range_hz
    if not hi - lo > 2 * step_hz:
        raise UserError(
            f"feature-map check: the drive range {lo / 1e9:.4f}-{hi / 1e9:.4f} GHz is narrower "
            f"than two probe steps ({step_hz / 1e6:.3g} MHz each)"
        )
    base = torch.linspace(lo + step_hz, hi - step_hz, base_points, dtype=torch.float64)
    offsets = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64) * step_hz
    f = (base[:, None, None] + offsets[None, :, None]).expand(base_points, 5, repeats)
    settings = torch.empty(base_points, 5, repeats, 3, dtype=torch.float64)
    settings[..., 0] = f
    settings[..., 1] = power_dbm
    settings[..., 2] = bias_a
    return settings.reshape(-1, 3)


def assess(
    traces_dbm: torch.Tensor,
    frequency_hz: torch.Tensor,
    settings: torch.Tensor,
    spec: FeatureSpec,
    *,
    base_points: int,
    repeats: int,
) -> MapAssessment:
    """Figures of one map from the traces of `plan_settings` (same order)."""
    extractor = FeatureExtractor(spec, frequency_hz)
    feats = extractor(traces_dbm.to(torch.float64))
    check_features(feats, extractor.names, settings, where="calibrate")
    f = feats.reshape(base_points, 5, repeats, -1)
    mean = f.mean(dim=2)  # (N, 5, F)
    d_full = (mean[:, 4] - mean[:, 0]).flatten()  # step h (scaled: the cosine ignores scale)
    d_half = (mean[:, 3] - mean[:, 1]).flatten()
    norm = float(d_full.norm() * d_half.norm())
    smoothness = float(d_full @ d_half) / norm if norm > 0 else 0.0
    centre = f[:, 2]  # (N, repeats, F)
    signal = centre.mean(dim=1).var(dim=0)
    noise = centre.var(dim=1).mean(dim=0).clamp_min(1e-12)
    snr_db = float(10 * torch.log10((signal / noise).clamp_min(1e-12)).median())
    m = centre.mean(dim=1)
    m = m - m.mean(dim=0)
    sv = torch.linalg.svdvals(m)
    rank = int((sv >= 0.01 * sv[0]).sum()) if sv.numel() and sv[0] > 0 else 0
    std = m.std(dim=0)
    live = std > 1e-9
    if int(live.sum()) >= 2:
        corr = torch.corrcoef(m[:, live].T).abs()
        k = corr.shape[0]
        diversity = float(1.0 - (corr.sum() - k) / (k * (k - 1)))
    else:
        diversity = 0.0
    return MapAssessment(
        spec=spec.model_dump(),
        name=spec.describe(),
        smoothness=smoothness,
        snr_db=snr_db,
        rank=rank,
        diversity=diversity,
        features=spec.dim(),
    )


def qualifies(a: MapAssessment) -> bool:
    return a.smoothness >= SMOOTHNESS_MIN and a.snr_db >= SNR_MIN_DB


def choose_map(assessments: list[MapAssessment], in_use: FeatureSpec) -> MapAssessment:
    """The map in use if it qualifies; else the smoothest qualifying one; else the smoothest."""
    for a in assessments:
        if a.spec == in_use.model_dump() and qualifies(a):
            return a
    good = [a for a in assessments if qualifies(a)]
    return max(good or assessments, key=lambda a: a.smoothness)


def check_features(
    features: torch.Tensor, names: list[str], settings: torch.Tensor, *, where: str
) -> None:
    """Refuse a map that gives a non-finite or a constant feature on these settings.

    Names the feature and the drive settings where it failed (the first bad row,
    or the range of settings over which the feature did not move).
    """
    from labpgt.setting_bounds import describe_setting

    flat = features.reshape(-1, features.shape[-1])
    rows = settings.reshape(-1, settings.shape[-1])
    bad = ~torch.isfinite(flat)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise UserError(
            f"{where}: feature {names[col]} is {flat[row, col].item()} at "
            f"{describe_setting(rows[row % rows.shape[0]])}; this feature map cannot be "
            "trained through (choose another --features / --bins)"
        )
    if flat.shape[0] < 2:
        return
    spread = flat.max(dim=0).values - flat.min(dim=0).values
    flat_cols = (spread <= 1e-9).nonzero().flatten().tolist()
    if flat_cols:
        col = flat_cols[0]
        lo, hi = rows.min(dim=0).values, rows.max(dim=0).values
        raise UserError(
            f"{where}: feature {names[col]} stays at {flat[0, col].item():.6g} over every "
            f"setting from {describe_setting(lo)} to {describe_setting(hi)} "
            f"({len(flat_cols)} of {flat.shape[1]} features do); it carries nothing to "
            "train on: use fewer --bins or a range where the ring responds"
        )


def summary_line(a: MapAssessment) -> str:
    snr = "–" if not math.isfinite(a.snr_db) else f"{a.snr_db:.1f} dB"
    return (
        f"{a.name}: smoothness {a.smoothness:.3f}, SNR {snr}, rank {a.rank}/{a.features}, "
        f"diversity {a.diversity:.2f}"
    )
