"""Root of the `labpgt` CLI. Subcommands live in `labpgt.cli.commands.*`."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
import threading
from types import FrameType


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or Ctrl-C while no bench is open (a bench installs its own handler): say so
    and exit 128 + signal (143, 130).

    No exception is raised: it could land inside any library's import or code and come
    out as a confusing traceback. Nothing is switched on and no run file is being
    written while no bench is open, so leaving at once is safe.
    """
    name = signal.Signals(signum).name
    try:
        os.write(2, f"\n{name} received: stopping (no instrument is open)\n".encode())
    finally:
        os._exit(128 + signum)


def _is_entry_point() -> bool:
    """True in the `labpgt` process itself (console script or `python -m labpgt`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "labpgt.__main__":
        return True
    return bool(sys.argv) and sys.argv[0].rsplit("/", 1)[-1] == "labpgt"


# Installed before the heavy imports below (seconds with torch) so that a SIGTERM or a
# Ctrl-C during start-up is answered in one line, not with an import traceback; only in
# the labpgt process, never in a program that merely imports the CLI (tests,
# notebooks). Ctrl-C goes back to KeyboardInterrupt when main() starts a command.
if _is_entry_point() and threading.current_thread() is threading.main_thread():
    for _signum, _default in (
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        if signal.getsignal(_signum) is _default:
            signal.signal(_signum, _terminate)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.text import Text  # noqa: E402

from labpgt import __version__  # noqa: E402
from labpgt.errors import UserError  # noqa: E402

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


EXIT_USER_ERROR = 2
"""Bad input, or an instrument that failed: one red line."""
EXIT_UNSAFE = 3
"""The safe shutdown failed: something may still be on (the report says what)."""


def error_line(text: str) -> Text:
    """'error: <text>' with no markup or emoji processing of the user's text."""
    return Text.assemble(("error:", "red"), " ", " ".join(str(text).split()))


def report_unsafe(exc: BaseException) -> None:
    """The loud report of a failed safe shutdown: what is still on, and what to do."""
    failures = getattr(exc, "failures", [])
    lines = Text()
    lines.append("DANGER: the safe shutdown FAILED; the bench may not be safe.\n", "bold red")
    for failure in failures:
        lines.append(f"  {failure.role}", "bold")
        lines.append(f" ({failure.resource}): ")
        lines.append(failure.still_on, "bold red")
        lines.append(f"\n    what to do: {failure.action}\n")
        lines.append(f"    why: {failure.error}\n", "dim")
    during = getattr(exc, "during", None)
    if during is not None:
        cause = " ".join(str(during).split()) or type(during).__name__
        lines.append(f"  the run had stopped first: {cause}\n")
    lines.append(f"exit status {EXIT_UNSAFE}: check the instruments above before anything else")
    err_console.print(lines, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a `UserError` becomes one red line and exit code 2.

    An instrument error left unconverted is one line and exit code 2 too; a failed
    safe shutdown is reported at length and exits 3; SIGTERM says so and exits 143.
    """
    from labpgt.instruments.bench import ShutdownError
    from labpgt.instruments.instrument_errors import InstrumentsError
    from labpgt.instruments.safety import TerminatedBySignal

    if signal.getsignal(signal.SIGINT) is _terminate:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # commands handle Ctrl-C
    try:
        code = app(args=argv, standalone_mode=False)
    except ShutdownError as exc:
        report_unsafe(exc)
        sys.exit(EXIT_UNSAFE)
    except (UserError, InstrumentsError) as exc:
        prefix = "instrument: " if isinstance(exc, InstrumentsError) else ""
        err_console.print(error_line(f"{prefix}{exc}"), highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except TerminatedBySignal as exc:
        err_console.print(
            Text(
                f"terminated by signal {exc.signum} (SIGTERM): the run stopped and the bench "
                "was made safe; any run file is valid, finish it with --resume",
                style="yellow",
            ),
            soft_wrap=True,
        )
        sys.exit(exc.code)
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
    # Without standalone mode the CLI layer returns exit codes (e.g. 130 after Ctrl-C, which
    # it swallows without a word: say it was heard).
    if isinstance(code, int) and code != 0:
        if code == 130:
            err_console.print(Text("interrupted (Ctrl-C): stopped", style="yellow"))
        sys.exit(code)
