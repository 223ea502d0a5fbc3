"""Command-line options shared by several commands (one definition each)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import TypeVar

import typer

Command = TypeVar("Command", bound=Callable[..., None])

SAMPLE_OPTION = typer.Option(None, "--sample", help="Sample measured (run metadata).")
OPERATOR_OPTION = typer.Option(None, "--operator", help="Who ran it (run metadata).")
NOTES_OPTION = typer.Option(None, "--notes", help="Free text notes (run metadata).")
META_OPTION = typer.Option(
    [], "--meta", help="Free run metadata as key=value (repeatable), e.g. --meta cryostat=K2."
)


def takes_options(options: type) -> Callable[[Command], Command]:
    """Give a command written as ``def cmd(**values)`` the fields of the dataclass `options`
    as its parameters; the command reads them back as ``options(**values)``.

    Typer reads a command's options from its signature. A command with many options
    declares them once, as fields whose defaults are their ``typer.Option``, instead of
    a parameter list longer than the command itself; help, flags and values are the same.
    """

    def give(command: Command) -> Command:
        hints = typing.get_type_hints(options)
        params = [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
            )
            for f in dataclasses.fields(options)
        ]
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return give
