"""Run a calibration on any `PhysicalReservoir`: the stages plan → measure → analyse, composed.

Each stage of the measurement is planned (`calibration.plan`), measured
(`calibration.measure`, through the `PerturbationScheduler`) and analysed
(`calibration.analysis`, `calibration.field`, `calibration.spectra`) before the next is
planned from its result; `calibration.store` writes the result. In measuring order:

1. bias sweep up then down at low drive (the free-running comb tracks the field):
   field per ampere, hysteresis, mode spacing (`analyse_bias_sweep`);
2. response grid: drive frequency x drive power at each response bias (features);
3. operating point and drive ranges from the response (sensitivity / noise, inside the
   drive frequencies where the drive does not lock, pull or mix with the comb), with the
   noise of a short pilot (`choose_operating`);
4. reference settings at the operating point, measured in ``repeats`` passes, each
   pass approached the same way (`measure.reference_passes`): shot-to-shot noise, the
   baseline for drift checks (`measure_reference_stage`);
5. surrogate sampling: ``surrogate_points`` random settings inside the operating window,
   and the surrogate fit on them (held-out validation error in dB and in noise units,
   on a random share of those same shots) (`fit_surrogate_stage`).

The reservoir must keep traces (``keep_traces``) for stages 1 and 4; the measure stage
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
from labpgt.calibration.measure import PRESET_DROP_A, ShotRecorder, StageMeasurer, StageProgress
from labpgt.calibration.plan import (
    COMB_DRIVE_DBM,
    CalibrationPlan,
    encoding_ranges,
    reference_settings_for,
    surrogate_sample,
)
from labpgt.calibration.spectra import (
    adjacent_spacing_hz,
    comb_centroid_hz,
    comb_inside_span,
    line_sigma_hz,
    noise_floor_dbm,
)
from labpgt.calibration.surrogate import LineGeometry, SurrogateConfig, SurrogateFit, fit_surrogate
from labpgt.calibration.twin import fit_twin, twin_fit_steps, twin_start

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor
from labpgt.reservoir import PhysicalReservoir

SURROGATE_KINDS = ("grey-box", "twin")
"""Surrogate kinds `run_calibration` fits (see its docstring)."""
WINDOWS = ("calm", "sensitivity")
"""How `run_calibration` picks the drive window (see its docstring)."""


@dataclass
class BiasSweep:
    """Stage 1, measured and analysed: the bias swept up then down at low drive."""

    settings: np.ndarray  # (2·Nb, 3) up then down, measuring order
    traces_dbm: np.ndarray  # (2·Nb, P) float64; stored as float32
    leg: np.ndarray  # (2·Nb,) 0 rising, 1 falling
    comb_hz: np.ndarray  # (2·Nb,) comb centroid, NaN where the comb leaves the span
    floor_dbm: float
    field_fit: FieldFit
    hysteresis: Hysteresis
    spacing_hz: np.ndarray  # (2·Nb,) per trace, NaN where not measurable
    geometry: LineGeometry | None = None  # the grey-box surrogate's drawing of bin features


@dataclass
class ReferenceStage:
    """Stages 3-4: the reference passes at the operating point and what they give."""

    settings: np.ndarray  # (S, 3)
    comb: np.ndarray  # (S,) bool: shot is a low-drive comb shot (frequency drift)
    features: np.ndarray  # (R, S, F)
    traces_dbm: np.ndarray  # (R, S, P) float64; stored as float32
    noise: Repeatability
    sensitivity: np.ndarray  # (B, P, Fq) sensitivity / noise
    interaction: np.ndarray | None  # (B, P, Fq) drive's effect away from its tone; None: no bins
    feature_mean: np.ndarray  # (F,) normalisation over the drive grid at the operating bias
    feature_std: np.ndarray


@dataclass
class CalibrationResult:
    """Everything a calibration measured and derived (what `calibration.store` writes)."""

    plan: CalibrationPlan
    snapshot: dict[str, Any]
    frequency_hz: np.ndarray
    feature_names: list[str]
    # stage 1
    bias_sweep: BiasSweep
    mode_spacing_hz: float  # median spacing of the sweep traces nearest the operating bias
    # stage 2
    response_settings: np.ndarray  # (B·P·Fq, 3)
    response_features: np.ndarray  # (B, P, Fq, F)
    drive_hz: np.ndarray
    drive_dbm: np.ndarray
    response_bias_a: np.ndarray
    # stage 3/4
    operating: OperatingPoint
    references: ReferenceStage
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


@dataclass
class ResponseGrid:
    """Stage 2: features over drive frequency x drive power at each response bias."""

    settings: torch.Tensor  # (B·P·Fq, 3) grid order
    features: torch.Tensor  # (B·P·Fq, F) grid order
    drive_hz: torch.Tensor  # (Fq,)
    drive_dbm: torch.Tensor  # (P,)
    bias_a: np.ndarray  # (B,)

    @property
    def response(self) -> np.ndarray:
        """(B, P, Fq, F) features."""
        shape = (len(self.bias_a), len(self.drive_dbm), len(self.drive_hz), -1)
        return self.features.numpy().reshape(shape)

    def at_bias(self, bias_a: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(settings, features) of the grid rows at ``bias_a``."""
        on_bias = (self.settings[:, 2] - bias_a).abs() < 1e-9
        return self.settings[on_bias], self.features[on_bias]


def run_calibration(
    reservoir: PhysicalReservoir,
    plan: CalibrationPlan | None = None,
    *,
    surrogate_config: SurrogateConfig | None = None,
    progress: StageProgress | None = None,
    retries: int = 2,
    surrogate_kind: str = "grey-box",
    window: str = "calm",
    recorder: ShotRecorder | None = None,
) -> CalibrationResult:
    """Measure and analyse a full calibration (see the module docstring).

    ``surrogate_kind``: "grey-box" (drawn drive line + MLP, the default) or "twin" (the
    ring model with a few parameters fitted, `calibration.twin`). ``window``: "calm" (the
    drive window where the drive leaves the comb alone, the default) or "sensitivity" (the
    window sensitivity/noise alone picks: the locking zone). ``recorder`` receives every
    chunk of shots as it is measured (`calibration.measured.CalibrationWriter`, the file
    that live views read while the calibration runs; its stages are `calibration_stages`).
    """
    plan = _checked_plan(reservoir, plan, surrogate_kind, window)
    t_wall = time.perf_counter()
    measure = StageMeasurer(reservoir, progress, retries, recorder)
    freq = reservoir.frequency_hz.to(torch.float64).numpy()
    # 1. bias sweep, up then down, in that order (no reordering: the order is the experiment)
    up, down = plan.bias_legs()
    shots = torch.cat([up, down])
    traces = measure.traces("bias sweep", shots)[1].numpy()
    sweep = analyse_bias_sweep(reservoir, plan, freq, shots, traces, rising=len(up))
    grid = measure_response_grid(measure, plan)  # 2.
    # 3. operating point, 4. reference passes there
    op, drive_bin = choose_operating(measure, grid, sweep.geometry, freq, window)
    refs = measure_reference_stage(measure, plan, grid, op, drive_bin)
    # 5. surrogate: random settings inside the operating window (the encoding ranges), fitted
    # and validated on shots from that one distribution.
    cfg = surrogate_config or SurrogateConfig()
    enc = encoding_ranges(op, grid.bias_a)
    s_set = surrogate_sample(enc, plan.surrogate_points, seed=cfg.seed)
    s_feat = measure.features("surrogate sampling", s_set).to(torch.float64)
    fit_s = fit_surrogate_stage(
        surrogate_kind, cfg, plan, op, grid, sweep, freq, s_set, s_feat, reservoir, progress
    )
    return CalibrationResult(
        **_stage_fields(plan, reservoir, freq, sweep, grid, op, refs),
        encoding_ranges=enc,
        surrogate=fit_s,
        surrogate_config=cfg,
        surrogate_settings=s_set.numpy(),
        surrogate_features=s_feat.numpy(),
        line_sigma_hz=float("nan") if sweep.geometry is None else sweep.geometry.sigma_hz,
        instrument_time_s=float(sum(measure.stage_s.values())),
        wall_s=time.perf_counter() - t_wall,
        shots=sum(n for n, _ in calibration_stages(plan).values()),
        stage_instrument_s=measure.stage_s,
    )


PILOT_PASSES = 2
PILOT_REFERENCES = 2


def calibration_stages(plan: CalibrationPlan) -> dict[str, tuple[int, bool]]:
    """Stage name -> (shots, traces kept), in measuring order: what `run_calibration`
    measures for ``plan`` (the stages the calibration file's /measured part holds)."""
    up, down = plan.bias_legs()
    references = 2 + plan.reference_points  # `reference_settings_for`: 2 comb shots + points
    return {
        "bias sweep": (up.shape[0] + down.shape[0], True),
        "response grid": (plan.response_settings().shape[0], False),
        "noise pilot": (PILOT_PASSES * (PILOT_REFERENCES + 1), True),  # + 1 preset per pass
        "reference repeats": (plan.repeats * (references + 1), True),
        "surrogate sampling": (plan.surrogate_points, False),
    }


def _checked_plan(
    reservoir: PhysicalReservoir, plan: CalibrationPlan | None, surrogate_kind: str, window: str
) -> CalibrationPlan:
    """The plan (default if None), refused in one line if it leaves the reservoir's bounds
    or the surrogate kind or window is unknown."""
    if surrogate_kind not in SURROGATE_KINDS:
        raise UserError(f"surrogate kind {surrogate_kind!r}: allowed {', '.join(SURROGATE_KINDS)}")
    if window not in WINDOWS:
        raise UserError(f"window {window!r}: allowed {', '.join(WINDOWS)}")
    plan = plan or CalibrationPlan()
    try:
        plan.check_within(reservoir.bounds)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return plan


def measure_response_grid(measure: StageMeasurer, plan: CalibrationPlan) -> ResponseGrid:
    """Stage 2: the scheduler orders the grid bias first; features come back in grid order."""
    settings = plan.response_settings()
    f_axis, p_axis = plan.drive_axes()
    features = measure.features("response grid", settings)
    bias_a = np.asarray(plan.response_bias_a, dtype=np.float64)
    return ResponseGrid(settings, features, f_axis, p_axis, bias_a)


def analyse_bias_sweep(
    reservoir: PhysicalReservoir,
    plan: CalibrationPlan,
    freq: np.ndarray,
    shots: torch.Tensor,
    traces: np.ndarray,
    *,
    rising: int,
) -> BiasSweep:
    """Comb centroid per trace, field per ampere, hysteresis, mode spacing, line geometry
    of the bias sweep (the first ``rising`` shots rising, the rest falling)."""
    floor = noise_floor_dbm(traces)
    leg = np.concatenate([np.zeros(rising, int), np.ones(len(shots) - rising, int)])
    comb = np.array(
        [
            comb_centroid_hz(freq, t, floor) if comb_inside_span(freq, t, floor) else np.nan
            for t in traces
        ]
    )
    bias_np = shots[:, 2].numpy()
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
    return BiasSweep(shots.numpy(), traces, leg, comb, floor, fit, hyst, spacing, geometry)


def choose_operating(
    measure: StageMeasurer,
    grid: ResponseGrid,
    geometry: LineGeometry | None,
    freq: np.ndarray,
    window: str,
) -> tuple[OperatingPoint, np.ndarray | None]:
    """The operating point (and each drive frequency's feature bin, None without bins).

    A first noise estimate from the reference passes needs the operating point, which
    needs the noise: a short pilot (2 passes at the middle of the grid) breaks the loop.
    """
    f_axis, p_axis, b_axis = grid.drive_hz, grid.drive_dbm, grid.bias_a
    pilot_b = float(np.median(b_axis))
    mid = torch.tensor([[float(f_axis[len(f_axis) // 2]), float(p_axis[len(p_axis) // 2]), 0.0]])
    mid[0, 2] = pilot_b
    pilot_refs = torch.cat([mid, _shift_f(mid, f_axis, len(f_axis) // 4)])
    assert pilot_refs.shape[0] == PILOT_REFERENCES
    low = max(measure.reservoir.bounds.bias_a[0], pilot_b - PRESET_DROP_A)
    pilot_feats, _ = measure.references("noise pilot", pilot_refs, PILOT_PASSES, low)
    pilot_noise = repeatability(pilot_feats)
    drive_bin = None
    if geometry is not None:
        nearest = np.abs(freq[None, :] - f_axis.numpy()[:, None]).argmin(axis=1)
        drive_bin = geometry.point_bin.numpy()[nearest]
    response = grid.response
    # The calm window needs each drive frequency's feature bin (hard bins); other feature
    # maps fall back to the window sensitivity/noise alone picks, and the point says so.
    calm = drive_bin is not None and window == "calm"
    op = choose_operating_point(
        response,
        pilot_noise.feature_std,
        b_axis,
        p_axis.numpy(),
        f_axis.numpy(),
        interaction=interaction_map(response, _pooled(pilot_noise), drive_bin) if calm else None,
    )
    return op, drive_bin


def measure_reference_stage(
    measure: StageMeasurer,
    plan: CalibrationPlan,
    grid: ResponseGrid,
    op: OperatingPoint,
    drive_bin: np.ndarray | None,
) -> ReferenceStage:
    """Reference passes at the operating point: noise, sensitivity, interaction and the
    feature normalisation."""
    refs = reference_settings_for(op, plan)
    low = max(measure.reservoir.bounds.bias_a[0], op.bias_a - PRESET_DROP_A)
    ref_feats, ref_traces = measure.references("reference repeats", refs, plan.repeats, low)
    noise = repeatability(ref_feats)
    response = grid.response
    sens = sensitivity_map(response, noise.feature_std)
    inter = None if drive_bin is None else interaction_map(response, _pooled(noise), drive_bin)
    b_idx = index_of(grid.bias_a, op.bias_a)
    # Normalisation over the whole drive grid at the operating bias, not just the calm
    # window: there most features barely move (std ≈ noise), and a training run that drives
    # the default encoding (the bench's whole drive range) would see them at ±50 std.
    last = (len(grid.drive_dbm) - 1, len(grid.drive_hz) - 1)
    mean, std = feature_normalisation(response, b_idx, (0, last[0]), (0, last[1]))
    comb = (refs[:, 1] == COMB_DRIVE_DBM).numpy()
    return ReferenceStage(refs.numpy(), comb, ref_feats, ref_traces, noise, sens, inter, mean, std)


def fit_surrogate_stage(
    kind: str,
    cfg: SurrogateConfig,
    plan: CalibrationPlan,
    op: OperatingPoint,
    grid: ResponseGrid,
    sweep: BiasSweep,
    freq: np.ndarray,
    s_set: torch.Tensor,
    s_feat: torch.Tensor,
    reservoir: PhysicalReservoir,
    progress: StageProgress | None,
) -> SurrogateFit:
    """Fit the surrogate of ``kind`` to the window shots. The response grid at the operating
    bias rides along (fitted, its own rows held out) so the surrogate also spans the whole
    drive range a default encoding drives; the reported error stays the window's."""
    context = grid.at_bias(op.bias_a)
    tell = (
        None
        if progress is None
        else lambda done, total: progress("surrogate fit", done, total, 0.0)
    )
    if tell is not None:  # the count is known before the fit starts
        tell(0, twin_fit_steps(cfg.twin_rounds) if kind == "twin" else cfg.steps)
    if kind == "twin":
        return _fit_twin(cfg, sweep, freq, s_set, s_feat, reservoir, context, tell)
    ranges = torch.tensor(
        [list(plan.drive_hz), list(plan.drive_dbm), [op.bias_a, op.bias_a]], dtype=torch.float64
    )
    return fit_surrogate(
        s_set,
        s_feat,
        ranges=ranges,
        config=cfg,
        geometry=sweep.geometry,
        context=context,
        progress=tell,
    )


def _fit_twin(
    cfg: SurrogateConfig,
    sweep: BiasSweep,
    freq: np.ndarray,
    s_set: torch.Tensor,
    s_feat: torch.Tensor,
    reservoir: PhysicalReservoir,
    context: tuple[torch.Tensor, torch.Tensor],
    progress: Callable[[int, int], None] | None,
) -> SurrogateFit:
    """The twin draws the spectrum itself and applies the reservoir's own feature map to
    it, so it works for any map; it needs only the displayed line width."""
    sigma_hz = line_sigma_hz(freq, sweep.traces_dbm, sweep.floor_dbm)
    if not np.isfinite(sigma_hz):
        raise UserError(
            "surrogate kind 'twin' needs a measurable line width: no calibration trace "
            "shows a line 30 dB above the floor"
        )
    start, twin_grid = twin_start(
        freq, sweep.floor_dbm, sigma_hz, sweep.field_fit.field_per_ampere_oe_per_a
    )
    tf = fit_twin(
        s_set,
        s_feat,
        start=start,
        grid=twin_grid,
        spec=reservoir.feature_spec,
        validation_fraction=cfg.validation_fraction,
        seed=cfg.seed,
        rounds=cfg.twin_rounds,
        context=context,
        progress=progress,
    )
    return SurrogateFit(
        tf.model,  # type: ignore[arg-type]  # same call contract as RingSurrogate
        tf.validation_rmse,
        tf.train_rmse,
        tf.n_train,
        tf.n_validation,
        tf.validation_index,
        tf.context_validation_rmse,
        tf.context_validation_index,
    )


def _stage_fields(
    plan: CalibrationPlan,
    reservoir: PhysicalReservoir,
    freq: np.ndarray,
    sweep: BiasSweep,
    grid: ResponseGrid,
    op: OperatingPoint,
    refs: ReferenceStage,
) -> dict[str, Any]:
    """The `CalibrationResult` fields of stages 1-4."""
    return {
        "plan": plan,
        "snapshot": reservoir.snapshot(),
        "frequency_hz": freq,
        "feature_names": list(reservoir.feature_names),
        "bias_sweep": sweep,
        "mode_spacing_hz": _spacing_near(sweep.spacing_hz, sweep.settings[:, 2], op.bias_a),
        "response_settings": grid.settings.numpy(),
        "response_features": grid.response,
        "drive_hz": grid.drive_hz.numpy(),
        "drive_dbm": grid.drive_dbm.numpy(),
        "response_bias_a": grid.bias_a,
        "operating": op,
        "references": refs,
    }


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
