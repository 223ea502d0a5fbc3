"""Run a calibration on any `PhysicalReservoir` through the `PerturbationScheduler`.

Stages, in measuring order:

1. bias sweep up then down at low drive (the free-running comb tracks the field):
   field per ampere, hysteresis, mode spacing;
2. response grid: drive frequency x drive power at each response bias (features);
3. operating point and drive ranges from the response (sensitivity / noise, inside the
   drive frequencies where the drive does not lock, pull or mix with the comb);
4. reference settings at the operating point, measured in ``repeats`` passes, each
   pass approached the same way (`reference_passes`): shot-to-shot noise, the
   baseline for drift checks;
5. surrogate sampling: ``surrogate_points`` random settings inside the operating window,
   and the surrogate fit on them (held-out validation error in dB and in noise units,
   on a random share of those same shots).

The reservoir must keep traces (``keep_traces``) for stages 1 and 4; `run_calibration`
switches it on for its own shots and restores it afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from labpgt.calibration.analysis import (
    OperatingPoint,
    Repeatability,
    choose_operating_point,
    feature_normalisation,
    index_of,
    interaction_map,
    repeatability,
    sensitivity_map,
)
from labpgt.calibration.field import FieldFit, Hysteresis, fit_field_per_ampere, hysteresis_offset
from labpgt.calibration.plan import CalibrationPlan
from labpgt.calibration.spectra import (
    adjacent_spacing_hz,
    comb_centroid_hz,
    comb_inside_span,
    line_sigma_hz,
    noise_floor_dbm,
)
from labpgt.calibration.surrogate import LineGeometry, SurrogateConfig, SurrogateFit, fit_surrogate
from labpgt.calibration.twin import fit_twin, twin_start

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor
from labpgt.reservoir import PhysicalReservoir, ReservoirOutput
from labpgt.scheduler import PerturbationScheduler
from labpgt.setting_bounds import SETTING_NAMES

StageProgress = Callable[[str, int, int, float], None]
"""progress(stage, done_shots, total_shots, instrument_time_s of the stage so far)."""

SURROGATE_KINDS = ("grey-box", "twin")
"""Surrogate kinds `run_calibration` fits (see its docstring)."""
WINDOWS = ("calm", "sensitivity")
"""How `run_calibration` picks the drive window (see its docstring)."""

PRESET_DROP_A = 0.3
"""A reference pass starts this far below the operating bias, so every pass reaches the
operating bias rising: the magnet's remanence is then the same on every pass and at --check."""

COMB_DRIVE_DBM = -40.0
"""Drive power of the comb reference shots, dBm: too weak to lock or pull the comb."""


@dataclass
class CalibrationResult:
    """Everything a calibration measured and derived (what `calibration.store` writes)."""

    plan: CalibrationPlan
    snapshot: dict[str, Any]
    frequency_hz: np.ndarray
    feature_names: list[str]
    # stage 1
    bias_settings: np.ndarray  # (2·Nb, 3) up then down, measuring order
    bias_traces_dbm: np.ndarray  # (2·Nb, P)
    bias_leg: np.ndarray  # (2·Nb,) 0 rising, 1 falling
    comb_hz: np.ndarray  # (2·Nb,) comb centroid, NaN where the comb leaves the span
    floor_dbm: float
    field_fit: FieldFit
    hysteresis: Hysteresis
    mode_spacing_hz: float
    spacing_by_bias_hz: np.ndarray  # (2·Nb,) per trace, NaN where not measurable
    # stage 2
    response_settings: np.ndarray  # (B·P·Fq, 3)
    response_features: np.ndarray  # (B, P, Fq, F)
    drive_hz: np.ndarray
    drive_dbm: np.ndarray
    response_bias_a: np.ndarray
    # stage 3/4
    operating: OperatingPoint
    sensitivity: np.ndarray  # (B, P, Fq)
    interaction: np.ndarray | None  # (B, P, Fq) drive's effect away from its tone; None: no bins
    reference_settings: np.ndarray  # (S, 3)
    comb_reference: np.ndarray  # (S,) bool: shot is a low-drive comb shot (frequency drift)
    reference_features: np.ndarray  # (R, S, F)
    reference_traces_dbm: np.ndarray  # (R, S, P)
    noise: Repeatability
    feature_mean: np.ndarray
    feature_std: np.ndarray
    encoding_ranges: dict[str, tuple[float, float]]
    # stage 5
    surrogate: SurrogateFit
    surrogate_config: SurrogateConfig
    surrogate_settings: np.ndarray  # (M, 3) rows the surrogate saw (train + validation)
    surrogate_features: np.ndarray  # (M, F)
    line_sigma_hz: float = float("nan")  # displayed line width (std) estimated from the traces
    # cost
    instrument_time_s: float = 0.0
    wall_s: float = 0.0
    shots: int = 0  # every shot measured: sweep, grid, pilot (2 passes), reference passes
    stage_instrument_s: dict[str, float] = field(default_factory=dict)


def reference_passes(
    reference_settings: torch.Tensor, repeats: int, low_bias_a: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shots of ``repeats`` passes over the references, each behind one preset shot.

    The preset shot sits at ``low_bias_a`` (same drive as the first reference), so the
    bias always rises into the operating bias. Returns (shots (repeats·(S+1), 3),
    boolean mask of the reference shots).
    """
    ref = reference_settings.to(torch.float64)
    preset = ref[:1].clone()
    preset[0, 2] = low_bias_a
    one = torch.cat([preset, ref])
    mask_one = torch.ones(one.shape[0], dtype=torch.bool)
    mask_one[0] = False
    return one.repeat(repeats, 1), mask_one.repeat(repeats)


def measure_references(
    scheduler: PerturbationScheduler,
    reference_settings: torch.Tensor,
    repeats: int,
    low_bias_a: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (R, S, F), traces (R, S, P)) of the reference passes."""
    shots, mask = reference_passes(reference_settings, repeats, low_bias_a)
    out = _measure_with_traces(scheduler, shots)
    s = reference_settings.shape[0]
    feats = out.features[mask].reshape(repeats, s, -1).numpy()
    assert out.traces_dbm is not None
    traces = out.traces_dbm[mask].reshape(repeats, s, -1).numpy()
    return feats, traces


def _measure_with_traces(scheduler: PerturbationScheduler, shots: torch.Tensor) -> ReservoirOutput:
    reservoir = scheduler.reservoir
    if not hasattr(reservoir, "keep_traces"):
        raise UserError(
            "calibration needs the analyzer traces: the reservoir must support keep_traces "
            "(SimulatedReservoir or InstrumentReservoir)"
        )
    before = reservoir.keep_traces
    reservoir.keep_traces = True
    try:
        out = scheduler.measure_shots(shots)
    finally:
        reservoir.keep_traces = before
    if out.traces_dbm is None:
        raise UserError("the reservoir returned no traces although keep_traces was set")
    return out


def run_calibration(
    reservoir: PhysicalReservoir,
    plan: CalibrationPlan | None = None,
    *,
    surrogate_config: SurrogateConfig | None = None,
    progress: StageProgress | None = None,
    retries: int = 2,
    surrogate_kind: str = "grey-box",
    window: str = "calm",
) -> CalibrationResult:
    """Measure and analyse a full calibration (see the module docstring).

    ``surrogate_kind``: "grey-box" (drawn drive line + MLP, the default) or "twin" (the
    ring model with a few parameters fitted, `calibration.twin`). ``window``: "calm" (the
    drive window where the drive leaves the comb alone, the default) or "sensitivity" (the
    window sensitivity/noise alone picks: the locking zone).
    """
    if surrogate_kind not in SURROGATE_KINDS:
        raise UserError(f"surrogate kind {surrogate_kind!r}: allowed {', '.join(SURROGATE_KINDS)}")
    if window not in WINDOWS:
        raise UserError(f"window {window!r}: allowed {', '.join(WINDOWS)}")
    plan = plan or CalibrationPlan()
    try:
        plan.check_within(reservoir.bounds)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t_wall = time.perf_counter()
    stage_s: dict[str, float] = {}

    def scheduler_for(stage: str) -> PerturbationScheduler:
        cb = None
        if progress is not None:

            def cb(done: int, total: int, instrument_s: float) -> None:
                progress(stage, done, total, instrument_s)

        return PerturbationScheduler(reservoir, retries=retries, progress=cb)

    freq = reservoir.frequency_hz.to(torch.float64).numpy()

    # 1. bias sweep, up then down, in that order (no reordering: the order is the experiment)
    sched = scheduler_for("bias sweep")
    up, down = plan.bias_legs()
    bias_shots = torch.cat([up, down])
    out = _measure_with_traces(sched, bias_shots)
    stage_s["bias sweep"] = sched.stats.instrument_time_s
    traces = out.traces_dbm.numpy()
    floor = noise_floor_dbm(traces)
    leg = np.concatenate([np.zeros(len(up), int), np.ones(len(down), int)])
    comb = np.array(
        [
            comb_centroid_hz(freq, t, floor) if comb_inside_span(freq, t, floor) else np.nan
            for t in traces
        ]
    )
    bias_np = bias_shots[:, 2].numpy()
    try:
        fit = fit_field_per_ampere(bias_np, comb, leg)
        hyst = hysteresis_offset(
            bias_np[leg == 0], comb[leg == 0], bias_np[leg == 1], comb[leg == 1], fit
        )
    except ValueError as exc:
        raise UserError(
            f"calibration bias sweep (bias_sweep_a={plan.bias_sweep_a} A): {exc}"
        ) from None
    geometry = line_geometry(reservoir, freq, traces, floor)
    spacing = np.array([adjacent_spacing_hz(freq, t, floor) for t in traces])
    if not np.isfinite(spacing).any():
        raise UserError("no bias-sweep trace resolves four comb lines: cannot measure mode spacing")

    # 2. response grid (the scheduler orders it bias first; features back in grid order)
    sched = scheduler_for("response grid")
    settings = plan.response_settings()
    feats = sched.run(settings)
    stage_s["response grid"] = sched.stats.instrument_time_s
    f_axis, p_axis = plan.drive_axes()
    b_axis = np.asarray(plan.response_bias_a, dtype=np.float64)
    response = feats.numpy().reshape(len(b_axis), len(p_axis), len(f_axis), -1)

    # 3. a first noise estimate from the reference passes needs the operating point, which
    # needs the noise: a short pilot (2 passes at the middle of the grid) breaks the loop.
    sched = scheduler_for("noise pilot")
    mid = torch.tensor(
        [[float(f_axis[len(f_axis) // 2]), float(p_axis[len(p_axis) // 2]), float(b_axis[0])]]
    )
    pilot_b = float(np.median(b_axis))
    mid[0, 2] = pilot_b
    pilot_refs = torch.cat([mid, _shift_f(mid, f_axis, len(f_axis) // 4)])
    low = max(reservoir.bounds.bias_a[0], pilot_b - PRESET_DROP_A)
    pilot_feats, _ = measure_references(sched, pilot_refs, 2, low)
    stage_s["noise pilot"] = sched.stats.instrument_time_s
    pilot_noise = repeatability(pilot_feats)
    drive_bin = None
    if geometry is not None:
        nearest = np.abs(freq[None, :] - f_axis.numpy()[:, None]).argmin(axis=1)
        drive_bin = geometry.point_bin.numpy()[nearest]
    op = choose_operating_point(
        response,
        pilot_noise.feature_std,
        b_axis,
        p_axis.numpy(),
        f_axis.numpy(),
        interaction=(
            None
            if drive_bin is None or window == "sensitivity"
            else interaction_map(response, _pooled(pilot_noise), drive_bin)
        ),
    )

    # 4. reference passes at the operating point
    refs = reference_settings_for(op, plan)
    comb_mask = refs[:, 1] == COMB_DRIVE_DBM
    low = max(reservoir.bounds.bias_a[0], op.bias_a - PRESET_DROP_A)
    sched = scheduler_for("reference repeats")
    ref_feats, ref_traces = measure_references(sched, refs, plan.repeats, low)
    stage_s["reference repeats"] = sched.stats.instrument_time_s
    noise = repeatability(ref_feats)
    sens = sensitivity_map(response, noise.feature_std)
    inter = None if drive_bin is None else interaction_map(response, _pooled(noise), drive_bin)
    b_idx = index_of(b_axis, op.bias_a)
    # Normalisation over the whole drive grid at the operating bias, not just the calm
    # window: there most features barely move (std ≈ noise), and a training run that drives
    # the default encoding (the bench's whole drive range) would see them at ±50 std.
    mean, std = feature_normalisation(response, b_idx, (0, len(p_axis) - 1), (0, len(f_axis) - 1))

    # 5. surrogate: random settings inside the operating window (the encoding ranges), fitted
    # and validated on shots from that one distribution.
    enc = encoding_ranges(op, b_axis)
    cfg = surrogate_config or SurrogateConfig()
    s_set = surrogate_sample(enc, plan.surrogate_points, seed=cfg.seed)
    sched = scheduler_for("surrogate sampling")
    s_feat = sched.run(s_set).to(torch.float64)
    stage_s["surrogate sampling"] = sched.stats.instrument_time_s
    # The response grid at the operating bias rides along (fitted, its own rows held out)
    # so the surrogate also spans the whole drive range a default encoding drives; the
    # reported error stays the window's.
    on_bias = (settings[:, 2] - op.bias_a).abs() < 1e-9
    ranges = torch.tensor(
        [list(plan.drive_hz), list(plan.drive_dbm), [op.bias_a, op.bias_a]], dtype=torch.float64
    )
    if progress is not None:  # the count is known before the fit starts
        progress("surrogate fit", 0, 1 if surrogate_kind == "twin" else cfg.steps, 0.0)
    if surrogate_kind == "twin":
        # The twin draws the spectrum itself and applies the reservoir's own feature map to
        # it, so it works for any map; it needs only the displayed line width.
        sigma_hz = line_sigma_hz(freq, traces, floor)
        if not np.isfinite(sigma_hz):
            raise UserError(
                "surrogate kind 'twin' needs a measurable line width: no calibration trace "
                "shows a line 30 dB above the floor"
            )
        start, twin_grid = twin_start(freq, floor, sigma_hz, fit.field_per_ampere_oe_per_a)
        tf = fit_twin(
            s_set,
            s_feat,
            start=start,
            grid=twin_grid,
            spec=reservoir.feature_spec,
            validation_fraction=cfg.validation_fraction,
            seed=cfg.seed,
            rounds=cfg.twin_rounds,
            context=(settings[on_bias], feats[on_bias]),
        )
        if progress is not None:
            progress("surrogate fit", 1, 1, 0.0)
        fit_s = SurrogateFit(
            tf.model,  # type: ignore[arg-type]  # same call contract as RingSurrogate
            tf.validation_rmse,
            tf.train_rmse,
            tf.n_train,
            tf.n_validation,
            tf.validation_index,
            tf.context_validation_rmse,
            tf.context_validation_index,
        )
    else:
        fit_s = fit_surrogate(
            s_set,
            s_feat,
            ranges=ranges,
            config=cfg,
            geometry=geometry,
            context=(settings[on_bias], feats[on_bias]),
            progress=None
            if progress is None
            else lambda done, total: progress("surrogate fit", done, total, 0.0),
        )

    total_instrument = float(sum(stage_s.values()))
    return CalibrationResult(
        plan=plan,
        snapshot=reservoir.snapshot(),
        frequency_hz=freq,
        feature_names=list(reservoir.feature_names),
        bias_settings=bias_shots.numpy(),
        bias_traces_dbm=traces.astype(np.float32),
        bias_leg=leg,
        comb_hz=comb,
        floor_dbm=floor,
        field_fit=fit,
        hysteresis=hyst,
        mode_spacing_hz=_spacing_near(spacing, bias_np, op.bias_a),
        spacing_by_bias_hz=spacing,
        response_settings=settings.numpy(),
        response_features=response,
        drive_hz=f_axis.numpy(),
        drive_dbm=p_axis.numpy(),
        response_bias_a=b_axis,
        operating=op,
        sensitivity=sens,
        interaction=inter,
        reference_settings=refs.numpy(),
        comb_reference=comb_mask.numpy(),
        reference_features=ref_feats,
        reference_traces_dbm=ref_traces.astype(np.float32),
        noise=noise,
        feature_mean=mean,
        feature_std=std,
        encoding_ranges=enc,
        surrogate=fit_s,
        surrogate_config=cfg,
        surrogate_settings=s_set.numpy(),
        surrogate_features=s_feat.numpy(),
        line_sigma_hz=float("nan") if geometry is None else geometry.sigma_hz,
        instrument_time_s=total_instrument,
        wall_s=time.perf_counter() - t_wall,
        shots=int(
            bias_shots.shape[0]
            + settings.shape[0]
            + 2 * 3
            + plan.repeats * (len(refs) + 1)
            + s_set.shape[0]
        ),
        stage_instrument_s=stage_s,
    )


def _pooled(noise: Repeatability) -> np.ndarray:
    """The RMS noise for every feature: the pilot's per-feature scatter (2 passes) is too
    rough to judge single features by, and the ring's features share one noise level."""
    return np.full_like(noise.feature_std, noise.rms_std)


def _shift_f(row: torch.Tensor, f_axis: torch.Tensor, steps: int) -> torch.Tensor:
    out = row.clone()
    i = int(torch.argmin((f_axis - row[0, 0]).abs()))
    out[0, 0] = f_axis[min(len(f_axis) - 1, i + max(1, steps))]
    return out


def _spacing_near(spacing: np.ndarray, bias_a: np.ndarray, target_a: float) -> float:
    """Median per-trace spacing over the sweep traces nearest the operating bias."""
    ok = np.isfinite(spacing)
    d = np.abs(bias_a[ok] - target_a)
    near = spacing[ok][d <= np.sort(d)[min(3, d.size - 1)] + 1e-9]
    return float(np.median(near))


def reference_settings_for(op: OperatingPoint, plan: CalibrationPlan) -> torch.Tensor:
    """(S, 3) reference settings: two low-drive comb shots, then drive points in the window.

    All at the operating bias. The comb shots (drive at the ends of the drive range, at
    `COMB_DRIVE_DBM`) show the free-running comb for the frequency drift; the others
    (``reference_points`` drive frequencies across the operating window, at the middle of
    its power range) give the level drift and the shot-to-shot noise training will see.
    """
    b = op.bias_a
    rows = [
        [plan.drive_hz[0], COMB_DRIVE_DBM, b],
        [plan.drive_hz[1], COMB_DRIVE_DBM, b],
    ]
    p_mid = 0.5 * (op.drive_dbm[0] + op.drive_dbm[1])
    n = plan.reference_points
    for f in (
        np.linspace(op.drive_hz[0], op.drive_hz[1], n + 2)[1:-1]
        if n > 1
        else [0.5 * (op.drive_hz[0] + op.drive_hz[1])]
    ):
        rows.append([float(f), float(np.round(p_mid, 2)), b])
    return torch.tensor(rows, dtype=torch.float64)


def encoding_ranges(op: OperatingPoint, bias_axis: np.ndarray) -> dict[str, tuple[float, float]]:
    """Recommended encoding ranges: the drive window, at the operating bias.

    The bias is held at the operating point: one response-grid step of bias moves the comb
    by several feature bins (≈ 4.3 MHz per 0.01 A near 1.8 A), so neither the window's
    calm (no locking) nor the surrogate carries over to a neighbouring bias.
    """
    return {
        "drive_hz": (float(op.drive_hz[0]), float(op.drive_hz[1])),
        "drive_dbm": (float(op.drive_dbm[0]), float(op.drive_dbm[1])),
        "bias_a": (float(op.bias_a), float(op.bias_a)),
    }


def surrogate_sample(
    ranges: dict[str, tuple[float, float]], points: int, *, seed: int = 0
) -> torch.Tensor:
    """(points, 3) settings drawn uniformly (seeded) inside the encoding ranges."""
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(points, len(SETTING_NAMES), generator=gen, dtype=torch.float64)
    lo = torch.tensor([ranges[n][0] for n in SETTING_NAMES], dtype=torch.float64)
    hi = torch.tensor([ranges[n][1] for n in SETTING_NAMES], dtype=torch.float64)
    return lo + u * (hi - lo)


def line_geometry(
    reservoir: PhysicalReservoir, freq: np.ndarray, traces: np.ndarray, floor: float
) -> LineGeometry | None:
    """Bin membership of the trace points, floor and line width, for the grey-box surrogate.

    None when the features are not bins of the trace (no drive line to draw) or no trace
    shows a line strong enough to measure its width.
    """
    spec = getattr(reservoir, "feature_spec", None)
    if spec is None or spec.kind != "bins":
        return None
    sigma = line_sigma_hz(freq, traces, floor)
    if not np.isfinite(sigma):
        return None
    axis = torch.from_numpy(np.asarray(freq, dtype=np.float64))
    # The extractor's own averaging matrix: features of the identity "traces" (P, P).
    weights = FeatureExtractor(spec, axis)(torch.eye(axis.numel(), dtype=torch.float64))
    return LineGeometry.from_bin_weights(axis, weights, floor, sigma)
