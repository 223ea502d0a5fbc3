"""Multiplexed gradient descent (MGD): McCaughan et al. 2023 and arXiv 2501.15403.

Every trainable unit i (a parameter in *weight* mode, a pre-activation in *node*
mode) carries a perturbation code s_i(t); at time step t the network runs with
θ̃_t = Δ·s(t) added, the measured cost change C̃_t = C_t − C0 (C0: the baseline,
re-measured whenever the input or the weights change) is correlated with the
codes and integrated:

    G = (1/τθ) Σ_t C̃_t s(t) / (Δ·κ),   κ = mean over a code period of s_i²,

so that, to first order, G → ∇C (exactly over a full period of orthogonal codes).
Time constants, in time steps (one perturbed pass each):
- τθ (``tau_theta``): steps integrated per update; one `estimate()` = one window;
- τp (``tau_p``): a perturbation is held for τp consecutive steps (noise averaging);
- τx (``tau_x``): a new input every τx steps: the batch is cut into ⌈τθ/τx⌉ parts
  used in turn, each with its own baseline.
Codes (``code``): ``cdma`` (Rademacher ±1, optional ``sparsity`` = P(zero), rescaled to
unit mean square), ``walsh`` (Walsh–Hadamard rows, exactly orthogonal over a period
of 2^⌈log2 N⌉ steps), ``fdma`` (√2·sin(2π f_i t/T), f_i = i+1, T = 2(N+1)) and
``tdma`` (one unit at a time: finite differences over a period of N steps).
The code index advances across windows (a global step counter in the checkpoint),
so short windows still sweep a full Walsh/FDMA/TDMA period over several updates.

Node mode perturbs the outputs of every `nn.Linear` (pre-activations, per sample and
per position) and keeps the per-sample cost C_b: the layer's weight gradient is
G_W = (1/B) Σ_b δ_b x_bᵀ with δ_b = the integrated C̃_b s / (Δκ) of its nodes, x_b
the layer's input. Parameters outside any Linear (LayerNorm, embeddings) are
weight-perturbed in the same passes with codes of their own.

``norm_match`` divides G by √(1 + (N−1)/τθ) — the expected norm inflation of a
random-code estimate over τθ steps (the seed's Δ·√(1/N + 1/τθ − 1/(Nτθ)) with our
per-unit amplitude Δ) — so one learning rate carries across network sizes. It is 1
when an orthogonal code (walsh, fdma, tdma) integrates a full period.

Hooks for simulation studies: ``cost_noise`` (σ of Gaussian noise added to every
measured cost) and ``write_noise`` (σ of Gaussian noise on every perturbed weight
or node value written). MGD fills ``.grad`` only; momentum or Adam come from the
torch optimizer. Options come from ``--method-opt KEY=VALUE`` (see `MGDOptions`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from labpgt.errors import UserError
from labpgt.training.estimators.base import (
    EstimatorOptions,
    GradientEstimator,
    LossFn,
    register_estimator,
)
from labpgt.training.models import ReservoirModel

Code = Literal["cdma", "walsh", "fdma", "tdma"]


class MGDOptions(BaseModel):
    """MGD hyperparameters (``--method-opt KEY=VALUE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["weight", "node"] = Field("weight", description="Perturb weights or nodes.")
    code: Code = Field("cdma", description="Perturbation code: cdma|walsh|fdma|tdma.")
    sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="cdma: P(code entry is 0).")
    tau_theta: int = Field(
        0, ge=0, le=65536, description="Steps integrated per update (0: --probes, default 8)."
    )
    tau_p: int = Field(1, ge=1, le=4096, description="Steps a perturbation is held.")
    tau_x: int = Field(0, ge=0, le=65536, description="Steps per input (0: τθ, whole batch).")
    norm_match: bool = Field(True, description="Divide by √(1+(N−1)/τθ) (random codes).")
    cost_noise: float = Field(0.0, ge=0.0, description="σ of noise added to each cost.")
    write_noise: float = Field(0.0, ge=0.0, description="σ of noise on each perturbed write.")
    perturb: Literal["all", "upstream"] = Field(
        "all", description="Units perturbed: all, or upstream only (downstream: exact autograd)."
    )


def parse_method_options(cls: type[BaseModel], raw: dict[str, Any] | None, method: str) -> Any:
    """Validate ``--method-opt`` pairs; a bad one is a `UserError` naming the key."""
    raw = dict(raw or {})
    try:
        return cls(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][-1]) if err["loc"] else "?"
        allowed = ", ".join(sorted(cls.model_fields))
        raise UserError(
            f"--method-opt {key}={err.get('input')!r} for {method}: {err['msg']} (keys: {allowed})"
        ) from None


def init_estimator(
    est: GradientEstimator,
    options: EstimatorOptions,
    *,
    seed: int,
    extra: dict[str, Any] | None,
    context: Any,
) -> None:
    """`GradientEstimator.__init__` for an estimator with its own ``__init__``: every
    --method-opt key is checked there (an unknown one is refused, never dropped)."""
    GradientEstimator.__init__(est, options, seed=seed, extra=extra, context=context)


def walsh_rows(n: int, t: int) -> torch.Tensor:
    """Entries t of the Sylvester–Hadamard rows 0..n-1: (−1)^popcount(i & t)."""
    i = torch.arange(n, dtype=torch.int64) & int(t)
    bits = torch.zeros(n, dtype=torch.int64)
    while bool((i > 0).any()):
        bits += i & 1
        i = i >> 1
    return 1.0 - 2.0 * (bits % 2).to(torch.float32)


def code_period(code: str, n: int) -> int:
    """Steps after which an orthogonal code repeats (0 for random codes)."""
    if code == "walsh":
        return 1 << max(0, math.ceil(math.log2(max(n, 1))))
    if code == "fdma":
        return 2 * (n + 1)
    if code == "tdma":
        return n
    return 0


def code_mean_square(code: str, n: int) -> float:
    """κ: mean over a period of s_i(t)² for this code."""
    return 1.0 / n if code == "tdma" else 1.0


def code_vector(
    code: str, n: int, j: int, *, sparsity: float, generator: torch.Generator
) -> torch.Tensor:
    """The n-vector of code values s(j) for perturbation index j."""
    if code == "walsh":
        return walsh_rows(n, j % code_period("walsh", n))
    if code == "fdma":
        period = code_period("fdma", n)
        f = torch.arange(1, n + 1, dtype=torch.float64)
        return (math.sqrt(2.0) * torch.sin(2 * math.pi * f * (j % period) / period)).float()
    if code == "tdma":
        s = torch.zeros(n)
        s[j % n] = 1.0
        return s
    s = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    if sparsity > 0:
        keep = torch.rand(n, generator=generator) >= sparsity
        s = s * keep / math.sqrt(1.0 - sparsity)
    return s


class _NodeHooks:
    """Forward hooks adding a per-sample perturbation to each Linear's output."""

    def __init__(self, linears: dict[str, nn.Linear]) -> None:
        self.linears = linears
        self.pert: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, torch.Size] = {}
        self.calls: dict[str, int] = {}
        self.record = False

    @contextmanager
    def active(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.linears.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.record:
                self.inputs[name] = args[0].detach()
                self.shapes[name] = out.shape[1:]
            p = self.pert.get(name)
            return out if p is None else out + p.to(out.dtype)

        return hook


_Variant = tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor]]
"""One pass's perturbed weight values (None: the baseline pass) and node offsets."""


@dataclass
class _MgdWindow:
    """One MGD window: the units perturbed (weights and Linear nodes) and its passes."""

    params: dict[str, nn.Parameter]
    scope: list[str]
    weight_names: list[str]
    """Parameters perturbed as weights (those outside any node-perturbed Linear)."""
    linears: dict[str, nn.Linear]
    """Linears whose outputs (nodes) are perturbed (node mode)."""
    hooks: _NodeHooks
    ctx0: Any
    """The upstream context of the clean baseline pass."""
    idx_chunks: list[torch.Tensor]
    steps_per_chunk: list[int]
    plan: list[tuple[int, int | None]]
    """(chunk, code index; None for the chunk's baseline pass), in the order measured."""
    codes: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def w_sizes(self) -> dict[str, int]:
        return {n: self.params[n].numel() for n in self.weight_names}

    @property
    def node_sizes(self) -> dict[str, int]:
        return {n: math.prod(self.hooks.shapes[n]) for n in self.linears}

    @property
    def units(self) -> int:
        return sum(self.w_sizes.values()) + sum(self.node_sizes.values())

    def split(self, s: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A code vector over all units -> (per weight, per node-perturbed Linear)."""
        w, nd, o = {}, {}, 0
        w_sizes, node_sizes = self.w_sizes, self.node_sizes
        for n in self.weight_names:
            w[n] = s[o : o + w_sizes[n]].reshape(self.params[n].shape)
            o += w_sizes[n]
        for n in self.linears:
            nd[n] = s[o : o + node_sizes[n]].reshape(self.hooks.shapes[n])
            o += node_sizes[n]
        return w, nd


class MGDEstimator(GradientEstimator):
    """Multiplexed gradient descent: coded perturbations, baseline, integration over τθ."""

    name: ClassVar[str] = "mgd"
    summary: ClassVar[str] = "multiplexed gradient descent: weight/node, cdma|walsh|fdma|tdma codes"
    defaults: ClassVar[dict[str, Any]] = {"probes": 8, "delta": 0.01}

    extra_options: ClassVar[dict[str, Any]] = {
        "mode": "weight",
        "code": "cdma",
        "sparsity": 0.0,
        "tau_theta": 0,
        "tau_p": 1,
        "tau_x": 0,
        "norm_match": True,
        "cost_noise": 0.0,
        "write_noise": 0.0,
        "perturb": "all",
    }
    """--method-opt keys (tau_theta 0: --probes; tau_x 0: τθ, i.e. the whole batch)."""

    def __init__(
        self,
        options: EstimatorOptions,
        *,
        seed: int,
        extra: dict[str, Any] | None = None,
        context: Any = None,
        method_opts: dict[str, Any] | MGDOptions | None = None,
    ) -> None:
        init_estimator(self, options, seed=seed, extra=extra, context=context)
        raw = method_opts if method_opts is not None else extra
        self.mgd = (
            raw if isinstance(raw, MGDOptions) else parse_method_options(MGDOptions, raw, "mgd")
        )
        self.time_step = 0
        """Global code index counter (persisted: codes keep sweeping across updates)."""

    # --- sizes and costs -------------------------------------------------------------
    def tau_theta(self) -> int:
        if self.mgd.tau_theta > 0:
            return self.mgd.tau_theta
        return int(self.opt("probes"))

    def tau_x(self) -> int:
        return self.mgd.tau_x if self.mgd.tau_x > 0 else self.tau_theta()

    def chunks(self, batch: int) -> int:
        return max(1, min(batch, -(-self.tau_theta() // self.tau_x())))

    def passes_per_step(self, dims_per_channel: int) -> int:
        """Batch-equivalent passes: τθ perturbed + one baseline per input (whole batch)."""
        return self.tau_theta() + 1 if self.tau_x() >= self.tau_theta() else self.tau_theta()

    def queries_per_step(self, batch_size: int, channels: int, dims_per_channel: int) -> int:
        n_chunks = self.chunks(batch_size)
        sizes = [len(c) for c in torch.arange(batch_size).chunk(n_chunks)]
        steps = self._steps_per_chunk(n_chunks)
        return sum((s_steps + 1) * size for s_steps, size in zip(steps, sizes, strict=True)) * (
            channels
        )

    def _steps_per_chunk(self, n_chunks: int) -> list[int]:
        tt, tx = self.tau_theta(), self.tau_x()
        out = [0] * n_chunks
        for t in range(tt):
            out[min(t // tx, n_chunks - 1)] += 1
        return out

    # --- the estimate ----------------------------------------------------------------
    def _scope(self, model: ReservoirModel) -> list[str]:
        names = model.upstream_names()
        if self.mgd.perturb == "all":
            names = names + model.downstream_names()
        return sorted(names)

    def _linears(self, model: ReservoirModel, scope: list[str]) -> dict[str, nn.Linear]:
        out: dict[str, nn.Linear] = {}
        for part in ("upstream", "downstream"):
            for name, mod in getattr(model, part).named_modules():
                full = f"{part}.{name}"
                if isinstance(mod, nn.Linear) and f"{full}.weight" in scope:
                    out[full] = mod
        return out

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        window = self._plan_window(model, x)
        variants = self._perturbations(window)
        raws, costs = self._measure_costs(model, window, variants, x, y, loss_fn)
        loss0_t, logits0 = self._clean_pass(model, window, raws, y, loss_fn)
        with torch.no_grad():
            g_w, g_node = self._integrate(window, costs)
            self._write_grads(window, g_w, g_node)
        return float(loss0_t.detach()), logits0, {"units": float(window.units)}

    def _plan_window(self, model: ReservoirModel, x: torch.Tensor) -> _MgdWindow:
        """Which units are weight- or node-perturbed, their sizes, and the window's passes:
        per chunk of the batch, its baseline (clean) pass then its perturbed steps."""
        scope = self._scope(model)
        node = self.mgd.mode == "node"
        linears = self._linears(model, scope) if node else {}
        hooks = _NodeHooks(linears)
        b = x.shape[0]
        # Baseline pass of the whole batch, recording each Linear's input and output shape.
        with torch.no_grad(), hooks.active():
            hooks.record = True
            _, ctx0 = model.run_upstream(x)
            # Downstream Linears: shapes from a dry pass (features are not needed for shapes;
            # their inputs are recorded in the clean pass below).
            if node:
                k, f = model.reservoir.channels, model.reservoir.feature_dim
                model.run_downstream(torch.zeros(b, k, f), ctx0)
            hooks.record = False
        for n, calls in hooks.calls.items():  # a Linear used twice per forward: weight mode
            if calls > 1 and n in linears:
                linears.pop(n)
        hooks.linears = linears
        covered = {f"{n}.{p}" for n in linears for p in ("weight", "bias")}
        n_chunks = self.chunks(b)
        steps_per_chunk = self._steps_per_chunk(n_chunks)
        plan: list[tuple[int, int | None]] = []  # (chunk, code index or None for baseline)
        for c, steps in enumerate(steps_per_chunk):
            plan.append((c, None))
            for _ in range(steps):
                plan.append((c, self.time_step // self.mgd.tau_p))
                self.time_step += 1
        return _MgdWindow(
            params=dict(model.named_parameters()),
            scope=scope,
            weight_names=[n for n in scope if n not in covered],
            linears=linears,
            hooks=hooks,
            ctx0=ctx0,
            idx_chunks=list(torch.arange(b).chunk(n_chunks)),
            steps_per_chunk=steps_per_chunk,
            plan=plan,
        )

    def _code_at(self, window: _MgdWindow, j: int) -> torch.Tensor:
        """The code vector of perturbation index j (drawn once per window, then reused)."""
        if j not in window.codes:
            window.codes[j] = code_vector(
                self.mgd.code, window.units, j, sparsity=self.mgd.sparsity, generator=self.generator
            )
        return window.codes[j]

    def _noisy(self, t: torch.Tensor) -> torch.Tensor:
        """A perturbed value as written, with the ``write_noise`` hook's noise."""
        if self.mgd.write_noise <= 0:
            return t
        return t + self.mgd.write_noise * torch.randn(t.shape, generator=self.generator)

    def _perturbations(self, window: _MgdWindow) -> list[_Variant]:
        """Per pass of the plan, the perturbed weight values and node offsets (the
        baseline passes: none)."""
        delta = float(self.opt("delta"))
        base = {n: window.params[n].detach() for n in window.scope}
        variants: list[_Variant] = []
        for c, j in window.plan:
            if j is None:
                variants.append((None, {}))
                continue
            rows = len(window.idx_chunks[c])
            w, nd = window.split(self._code_at(window, j))
            w_vals = {n: self._noisy(base[n] + delta * w[n]) for n in window.weight_names}
            nd_vals = {
                n: self._noisy((delta * nd[n]).expand(rows, *nd[n].shape).clone())
                for n in window.linears
            }
            variants.append((w_vals, nd_vals))
        return variants

    def _measure_costs(
        self,
        model: ReservoirModel,
        window: _MgdWindow,
        variants: list[_Variant],
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: LossFn,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every pass of the window through the ring in one scheduler batch: (the features
        of each pass, the per-sample cost of each pass)."""
        hooks, chunks = window.hooks, window.idx_chunks
        us, ctxs = [], []
        with torch.no_grad(), hooks.active():
            for (c, _), (w_vals, nd_vals) in zip(window.plan, variants, strict=True):
                hooks.pert = {n: v for n, v in nd_vals.items() if n.startswith("upstream.")}
                u, ctx = model.run_upstream(x[chunks[c]], w_vals)
                us.append(u)
                ctxs.append(ctx)
            hooks.pert = {}
        # One scheduler batch for every pass of the window (chunks differ in size: flatten).
        raw_flat = model.reservoir.measure_u(torch.cat(us))
        raws = list(raw_flat.split([u.shape[0] for u in us]))
        costs: list[torch.Tensor] = []
        with torch.no_grad(), hooks.active():
            for (c, _), (w_vals, nd_vals), raw, ctx in zip(
                window.plan, variants, raws, ctxs, strict=True
            ):
                hooks.pert = {n: v for n, v in nd_vals.items() if n.startswith("downstream.")}
                logits = model.run_downstream(raw, ctx, w_vals)
                costs.append(self._per_sample(loss_fn, logits, y[chunks[c]]))
            hooks.pert = {}
        return raws, costs

    def _clean_pass(
        self,
        model: ReservoirModel,
        window: _MgdWindow,
        raws: list[torch.Tensor],
        y: torch.Tensor,
        loss_fn: LossFn,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of the unperturbed batch from its baseline passes' features, for
        the report; its backward gives exact downstream gradients when upstream-only."""
        raw0 = torch.cat([raws[i] for i, (_, j) in enumerate(window.plan) if j is None])
        order = torch.cat(window.idx_chunks)
        raw_clean_batch = torch.empty_like(raw0)
        raw_clean_batch[order] = raw0
        ctx0 = window.ctx0
        ctx_clean = ctx0.detach() if isinstance(ctx0, torch.Tensor) else ctx0
        with window.hooks.active():
            window.hooks.record = True
            logits0 = model.run_downstream(raw_clean_batch, ctx_clean)
            window.hooks.record = False
        loss0_t = loss_fn(logits0, y)
        if self.mgd.perturb == "upstream":
            loss0_t.backward()
        return loss0_t, logits0

    def _integrate(
        self, window: _MgdWindow, costs: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Σ_t C̃_t s(t): per weight (batch cost) and per node and sample (per-sample cost)."""
        b = sum(len(rows) for rows in window.idx_chunks)
        shapes = window.hooks.shapes
        g_w = {n: torch.zeros_like(window.params[n]) for n in window.weight_names}
        g_node = {n: torch.zeros(b, *shapes[n]) for n in window.linears}
        baseline: torch.Tensor | None = None
        for (c, j), cost in zip(window.plan, costs, strict=True):
            if j is None:
                baseline = cost
                continue
            assert baseline is not None
            c_tilde = cost - baseline  # (chunk,) per-sample cost change
            w, nd = window.split(self._code_at(window, j))
            rows = window.idx_chunks[c]
            # weight units: batch cost = mean over the whole batch's samples
            scale = c_tilde.sum() / b / window.steps_per_chunk[c]
            for n in window.weight_names:
                g_w[n].add_(w[n], alpha=float(scale))
            for n in window.linears:
                shape = (len(rows),) + (1,) * len(shapes[n])
                g_node[n][rows] += c_tilde.reshape(shape) * nd[n]
        return g_w, g_node

    def _write_grads(
        self, window: _MgdWindow, g_w: dict[str, torch.Tensor], g_node: dict[str, torch.Tensor]
    ) -> None:
        """``.grad`` = the integrated sums / (Δκ) / the norm factor; node sums become weight
        gradients through each Linear's recorded inputs."""
        params, shapes = window.params, window.hooks.shapes
        b = sum(len(rows) for rows in window.idx_chunks)
        denom = float(self.opt("delta")) * code_mean_square(self.mgd.code, window.units)
        norm = self.norm_factor(window.units)
        for n in window.weight_names:
            params[n].grad = g_w[n] / denom / norm
        # Each chunk's samples only saw that chunk's steps: average per chunk, not τθ.
        steps_c = torch.tensor(window.steps_per_chunk, dtype=torch.float32)
        per_sample_steps = torch.zeros(b)
        for c, rows in enumerate(window.idx_chunks):
            per_sample_steps[rows] = steps_c[c]
        for n in window.linears:
            shape = (b,) + (1,) * len(shapes[n])
            delta_b = g_node[n] / per_sample_steps.clamp_min(1).reshape(shape) / denom / norm
            xin = window.hooks.inputs[n]
            d2 = delta_b.reshape(b, -1, delta_b.shape[-1])
            x2 = xin.reshape(b, -1, xin.shape[-1])
            # cost is the batch mean: each sample's per-sample cost enters with 1/B
            params[f"{n}.weight"].grad = torch.einsum("bpo,bpi->oi", d2, x2) / b
            if window.linears[n].bias is not None:
                params[f"{n}.bias"].grad = d2.sum(dim=1).sum(dim=0) / b

    def norm_factor(self, units: int) -> float:
        if not self.mgd.norm_match:
            return 1.0
        distinct = max(1, self.tau_theta() // self.mgd.tau_p)
        period = code_period(self.mgd.code, units)
        if period and distinct >= period:
            return 1.0
        return math.sqrt(1.0 + (units - 1) / distinct)

    def _per_sample(self, loss_fn: LossFn, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = torch.stack([loss_fn(logits[i : i + 1], y[i : i + 1]) for i in range(len(y))])
        if self.mgd.cost_noise > 0:
            c = c + self.mgd.cost_noise * torch.randn(c.shape, generator=self.generator)
        return c.float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "time_step": self.time_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.time_step = int(state.get("time_step", 0))


def register() -> None:
    """Make ``--method mgd`` available (called from ``labpgt/training/__init__.py``)."""
    register_estimator(MGDEstimator)
