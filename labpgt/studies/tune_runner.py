"""A study whose search runs on Ray Tune: Optuna's TPE picks the trials, ASHA stops the weak.

`labpgt study --search tpe` replaces the protocol's grid search (every rate and variant
of an entry on the search seeds) with, per entry that has more than one choice:

- a Ray Tune experiment over the learning rate, log-uniform between the smallest and
  the largest rate of the entry's grid, and the entry's variants (e.g. δ) as a choice;
- Optuna's TPE sampler (`OptunaSearch`, seeded) proposing ``trials`` trials, at most
  ``workers`` at a time, each a training run on the first search seed;
- ASHA (`ASHAScheduler`) stopping a trial at an epoch where its validation accuracy is
  below the better ones' at the same epoch (rungs at 1, 2, 4 ... epochs);
- the chosen rate and variant: the trial with the best validation accuracy of any epoch;
- a trial whose worker dies is restarted (up to 3 times), as a job of the grid is.

Each entry's choice and trials are stored in ``<out>/tune/<entry>.json`` (a rerun skips
the entries already tuned) and Tune's own experiment state in ``<out>/tune/ray/``. The
final seeds then run as Ray tasks (`RayRunner`), exactly as with the grid search.

Unlike the grid search, a TPE search is not reproducible run to run when trials run
concurrently (the sampler sees results in the order they finish): the chosen rate is
the one its stored file names, and the final rows are reproducible given that rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from labpgt.errors import UserError
from labpgt.studies.presets import Entry, StudySpec
from labpgt.studies.protocol import (
    Choice,
    StudyProgress,
    _check_one_commit,
    _slug,
    final_jobs,
    no_progress,
    read_rows,
    summarise,
    train_kwargs,
)
from labpgt.studies.ray_runner import RayRunner, WorkerFault, connected_runner

TUNE_DIR = "tune"


def tune_available() -> bool:
    """True if Ray Tune and Optuna (the ``[scale]`` extra) are installed."""
    try:
        import optuna  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


def trial_key(label: str, lr: float, variant: int) -> str:
    """The name of entry `label`'s trial at rate `lr` and variant index `variant` (for
    `WorkerFault`; a rate drawn from a log-uniform range tells the trials apart)."""
    return f"{label}/tune/lr={lr!r}/variant={variant}"


def _trial(
    params: dict[str, Any],
    *,
    base: dict[str, Any],
    variants: list[dict[str, Any]],
    seed: int,
    out_root: str,
    study_dir: str,
    label: str,
    fault: WorkerFault | None,
) -> None:
    """One Tune trial: a training run that reports validation accuracy after each epoch."""
    if fault is not None:
        fault.strike(trial_key(label, params["lr"], params["variant"]))
    import torch
    from ray import tune

    from labpgt.runner import run_training
    from labpgt.training.config import make_config
    from labpgt.training.trainer import TrainHooks

    torch.set_num_threads(1)
    config = {**base, **variants[params["variant"]], "lr": params["lr"], "seed": seed}
    config = train_kwargs(config, Path(study_dir))
    config["out"] = str(Path(out_root) / tune.get_context().get_trial_id())

    def on_epoch(row: Any) -> None:
        val = row.val_acc if math.isfinite(row.val_acc) else 0.0
        diverged = not math.isfinite(row.train_loss)
        tune.report({"val_acc": val, "epoch": row.epoch, "diverged": diverged})

    run_training(
        make_config(**config),
        resume=False,
        overwrite=True,
        quiet=True,
        extra_hooks=[TrainHooks(on_epoch=on_epoch)],
    )


def tune_entry(
    spec: StudySpec,
    entry: Entry,
    out_dir: Path,
    *,
    trials: int,
    workers: int,
    seed: int = 0,
    fault: WorkerFault | None = None,
) -> dict[str, Any]:
    """Run the Tune search of one entry; returns (and stores) its choice and trials."""
    variants = list(entry.variants)
    tuner = _tuner(spec, entry, out_dir, trials=trials, workers=workers, seed=seed, fault=fault)
    results = tuner.fit()
    rows = [_trial_row(entry, variants, result) for result in results]
    usable = [r for r in rows if not r["diverged"] and math.isfinite(r["best_val_acc"])]
    if not usable:
        raise UserError(f"tune {entry.label!r}: every trial diverged; widen its grid")
    best_row = max(usable, key=lambda r: (r["best_val_acc"], -r["lr"]))
    record = {
        "entry": entry.label,
        "lr": best_row["lr"],
        "variant": best_row["variant"],
        "best_val_acc": best_row["best_val_acc"],
        "search": "optuna tpe + asha",
        "trials": rows,
    }
    folder = out_dir / TUNE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{_slug(entry.label)}.json").write_text(json.dumps(record, indent=2))
    return record


def _tuner(
    spec: StudySpec,
    entry: Entry,
    out_dir: Path,
    *,
    trials: int,
    workers: int,
    seed: int,
    fault: WorkerFault | None,
) -> Any:
    """A Ray Tune search of the entry's rate (log-uniform over its grid's range) and
    variant: Optuna's TPE proposes, ASHA stops poor trials early; one CPU a trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = {
        "lr": tune.loguniform(min(entry.lrs), max(entry.lrs)),
        "variant": tune.choice(list(range(len(entry.variants)))),
    }
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            base={**spec.base, **entry.config},
            variants=list(entry.variants),
            seed=spec.search_seeds[0],
            out_root=str((out_dir / "runs" / _slug(f"{entry.label}/tune")).resolve()),
            study_dir=str(out_dir.resolve()),
            label=entry.label,
            fault=fault,
        ),
        {"cpu": 1},
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            search_alg=OptunaSearch(seed=seed),
            scheduler=ASHAScheduler(grace_period=1, reduction_factor=2, max_t=10_000),
            num_samples=trials,
            max_concurrent_trials=max(workers, 1),
        ),
        run_config=tune.RunConfig(
            name=_slug(entry.label),
            storage_path=str((out_dir / TUNE_DIR / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=3),  # a dead worker: retried
            verbose=0,
        ),
    )


def _trial_row(entry: Entry, variants: list[dict[str, Any]], result: Any) -> dict[str, Any]:
    """One finished trial: its rate, variant, best validation accuracy, epochs, divergence."""
    if result.error is not None:
        raise UserError(f"tune {entry.label!r}: a trial failed: {result.error}")
    history = result.metrics_dataframe
    return {
        "lr": result.config["lr"],
        "variant": variants[result.config["variant"]],
        "best_val_acc": float(history["val_acc"].max()) if history is not None else float("nan"),
        "epochs": int(len(history)) if history is not None else 0,
        "diverged": bool(history["diverged"].any()) if history is not None else False,
    }


def run_study_tune(
    spec: StudySpec,
    out_dir: Path,
    *,
    trials: int,
    workers: int = 0,
    address: str | None = None,
    progress: StudyProgress = no_progress,
    runner: RayRunner | None = None,
) -> dict[str, Any]:
    """Tune search per entry, then the final seeds on Ray; writes and returns the summary."""
    if trials < 1:
        raise UserError(f"--trials {trials}: at least 1 trial per entry")
    runner = connected_runner(spec, out_dir, address, workers, runner)
    try:
        (out_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        done = read_rows(out_dir / "results.jsonl")
        searched = [e for e in spec.entries if e.kind == "train" and len(e.choices()) >= 2]
        chosen: dict[str, Choice] = {}
        n_workers = workers if workers > 0 else 1
        progress("search", 0, len(searched), None)
        for index, entry in enumerate(searched):
            stored = out_dir / TUNE_DIR / f"{_slug(entry.label)}.json"
            if stored.is_file():
                record = json.loads(stored.read_text())
            else:
                record = tune_entry(
                    spec, entry, out_dir, trials=trials, workers=n_workers, fault=runner.fault
                )
            chosen[entry.label] = (float(record["lr"]), dict(record["variant"]))
            progress(
                "search",
                index + 1,
                len(searched),
                {
                    "entry": entry.label,
                    "seed": spec.search_seeds[0],
                    "val_acc": record["best_val_acc"],
                },
            )
        final = final_jobs(spec, chosen)
        _check_one_commit(out_dir, done, final)
        runner(
            final, out_dir, workers=workers, done=done, progress=lambda *a: progress("final", *a)
        )
        summary = summarise(spec, done, chosen, {})
        summary["search"] = "optuna tpe + asha (Ray Tune)"
        for item in summary["entries"]:
            stored = out_dir / TUNE_DIR / f"{_slug(item['label'])}.json"
            item["searched"] = [f"{trials} tpe trials"] if stored.is_file() else item["searched"]
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        runner.shutdown()
