"""What a swept spectrum analyzer displays for a set of lines: RBW shapes on a noise floor.

Each line is drawn with a Gaussian RBW filter shape of full width at half maximum
max(RBW, 1.5 * bin spacing): the wider floor keeps a line from falling between two
trace points, as a peak detector does. A line only touches the points within ten
standard deviations of its centre (it is < 1e-13 of its peak beyond), so the cost is
N * lines * window instead of N * lines * points.
"""

from __future__ import annotations

import math

import torch

from sim.grid import AnalyzerGrid
from sim.params import RingParams

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
    if dtype is None:
        needs_grad = torch.is_grad_enabled() and (line_hz.requires_grad or line_mw.requires_grad)
        dtype = torch.float64 if needs_grad else torch.float32
    n, n_lines = line_hz.shape
    points = grid.points
    bin_hz = grid.bin_hz
    sigma_hz = line_sigma_hz(grid)
    # float64 (gradient) traces reach further into the tails: where a 0 dBm line's
    # window shifts by a point, its cut-off tail must be far below the floor even on
    # the scale of a finite-difference step.
    sigmas = _WINDOW_SIGMAS if dtype == torch.float32 else _WINDOW_SIGMAS_PRECISE
    half = min(int(math.ceil(sigmas * sigma_hz / bin_hz)), points)
    offsets_hz = torch.arange(-half, half + 1, device=line_hz.device).to(dtype) * bin_hz

    line_mw = line_mw.to(dtype)
    if generator is not None and params.jitter_db > 0:
        jitter = torch.randn(n, n_lines, generator=generator, dtype=torch.float32).to(dtype)
        line_mw = line_mw * torch.exp(_NEPER_PER_DB * params.jitter_db * jitter)

    # Grid point i sits at start + i*bin, so the distance of window point j from the
    # line is (start + centre*bin - f) + j*bin: the float64 part is (N, L) only and
    # the (N, L, W) part can run in the trace dtype without a gather.
    position = (line_hz - grid.start_hz) / bin_hz
    centre = torch.round(position.detach())
    residual_hz = ((centre - position) * bin_hz).to(dtype)
    index = centre.to(torch.long).unsqueeze(-1) + torch.arange(
        -half, half + 1, device=line_hz.device
    )  # (N, L, W)
    inside = (index >= 0) & (index < points)
    index = index.clamp_(0, points - 1)
    distance = (residual_hz.unsqueeze(-1) + offsets_hz) * (1.0 / sigma_hz)
    shape = torch.exp(-0.5 * distance**2) * inside
    contribution = (shape * line_mw.unsqueeze(-1)).reshape(n, -1)

    floor = noise_floor_mw(grid, params)
    if generator is not None and params.noise_floor_std_db > 0:
        scatter = torch.randn(n, points, generator=generator, dtype=torch.float32).to(dtype)
        base = floor * torch.exp(_NEPER_PER_DB * params.noise_floor_std_db * scatter)
    else:
        base = torch.full((n, points), floor, dtype=dtype, device=line_hz.device)
    total = base.scatter_add(1, index.reshape(n, -1), contribution)
    return (10.0 * torch.log10(total)).to(torch.float64)
