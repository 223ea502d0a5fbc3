"""Gradient-quality report: each estimator's cosine with the true gradient of the sim.

For networks of several sizes (parameter count d) on digits, at their initial
parameters, every estimator estimates the gradient of one batch of 32 through
the in-process ring with noise on (drift off). Each estimate is compared with
two references on the same batch and parameters:

- **pathwise**: autograd through the noise-free differentiable simulation (what
  backprop follows);
- **smoothed**: the boundary estimate with coordinate directions (δ = 0.05 in u)
  on the noise-free ring: the exact gradient of the loss smoothed at the
  probing scale, with no probe variance and no noise. Finite-difference
  estimators converge to (nearly) this, not to the pathwise gradient, where
  the ring's response ripples at scales below δ.

Cosines are averaged over batches; the table goes to
benchmarks/results/gradient_quality.md (quoted by docs/study.md) with the
commit it was measured on.

Run: python benchmarks/gradient_quality.py [--batches 8]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from labpgt.studies.protocol import STARTED  # noqa: E402  (provenance of the code loaded now)
from labpgt.training.build import build_model_for, normalise_features  # noqa: E402
from labpgt.training.config import make_config  # noqa: E402
from labpgt.training.environment import open_backend  # noqa: E402
from labpgt.training.estimators import make_estimator  # noqa: E402
from labpgt.training.estimators.backprop import true_gradient  # noqa: E402
from labpgt.training.tasks import load_task  # noqa: E402

OUT = Path(__file__).parent / "results" / "gradient_quality.md"

SIZES = (  # (label, hidden, channels, bins)
    ("tiny", 0, 1, 4),
    ("small", 0, 2, 8),
    ("medium", 0, 8, 16),
    ("study", 32, 8, 16),
)

ESTIMATORS = (  # (label, method, options)
    ("pgt δ 0.01", "pgt", {"delta": 0.01}),
    ("pgt δ 0.03", "pgt", {"delta": 0.03}),
    ("pgt δ 0.1", "pgt", {"delta": 0.1}),
    ("pgt δ 0.03 r 3", "pgt", {"delta": 0.03, "pgt_range": 3}),
    ("pgt δ 0.03 q 8", "pgt", {"delta": 0.03, "probes": 8}),
    ("pgt δ 0.03 q 32", "pgt", {"delta": 0.03, "probes": 32}),
    ("pgt upstream δ 0.03", "pgt", {"delta": 0.03, "perturb": "upstream"}),
    ("spsa q 4 upstream", "spsa", {}),
    ("boundary", "boundary", {}),
)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, y)


def _grads(model: torch.nn.Module, names: list[str]) -> torch.Tensor:
    return torch.cat([model.get_parameter(n).grad.reshape(-1) for n in names])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


Table = dict[tuple[str, str, str], float]


def cosine_table(batches: int) -> tuple[list[tuple[str, int]], Table]:
    task = load_task("digits", seed=0, val_fraction=0.15)
    sizes: list[tuple[str, int]] = []
    table: Table = {}
    for label, hidden, channels, bins in SIZES:
        config = make_config(
            fast_sim=True, drift=False, hidden=hidden, channels=channels, bins=bins, seed=0
        )
        clean_config = make_config(
            fast_sim=True, noise=False, drift=False, hidden=hidden, channels=channels, bins=bins
        )
        with open_backend(config) as backend, open_backend(clean_config) as clean:
            torch.manual_seed(0)
            model = build_model_for(config, task, backend)
            normalise_features(config, task, model, backend, lambda _: None)
            names = [n for n, _ in model.named_parameters()]
            d = sum(p.numel() for p in model.parameters())
            sizes.append((label, d))
            refs = []
            smoother = make_estimator("boundary", make_config(method="boundary").estimator, seed=1)
            for b in range(batches):
                idx = torch.arange(b * 32, (b + 1) * 32)
                x, y = task.x_train[idx], task.y_train[idx]
                true = true_gradient(model, x, y, _loss)
                model.reservoir.attach(clean)
                smoother.estimate(model, x, y, _loss)
                model.reservoir.attach(backend)
                refs.append((torch.cat([true[n].reshape(-1) for n in names]), _grads(model, names)))
            # Why parameter-space probes drown: the noise of one batch-loss measurement
            # against what a ±δ probe moves the loss by (on the noise-free ring).
            x0, y0 = task.x_train[:32], task.y_train[:32]
            with torch.no_grad():
                repeats = [float(_loss(model.predict(x0), y0)) for _ in range(8)]
                table[(label, "loss noise", "std")] = float(torch.tensor(repeats).std())
                model.reservoir.attach(clean)
                params = dict(model.named_parameters())
                gen = torch.Generator().manual_seed(3)
                moves = []
                for _ in range(8):
                    z = {
                        n: torch.randint(-1, 2, p.shape, generator=gen).float()
                        for n, p in params.items()
                    }
                    plus = {n: p + 0.03 * z[n] for n, p in params.items()}
                    minus = {n: p - 0.03 * z[n] for n, p in params.items()}
                    losses = []
                    for variant in (plus, minus):
                        u, ctx = model.run_upstream(x0, variant)
                        raw = model.reservoir.measure_u(u)
                        losses.append(float(_loss(model.run_downstream(raw, ctx, variant), y0)))
                    moves.append(abs(losses[0] - losses[1]) / 2)
                model.reservoir.attach(backend)
                table[(label, "probe move", "mean")] = sum(moves) / len(moves)
            table[(label, "smoothed reference", "pathwise")] = sum(
                _cos(p, s) for p, s in refs
            ) / len(refs)
            for est_label, method, opts in ESTIMATORS:
                cfg = make_config(method=method, **opts)
                est = make_estimator(method, cfg.estimator, seed=1)
                pathwise, smoothed = [], []
                for b in range(batches):
                    idx = torch.arange(b * 32, (b + 1) * 32)
                    est.estimate(model, task.x_train[idx], task.y_train[idx], _loss)
                    g = _grads(model, names)
                    pathwise.append(_cos(g, refs[b][0]))
                    smoothed.append(_cos(g, refs[b][1]))
                table[(label, est_label, "pathwise")] = sum(pathwise) / batches
                table[(label, est_label, "smoothed")] = sum(smoothed) / batches
                print(
                    f"{label:7s} d={d:5d} {est_label:22s} pathwise {sum(pathwise) / batches:+.3f}"
                    f" smoothed {sum(smoothed) / batches:+.3f}",
                    flush=True,
                )
    return sizes, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sizes, table = cosine_table(args.batches)
    prov = STARTED
    lines = [
        "# Gradient quality: cosine of each estimate with the sim's true gradient",
        "",
        f"`python benchmarks/gradient_quality.py --batches {args.batches}` on commit "
        f"`{prov['commit']}`{' (dirty)' if prov['dirty'] else ''}, {prov['date_utc']}. "
        "Digits, initial parameters, batches of 32, ring noise on and drift off; the true "
        "gradient is autograd through the noise-free differentiable simulation. Mean over "
        f"{args.batches} batches; 1/√d is what one ideal random direction would give.",
        "",
        "Each cell: cosine with the pathwise gradient / with the smoothed reference.",
        "",
        "| estimator | " + " | ".join(f"{lab} (d = {d:,})" for lab, d in sizes) + " |",
        "|---|" + "---|" * len(sizes),
        "| 1/√d (one ideal random probe) | "
        + " | ".join(f"{1 / math.sqrt(d):.3f}" for _, d in sizes)
        + " |",
        "| smoothed reference itself | "
        + " | ".join(
            f"{table[(lab, 'smoothed reference', 'pathwise')]:+.3f} / 1" for lab, _ in sizes
        )
        + " |",
    ]
    lines.append(
        "| noise of one batch-loss measurement (std over 8 repeats) | "
        + " | ".join(f"{table[(lab, 'loss noise', 'std')]:.4f}" for lab, _ in sizes)
        + " |"
    )
    lines.append(
        "| loss moved by one pgt probe, δ 0.03 (mean |L+ − L−|/2, noise-free ring) | "
        + " | ".join(f"{table[(lab, 'probe move', 'mean')]:.4f}" for lab, _ in sizes)
        + " |"
    )
    for est_label, _, _ in ESTIMATORS:
        cells = " | ".join(
            f"{table[(lab, est_label, 'pathwise')]:+.3f} / "
            f"{table[(lab, est_label, 'smoothed')]:+.3f}"
            for lab, _ in sizes
        )
        lines.append(f"| {est_label} | {cells} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
