"""What a swept spectrum analyzer displays for a set of lines: RBW shapes on a noise floor.

Each line is drawn with a Gaussian RBW filter shape of full width at half maximum
max(RBW, 1.5 * bin spacing): the wider floor keeps a line from falling between two
trace points, as a peak detector does. A line only touches the points within ten
standard deviations of its centre (it is < 1e-13 of its peak beyond), so the cost is
N * lines * window instead of N * lines * points.

`draw_trace` is the display written once against the array API (sim/arrays.py): the
torch model calls it through `render_trace` (float64, differentiable), the one-shot
path of `RingModel.measure` on NumPy arrays. `_render_fast` is the same display for
torch batches without autograd in float32, arranged for speed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from labpgt.sim.arrays import (
    Array,
    as_dtype,
    at_least,
    at_most,
    namespace,
    scatter_add_rows,
    stop_gradient,
)
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_WINDOW_SIGMAS = 8.0
_WINDOW_SIGMAS_PRECISE = 13.0
_NEPER_PER_DB = math.log(10.0) / 10.0


def noise_floor_mw(grid: AnalyzerGrid, params: RingParams) -> float:
    """Mean displayed noise level in mW at this grid's RBW (scales with 10*log10(RBW))."""
    floor_dbm = params.noise_floor_dbm_at_100khz + 10.0 * math.log10(grid.rbw_hz / 100e3)
    return 10.0 ** (floor_dbm / 10.0)


def line_sigma_hz(grid: AnalyzerGrid) -> float:
    """Standard deviation of the displayed Gaussian line shape, Hz."""
    return max(grid.rbw_hz, 1.5 * grid.bin_hz) / _FWHM_PER_SIGMA


def render_trace(
    line_hz: torch.Tensor,
    line_mw: torch.Tensor,
    grid: AnalyzerGrid,
    params: RingParams,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Trace in dBm, (N, P) float64, for lines (N, L) given in Hz and mW.

    With a generator: each line gets an amplitude jitter of `jitter_db` and each point
    of the floor a log-normal scatter of `noise_floor_std_db` (noise). Without one the
    trace is deterministic and differentiable in line_hz and line_mw.

    dtype is the precision of the (N, L, W) and (N, P) arithmetic; the result is float64
    either way. None picks float64 when autograd needs it (gradients that match finite
    differences) and float32 otherwise (5x faster on CPU, ~1e-5 dB). Random draws are
    always float32, so the noise does not depend on that choice.
    """
    needs_grad = torch.is_grad_enabled() and (line_hz.requires_grad or line_mw.requires_grad)
    if dtype is None:
        dtype = torch.float64 if needs_grad else torch.float32
    n, n_lines = line_hz.shape
    jitter, scatter = noise_draws(n, n_lines, grid.points, params, generator)
    if dtype == torch.float32 and not needs_grad:
        return _render_fast(line_hz, line_mw, grid, params, jitter, scatter)
    # float64 (gradient) traces reach further into the tails: where a 0 dBm line's
    # window shifts by a point, its cut-off tail must be far below the floor even on
    # the scale of a finite-difference step.
    sigmas = _WINDOW_SIGMAS if dtype == torch.float32 else _WINDOW_SIGMAS_PRECISE
    return draw_trace(line_hz, line_mw, grid, params, jitter, scatter, dtype, sigmas)


def noise_draws(
    n: int, n_lines: int, points: int, params: RingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Standard-normal float32 draws of the line jitter (N, L), then of the floor (N, P).

    None for a kind of noise that is off (no generator, or its amplitude is 0).
    """
    jitter = scatter = None
    if generator is not None and params.jitter_db > 0:
        jitter = torch.randn(n, n_lines, generator=generator, dtype=torch.float32)
    if generator is not None and params.noise_floor_std_db > 0:
        scatter = torch.randn(n, points, generator=generator, dtype=torch.float32)
    return jitter, scatter


class _LineWindow(NamedTuple):
    """Where each line's window of trace points lies (see `_window`)."""

    half: int
    """Window points on each side of the centre (count)."""
    pad: int
    """Padding of the trace on each side, 2 * half + 1 points."""
    residual: Array
    """(N, L) offset of the centre point from the line, in standard deviations."""
    offsets: Array
    """(W,) offsets of the window points from the centre, in standard deviations."""
    first: Array
    """(N, L) column of each line's centre point in the padded trace."""
    steps: Array
    """(W,) integer offsets of the window points from the centre."""

    def index(self, start: int = 0, stop: int | None = None) -> Array:
        """(rows, L * W) column of each window point in the padded trace, rows start:stop."""
        first = self.first[start:stop]
        return (first[..., None] + self.steps).reshape(first.shape[0], -1)


def _window(line_hz: Array, grid: AnalyzerGrid, sigmas: float) -> _LineWindow:
    """Each line's window out to `sigmas` standard deviations, on the padded trace.

    Grid point i sits at start + i*bin, so the distance of window point j from the line
    is (start + centre*bin - f) + j*bin: the float64 part is (N, L) only. The lines are
    summed into a trace padded by 2*half + 1 points on each side: a line whose window
    misses the grid (centre clamped just outside it) lands in the padding, which is cut
    off, so no index needs a bounds mask.
    """
    xp = namespace(line_hz)
    points, bin_hz = grid.points, grid.bin_hz
    sigma_hz = line_sigma_hz(grid)
    half = min(int(math.ceil(sigmas * sigma_hz / bin_hz)), points)
    pad = 2 * half + 1
    position = (line_hz - grid.start_hz) / bin_hz
    # (not array-api-compat's clip: ~5x slower on the one-shot path)
    centre = at_most(xp, at_least(xp, xp.round(stop_gradient(position)), -half - 1), points + half)
    steps = xp.arange(-half, half + 1)
    first = xp.astype(centre, xp.int64) + pad
    return _LineWindow(
        half=half,
        pad=pad,
        residual=(centre - position) * (bin_hz / sigma_hz),
        offsets=xp.astype(steps, line_hz.dtype) * (bin_hz / sigma_hz),
        first=first,
        steps=steps,
    )


def draw_trace(
    line_hz: Array,
    line_mw: Array,
    grid: AnalyzerGrid,
    params: RingParams,
    jitter: Array | None,
    scatter: Array | None,
    dtype: object,
    sigmas: float,
) -> Array:
    """Trace in dBm, (N, P) float64, of lines (N, L) in Hz and mW (NumPy or torch).

    jitter (N, L) and scatter (N, P): standard-normal draws of the line amplitudes and
    of the floor (None: none of that kind). dtype: precision of the (N, L, W) and (N, P)
    arithmetic; sigmas: how far each line's window reaches, standard deviations.
    """
    xp = namespace(line_hz, line_mw)
    window = _window(line_hz, grid, sigmas)
    amplitude = as_dtype(xp, line_mw, dtype)
    if jitter is not None:
        amplitude = amplitude * xp.exp(
            (_NEPER_PER_DB * params.jitter_db) * as_dtype(xp, jitter, dtype)
        )
    distance = as_dtype(xp, window.residual, dtype)[..., None] + as_dtype(xp, window.offsets, dtype)
    shape = xp.exp(-0.5 * distance**2) * amplitude[..., None]
    n, points, pad = line_hz.shape[0], grid.points, window.pad
    padded = scatter_add_rows(xp, window.index(), xp.reshape(shape, (n, -1)), points + 2 * pad)
    floor = noise_floor_mw(grid, params)
    if scatter is None:
        base = xp.full((n, points), floor, dtype=dtype)
    else:
        base = xp.exp((_NEPER_PER_DB * params.noise_floor_std_db) * as_dtype(xp, scatter, dtype))
        base = base * floor
    return as_dtype(xp, 10.0 * xp.log10(base + padded[:, pad : pad + points]), xp.float64)


_CHUNK_FLOATS = 1 << 17  # trace values per chunk of the fast path (512 kB of float32)


def _render_fast(
    line_hz: torch.Tensor,
    line_mw: torch.Tensor,
    grid: AnalyzerGrid,
    params: RingParams,
    jitter: torch.Tensor | None,
    scatter: torch.Tensor | None,
) -> torch.Tensor:
    """`draw_trace` in float32 for torch without autograd, with fewer passes over less memory.

    Each window value is one exponential of ln(P_line * jitter) - r^2/2 - r*o - o^2/2
    (r: the line's offset from its centre point, o: the window offset, both in standard
    deviations), built by one small GEMM, so the jitter costs an (N, L) add instead of
    an exp and a multiply. The lines land in the padded trace (as in `_window`) whose
    body already holds the noise floor. Rows go in chunks of ~512 kB through one reused
    buffer: the temporaries stay in cache, and fresh memory (page faults cost ~1 ns per
    byte here) is only the (N, P) output.
    """
    n, n_lines = line_hz.shape
    window = _window(line_hz, grid, _WINDOW_SIGMAS)
    log_amplitude = torch.log(line_mw)
    if jitter is not None:
        log_amplitude.add_(jitter.to(torch.float64), alpha=_NEPER_PER_DB * params.jitter_db)
    residual, offsets = window.residual, window.offsets
    # exponent (N*L, W) = [ln A - r^2/2, r] @ [[1 ...], [-o ...]] - o^2/2
    factors = torch.stack([log_amplitude.sub_(residual.square().mul_(0.5)), residual], dim=-1)
    factors = factors.to(torch.float32).reshape(n * n_lines, 2)
    rows = torch.stack([torch.ones_like(offsets), -offsets]).to(torch.float32)
    bias = offsets.square().mul_(-0.5).to(torch.float32)
    out = torch.empty(n, grid.points, dtype=torch.float64)
    chunk = max(1, min(n, _CHUNK_FLOATS // grid.points))
    padded = torch.empty(chunk, grid.points + 2 * window.pad, dtype=torch.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = _floor_rows(padded[: stop - start], grid, params, window.pad, scatter, start)
        exponent = torch.addmm(bias, factors[start * n_lines : stop * n_lines], rows)
        # exp(-87) is still a normal float32: no subnormal results (they are ~50x slower).
        exponent.clamp_(min=-87.0).exp_()
        index = window.index(start, stop)
        part.scatter_add_(1, index, exponent.reshape(stop - start, -1))
        body = part[:, window.pad : window.pad + grid.points]
        torch.mul(body.log10_(), 10.0, out=out[start:stop])
    return out


def _floor_rows(
    part: torch.Tensor,
    grid: AnalyzerGrid,
    params: RingParams,
    pad: int,
    scatter: torch.Tensor | None,
    start: int,
) -> torch.Tensor:
    """Fill a chunk of padded float32 rows: zeros in the padding, the noise floor between."""
    points = grid.points
    part[:, :pad].zero_()
    part[:, pad + points :].zero_()
    body = part[:, pad : pad + points]
    floor = noise_floor_mw(grid, params)
    if scatter is None:
        body.fill_(floor)
    else:
        rows = scatter[start : start + part.shape[0]]
        torch.mul(rows.mul(_NEPER_PER_DB * params.noise_floor_std_db).exp_(), floor, out=body)
    return part
