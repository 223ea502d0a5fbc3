"""Commands declared from an options dataclass (`takes_options`): flags, defaults and values."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from labpgt.cli.commands.train import CLI_ONLY, config_from_options
from labpgt.cli.options import takes_options
from labpgt.cli.train_options import TrainOptions
from labpgt.training.config import EstimatorOptions, TrainConfig


@dataclasses.dataclass(frozen=True)
class _Options:
    count: int = typer.Option(3, help="How many.")
    out: Path | None = typer.Option(None, "--out", help="Where.")
    loud: bool = typer.Option(False, "--loud", help="Shout.")
    tag: list[str] = typer.Option([], "--tag", help="Repeatable.")


def _app(seen: list[_Options]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @takes_options(_Options)
    def cmd(**values: Any) -> None:
        seen.append(_Options(**values))

    return app


def test_a_dataclass_gives_the_command_its_flags_defaults_and_types() -> None:
    seen: list[_Options] = []
    runner = CliRunner()
    result = runner.invoke(_app(seen), [])
    assert result.exit_code == 0, result.output
    assert seen[-1] == _Options(count=3, out=None, loud=False, tag=[])
    result = runner.invoke(
        _app(seen), ["--count", "7", "--out", "x.h5", "--loud", "--tag", "a", "--tag", "b"]
    )
    assert result.exit_code == 0, result.output
    assert seen[-1] == _Options(count=7, out=Path("x.h5"), loud=True, tag=["a", "b"])
    result = runner.invoke(_app(seen), ["--count", "seven"])
    assert result.exit_code == 2  # typed as int: refused by the parser
    help_text = runner.invoke(_app(seen), ["--help"], env={"COLUMNS": "120"}).output
    for flag in ("--count", "--out", "--loud", "--tag", "How many.", "Repeatable."):
        assert flag in help_text


def test_every_train_option_is_a_config_field_or_one_the_command_keeps() -> None:
    config_fields = set(TrainConfig.model_fields) | set(EstimatorOptions.model_fields)
    for f in dataclasses.fields(TrainOptions):
        name = f.name[: -len("_opt")] + "_opts" if f.name.endswith("_opt") else f.name
        assert name in config_fields or f.name in CLI_ONLY, f.name


def test_train_options_map_to_the_config_the_flags_describe() -> None:
    defaults = {f.name: f.default.default for f in dataclasses.fields(TrainOptions)}
    values = {
        **defaults,
        "driven": "drive_hz, bias_a",
        "method_opt": ["probes=4"],
        "data": None,
        "out": Path("runs/x"),
        "seed": 5,
    }
    config = config_from_options(TrainOptions(**values))
    assert config.driven == ("drive_hz", "bias_a")
    assert config.method_opts == {"probes": 4}
    assert config.out == "runs/x" and config.seed == 5 and config.data is None


def test_square_brackets_in_help_reach_the_screen() -> None:
    """Rich markup takes ``[word]`` for a style: an extra's name must be escaped, not lost."""
    from labpgt.cli.app import app

    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "400"})
        shown = " ".join(result.output.split())
        for param in command.params:
            for token in re.findall(r"\S*\\?\[[^\]\s]*\]\S*", getattr(param, "help", "") or ""):
                assert token.replace("\\[", "[") in shown, (name, param.name, token)
                checked += 1
    assert checked >= 2  # --tensorboard and --live at least
