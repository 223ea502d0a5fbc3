"""`labpgt runs DIR`: the run files of a folder as a table (or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labpgt.errors import UserError

console = Console()


def runs_command(
    folder: Path = typer.Argument(Path("."), help="Folder holding run files (HDF5)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON list on stdout, no table."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look in sub-folders too."),
) -> None:
    """List the acquisition and calibration files in a folder: date, command, bench, shots,
    status, size."""
    from labpgt.catalog import list_runs, relative
    from labpgt.cli.tables import print_table

    if not folder.exists():
        raise UserError(f"{folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; `labpgt show {folder}` describes one file")
    entries = list_runs(folder, recursive=recursive)
    if as_json:
        print(json.dumps([e.as_dict() for e in entries], indent=1))
        return
    if not entries:
        console.print(Text(f"no HDF5 files in {folder}"), highlight=False)
        return
    print_table(console, _runs_table(entries, folder))
    for e in entries:  # the longer word on every file that is not plainly complete
        if e.detail:
            console.print(
                Text.assemble((relative(e.path, folder), "bold"), f": {e.status}, {e.detail}"),
                highlight=False,
                soft_wrap=False,
                overflow="fold",
            )


def _runs_table(entries: list[Any], folder: Path) -> Table:
    """One row per file: name, date, command, bench, shots, status, size."""
    from labpgt.catalog import human_size, relative, short_date

    # light rules and no outer border: seven columns fit 80 characters
    table = Table(
        title=Text(f"runs in {folder}"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for name, justify in (
        ("file", "left"),
        ("date (UTC)", "left"),
        ("command", "left"),
        ("bench", "left"),
        ("shots", "right"),
        ("status", "left"),
        ("size", "right"),
    ):
        # wrap, never cut; the status words stay whole
        width = {"status": 13, "size": 7}.get(name)
        table.add_column(name, justify=justify, overflow="fold", min_width=width)
    for e in entries:
        shots = "-" if e.shots_planned is None else f"{e.shots_done}/{e.shots_planned}"
        status = Text(e.status, style=None if e.ok else "yellow")
        table.add_row(
            Text(relative(e.path, folder)),
            short_date(e.date_utc),
            e.command or "-",
            Text(e.bench or "-"),
            shots,
            status,
            human_size(e.size_bytes),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)
