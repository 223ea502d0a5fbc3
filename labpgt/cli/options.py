"""Command-line options shared by several commands (one definition each)."""

from __future__ import annotations

import typer

SAMPLE_OPTION = typer.Option(None, "--sample", help="Sample measured (run metadata).")
OPERATOR_OPTION = typer.Option(None, "--operator", help="Who ran it (run metadata).")
NOTES_OPTION = typer.Option(None, "--notes", help="Free text notes (run metadata).")
META_OPTION = typer.Option(
    [], "--meta", help="Free run metadata as key=value (repeatable), e.g. --meta cryostat=K2."
)
