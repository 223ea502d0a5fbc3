"""`labpgt study`: run a preset training study under the protocol and write its results page."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labpgt.cli.tables import print_table
from labpgt.errors import UserError

console = Console()


def study_command(
    preset: str = typer.Option("digits", help="Study preset: digits | short."),
    out: Path = typer.Option(
        Path("benchmarks/results/study"), help="Study folder (results.jsonl, summary.json, runs/)."
    ),
    workers: int = typer.Option(
        0, help="Jobs run at once, one process each (0: one per CPU core)."
    ),
    docs: Path | None = typer.Option(
        None, help="Also write the results page (Markdown) here, its figure beside it in img/."
    ),
) -> None:
    """Search each method's learning rate on validation, then train ≥ 5 seeds; tabulate."""
    from labpgt.study import PRESETS, run_study
    from labpgt.study_report import markdown, plot

    if preset not in PRESETS:
        raise UserError(f"unknown study preset {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    spec = PRESETS[preset]()
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    if docs is not None and not docs.parent.is_dir():
        raise UserError(f"--docs: folder {docs.parent} does not exist")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-check").touch()
        (out / ".write-check").unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror})") from None
    console.print(
        f"study {spec.name}: {len(spec.entries)} entries, final seeds "
        f"{list(spec.final_seeds)}, search seeds {list(spec.search_seeds)}, "
        f"{n_workers} worker(s); results in {out}/",
        highlight=False,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bars: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int, row: dict | None) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(f"{phase} jobs", total=total, info="")
            info = ""
            if row is not None:
                acc = row["test_acc"] if phase == "final" else row["val_acc"]
                what = "test" if phase == "final" else "val"
                info = f"last: {row['entry']} seed {row['seed']} {what} {100 * acc:.1f}%"
            progress.update(bars[phase], completed=done, total=total, info=info)

        summary = run_study(spec, out, workers=n_workers, progress=on_progress)
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
    print_table(console, table)
    if docs is not None:
        figure = docs.parent / "img" / f"results_{spec.name}.png"
        plot(summary, figure)
        args = ["labpgt", "study", *sys.argv[2:]] if len(sys.argv) > 1 else ["labpgt", "study"]
        text = markdown(summary, command=shlex.join(args), figure=f"img/{figure.name}")
        docs.write_text(text)
        console.print(f"results page: {docs} (figure {figure})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("study")(study_command)
