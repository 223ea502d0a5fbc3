"""Saturation and competition of the ring's eigenmodes (Lotka-Volterra steady state).

Each mode n has a growth rate g_n (net round-trip gain in units of `gain_scale_db`)
and a power P_n (in units of the saturated power). The modes share the gain of the
amplifier and the spin-wave film:

    dP_n/dt = 2 P_n (g_n - sum_m c_nm P_m - c_n,drive P_drive) + s

with self-saturation c_nn = 1, cross-saturation c_nm falling with the mode-number
separation from `cross_saturation_near` (> 1: neighbours exclude each other) to
`cross_saturation_far` (< 1: distant modes coexist), and a tiny spontaneous-emission
seed s that makes the threshold smooth. The steady state is reached by a fixed number
of multiplicative (positivity-preserving) fixed-point iterations, so the result is
batched and differentiable.

Without autograd the same iterations run in place on preallocated buffers (no
allocation per step); with `fast=True` they run in float32 (see `_iterate_float32`).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from labpgt.sim.params import RingParams


def cross_saturation(separation_modes: torch.Tensor, params: RingParams) -> torch.Tensor:
    """Cross-saturation coefficient between two lines this many mode spacings apart."""
    near, far = params.cross_saturation_near, params.cross_saturation_far
    return far + (near - far) * neighbourhood(separation_modes, params)


def neighbourhood(separation_modes: torch.Tensor, params: RingParams) -> torch.Tensor:
    """Gaussian weight exp(-(dn / width)^2) of a mode-number separation dn."""
    return torch.exp(-((separation_modes / params.cross_saturation_width_modes) ** 2))


def _separation(params: RingParams, dtype: torch.dtype) -> torch.Tensor:
    index = torch.arange(params.mode_count, dtype=dtype)
    return index.unsqueeze(-1) - index.unsqueeze(-2)


@lru_cache(maxsize=32)
def _matrices(params: RingParams, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(coupling^T, neighbourhood kernel^T), both (M, M), cached per parameter set and dtype."""
    kernel_t = neighbourhood(_separation(params, dtype), params).T.contiguous()
    return coupling_matrix(params, dtype).T.contiguous(), kernel_t


def coupling_matrix(params: RingParams, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(M, M) saturation matrix: 1 on the diagonal, cross-saturation off it.

    It depends on the mode-number separation only (the comb is nearly uniform), so
    one matrix serves every setting of a batch and the competition is one GEMM.
    """
    eye = torch.eye(params.mode_count, dtype=dtype)
    return cross_saturation(_separation(params, dtype), params) * (1.0 - eye) + eye


def steady_state(
    growth: torch.Tensor,
    drive_separation_modes: torch.Tensor,
    drive_saturation: torch.Tensor,
    params: RingParams,
    *,
    fast: bool = False,
) -> torch.Tensor:
    """Steady-state mode powers (units of the saturated power), shape (N, M).

    growth: (N, M) growth rates; drive_separation_modes: (N, M) detuning of the drive
    from each mode in mode spacings; drive_saturation: (N,) the injected drive's power
    in units of the saturated power (0 when RF is off). fast: without autograd, run
    the iterations in float32 (~1e-5 relative; the result keeps the input dtype).
    """
    coupling_t, kernel_t = _matrices(params, growth.dtype)
    drive_load = cross_saturation(drive_separation_modes, params) * (drive_saturation.unsqueeze(-1))
    net = growth - drive_load
    seed = params.spontaneous_emission
    # Start from each mode's steady state as if it were alone (exact below threshold,
    # where dP/dt = 2P(g - P) + s gives P = (g + sqrt(g^2 + 2s)) / 2), so modes under
    # threshold need no iterations to settle ... With a = sqrt(g^2 + 2s) + |g| that is
    # a / 2 for g >= 0 and s / a for g < 0: no cancellation on either side (the textbook
    # forms lose ~1e-6 relative to rounding and make the gradient check fail).
    root_plus_abs = torch.sqrt(net**2 + 2.0 * seed) + net.abs()
    alone = torch.where(net >= 0, 0.5 * root_plus_abs, seed / root_plus_abs)
    # ... and weight it by the mode's soft dominance over its neighbourhood,
    # exp(kappa g_n) / sum_m K_nm exp(kappa g_m): that breaks the symmetry between
    # neighbours, which the LV dynamics alone would take ~1000 steps to resolve.
    lifted = torch.exp(params.competition_sharpness * (net - net.max(-1, keepdim=True).values))
    dominance = lifted / (lifted @ kernel_t)
    power = alone * dominance**2 + seed
    # A step that shrinks for very large gains keeps the discrete map from
    # overshooting into oscillation (the Ricker map is stable for 2*step*g < 2).
    smooth_max = torch.logsumexp(4.0 * growth, dim=-1, keepdim=True) / 4.0
    step = params.competition_step / (
        1.0 + torch.nn.functional.softplus(4.0 * (smooth_max - 1.0)) / 4.0
    )
    two_step = 2.0 * step
    seed_step = two_step * seed
    if not (power.requires_grad or net.requires_grad or two_step.requires_grad):
        if fast and power.dtype == torch.float64:
            out = _iterate_float32(power, net, coupling_t, two_step, seed_step, params)
            return out.to(power.dtype)
        return _iterate_in_place(power, net, coupling_t, two_step, seed_step, params)
    for _ in range(params.competition_iterations):
        # Exact solution of dP/dt = 2 r P + s over one step with r frozen,
        # P' = P e^x + 2 step s (e^x - 1) / x with x = 2 step r, so that the fixed point
        # below threshold is the continuous one. (e^x - 1) / x -> 1 as x -> 0; expm1
        # keeps it accurate down to tiny |x|; at x == 0 exactly the guard gives 1.
        x = torch.addmm(net, power, coupling_t, alpha=-1.0).clamp(max=5.0) * two_step
        growth_m1 = torch.expm1(x)
        at_zero = x == 0.0
        ratio = (growth_m1 + at_zero) / x.masked_fill(at_zero, 1.0)
        power = torch.addcmul(torch.addcmul(power, power, growth_m1), ratio, seed_step)
    return power


def _iterate_in_place(
    power: torch.Tensor,
    net: torch.Tensor,
    coupling_t: torch.Tensor,
    two_step: torch.Tensor,
    seed_step: torch.Tensor,
    params: RingParams,
) -> torch.Tensor:
    """The loop of `steady_state` without autograd: the same arithmetic, in place.

    At x == 0 expm1(x) / x is 0 / 0 = NaN, which nan_to_num_ turns into the limit 1
    (x is finite: clamped above, and net and power are finite).
    """
    x = torch.empty_like(power)
    ratio = torch.empty_like(power)
    for _ in range(params.competition_iterations):
        torch.addmm(net, power, coupling_t, alpha=-1.0, out=x)
        x.clamp_(max=5.0).mul_(two_step)
        torch.expm1(x, out=ratio)
        power.addcmul_(power, ratio)
        ratio.div_(x).nan_to_num_(nan=1.0)
        power.addcmul_(ratio, seed_step)
    return power


def _iterate_float32(
    power: torch.Tensor,
    net: torch.Tensor,
    coupling_t: torch.Tensor,
    two_step: torch.Tensor,
    seed_step: torch.Tensor,
    params: RingParams,
) -> torch.Tensor:
    """`_iterate_in_place` in float32, for the fast path without autograd.

    It iterates Q = 2 step P (per row), so that x = 2 step (net - C P) = 2 step net - C Q
    is one GEMM and the clamp at 5 one minimum. The coupling product is a batched GEMM
    of one row each (baddbmm): a plain float32 GEMM rounds a row differently depending
    on the batch size (BLAS edge kernels), which the competition amplifies to ~1e-3 dB;
    one small GEMM per row does not. exp replaces expm1 (scalar and ~4x slower in
    float32): Q e^x is exact enough, and (e^x - 1) / x only scales the tiny seed term.
    """
    n, m = power.shape
    two_step = two_step.to(torch.float32)
    power = (power * two_step).to(torch.float32)
    power3 = power.view(n, 1, m)
    net = (net * two_step).to(torch.float32).unsqueeze(1)
    cap = 5.0 * two_step
    seed_step = (seed_step * two_step).to(torch.float32)
    coupling_t = coupling_t.to(torch.float32).expand(n, m, m)
    x3 = torch.empty(n, 1, m, dtype=torch.float32)
    x = x3.view(n, m)
    growth = torch.empty_like(power)
    for _ in range(params.competition_iterations):
        torch.baddbmm(net, power3, coupling_t, alpha=-1.0, out=x3)
        torch.minimum(x, cap, out=x)
        torch.exp(x, out=growth)
        power.mul_(growth)
        growth.sub_(1.0).div_(x).nan_to_num_(nan=1.0)
        power.addcmul_(growth, seed_step)
    return power.div_(two_step)
