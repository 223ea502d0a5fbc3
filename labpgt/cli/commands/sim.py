"""`labpgt sim ...`: the simulated ring and the virtual bench.

Subcommands are attached by `sim_*.py` modules beside this one (imported after
this one, in name order, by `labpgt.cli.app`).
"""

import typer

sim_app = typer.Typer(help="The simulated ring and the virtual SCPI bench.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
