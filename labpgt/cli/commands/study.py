"""`labpgt study`: run a preset training study under the protocol and write its results page."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from labpgt.cli.tables import print_table
from labpgt.errors import UserError

if TYPE_CHECKING:
    from labpgt.studies.presets import StudySpec

console = Console()


def study_command(
    preset: str = typer.Option(
        "digits",
        help="Study preset: digits, features, pgt-size, pat, transformer, mgd-scaling or short.",
    ),
    out: Path = typer.Option(
        Path("benchmarks/results/study"), help="Study folder (results.jsonl, summary.json, runs/)."
    ),
    workers: int = typer.Option(
        0, help="Jobs run at once, one process each (0: one per CPU core)."
    ),
    docs: Path | None = typer.Option(
        None, help="Also write the results page (Markdown) here, its figure beside it in img/."
    ),
    engine: str = typer.Option(
        "auto",
        help="Where jobs run: ray (a local Ray sized to --workers, or --address), process "
        "(a process pool on this machine) or auto (ray when the \\[scale] extra is installed).",
    ),
    address: str | None = typer.Option(
        None, help="Join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto); implies ray."
    ),
    search: str = typer.Option(
        "grid",
        help="Learning-rate search: grid (every rate of the entry's grid, the protocol) or "
        "tpe (Ray Tune: Optuna TPE over the grid's range, ASHA early stopping; needs ray).",
    ),
    trials: int = typer.Option(8, help="--search tpe: trials per entry."),
) -> None:
    """Search each method's learning rate on validation, then train ≥ 5 seeds; tabulate."""
    spec = _preset(preset)
    engine = _engine(engine, address)
    _check_search(search, engine, trials)
    _check_destinations(spec, address, docs, out)
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    console.print(
        f"study {spec.name}: {len(spec.entries)} entries, final seeds "
        f"{list(spec.final_seeds)}, search seeds {list(spec.search_seeds)}, "
        + (f"{n_workers} worker(s) ({engine})" if address is None else f"Ray cluster {address}")
        + f"; results in {out}/",
        highlight=False,
    )
    with _PhaseBars() as bars:
        summary = _run(
            spec,
            out,
            search=search,
            engine=engine,
            trials=trials,
            workers=n_workers,
            address=address,
            progress=bars.on_progress,
        )
    print_table(console, _results_table(spec, summary))
    if docs is not None:
        _write_page(spec, summary, docs)


def _preset(name: str) -> StudySpec:
    from labpgt.studies.presets import PRESETS

    if name not in PRESETS:
        raise UserError(f"unknown study preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def _check_search(search: str, engine: str, trials: int) -> None:
    """Refuse an unknown --search, and tpe without Ray Tune or with no trial."""
    if search not in ("grid", "tpe"):
        raise UserError(f"--search {search!r}: valid: grid, tpe")
    if search == "tpe":
        from labpgt.studies.tune_runner import tune_available

        if engine != "ray" or not tune_available():
            raise UserError(
                "--search tpe runs on Ray Tune: it needs --engine ray and the [scale] extra"
            )
        if trials < 1:
            raise UserError(f"--trials {trials}: at least 1 trial per entry")


def _check_destinations(spec: StudySpec, address: str | None, docs: Path | None, out: Path) -> None:
    """Refuse, before any job runs: a job the trainer would refuse, a Ray cluster that does
    not answer, a --docs folder that does not exist, a study folder that is not writable."""
    from labpgt.studies.protocol import ensure_writable
    from labpgt.studies.ray_runner import validate_jobs

    validate_jobs(spec)
    if address is not None:
        from labpgt.studies.ray_runner import check_address

        check_address(address)
    if docs is not None and not docs.parent.is_dir():
        raise UserError(f"--docs: folder {docs.parent} does not exist")
    ensure_writable(out)


class _PhaseBars(Progress):
    """One bar per phase of the study (search, final) with the last row's figure."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.bars: dict[str, TaskID] = {}

    def on_progress(self, phase: str, done: int, total: int, row: dict | None) -> None:
        if phase not in self.bars:
            self.bars[phase] = self.add_task(f"{phase} jobs", total=total, info="")
        info = ""
        if row is not None:
            acc = row["test_acc"] if phase == "final" else row["val_acc"]
            what = "test" if phase == "final" else "val"
            info = f"last: {row['entry']} seed {row['seed']} {what} {100 * acc:.1f}%"
        self.update(self.bars[phase], completed=done, total=total, info=info)


def _run(
    spec: StudySpec,
    out: Path,
    *,
    search: str,
    engine: str,
    trials: int,
    workers: int,
    address: str | None,
    progress: Callable[..., None],
) -> dict[str, Any]:
    """The study on the chosen engine: Ray Tune (--search tpe), Ray, or a process pool."""
    if search == "tpe":
        from labpgt.studies.tune_runner import run_study_tune

        return run_study_tune(
            spec, out, trials=trials, workers=workers, address=address, progress=progress
        )
    if engine == "ray":
        from labpgt.studies.ray_runner import run_study_ray

        return run_study_ray(spec, out, workers=workers, address=address, progress=progress)
    from labpgt.studies.protocol import run_study

    return run_study(spec, out, workers=workers, progress=progress)


def _results_table(spec: StudySpec, summary: dict[str, Any]) -> Table:
    """Test accuracy (mean ± 95 % CI), chosen rate and queries to the target, per entry."""
    table = Table(title=f"study {spec.name}: test accuracy %, mean ± 95 % CI", show_lines=False)
    for col in ("entry", "test %", "lr", f"queries to {100 * spec.target_acc:.0f} %"):
        table.add_column(col, overflow="fold")
    for e in summary["entries"]:
        ci = e["test_ci95"]
        acc = (
            f"{100 * e['test_mean']:.1f} ± {100 * ci:.1f}"
            if ci == ci
            else f"{100 * e['test_mean']:.1f}"
        )
        q = "-" if e["queries_to_target"] is None else f"{e['queries_to_target']:,.0f}"
        table.add_row(e["label"], acc, "-" if e["lr"] is None else f"{e['lr']:g}", q)
    return table


def _write_page(spec: StudySpec, summary: dict[str, Any], docs: Path) -> None:
    """The results page (Markdown) at --docs, its figure beside it in img/."""
    from labpgt.studies.report import markdown, plot

    figure = docs.parent / "img" / f"results_{spec.name}.png"
    plot(summary, figure)
    args = ["labpgt", "study", *sys.argv[2:]] if len(sys.argv) > 1 else ["labpgt", "study"]
    text = markdown(summary, command=shlex.join(args), figure=f"img/{figure.name}")
    docs.write_text(text)
    console.print(f"results page: {docs} (figure {figure})", highlight=False)


def _engine(engine: str, address: str | None) -> str:
    """The engine to use: 'ray' or 'process' (auto: ray when installed)."""
    from labpgt.studies.ray_runner import ray_available

    if engine not in ("auto", "ray", "process"):
        raise UserError(f"--engine {engine!r}: valid: auto, process, ray")
    if engine == "process" and address is not None:
        raise UserError("--address joins a Ray cluster: it needs --engine ray (or auto)")
    if engine == "auto":
        engine = "ray" if ray_available() else "process"
        if address is not None and engine != "ray":
            raise UserError("--address needs Ray: pip install 'labpgt[scale]'")
    if engine == "ray" and not ray_available():
        raise UserError("--engine ray needs Ray: pip install 'labpgt[scale]'")
    return engine


def register(app: typer.Typer) -> None:
    app.command("study")(study_command)
