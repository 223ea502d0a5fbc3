"""Progress bars that tell the truth: total known from the start, never past it, and an ETA in
wall time with the instrument time beside it.

Every bar is a rich `Progress` task with the fields ``unit`` (shots, steps, plots),
``instrument_s`` (instrument time so far in this process, s; None where it means nothing)
and ``start_count`` (the count already done when the process began: a resume). The wall ETA is
rich's estimate from the recent rate; the instrument ETA scales the instrument time spent
so far to the work left.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text


def clock(seconds: float | None) -> str:
    """Seconds as h:mm:ss (or m:ss); '-:--' when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def instrument_eta_s(task: Task) -> float | None:
    """Instrument time the rest will take, from the instrument time per unit so far."""
    instrument_s = task.fields.get("instrument_s")
    done = task.completed - task.fields.get("start_count", 0)
    if instrument_s is None or task.total is None or done <= 0:
        return None
    return instrument_s / done * max(0.0, task.total - task.completed)


class EtaColumn(ProgressColumn):
    """'ETA 1:23 (instr. 0:41)': time left on the wall clock, and instrument time left."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("done", style="green")
        wall = clock(task.time_remaining)
        instrument = instrument_eta_s(task)
        if task.fields.get("instrument_s") is None:
            return Text(f"ETA {wall}", style="cyan")
        return Text(f"ETA {wall} (instr. {clock(instrument)})", style="cyan")


class CountColumn(ProgressColumn):
    """'52/300 shots'; blank for a phase without a count (its bar pulses)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = task.fields.get("unit", "")
        text = f"{int(task.completed)}/{int(task.total)}" + (f" {unit}" if unit else "")
        return Text(text, style="green")


class InstrumentColumn(ProgressColumn):
    """Instrument time so far (blank where the phase uses no instrument)."""

    def render(self, task: Task) -> Text:
        value = task.fields.get("instrument_s")
        return Text("" if value is None else f"instr. {clock(value)}", style="dim")


def make_progress(console: Console, *, disable: bool = False) -> Progress:
    """The bar every long command shows (acquire, calibrate, train)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        CountColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        InstrumentColumn(),
        # figures (train: the epoch just finished) fold onto more lines, never cut
        TextColumn("{task.fields[info]}", table_column=Column(overflow="fold")),
        console=console,
        disable=disable,
    )


def new_task(
    progress: Progress,
    description: str,
    total: float | None,
    *,
    unit: str = "shots",
    completed: float = 0,
    instrument_s: float | None = 0.0,
    **fields: Any,
) -> Any:
    """A task whose ``total`` is known before it starts (None only for a phase that truly has
    no count: it shows a pulsing bar, never '0/?' for a count that exists)."""
    return progress.add_task(
        description,
        total=total,
        completed=completed,
        unit=unit,
        instrument_s=instrument_s,
        start_count=completed,
        info=fields.pop("info", ""),
        **fields,
    )


def advance_to(
    progress: Progress, task_id: Any, done: float, total: float | None = None, **fields: Any
) -> None:
    """Set the count; a count past the total raises the total (the bar never shows 47/46)."""
    task = progress.tasks[[t.id for t in progress.tasks].index(task_id)]
    total = task.total if total is None else total
    if total is not None and done > total:
        total = done
    progress.update(task_id, completed=done, total=total, **fields)
