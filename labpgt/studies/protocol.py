"""Training studies under one protocol: a grid of independent jobs, each config -> result row.

The protocol every published figure follows:

1. **Search.** Each entry (a method with its fixed options) is trained at every
   learning rate of its grid on the *search seeds*; the rate with the best mean
   validation accuracy (of the epoch chosen on validation) wins. A rate whose run
   diverged (non-finite loss) is reported, never silently kept.
2. **Final.** The entry is trained at the chosen rate on every *final seed*
   (≥ 5), with ``eval_test='final'``: the test part is measured once per run, on
   the model chosen on validation. Rows report mean and 95 % confidence interval
   (Student's t over seeds).
3. **Yardsticks in every table:** logistic regression on the raw inputs, the
   readout-only reservoir baseline (ridge on the ring's features at the random
   initial upstream map), and the same-shape digital network (``digital``).

A job is a plain dict (its TrainConfig keyword arguments), so any engine that can
call `run_job` in another process can run the grid; results land as one JSON
line each in ``results.jsonl``, and a rerun skips the jobs already there.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labpgt.errors import UserError
from labpgt.studies.presets import StudySpec


@dataclass
class Job:
    """One training run of the grid: its key (unique, stable), entry, phase and config."""

    key: str
    entry: str
    phase: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)


JobProgress = Callable[[int, int, dict[str, Any] | None], None]
"""progress(jobs finished, jobs in the phase, the row just written or None at the start)."""
StudyProgress = Callable[[str, int, int, dict[str, Any] | None], None]
"""progress(phase "search" or "final", jobs finished, jobs in the phase, row or None)."""


def no_progress(*args: Any) -> None:
    """The default progress callback: report nothing."""


def _tag(lr: float, variant: dict[str, Any]) -> str:
    extra = "".join(
        f"/{k}={v:g}" if isinstance(v, float) else f"/{k}={v}" for k, v in variant.items()
    )
    return f"lr={lr:g}{extra}"


Choice = tuple[float, dict[str, Any]]


def search_jobs(spec: StudySpec) -> list[Job]:
    """The search of every entry that has more than one (rate, variant) choice."""
    jobs = []
    for entry in spec.entries:
        if entry.kind != "train" or len(entry.choices()) < 2:
            continue
        for lr, variant in entry.choices():
            for seed in spec.search_seeds:
                config = {**spec.base, **entry.config, **variant, "lr": lr, "seed": seed}
                key = f"{entry.label}/search/{_tag(lr, variant)}/seed={seed}"
                jobs.append(Job(key, entry.label, "search", entry.kind, config))
    return jobs


def final_jobs(spec: StudySpec, chosen: dict[str, Choice]) -> list[Job]:
    """Every entry at its chosen rate and variant on every final seed, test measured once."""
    jobs = []
    for entry in spec.entries:
        default = entry.choices()[0] if entry.lrs else (0.01, {})
        lr, variant = chosen.get(entry.label, default)
        for seed in spec.final_seeds:
            config = {
                **spec.base,
                **entry.config,
                **variant,
                "lr": lr,
                "seed": seed,
                "eval_test": "final",
            }
            key = f"{entry.label}/final/{_tag(lr, variant)}/seed={seed}"
            jobs.append(Job(key, entry.label, "final", entry.kind, config))
    return jobs


def run_job(job: Job, out_dir: Path, *, threads: int = 1) -> dict[str, Any]:
    """Run one job (in this process) and return its result row (JSON-serialisable)."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    row = logistic_regression(job.config) if job.kind == "logistic" else _train(job, out_dir)
    row.update(
        key=job.key,
        entry=job.entry,
        phase=job.phase,
        seconds=time.perf_counter() - t0,
        commit=STARTED["commit"],
        provenance=STARTED,
    )
    return row


def _train(job: Job, out_dir: Path) -> dict[str, Any]:
    from labpgt.runner import run_training
    from labpgt.training.config import make_config

    config = train_kwargs(job.config, out_dir)
    config["out"] = str(out_dir / "runs" / _slug(job.key))
    result = run_training(make_config(**config), resume=False, overwrite=True, quiet=True)
    metrics = result.metrics
    selected = result.selected
    method = result.config.method
    diverged = any(not math.isfinite(m.train_loss) for m in metrics)
    curve = [(m.queries, m.val_acc, m.instrument_time_s) for m in metrics]
    if method == "readout":
        test_acc, val_acc = result.baseline.test_acc, float("nan")
    else:
        test_acc, val_acc = selected.test_acc, selected.val_acc
    return {
        "method": method,
        "lr": result.config.lr,
        "seed": result.config.seed,
        "val_acc": val_acc,
        "test_acc": test_acc if job.phase == "final" else float("nan"),
        "chosen_epoch": selected.epoch,
        "queries": metrics[-1].queries,
        "instrument_time_s": metrics[-1].instrument_time_s,
        "wall_s": metrics[-1].wall_s,
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "readout_test_acc": result.baseline.test_acc if job.phase == "final" else float("nan"),
        "diverged": diverged,
        "curve": curve,
    }


def train_kwargs(
    config: dict[str, Any], out_dir: Path, *, make_calibration: bool = True
) -> dict[str, Any]:
    """A job's config as `make_config` keywords: ``driven`` a tuple, ``calibrate`` resolved.

    ``calibrate`` (extra `labpgt calibrate` arguments) becomes ``calibration``, the path
    of the study's calibration file: made first when ``make_calibration``, else only
    named (validation before any job starts).
    """
    config = dict(config)
    if "driven" in config:
        config["driven"] = tuple(config["driven"])
    if "calibrate" in config:
        options = config.pop("calibrate")
        if not isinstance(options, list | tuple) or not all(isinstance(o, str) for o in options):
            raise UserError(
                f"'calibrate' must be a list of labpgt calibrate arguments: {options!r}"
            )
        path = (
            ensure_calibration(out_dir, config, list(options))
            if make_calibration
            else calibration_path(out_dir, config, list(options))
        )
        config["calibration"] = str(path)
    return config


def _calibrate_args(config: dict[str, Any], options: list[str]) -> list[str]:
    if not config.get("fast_sim"):
        raise UserError("study: a job's 'calibrate' needs the in-process sim (fast_sim)")
    args = [
        "calibrate",
        "--fast-sim",
        "--seed",
        "0",
        "--features",
        str(config.get("features", "kernel")),
        "--bins",
        str(config.get("bins", 16)),
        "--no-plots",
        *options,
    ]
    if not config.get("noise", True):
        args.append("--no-noise")
    return args


def calibration_path(out_dir: Path, config: dict[str, Any], options: list[str]) -> Path:
    """Where the study keeps the calibration `ensure_calibration` makes for this config."""
    args = _calibrate_args(config, options)
    return out_dir / "calibrations" / (_slug("_".join(a.lstrip("-") for a in args[1:])) + ".h5")


def ensure_calibration(out_dir: Path, config: dict[str, Any], options: list[str]) -> Path:
    """The calibration file a job trains with: `labpgt calibrate` of the job's ring, run once.

    ``options`` are extra `labpgt calibrate` arguments (e.g. ``--surrogate twin``). The
    ring is the one the job trains on (the in-process sim with the job's noise setting),
    calibrated once at seed 0 as a lab calibrates its bench once, with the job's feature
    map. Jobs on other processes wait on a file lock, so the file is made exactly once;
    the command and its output land beside it (``calibrations/NAME.log``).
    """
    import fcntl
    import subprocess
    import sys

    args = _calibrate_args(config, options)
    path = calibration_path(out_dir, config, options)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            partial = path.with_suffix(".partial.h5")
            partial.unlink(missing_ok=True)
            command = [sys.executable, "-m", "labpgt", *args, "--out", str(partial)]
            done = subprocess.run(command, capture_output=True, text=True)
            log = f"$ labpgt {' '.join(args)} --out {path.name}\n{done.stdout}{done.stderr}"
            path.with_suffix(".log").write_text(log)
            if done.returncode != 0:
                last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
                raise UserError(f"study: the calibration for {path.name} failed: {last}")
            partial.rename(path)
    return path


def logistic_regression(config: dict[str, Any]) -> dict[str, Any]:
    """Logistic regression on the standardised raw inputs; C chosen on validation.

    `config` holds the TrainConfig keys that decide the split (task, seed, val_fraction).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from labpgt.training.tasks import load_task

    task = load_task(
        config.get("task", "digits"),
        seed=int(config.get("seed", 0)),
        val_fraction=float(config.get("val_fraction", 0.15)),
    )
    assert task.x_val is not None and task.y_val is not None
    x_tr, y_tr = task.x_train.numpy(), task.y_train.numpy()
    best: tuple[float, float] = (-1.0, 1.0)
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_tr)
        acc = float(np.mean(clf.predict(task.x_val.numpy()) == task.y_val.numpy()))
        if acc > best[0]:
            best = (acc, c)
    clf = LogisticRegression(C=best[1], max_iter=2000).fit(x_tr, y_tr)
    test_acc = float(np.mean(clf.predict(task.x_test.numpy()) == task.y_test.numpy()))
    return {
        "method": "logistic",
        "lr": float("nan"),
        "seed": int(config.get("seed", 0)),
        "val_acc": best[0],
        "test_acc": test_acc,
        "C": best[1],
        "queries": 0,
        "parameters": int(clf.coef_.size + clf.intercept_.size),
        "diverged": False,
        "curve": [],
    }


def _slug(key: str) -> str:
    keep = [c if c.isalnum() or c in "=.-" else "_" for c in key]
    return "".join(keep).strip("_")


# --------------------------------------------------------------------------- runner


def ensure_writable(out_dir: Path) -> None:
    """Create the study folder and check it takes a file; refused in one line if not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".write-check").touch()
        (out_dir / ".write-check").unlink()
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror})") from None


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already in results.jsonl, by job key (a torn last line from a kill is skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["key"]] = row
    return rows


def run_jobs(
    jobs: list[Job],
    out_dir: Path,
    *,
    workers: int,
    done: dict[str, dict[str, Any]],
    progress: JobProgress = no_progress,
) -> dict[str, dict[str, Any]]:
    """Run the jobs not yet in `done` (serially or on `workers` processes), appending rows."""
    todo = [j for j in jobs if j.key not in done]
    finished = len(jobs) - len(todo)
    progress(finished, len(jobs), None)

    def record(row: dict[str, Any]) -> None:
        nonlocal finished
        append_row(out_dir, row, done)
        finished += 1
        progress(finished, len(jobs), row)

    if workers <= 1:
        for job in todo:
            record(run_job(job, out_dir))
        return done
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, job, out_dir) for job in todo]
        for future in as_completed(futures):
            record(future.result())
    return done


def append_row(out_dir: Path, row: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
    """One finished job: a line of results.jsonl and an entry of `done`."""
    with (out_dir / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    done[row["key"]] = row


def choose(
    spec: StudySpec, rows: dict[str, dict[str, Any]]
) -> tuple[dict[str, Choice], dict[str, list[str]]]:
    """Chosen (rate, variant) per entry (best mean validation accuracy; ties: the smaller
    rate, then the earlier variant) and the choices whose runs diverged."""
    chosen: dict[str, Choice] = {}
    diverged: dict[str, list[str]] = {}
    for entry in spec.entries:
        if entry.kind != "train" or len(entry.choices()) < 2:
            continue
        scores: list[tuple[float, float, int, Choice]] = []
        for index, (lr, variant) in enumerate(entry.choices()):
            tag = _tag(lr, variant)
            runs = [rows[f"{entry.label}/search/{tag}/seed={s}"] for s in spec.search_seeds]
            if any(r["diverged"] or not math.isfinite(r["val_acc"]) for r in runs):
                diverged.setdefault(entry.label, []).append(tag)
                continue
            mean = sum(r["val_acc"] for r in runs) / len(runs)
            scores.append((mean, -lr, -index, (lr, variant)))
        if not scores:
            raise UserError(
                f"study {spec.name}: every choice of {entry.label!r} diverged "
                f"({', '.join(diverged[entry.label])}); widen its grid"
            )
        chosen[entry.label] = max(scores, key=lambda t: t[:3])[3]
    return chosen, diverged


def run_study(
    spec: StudySpec,
    out_dir: Path,
    *,
    workers: int = 1,
    progress: StudyProgress = no_progress,
    runner: Callable[..., dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Search, then final seeds; returns (and writes) the summary. Resumes a partial study.

    ``runner`` runs a list of jobs (the signature of `run_jobs`, the default); the Ray
    engine (`labpgt.studies.ray_runner.RayRunner`) is another.
    """
    run_jobs_ = runner if runner is not None else run_jobs
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    done = read_rows(out_dir / "results.jsonl")
    search = search_jobs(spec)
    _check_one_commit(out_dir, done, search)
    run_jobs_(
        search, out_dir, workers=workers, done=done, progress=lambda *a: progress("search", *a)
    )
    chosen, diverged = choose(spec, done)
    final = final_jobs(spec, chosen)
    _check_one_commit(out_dir, done, [*search, *final])
    run_jobs_(final, out_dir, workers=workers, done=done, progress=lambda *a: progress("final", *a))
    summary = summarise(spec, done, chosen, diverged)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _check_one_commit(out_dir: Path, done: dict[str, dict[str, Any]], jobs: list[Job]) -> None:
    """A study's rows come from one commit: refuse to add rows computed on another.

    A folder whose jobs are all done can be summarised from any checkout (its page
    names the commit the rows were computed on).
    """

    def tag(commit: object, dirty: object) -> str:
        return f"{commit}{' with uncommitted changes' if dirty else ''}"

    sources = {tag(r.get("commit"), r.get("provenance", {}).get("dirty")) for r in done.values()}
    if not done or all(j.key in done for j in jobs):
        if len(sources) > 1:
            raise UserError(
                f"{out_dir}: rows from several checkouts ({', '.join(sorted(sources))})"
            )
        return
    here = tag(STARTED["commit"], STARTED["dirty"])
    if sources != {here}:
        raise UserError(
            f"{out_dir}: its rows were computed on {', '.join(sorted(sources))} but this is "
            f"{here}; a study's figures come from one commit: use another --out (or remove "
            "the folder) to run it here"
        )


# --------------------------------------------------------------------------- statistics


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % confidence interval, n) with Student's t over n - 1."""
    from scipy import stats

    xs = [v for v in values if math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(xs) / n
    if n == 1:
        return mean, float("nan"), 1
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n), n


def first_reaching(curve: list[list[float]], target: float) -> tuple[float, float] | None:
    """(queries, instrument s) at the first epoch whose validation accuracy reaches target."""
    for queries, val_acc, inst_s in curve:
        if math.isfinite(val_acc) and val_acc >= target:
            return float(queries), float(inst_s)
    return None


def summarise(
    spec: StudySpec,
    rows: dict[str, dict[str, Any]],
    chosen: dict[str, Choice],
    diverged: dict[str, list[str]],
) -> dict[str, Any]:
    """One summary row per entry: test mean ± 95 % CI, chosen rate, queries to target."""
    out = []
    for entry in spec.entries:
        keys = {j.key for j in final_jobs(spec, chosen) if j.entry == entry.label}
        finals = [rows[k] for k in keys if k in rows]
        lr, variant = chosen.get(entry.label, (None, {}))
        finals.sort(key=lambda r: r["seed"])
        test = mean_ci95(r["test_acc"] for r in finals)
        reach = [first_reaching(r.get("curve", []), spec.target_acc) for r in finals]
        hit = [x for x in reach if x is not None]
        out.append(
            {
                "label": entry.label,
                "method": finals[0]["method"] if finals else entry.kind,
                "lr": lr if entry.lrs else None,
                "variant": variant,
                "searched": [_tag(lr_, v) for lr_, v in entry.choices()] if entry.lrs else [],
                "diverged": diverged.get(entry.label, []),
                "test_mean": test[0],
                "test_ci95": test[1],
                "seeds": test[2],
                "test_per_seed": [r["test_acc"] for r in finals],
                "queries": finals[0]["queries"] if finals else 0,
                "parameters": finals[0]["parameters"] if finals else 0,
                "reached_target": len(hit),
                "queries_to_target": sorted(x[0] for x in hit)[len(hit) // 2] if hit else None,
                "instrument_s_to_target": (
                    sorted(x[1] for x in hit)[len(hit) // 2] if hit else None
                ),
                "curves": [r.get("curve", []) for r in finals],
            }
        )
    return {
        "study": spec.name,
        "description": spec.description,
        "target_acc": spec.target_acc,
        "final_seeds": list(spec.final_seeds),
        "search_seeds": list(spec.search_seeds),
        "base": spec.base,
        "provenance": _rows_provenance(rows),
        "entries": out,
    }


def _rows_provenance(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Provenance of the code the rows were computed with (the earliest row's)."""
    for row in rows.values():
        if "provenance" in row:
            return dict(row["provenance"])
    for row in rows.values():
        if "commit" in row:  # rows that carry only their commit: the environment is this one
            return {**STARTED, "commit": row["commit"], "dirty": False}
    return STARTED


def provenance() -> dict[str, Any]:
    """Commit (with a dirty flag), date and the versions the figures depend on."""
    import numpy
    import sklearn
    import torch

    from labpgt.training.checkpoint import git_state

    commit, dirty = git_state()
    return {
        "commit": commit,
        "dirty": dirty,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "cpus": os.cpu_count(),
    }


STARTED: dict[str, Any] = provenance()
"""Provenance of the code this process loaded (taken at import, before any job runs):
a commit made while a study runs must not be named as the one that produced it."""
