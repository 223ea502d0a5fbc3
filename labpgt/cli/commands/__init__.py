"""Command modules. Each module defines ``register(app: typer.Typer) -> None``.

`labpgt.cli.app` imports every module here and calls its ``register``, so a
new command is one new file and no shared file is edited.
"""
