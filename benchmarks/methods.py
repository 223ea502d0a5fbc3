"""The comparison study of issue 7 (fast-sim, noise and drift on, seeded): three parts.

1. ``compare``: digits/dense and seq-digits/transformer — final test accuracy
   (mean ± std over seeds) and training queries to reach (backprop accuracy − 3
   points) for every method (pat only with --calibration).
2. ``scaling``: MGD on parity at several hidden widths — steps (updates) to a target
   train accuracy against parameter count, weight vs node perturbation.
3. ``robustness``: boundary and pgt test accuracy as measurement noise and drift grow
   (3 levels each: the ring's noise and drift rates × 1, 4, 16).

Every budget is a flag, so a reduced run finishes in minutes and the full study is
the same command with bigger numbers:

    python benchmarks/methods.py --parts compare,scaling,robustness --seeds 0,1,2 \
        --max-queries 200000 --scaling-steps 400 --out benchmarks/results/methods.txt

Results are printed and appended to ``--out``; plots go to ``--img`` (docs/img).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labpgt.sim.params import RingParams  # noqa: E402
from labpgt.sim.ring import RingModel  # noqa: E402

from labpgt.features import FeatureSpec  # noqa: E402
from labpgt.reservoir import SimulatedReservoir  # noqa: E402
from labpgt.scheduler import PerturbationScheduler  # noqa: E402
from labpgt.training import sequence_tasks, transformer  # noqa: E402
from labpgt.training.config import make_config  # noqa: E402
from labpgt.training.estimators import mgd  # noqa: E402
from labpgt.training.reservoir_layer import MeasurementBackend  # noqa: E402
from labpgt.training.trainer import TrainHooks, train  # noqa: E402

for module in (mgd, transformer, sequence_tasks):
    module.register()
try:  # pat registers itself when its module exists (issue 7, may land later)
    from labpgt.training.estimators import pat

    pat.register()
except ImportError:
    pat = None

LINES: list[str] = []
OUT: list[Path] = []
JSONL: list[Path] = []


def dump(record: dict[str, Any]) -> None:
    """Append one finished run (with its curve) to the --jsonl file, if any."""
    if JSONL:
        with JSONL[0].open("a") as f:
            f.write(json.dumps(record) + "\n")


def say(text: str = "") -> None:
    """Print and rewrite the results file (a cut-short run keeps what it measured)."""
    print(text, flush=True)
    LINES.append(text)
    if OUT:
        OUT[0].write_text("\n".join(LINES) + "\n")


def backend_for(seed: int, bins: int, noise_scale: float = 1.0, drift_scale: float = 1.0):
    base = RingParams()
    params = RingParams(
        noise=noise_scale > 0,
        drift=drift_scale > 0,
        noise_floor_std_db=min(20.0, base.noise_floor_std_db * max(noise_scale, 1e-9)),
        jitter_db=min(10.0, base.jitter_db * max(noise_scale, 1e-9)),
        field_drift_oe_per_min=base.field_drift_oe_per_min * drift_scale,
        gain_drift_db_per_hour=base.gain_drift_db_per_hour * drift_scale,
    )
    ring = RingModel(params, seed=seed)
    reservoir = SimulatedReservoir(ring, features=FeatureSpec(bins=bins))
    return MeasurementBackend(PerturbationScheduler(reservoir), reservoir, bench_kind="fast-sim")


def run(out_dir: Path, backend: MeasurementBackend | None = None, **cfg: Any) -> dict[str, Any]:
    """One training run in-process; returns its curve and figures."""
    config = make_config(fast_sim=True, out=str(out_dir), **cfg)
    backend = backend or backend_for(config.seed, config.bins)
    t0 = time.perf_counter()
    result = train(config, backend, resume=False, hooks=TrainHooks())
    m = result.metrics
    if config.method == "readout":  # the closed-form fit is the result; nothing is trained
        b = result.baseline
        return {
            "acc": b.test_acc,
            "train_acc": b.train_acc,
            "queries": b.queries,
            "curve": [(b.queries, b.test_acc, b.train_acc)],
            "readout": b.test_acc,
            "wall": time.perf_counter() - t0,
            "steps": None,
        }
    return {
        "acc": m[-1].test_acc,
        "train_acc": m[-1].train_acc,
        "queries": m[-1].queries,
        "curve": [(r.queries, r.test_acc, r.train_acc) for r in m],
        "readout": result.baseline.test_acc,
        "wall": time.perf_counter() - t0,
        "steps": None,
    }


def fast_sim_calibration(work: Path, seed: int, bins: int) -> str:
    """A calibration file of the study's in-process ring (seed, bins), made once and reused.

    `labpgt calibrate` only calibrates a bench (file or embedded); pat on --fast-sim needs
    a calibration of the SimulatedReservoir itself, so the study runs the same calibration
    (`calibration.run.run_calibration`, default plan) on it directly.
    """
    from labpgt.calibration.run import run_calibration
    from labpgt.calibration.store import save_calibration
    from labpgt.calibration.surrogate import SurrogateConfig

    path = work / f"calib-fast-sim-seed{seed}-bins{bins}.h5"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        backend = backend_for(seed, bins)
        t0 = time.perf_counter()
        result = run_calibration(backend.reservoir, surrogate_config=SurrogateConfig(seed=seed))
        save_calibration(result, path, provenance={"study": "benchmarks/methods.py"})
        say(
            f"calibrated the fast-sim ring (seed {seed}, {bins} bins) in "
            f"{time.perf_counter() - t0:.0f} s -> {path}"
        )
    return str(path)


def queries_to(curve: list[tuple[int, float, float]], target: float) -> int | None:
    for q, acc, _ in curve:
        if acc >= target:
            return q
    return None


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:5.1f} ± {std:4.1f}"


METHOD_CFG: dict[str, dict[str, Any]] = {
    # δ = 0.1 for the parameter-space methods: at δ = 0.01 the loss change along a probe
    # (rms 0.007 from the readout, B = 32) sits far below the loss's own measurement noise
    # (rms 0.053 between two measurements of the same θ), see docs/study.md "Why pgt sat
    # at chance".
    "backprop": {"lr": 0.01},
    "boundary": {"lr": 0.01},
    "pgt": {"lr": 0.01, "delta": 0.1},
    "pgt-upstream": {"method": "pgt", "lr": 0.003, "delta": 0.1, "perturb": "upstream"},
    "spsa": {"lr": 0.003, "delta": 0.1, "probes": 4},
    "mgd": {"lr": 0.01, "delta": 0.1, "method_opts": {"code": "cdma", "tau_theta": 8}},
    "pat": {"lr": 0.01},
    "readout": {},
}


def method_cfg(name: str) -> dict[str, Any]:
    """Settings of a study row; rows like 'pgt-upstream' name their estimator in 'method'."""
    cfg = {"method": name, **METHOD_CFG[name]}
    return cfg


def part_compare(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    say("## Part 1: methods side by side (fast-sim, noise and drift on)")
    setups = [
        ("digits", "dense", {"channels": 2, "hidden": 32}),
        ("seq-digits", "transformer", {"channels": 8}),
    ]
    rows = []
    for task, model, extra in setups:
        if task not in args.tasks:
            continue
        results: dict[str, list[dict[str, Any]]] = {}
        for method in args.methods:
            if method == "pat" and (pat is None or not args.calibration):
                say(f"{task}/{model} pat: skipped (no pat module or no --calibration)")
                continue
            for seed in args.seeds:
                cfg = method_cfg(method)
                if method == "pat":
                    cfg["calibration"] = (
                        fast_sim_calibration(work, seed, args.bins)
                        if args.calibration == "fast-sim"
                        else args.calibration
                    )
                r = run(
                    work / f"{task}-{method}-{seed}",
                    task=task,
                    model=model,
                    seed=seed,
                    bins=args.bins,
                    batch_size=args.batch_size,
                    max_queries=args.max_queries,
                    epochs=args.epochs,
                    **extra,
                    **cfg,
                )
                results.setdefault(method, []).append(r)
                dump({"part": "compare", "task": task, "method": method, "seed": seed, **r})
                say(
                    f"{task}/{model} {method} seed {seed}: test acc {100 * r['acc']:.1f} % after "
                    f"{r['queries']} queries ({r['wall']:.0f} s wall)"
                )
        bp = results.get("backprop")
        target = statistics.fmean(r["acc"] for r in bp) - 0.03 if bp else None
        say("")
        say(f"### {task} / {model}" + (f" — target {100 * target:.1f} %" if target else ""))
        say("| method | test acc % (mean ± std) | queries used | queries to target |")
        say("|---|---|---|---|")
        for method, rs in results.items():
            qs = [queries_to(r["curve"], target) for r in rs] if target else []
            hit = [q for q in qs if q is not None]
            q_txt = (
                f"{statistics.fmean(hit):.0f} ({len(hit)}/{len(rs)} seeds)"
                if hit
                else "not reached"
            )
            say(f"| {method} | {fmt([r['acc'] for r in rs])} | {rs[0]['queries']} | {q_txt} |")
            rows.append({"task": task, "method": method, "runs": rs})
        ro = [r["readout"] for rs in results.values() for r in rs]
        say(f"| readout baseline (closed form, same runs) | {fmt(ro)} | - | - |")
        say("")
    return rows


def part_scaling(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    say("## Part 2: MGD scaling on parity (steps to target train accuracy)")
    say(f"parity bits={args.bits}, target train accuracy {100 * args.scaling_target:.0f} %")
    say("| mode | hidden | parameters | steps to target (per seed) | final train acc % |")
    say("|---|---|---|---|---|")
    out = []
    for mode in ("weight", "node"):
        for hidden in args.widths:
            steps, finals, n_params = [], [], 0
            for seed in args.seeds:
                d = work / f"parity-{mode}-{hidden}-{seed}"
                r = run(
                    d,
                    task="parity",
                    task_opts={"bits": args.bits, "repeat": 4},
                    model="dense",
                    method="mgd",
                    hidden=hidden,
                    channels=1,
                    bins=args.bins,
                    batch_size=16,
                    seed=seed,
                    lr=args.scaling_lr,
                    delta=args.scaling_delta,
                    epochs=args.scaling_steps,
                    method_opts={
                        "mode": mode,
                        "code": args.scaling_code,
                        "tau_theta": args.scaling_tau,
                    },
                )
                bits = args.bits
                n_params = (bits * hidden + hidden + hidden * 2 + 2) + (args.bins * 2 + 2)
                spe = math.ceil(0.75 * 4 * 2**bits / 16)
                hit = next(
                    (i for i, (_, _, tr) in enumerate(r["curve"]) if tr >= args.scaling_target),
                    None,
                )
                steps.append(None if hit is None else hit * spe)
                finals.append(r["train_acc"])
                dump(
                    {
                        "part": "scaling",
                        "mode": mode,
                        "hidden": hidden,
                        "seed": seed,
                        "params": n_params,
                        "steps_to_target": steps[-1],
                        **r,
                    }
                )
            txt = ", ".join("-" if s is None else str(s) for s in steps)
            say(f"| {mode} | {hidden} | {n_params} | {txt} | {fmt(finals)} |")
            out.append({"mode": mode, "hidden": hidden, "params": n_params, "steps": steps})
    say("")
    return out


def part_robustness(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    say("## Part 3: robustness to the bench (digits/dense)")
    say("| method | noise × | drift × | test acc % | readout baseline % |")
    say("|---|---|---|---|---|")
    out = []
    levels = [(n, d) for n in args.noise_levels for d in args.drift_levels]
    for method in args.robust_methods:
        for ns, ds in levels:
            accs, ro = [], []
            for seed in args.seeds:
                r = run(
                    work / f"rob-{method}-{ns}-{ds}-{seed}",
                    backend=backend_for(seed, args.bins, ns, ds),
                    task="digits",
                    model="dense",
                    seed=seed,
                    channels=2,
                    hidden=32,
                    bins=args.bins,
                    batch_size=args.batch_size,
                    max_queries=args.max_queries,
                    epochs=args.epochs,
                    **method_cfg(method),
                )
                accs.append(r["acc"])
                ro.append(r["readout"])
                dump(
                    {
                        "part": "robustness",
                        "method": method,
                        "noise": ns,
                        "drift": ds,
                        "seed": seed,
                        **r,
                    }
                )
            say(f"| {method} | {ns} | {ds} | {fmt(accs)} | {fmt(ro)} |")
            out.append({"method": method, "noise": ns, "drift": ds, "accs": accs})
    say("")
    return out


def part_diagnose(args: argparse.Namespace, work: Path, img: Path) -> None:
    """Why pgt sat at chance: loss change along one PGT probe vs the loss's own noise.

    digits/dense as in Part 1 (2 channels, hidden 32, batch 32). For each δ, the rms of
    L(θ+δ·PM) − L(θ−δ·PM) over 16 perturbation matrices (r = 1), perturbing all
    parameters or only the readout's, noise on and off; and the rms of L(θ) − L(θ)
    measured twice (the measurement noise a probe's difference must rise above).
    """
    from labpgt.training.build import build_model_for, normalise_features
    from labpgt.training.trainer import _loss, _seed_all, task_for

    say("## Diagnosis: PGT probe signal vs measurement noise (digits/dense, batch 32)")
    deltas = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    table: dict[tuple[str, float], list[float]] = {}
    for noise in (0.0, 1.0):
        seed = args.seeds[0]
        config = make_config(
            fast_sim=True, task="digits", channels=2, hidden=32, bins=args.bins, seed=seed
        )
        backend = backend_for(seed, args.bins, noise, noise)
        task = task_for(config)
        _seed_all(seed)
        model = build_model_for(config, task, backend)
        normalise_features(config, task, model, backend, lambda _: None)
        x, y = task.x_train[: args.batch_size], task.y_train[: args.batch_size]
        base = {n: p.detach().clone() for n, p in model.named_parameters()}

        def loss(v: dict[str, torch.Tensor], model=model, x=x, y=y) -> float:
            with torch.no_grad():
                u, ctx = model.run_upstream(x, v)
                raw = model.reservoir.measure_u(u)
                return float(_loss(model.run_downstream(raw, ctx, v), y))

        same = torch.tensor([loss(base) - loss(base) for _ in range(16)])
        table[(f"noise {noise:g}: remeasured", 0.0)] = [float(same.pow(2).mean().sqrt())]
        for scope in ("all", "readout"):
            for d in deltas:
                gen = torch.Generator().manual_seed(5)
                diffs = []
                for _ in range(16):
                    pm = {
                        n: torch.randint(-1, 2, b.shape, generator=gen).float()
                        * float(scope == "all" or n.startswith("downstream"))
                        for n, b in base.items()
                    }
                    lp = loss({n: b + d * pm[n] for n, b in base.items()})
                    lm = loss({n: b - d * pm[n] for n, b in base.items()})
                    diffs.append(lp - lm)
                rms = float(torch.tensor(diffs).pow(2).mean().sqrt())
                table.setdefault((f"noise {noise:g}: perturb {scope}", 1.0), []).append(rms)
    say("| rms of L+ − L− | " + " | ".join(f"δ = {d:g}" for d in deltas) + " |")
    say("|---" * (len(deltas) + 1) + "|")
    for (name, kind), vals in table.items():
        if kind:
            say(f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    for (name, kind), vals in table.items():
        if not kind:
            say(f"| {name} (no perturbation) | {vals[0]:.4f} (all δ) |")
    say("")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, kind), vals in table.items():
        if kind:
            ax.plot(deltas, vals, marker="o", label=name)
        elif name.startswith("noise 1"):
            ax.axhline(vals[0], color="k", ls="--", label="measurement noise (noise on)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("PGT δ (r = 1)")
    ax.set_ylabel("rms of L(θ+δ·PM) − L(θ−δ·PM)")
    ax.set_title("digits/dense: probe signal vs measurement noise")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / "study_pgt_snr.png", dpi=100)
    plt.close(fig)


def plot_from(files: list[Path], img: Path) -> None:
    """Plots of the study from the --jsonl files (every seed; curves averaged by epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        json.loads(line)
        for f in files
        if f.exists()
        for line in f.read_text().split("\n")
        if line.strip()
    ]
    img.mkdir(parents=True, exist_ok=True)
    for task in sorted({r["task"] for r in rows if r["part"] == "compare"}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ro = []
        for method in dict.fromkeys(r["method"] for r in rows if r.get("task") == task):
            runs = [r for r in rows if r.get("task") == task and r["method"] == method]
            ro += [r["readout"] for r in runs]
            if method == "readout":
                continue
            n = min(len(r["curve"]) for r in runs)
            q = [statistics.fmean(r["curve"][i][0] for r in runs) for i in range(n)]
            a = [100 * statistics.fmean(r["curve"][i][1] for r in runs) for i in range(n)]
            ax.plot(q, a, label=f"{method} ({len(runs)} seeds)")
        if ro:
            ax.axhline(100 * statistics.fmean(ro), color="k", ls="--", label="readout (ridge)")
        ax.set_xlabel("training queries")
        ax.set_ylabel("test accuracy, % (mean over seeds)")
        ax.set_title(f"{task}: test accuracy vs training queries (fast-sim, noise+drift on)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / f"study_{task}.png", dpi=100)
        plt.close(fig)
    scal = [r for r in rows if r["part"] == "scaling"]
    if scal:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for mode in ("weight", "node"):
            runs = [r for r in scal if r["mode"] == mode]
            for r in runs:
                if r["seed"] != runs[0]["seed"]:
                    continue
                axes[1].plot(
                    [i for i in range(len(r["curve"]))],
                    [100 * c[2] for c in r["curve"]],
                    label=f"{mode}, hidden {r['hidden']}",
                    ls="-" if mode == "weight" else ":",
                )
            sizes = sorted({r["params"] for r in runs})
            pts = []
            for n in sizes:
                hits = [r["steps_to_target"] for r in runs if r["params"] == n]
                got = [h for h in hits if h is not None]
                if got:
                    pts.append((n, statistics.fmean(got)))
                    axes[0].scatter([n] * len(got), got, s=10, alpha=0.5)
            if pts:
                axes[0].plot(*zip(*pts, strict=True), marker="o", label=f"{mode} (mean of seeds)")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("parameters")
        axes[0].set_ylabel("updates to target train accuracy")
        axes[0].set_title("MGD on parity: updates to target")
        axes[0].legend()
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("train accuracy, %")
        axes[1].set_title("train accuracy curves (first seed)")
        axes[1].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(img / "study_mgd_scaling.png", dpi=100)
        plt.close(fig)
    rob = [r for r in rows if r["part"] == "robustness"]
    if rob:
        methods = list(dict.fromkeys(r["method"] for r in rob))
        noises = sorted({r["noise"] for r in rob})
        drifts = sorted({r["drift"] for r in rob})
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4))
        for ax, method in zip(list(getattr(axes, "flat", [axes])), methods, strict=True):
            grid = [
                [
                    100
                    * statistics.fmean(
                        [
                            r["acc"]
                            for r in rob
                            if r["method"] == method and r["noise"] == n and r["drift"] == d
                        ]
                        or [float("nan")]
                    )
                    for d in drifts
                ]
                for n in noises
            ]
            im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=100)
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w")
            ax.set_xticks(range(len(drifts)), [f"{d:g}×" for d in drifts])
            ax.set_yticks(range(len(noises)), [f"{n:g}×" for n in noises])
            ax.set_xlabel("drift rate")
            ax.set_ylabel("measurement noise")
            ax.set_title(f"{method}: test accuracy %")
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(img / "study_robustness.png", dpi=100)
        plt.close(fig)


def plots(img: Path, compare: list, scaling: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    for task in sorted({r["task"] for r in compare}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in compare:
            if r["task"] != task:
                continue
            c = r["runs"][0]["curve"]
            ax.plot([q for q, _, _ in c], [100 * a for _, a, _ in c], marker="o", label=r["method"])
        ax.set_xscale("symlog")
        ax.set_xlabel("training queries")
        ax.set_ylabel("test accuracy, %")
        ax.set_title(f"{task}: test accuracy vs training queries (first seed)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img / f"study_{task}.png", dpi=100)
        plt.close(fig)
    if scaling:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode in ("weight", "node"):
            pts = [
                (s["params"], statistics.fmean([x for x in s["steps"] if x is not None]))
                for s in scaling
                if s["mode"] == mode and any(x is not None for x in s["steps"])
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=mode)
        ax.set_xlabel("parameters")
        ax.set_ylabel("steps to target train accuracy")
        ax.set_title("MGD on parity")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img / "study_mgd_scaling.png", dpi=100)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default="compare,scaling,robustness")
    p.add_argument("--tasks", default="digits,seq-digits")
    p.add_argument("--methods", default="backprop,boundary,pgt,spsa,mgd,pat,readout")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-queries", type=int, default=200_000)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bins", type=int, default=16)
    p.add_argument("--calibration", default=None)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--widths", default="4,8,16,32")
    p.add_argument("--scaling-steps", type=int, default=100, help="epochs per scaling run")
    p.add_argument("--scaling-target", type=float, default=0.9)
    p.add_argument("--scaling-lr", type=float, default=0.01)
    p.add_argument("--scaling-delta", type=float, default=0.05)
    p.add_argument("--scaling-code", default="cdma")
    p.add_argument("--scaling-tau", type=int, default=16, help="MGD τθ (steps per update)")
    p.add_argument("--noise-levels", default="1,4,16")
    p.add_argument("--drift-levels", default="1,4,16")
    p.add_argument("--robust-methods", default="boundary,pgt")
    p.add_argument("--jsonl", default=None, help="append every finished run here (JSON lines)")
    p.add_argument("--plot-from", default=None, help="only plot: comma-separated --jsonl files")
    p.add_argument("--work", default="/tmp/labpgt-methods")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/methods.txt"))
    p.add_argument("--img", default=str(ROOT / "docs/img"))
    args = p.parse_args()
    args.tasks = args.tasks.split(",")
    args.methods = args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.widths = [int(w) for w in args.widths.split(",")]
    args.noise_levels = [float(v) for v in args.noise_levels.split(",")]
    args.drift_levels = [float(v) for v in args.drift_levels.split(",")]
    args.robust_methods = args.robust_methods.split(",")
    if args.jsonl:
        JSONL.append(Path(args.jsonl))
    if args.plot_from:
        plot_from([Path(f) for f in args.plot_from.split(",")], Path(args.img))
        return
    parts = args.parts.split(",")
    work = Path(args.work)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    OUT.append(out)
    torch.set_num_threads(1)
    say(f"# methods study {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say(f"args: {' '.join(sys.argv[1:])}")
    compare, scaling = [], []

    def flush() -> None:
        out.write_text("\n".join(LINES) + "\n")

    if "diagnose" in parts:
        part_diagnose(args, work, Path(args.img))
        flush()
    if "compare" in parts:
        compare = part_compare(args, work)
        flush()
    if "scaling" in parts:
        scaling = part_scaling(args, work)
        flush()
    if "robustness" in parts:
        part_robustness(args, work)
        flush()
    plots(Path(args.img), compare, scaling)
    flush()


if __name__ == "__main__":
    main()
