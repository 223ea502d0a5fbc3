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
    if dtype is None:
        needs_grad = torch.is_grad_enabled() and (line_hz.requires_grad or line_mw.requires_grad)
        dtype = torch.float64 if needs_grad else torch.float32
    needs_grad = torch.is_grad_enabled() and (line_hz.requires_grad or line_mw.requires_grad)
    if dtype == torch.float32 and not needs_grad:
        return _render_fast(line_hz, line_mw, grid, params, generator)
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
    # the (N, L, W) part can run in the trace dtype without a gather. The lines are
    # summed into a trace padded by 2*half + 1 points on each side: a line whose
    # window misses the grid (centre clamped just outside it) lands in the padding,
    # which is cut off, so no index needs a bounds mask.
    position = (line_hz - grid.start_hz) / bin_hz
    centre = torch.round(position.detach()).clamp_(-half - 1, points + half)
    residual_hz = ((centre - position) * bin_hz).to(dtype)
    pad = 2 * half + 1
    index = (centre.to(torch.long) + pad).unsqueeze(-1) + torch.arange(
        -half, half + 1, device=line_hz.device
    )  # (N, L, W), all within [0, points + 2 * pad)
    distance = (residual_hz.unsqueeze(-1) + offsets_hz) * (1.0 / sigma_hz)
    contribution = torch.exp(distance.square_().mul_(-0.5)) * line_mw.unsqueeze(-1)
    padded = torch.zeros(n, points + 2 * pad, dtype=dtype, device=line_hz.device)
    padded = padded.scatter_add(1, index.reshape(n, -1), contribution.reshape(n, -1))
    lines_mw = padded[:, pad : pad + points]

    floor = noise_floor_mw(grid, params)
    if generator is not None and params.noise_floor_std_db > 0:
        scatter = torch.randn(n, points, generator=generator, dtype=torch.float32).to(dtype)
        base = scatter.mul_(_NEPER_PER_DB * params.noise_floor_std_db).exp_().mul_(floor)
    else:
        base = torch.full((n, points), floor, dtype=dtype, device=line_hz.device)
    if lines_mw.requires_grad and torch.is_grad_enabled():
        return (10.0 * torch.log10(base + lines_mw)).to(torch.float64)
    return base.add_(lines_mw).log10_().to(torch.float64).mul_(10.0)


_CHUNK_FLOATS = 1 << 17  # trace values per chunk of the fast path (512 kB of float32)


def _render_fast(
    line_hz: torch.Tensor,
    line_mw: torch.Tensor,
    grid: AnalyzerGrid,
    params: RingParams,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """`render_trace` in float32 without autograd, with fewer passes over less memory.

    The same draws in the same order as the general path (jitter (N, L), then the
    floor (N, P)). Each window value is one exponential of
    ln(P_line * jitter) - r^2/2 - r*o - o^2/2 (r: the line's offset from its centre
    point, o: the window offset, both in standard deviations), built by one small
    GEMM, so the jitter costs an (N, L) add instead of an exp and a multiply. The
    lines land in a trace padded by 2*half + 1 points on each side (as in the
    general path) whose body already holds the noise floor. Rows go in chunks of
    ~512 kB through one reused buffer: the temporaries stay in cache, and fresh
    memory (page faults cost ~1 ns per byte here) is only the (N, P) output.
    """
    n, n_lines = line_hz.shape
    points = grid.points
    bin_hz = grid.bin_hz
    sigma_hz = line_sigma_hz(grid)
    half = min(int(math.ceil(_WINDOW_SIGMAS * sigma_hz / bin_hz)), points)
    pad = 2 * half + 1
    floor = noise_floor_mw(grid, params)

    log_amplitude = torch.log(line_mw)
    if generator is not None and params.jitter_db > 0:
        jitter = torch.randn(n, n_lines, generator=generator, dtype=torch.float32)
        log_amplitude.add_(jitter.to(torch.float64), alpha=_NEPER_PER_DB * params.jitter_db)
    scatter = None
    if generator is not None and params.noise_floor_std_db > 0:
        scatter = torch.randn(n, points, generator=generator, dtype=torch.float32)

    position = (line_hz - grid.start_hz) / bin_hz
    centre = torch.round(position).clamp_(-half - 1, points + half)
    residual = (centre - position) * (bin_hz / sigma_hz)  # (N, L), in standard deviations
    offsets = torch.arange(-half, half + 1, dtype=torch.float64) * (bin_hz / sigma_hz)
    # exponent (N*L, W) = [ln A - r^2/2, r] @ [[1 ...], [-o ...]] - o^2/2
    factors = torch.stack([log_amplitude.sub_(residual.square().mul_(0.5)), residual], dim=-1)
    factors = factors.to(torch.float32).reshape(n, n_lines, 2)
    rows = torch.stack([torch.ones_like(offsets), -offsets]).to(torch.float32)
    bias = offsets.square().mul_(-0.5).to(torch.float32)
    first = (centre.to(torch.long) + pad).unsqueeze(-1)  # (N, L, 1)
    window_steps = torch.arange(-half, half + 1)

    out = torch.empty(n, points, dtype=torch.float64)
    chunk = max(1, min(n, _CHUNK_FLOATS // points))
    padded = torch.empty(chunk, points + 2 * pad, dtype=torch.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = padded[: stop - start]
        body = part[:, pad : pad + points]
        part[:, :pad].zero_()
        part[:, pad + points :].zero_()
        if scatter is None:
            body.fill_(floor)
        else:
            noise = scatter[start:stop].mul_(_NEPER_PER_DB * params.noise_floor_std_db).exp_()
            torch.mul(noise, floor, out=body)
        window = torch.addmm(bias, factors[start:stop].reshape(-1, 2), rows)
        # exp(-87) is still a normal float32: no subnormal results (they are ~50x slower).
        window.clamp_(min=-87.0).exp_()
        index = (first[start:stop] + window_steps).reshape(stop - start, -1)
        part.scatter_add_(1, index, window.reshape(stop - start, -1))
        torch.mul(body.log10_(), 10.0, out=out[start:stop])
    return out
