"""Calibration plots: response heat maps, hysteresis loop, surrogate against measurement."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if TYPE_CHECKING:
    from labpgt.calibration.run import CalibrationResult


def plot_response(
    path: Path,
    peak_dbm: np.ndarray,
    sensitivity: np.ndarray,
    bias_a: np.ndarray,
    power_dbm: np.ndarray,
    drive_hz: np.ndarray,
    operating: dict[str, float | tuple[float, float]],
    interaction: np.ndarray | None = None,
    feature_unit: str = "dBm",
) -> Path:
    """Heat maps per bias: strongest feature level (dBm), sensitivity/noise and (if given) the
    drive's interaction with the comb over the drive grid.

    ``peak_dbm``, ``sensitivity`` and ``interaction`` are (B, P, Fq); the operating window
    is outlined.
    """
    n_b = len(bias_a)
    n_rows = 2 if interaction is None else 3
    fig, axes = plt.subplots(
        n_rows, n_b, figsize=(3.2 * n_b + 1, 3 * n_rows), squeeze=False, sharey=True
    )
    extent = [drive_hz[0] / 1e9, drive_hz[-1] / 1e9, power_dbm[0], power_dbm[-1]]
    maps = [
        (peak_dbm, f"strongest feature ({feature_unit})", {"cmap": "viridis"}),
        (
            sensitivity,
            "sensitivity (noise std per step)",
            {"cmap": "magma", "vmin": 0, "vmax": float(np.nanmax(sensitivity))},
        ),
    ]
    if interaction is not None:
        kw = {"cmap": "cividis", "vmin": 0, "vmax": float(np.nanmax(interaction))}
        maps.append((interaction, "interaction (noise std)", kw))
    for b in range(n_b):
        chosen = abs(bias_a[b] - float(operating["bias_a"])) < 1e-9
        for row, (data, label, kw) in enumerate(maps):
            ax = axes[row, b]
            im = ax.imshow(data[b], origin="lower", aspect="auto", extent=extent, **kw)
            # every panel of the top row has its own scale: every colour bar says what it is
            fig.colorbar(im, ax=ax, label=label if row == 0 or b == n_b - 1 else None)
            if chosen:
                _outline(ax, operating)
            ax.set_title(f"bias {bias_a[b]:.3f} A" + (" (operating)" if chosen else ""))
            ax.set_xlabel("drive frequency (GHz)")  # every panel: units on every axis
        for row in range(n_rows):
            axes[row, 0].set_ylabel("drive power (dBm)")
    title = "Ring response over the drive grid at each bias current "
    return _save(fig, path, title + "(dashed: the operating window chosen)")


def _outline(ax: plt.Axes, operating: dict[str, float | tuple[float, float]]) -> None:
    """Dashed outline of the operating window (drive frequency x power)."""
    f0, f1 = operating["drive_hz"]
    p0, p1 = operating["drive_dbm"]
    outline = plt.Rectangle(
        (f0 / 1e9, p0), (f1 - f0) / 1e9, p1 - p0, fill=False, ec="w", lw=1.5, ls="--"
    )
    ax.add_patch(outline)


def _save(fig: plt.Figure, path: Path, title: str) -> Path:
    """Title, lay out, write (110 dpi) and close ``fig``; ``path``."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_hysteresis(
    path: Path,
    bias_up_a: np.ndarray,
    comb_up_hz: np.ndarray,
    bias_down_a: np.ndarray,
    comb_down_hz: np.ndarray,
    fitted_hz: tuple[np.ndarray, np.ndarray],
    title: str,
) -> Path:
    """Comb frequency against bias current, rising and falling leg, with the fitted dispersion."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(bias_up_a, comb_up_hz / 1e9, "o-", ms=4, label="rising")
    ax.plot(bias_down_a, comb_down_hz / 1e9, "s-", ms=4, mfc="none", label="falling")
    ax.plot(fitted_hz[0], fitted_hz[1] / 1e9, "k:", lw=1, label="fit (Damon-Eshbach, fixed k)")
    ax.set_xlabel("bias current (A)")
    ax.set_ylabel("comb centroid (GHz)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path, "Comb frequency against bias current, rising and falling")


def plot_surrogate(
    path: Path,
    measured: np.ndarray,
    predicted: np.ndarray,
    noise_std: float,
    title: str,
    unit: str = "dBm",
    feature_labels: list[str] | None = None,
) -> Path:
    """Held-out settings: predicted against measured features, and three example feature vectors.

    ``unit`` is the features' unit; ``feature_labels`` (one per feature) label the feature axis.
    """
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    lo = float(min(measured.min(), predicted.min()))
    hi = float(max(measured.max(), predicted.max()))
    ax0.plot(measured.ravel(), predicted.ravel(), ".", ms=2, alpha=0.4)
    ax0.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax0.fill_between(
        [lo, hi],
        [lo - 2 * noise_std, hi - 2 * noise_std],
        [lo + 2 * noise_std, hi + 2 * noise_std],
        color="0.8",
        alpha=0.5,
        label="±2 noise std",
    )
    ax0.set_xlabel(f"measured feature ({unit})")
    ax0.set_ylabel(f"surrogate prediction ({unit})")
    ax0.set_aspect("equal", adjustable="datalim")
    ax0.legend(loc="upper left")
    ax0.set_title(title, fontsize=10)
    for i, row in enumerate(np.linspace(0, len(measured) - 1, min(3, len(measured))).astype(int)):
        ax1.plot(measured[row], "-", color=f"C{i}", label=f"measured, held-out row {row}")
        ax1.plot(predicted[row], "--", color=f"C{i}", label=f"surrogate, held-out row {row}")
    ax1.set_xlabel("feature (analyzer span, low to high frequency)")
    ax1.set_ylabel(f"feature value ({unit})")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    if feature_labels is not None and len(feature_labels) <= 16:
        ax1.set_xlabel("feature: centre of its window on the analyzer axis (GHz)")
        ax1.set_xticks(range(len(feature_labels)))
        ax1.set_xticklabels(feature_labels, rotation=60, ha="right", fontsize=7)
    ax1.set_title("three held-out settings", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    return _save(fig, path, "Surrogate against the ring on settings the fit never saw")


def _short_label(feature_name: str) -> str:
    """'kernel3_2.1000GHz_dBm' -> '2.100'; 'bin0_2.0000-2.0188GHz_dBm' -> '2.009' (GHz)."""
    parts = feature_name.split("_")
    if len(parts) >= 3 and parts[1].endswith("GHz"):
        edges = [float(v) for v in parts[1][:-3].split("-")]
        return f"{sum(edges) / len(edges):.3f}"
    return feature_name


def write_plots(result: CalibrationResult, directory: Path) -> list[Path]:
    """The three calibration plots of ``result`` into ``directory`` (created); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    units = {name.rsplit("_", 1)[-1] for name in result.feature_names}
    unit = units.pop() if len(units) == 1 else "mixed units"
    op = result.operating
    operating = {"bias_a": op.bias_a, "drive_hz": op.drive_hz, "drive_dbm": op.drive_dbm}
    paths = [
        plot_response(
            directory / "response.png",
            result.response_features.max(axis=-1),
            result.references.sensitivity,
            result.response_bias_a,
            result.drive_dbm,
            result.drive_hz,
            operating,
            result.references.interaction,
            unit,
        )
    ]
    paths.append(_hysteresis_plot(result, directory / "hysteresis.png"))
    paths.append(_surrogate_plot(result, directory / "surrogate.png", unit))
    return paths


def _hysteresis_plot(result: CalibrationResult, path: Path) -> Path:
    """The bias sweep's comb frequency, both legs, with the fitted dispersion."""
    from labpgt.calibration.field import YigConstants

    sweep = result.bias_sweep
    bias = sweep.settings[:, 2]
    up, down = sweep.leg == 0, sweep.leg == 1
    fit, yig = sweep.field_fit, YigConstants()
    grid = np.linspace(bias.min(), bias.max(), 200)
    h = fit.field_per_ampere_oe_per_a * grid + yig.four_pi_ms_g / 2
    fitted = np.sqrt(np.clip(h**2 - fit.dispersion_constant_oe2, 1.0, None)) * yig.gyro_hz_per_oe
    hy = sweep.hysteresis
    return plot_hysteresis(
        path,
        bias[up],
        sweep.comb_hz[up],
        bias[down],
        sweep.comb_hz[down],
        (grid, fitted),
        f"field per ampere {fit.field_per_ampere_oe_per_a:.2f} Oe/A; falling - rising "
        f"{hy.offset_oe:+.2f} ± {hy.offset_std_oe:.2f} Oe "
        f"({'hysteresis detected' if hy.detected else 'no hysteresis'})",
    )


def _surrogate_plot(result: CalibrationResult, path: Path, unit: str) -> Path:
    """The surrogate's predictions against the held-out shots."""
    import torch

    sf = result.surrogate
    idx = sf.validation_index.numpy()
    with torch.no_grad():
        pred = sf.model(torch.from_numpy(result.surrogate_settings[idx])).numpy()
    noise = result.references.noise.rms_std
    return plot_surrogate(
        path,
        result.surrogate_features[idx],
        pred,
        noise,
        f"held-out rows: RMS error {sf.validation_rmse:.3f} dB = "
        f"{sf.validation_rmse / max(noise, 1e-12):.2f} x noise ({noise:.3f} dB)",
        unit,
        [_short_label(name) for name in result.feature_names],
    )
