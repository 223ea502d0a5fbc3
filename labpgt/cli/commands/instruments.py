"""`labpgt instruments check --bench bench.toml`: is every instrument there and sane?"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from labpgt.benches import check_utf8
from labpgt.cli.tables import print_table
from labpgt.errors import UserError
from labpgt.instruments.bench_file import load_bench
from labpgt.instruments.check import CheckResult, check_bench
from labpgt.instruments.instrument_errors import InstrumentsError

instruments_app = typer.Typer(
    help="Instrument drivers: check the bench described by a bench file.",
    no_args_is_help=True,
)

UNITS = {"_hz": "Hz", "_dbm": "dBm", "_a": "A", "_v": "V", "_s": "s"}


def _format_setting(name: str, value: object) -> str:
    if isinstance(value, bool):
        return f"{name}={'on' if value else 'off'}"
    unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")
    if isinstance(value, float):
        return f"{name}={value:.6g} {unit}".rstrip()
    return f"{name}={value}"


def _table(results: list[CheckResult]) -> Table:
    table = Table(title="Bench check", show_lines=True)
    for column in ("role", "family / resource", "identity", "settings", "queued errors"):
        table.add_column(column)
    for r in results:
        identity = (
            f"{r.identity['vendor']} {r.identity['model']}\n"
            f"serial {r.identity['serial']}, fw {r.identity['firmware']}"
            if r.identity
            else "-"
        )
        settings = "\n".join(_format_setting(k, v) for k, v in r.settings.items()) or "-"
        errors = (
            "\n".join(
                [f"[red]{code}: {message}[/red]" for code, message in r.errors]
                + [
                    f"[yellow]{code}: {message} (before check)[/yellow]"
                    for code, message in r.stale_errors
                ]
            )
            or "none"
        )
        if r.failure:
            status = f"[red]{r.role}[/red]"
            errors = f"[red]{r.failure}[/red]"
        else:
            status = f"[green]{r.role}[/green]"
        table.add_row(status, f"{r.family}\n{r.resource}", identity, settings, errors)
    return table


def check(
    bench: Path = typer.Option(..., "--bench", help="Bench file (TOML) to check."),
) -> None:
    """Open each instrument; print identity, settings and queued errors. Switches nothing."""
    if bench.is_file():
        check_utf8(bench)
    try:
        cfg = load_bench(bench)
        results = check_bench(cfg)
    except InstrumentsError as exc:
        raise UserError(str(exc)) from None
    print_table(Console(), _table(results))
    problems = []
    for r in results:
        if r.failure:
            problems.append(r.failure)
        elif r.errors:
            code, message = r.errors[0]
            problems.append(f"{r.role} ({r.resource}): queued instrument error {code}: {message}")
    if problems:
        raise UserError("; ".join(problems))


def register(app: typer.Typer) -> None:
    instruments_app.command("check")(check)
    app.add_typer(instruments_app, name="instruments")
