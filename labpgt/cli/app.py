"""Root of the `labpgt` CLI. Subcommands live in `labpgt.cli.commands.*`."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from labpgt import __version__
from labpgt.errors import UserError

err_console = Console(stderr=True)

app = typer.Typer(
    name="labpgt",
    help="Hardware-in-the-loop Perturbative Gradient Training with a magnonic ring reservoir.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labpgt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """labpgt: acquire, calibrate and train with a physical (or simulated) ring in the loop."""


def _register_commands() -> None:
    import labpgt.cli.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a `UserError` becomes one red line and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("[yellow]aborted[/yellow]")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception as exc:
        # Usage errors from the (vendored) click layer carry show() and exit_code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # Without standalone mode the CLI layer returns exit codes (e.g. 130 after Ctrl-C).
    if isinstance(code, int) and code != 0:
        sys.exit(code)
