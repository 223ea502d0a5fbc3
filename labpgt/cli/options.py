"""Command-line options shared by several commands (one definition each)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

Command = TypeVar("Command", bound=Callable[..., None])

SAMPLE_OPTION = typer.Option(None, "--sample", help="Sample measured (run metadata).")
OPERATOR_OPTION = typer.Option(None, "--operator", help="Who ran it (run metadata).")
NOTES_OPTION = typer.Option(None, "--notes", help="Free text notes (run metadata).")
META_OPTION = typer.Option(
    [], "--meta", help="Free run metadata as key=value (repeatable), e.g. --meta cryostat=K2."
)


@dataclass(frozen=True)
class CommandOption:
    """One option of a command declared as a table row: parameter name, type, typer.Option."""

    name: str
    annotation: Any
    option: Any


def takes_options(table: Sequence[CommandOption]) -> Callable[[Command], Command]:
    """Give a command written as ``def cmd(**options)`` the parameters of `table`.

    Typer reads a command's options from its signature; a command with dozens of options
    (``labpgt train``) keeps them in a table beside it instead of a parameter list longer
    than the command itself. The help, the flags and the values typer passes are the
    same as with the parameters written out.
    """

    def give(command: Command) -> Command:
        params = [
            inspect.Parameter(
                row.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=row.option,
                annotation=row.annotation,
            )
            for row in table
        ]
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {row.name: row.annotation for row in table}
        return command

    return give
