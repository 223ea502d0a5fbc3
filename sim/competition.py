"""Saturation and competition of the ring's eigenmodes (Lotka-Volterra steady state).

Each mode n has a growth rate g_n (net round-trip gain in units of `gain_scale_db`)
and a power P_n (in units of the saturated power). The modes share the gain of the
amplifier and the spin-wave film:

    dP_n/dt = 2 P_n (g_n - sum_m c_nm P_m - c_n,drive P_drive) + s

with self-saturation c_nn = 1, cross-saturation c_nm falling with the mode-number
separation from `cross_saturation_near` (> 1: neighbours exclude each other) to
`cross_saturation_far` (< 1: distant modes coexist), and a tiny spontaneous-emission
seed s that makes the threshold smooth.

One solver (`solve_competition`) serves every path: the batched torch model (float64
with autograd, or float32 without), and the one-shot NumPy path of the virtual
analyzer. It is written against the array API (array-api-compat), so the same lines
run on NumPy arrays and torch tensors, and stay differentiable under autograd.

Convergence criterion: a setting (row) counts as converged when no mode's power
changed by more than `competition_tolerance` (relative) over one iteration, checked
every `CHECK_EVERY` iterations; its result is the iterate at that check (so a row's
result never depends on the other rows of its batch). The iteration count is capped
at `competition_iterations`: a row still moving then returns the iterate at the cap,
with `converged` False in `Competition` (no error, no warning: the ring's spectra are
this capped iterate). benchmarks/competition_convergence.py measures how far the cap
leaves the settings from the steady state (docs/ring-physics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as _numpy
import torch
from labpgt.sim.arrays import Array, as_dtype, namespace, plain_module, softplus
from labpgt.sim.params import RingParams

CHECK_EVERY = 16
"""Iterations between two convergence checks (count)."""


class Competition(NamedTuple):
    """Result of `solve_competition` for N settings."""

    power: Array
    """(N, M) steady-state mode powers in units of the saturated power."""
    iterations: Array
    """(N,) iterations each setting ran (count)."""
    converged: Array
    """(N,) True where the tolerance was met before the cap."""


def neighbourhood(separation_modes: Array, params: RingParams) -> Array:
    """Gaussian weight exp(-(dn / width)^2) of a mode-number separation dn."""
    xp = namespace(separation_modes)
    return xp.exp(-((separation_modes / params.cross_saturation_width_modes) ** 2))


def cross_saturation(separation_modes: Array, params: RingParams) -> Array:
    """Cross-saturation coefficient between two lines this many mode spacings apart."""
    near, far = params.cross_saturation_near, params.cross_saturation_far
    return far + (near - far) * neighbourhood(separation_modes, params)


@lru_cache(maxsize=64)
def _matrices(params: RingParams, xp: Any, dtype: Any) -> tuple[Array, Array]:
    """(coupling^T, neighbourhood kernel^T), both (M, M), per parameter set, namespace, dtype.

    Both depend on the square of the mode-number separation, so each is symmetric and
    its transpose is itself (kept contiguous: a strided matrix slows the products ~3x).
    """
    index = xp.arange(params.mode_count, dtype=dtype)
    separation = index[:, None] - index[None, :]
    eye = xp.eye(params.mode_count, dtype=dtype)
    coupling = cross_saturation(separation, params) * (1.0 - eye) + eye
    return coupling, neighbourhood(separation, params)


def coupling_matrix(params: RingParams, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(M, M) saturation matrix: 1 on the diagonal, cross-saturation off it.

    It depends on the mode-number separation only (the comb is nearly uniform), so
    one matrix serves every setting of a batch.
    """
    coupling, _ = _matrices(params, namespace(torch.empty(0)), dtype)
    return coupling


def steady_state(
    growth: Array,
    drive_separation_modes: Array,
    drive_saturation: Array,
    params: RingParams,
    *,
    fast: bool = False,
) -> Array:
    """Steady-state mode powers (units of the saturated power), shape (N, M).

    `solve_competition(...).power`; see there for the arguments.
    """
    return solve_competition(
        growth, drive_separation_modes, drive_saturation, params, fast=fast
    ).power


def solve_competition(
    growth: Array,
    drive_separation_modes: Array,
    drive_saturation: Array,
    params: RingParams,
    *,
    fast: bool = False,
    tolerance: float | None = None,
    max_iterations: int | None = None,
) -> Competition:
    """Steady state of the mode competition for N settings (see the module docstring).

    growth: (N, M) growth rates; drive_separation_modes: (N, M) detuning of the drive
    from each mode in mode spacings; drive_saturation: (N,) the injected drive's power
    in units of the saturated power (0 when RF is off). All NumPy or all torch; one
    setting may also come as (M,), (M,) and a scalar (the one-shot path: scalars cost
    a tenth of one-element arrays), and then the results drop the N axis. fast:
    run the iterations in float32 (~1e-5 relative; the result keeps the input dtype).
    tolerance and max_iterations default to the params' `competition_tolerance` and
    `competition_iterations`.
    """
    xp = namespace(growth, drive_separation_modes, drive_saturation)
    coupling_t, kernel_t = _matrices(params, xp, growth.dtype)
    drive_load = cross_saturation(drive_separation_modes, params) * drive_saturation[..., None]
    net = growth - drive_load
    seed = params.spontaneous_emission
    # Start from each mode's steady state as if it were alone (exact below threshold,
    # where dP/dt = 2P(g - P) + s gives P = (g + sqrt(g^2 + 2s)) / 2), so modes under
    # threshold need no iterations to settle ... With a = sqrt(g^2 + 2s) + |g| that is
    # a / 2 for g >= 0 and s / a for g < 0: no cancellation on either side (the textbook
    # forms lose ~1e-6 relative to rounding and make the gradient check fail).
    root_plus_abs = xp.sqrt(net**2 + 2.0 * seed) + xp.abs(net)
    alone = xp.where(net >= 0, 0.5 * root_plus_abs, seed / root_plus_abs)
    # ... and weight it by the mode's soft dominance over its neighbourhood,
    # exp(kappa g_n) / sum_m K_nm exp(kappa g_m): that breaks the symmetry between
    # neighbours, which the LV dynamics alone would take ~1000 steps to resolve.
    lifted = xp.exp(params.competition_sharpness * (net - xp.max(net, axis=-1, keepdims=True)))
    dominance = lifted / (lifted @ kernel_t)
    power = alone * dominance**2 + seed
    # A step that shrinks for very large gains keeps the discrete map from
    # overshooting into oscillation (the Ricker map is stable for 2*step*g < 2).
    scaled = 4.0 * growth
    top = xp.max(scaled, axis=-1, keepdims=True)
    smooth_max = (top + xp.log(xp.sum(xp.exp(scaled - top), axis=-1, keepdims=True))) / 4.0
    step = params.competition_step / (1.0 + softplus(xp, 4.0 * (smooth_max - 1.0)) / 4.0)
    loop_dtype = xp.float32 if fast else growth.dtype
    iterate = _Iteration(net, step, coupling_t, params, loop_dtype)
    tolerance = params.competition_tolerance if tolerance is None else tolerance
    cap = params.competition_iterations if max_iterations is None else max_iterations
    # float32 rounds x to exactly 0 often (see _Iteration): guard every step there
    solution = iterate.run(power, tolerance, cap, guard=fast)
    if not bool(xp.all(xp.isfinite(solution.power))):
        solution = _redo_guarded(iterate, solution, power, tolerance, cap)
    return solution._replace(power=as_dtype(xp, solution.power, growth.dtype))


@lru_cache(maxsize=8)
def _tiny(xp: Any, dtype: Any) -> float:
    """The smallest normal number of a floating dtype."""
    return float(xp.finfo(dtype).tiny)


def _redo_guarded(
    iterate: _Iteration, solution: Competition, power: Array, tolerance: float, cap: int
) -> Competition:
    """`solution` with its rows that are not finite solved again with the guarded step."""
    if power.ndim == 1:  # one setting
        return iterate.run(power, tolerance, cap, guard=True)
    xp = iterate.xp
    bad = ~xp.all(xp.isfinite(solution.power), axis=-1)
    rows = xp.nonzero(bad)[0]
    net, step = (xp.take(v, rows, axis=0) for v in (iterate.net, iterate.step_size))
    redo = _Iteration(net, step, iterate.coupling_t, iterate.params, iterate.dtype).run(
        xp.take(power, rows, axis=0), tolerance, cap, guard=True
    )
    return _merge_rows(xp, solution, redo, bad)


def _merge_rows(xp: Any, solution: Competition, redo: Competition, rows: Array) -> Competition:
    """`solution` with the rows where `rows` is True taken from `redo` (those rows, in order)."""
    place = xp.maximum(xp.cumulative_sum(xp.astype(rows, xp.int64)) - 1, 0)
    return Competition(
        *(
            xp.where(rows[:, None] if old.ndim == 2 else rows, xp.take(new, place, axis=0), old)
            for old, new in zip(solution, redo, strict=True)
        )
    )


class _Work(NamedTuple):
    """Scratch arrays of one loop, written in place (all None: each step allocates)."""

    product: Array | None = None
    x: Array | None = None
    growth: Array | None = None
    a: Array | None = None


_FRESH = _Work()


class _Iteration:
    """The fixed-point iteration of the competition, on Q = 2 step P per row.

    One step is the exact solution of dP/dt = 2 r P + s over one step with the rate r
    frozen, so the fixed point below threshold is the continuous one: with
    x = 2 step r = 2 step net - C Q (capped at 10 step, against overflow), e = exp(x)
    and a = s' / x (s' = (2 step)^2 s), Q' = Q e + s' (e - 1) / x = e (Q + a) - a.
    At x == 0 exactly a is infinite (the limit is Q' = Q + s'). The `guard` takes
    a = s' x / (x^2 + tiny) instead, finite everywhere: equal to s' / x to rounding
    where x != 0 (|x| > 1e-9 in float32, 1e-17 in float64 whenever it is not 0), and 0
    where x == 0, so that step leaves out the seed s' (~1e-10 of the saturated power).
    In float32 exact zeros are common (lasing modes sit at x ~ 0: unguarded, 1495 of
    8192 random settings end non-finite), so that loop is always guarded (three more
    operations per step); in float64 they practically never occur, so only rows whose
    result is not finite are redone guarded afterwards.

    The coupling product is one small matrix product per row, so a row's rounding does
    not depend on the batch (BLAS edge kernels round a plain GEMM's rows by their
    position): the iterate of N > 1 rows is kept as (N, 1, M) against (N, M, M).
    Without autograd the steps run in place in scratch arrays (`stepper`).
    """

    def __init__(
        self, net: Array, step: Array, coupling_t: Array, params: RingParams, dtype: Any
    ) -> None:
        xp = namespace(net)
        self.xp = xp
        self.lib = plain_module(xp)
        self.net, self.step_size, self.coupling_t, self.params = net, step, coupling_t, params
        n, m = (1, *net.shape) if net.ndim == 1 else net.shape
        # one row alone: 0-d factors and a plain (M,) or (1, M) product (the per-row kernel)
        self.two_step = 2.0 * (step[(0,) * step.ndim] if n == 1 else step)
        two_step = as_dtype(xp, self.two_step, dtype)
        self.net2 = self._rows(as_dtype(xp, net * self.two_step, dtype))
        self.cap = self._rows(5.0 * two_step)
        self.seed2 = self._rows(two_step * (two_step * params.spontaneous_emission))
        self.product = self.lib.matmul
        if self.lib is _numpy and n == 1:  # one NumPy row: dot, and Python floats (faster)
            self.product, self.cap, self.seed2 = _numpy.dot, float(self.cap), float(self.seed2)
        coupling_t = as_dtype(xp, coupling_t, dtype)
        self.coupling = coupling_t if n == 1 else xp.broadcast_to(coupling_t[None, ...], (n, m, m))
        self.dtype = dtype
        self.tiny = _tiny(xp, dtype)

    def _rows(self, array: Array) -> Array:
        """An (N, k) array as (N, 1, k) when N > 1 (the per-row product's layout)."""
        return array if array.ndim < 2 or array.shape[0] == 1 else array[:, None, :]

    def _work(self, q: Array) -> _Work:
        """Scratch arrays for an in-place loop, or `_FRESH` where autograd needs new arrays."""
        operands = (q, self.net2, self.cap, self.seed2)
        if any(getattr(v, "requires_grad", False) for v in operands):
            return _FRESH
        work = _Work(*(self.lib.empty_like(q) for _ in _Work._fields))
        if q.ndim == 1 and self.lib is not _numpy:  # torch's (M,) @ (M, M) resizes an out=
            work = work._replace(product=None)
        return work

    def stepper(self, guard: bool, work: _Work = _FRESH) -> Callable[..., tuple[Array, Array]]:
        """The fixed-point step Q -> Q', written once for both libraries, as a function
        advance(q, spare, count) -> (q after count steps, the iterate before it).

        `lib` is the plain numpy or torch module (not the array API namespace): both spell
        these operations alike and take out=, so with `work` and `spare` scratch arrays
        the steps run in place (no allocation per step; each step writes over the iterate
        before the previous one), and with `_FRESH` and no spare (autograd) each step
        allocates. The loop runs in here, on local names: it is the hot path.
        """
        lib, net2, cap, seed2, tiny = self.lib, self.net2, self.cap, self.seed2, self.tiny
        coupling, product = self.coupling, self.product
        subtract, minimum, exp, multiply, add, divide = (
            lib.subtract,
            lib.minimum,
            lib.exp,
            lib.multiply,
            lib.add,
            lib.divide,
        )
        w_product, w_x, w_growth, w_a = work
        # torch fuses the product and the subtraction (~7 % at batch 64); one row takes
        # addmm, which rounds as a row of baddbmm does (a row's result is batch-free)
        fused = None
        if lib is torch and net2.ndim > 1:
            fused = torch.baddbmm if coupling.ndim == 3 else torch.addmm

        def advance(q: Array, spare: Array | None, count: int) -> tuple[Array, Array]:
            previous = q
            for _ in range(count):
                if fused is not None:  # torch: net2 - Q C in one product (per row)
                    x = fused(net2, q, coupling, alpha=-1.0, out=w_x)
                else:
                    x = subtract(net2, product(q, coupling, out=w_product), out=w_x)
                x = minimum(x, cap, out=w_x)
                growth = exp(x, out=w_growth)
                if guard:  # s' x / (x^2 + tiny): s' / x, and 0 where x == 0
                    a = add(multiply(x, x, out=w_a), tiny, out=w_a)
                    a = divide(multiply(seed2, x, out=spare), a, out=w_a)
                else:
                    a = divide(seed2, x, out=w_a)
                following = multiply(growth, add(q, a, out=spare), out=spare)
                previous, q = q, subtract(following, a, out=spare)
                if spare is not None:
                    spare = previous
            return q, previous

        return advance

    def step(self, q: Array, guard: bool) -> Array:
        """One step from q (a new array)."""
        return self.stepper(guard)(q, None, 1)[0]

    def run(self, power: Array, tolerance: float, cap: int, guard: bool) -> Competition:
        xp, lib = self.xp, self.lib
        q = self._rows(as_dtype(xp, power * self.two_step, self.dtype))
        work = self._work(q)
        spare = None if work is _FRESH else self.lib.empty_like(q)
        advance = self.stepper(guard, work)
        rows = power.shape[:-1]  # (N,), or () for one setting given as (M,)
        result = q  # only its converged rows are read, which `where` has written
        done = xp.zeros(rows, dtype=xp.bool)
        iterations = xp.full(rows, cap)
        i = 0
        while i < cap:  # steps up to the next check (every CHECK_EVERY, and at the cap)
            count = min(CHECK_EVERY - i % CHECK_EVERY, cap - i)
            q, previous = advance(q, spare, count)
            if spare is not None:  # the next steps write over it (and q) in turn
                spare = previous
            i += count
            # (the plain library: array-api-compat's reductions cost ~3 us more each)
            change = lib.amax(lib.abs(q - previous) / previous, axis=-1)
            newly = (change <= tolerance).reshape(rows) & ~done
            if not bool(newly.any()):  # the common case: nothing to record
                continue
            result = xp.where(_across(xp, newly, q), q, result)
            iterations = iterations + newly * (i - cap)
            done = done | newly
            if bool(xp.all(done)):
                break
        if bool(done.any()):  # (usually none: the cap comes first)
            q = xp.where(_across(xp, done, q), result, q)
        result = xp.reshape(q, power.shape)
        power = as_dtype(xp, result, self.two_step.dtype) / self.two_step
        return Competition(power=power, iterations=iterations, converged=done)


def _across(xp: Any, mask: Array, like: Array) -> Array:
    """A per-row mask with trailing axes of length 1, to select whole rows of `like`."""
    return xp.reshape(mask, mask.shape + (1,) * (like.ndim - mask.ndim))
