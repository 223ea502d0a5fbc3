"""The bench file (TOML): which instruments, which families, which hard limits.

`load_bench` / `dump_bench` read and write it; `bench_config_from_resources`
builds one from a dict of VISA resources (the virtual bench's CLI writes a
ready bench file with it). Validation errors name the field, e.g.
"limits.ramp_rate_a_per_s: must be > 0".
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from labpgt.instruments.instrument_errors import BenchConfigError
from labpgt.instruments.limits import Limits
from labpgt.instruments.plugins import family_validator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

ROLES: tuple[str, ...] = ("generator", "analyzer", "supply")


class RoleConfig(BaseModel):
    """What the table of each role (`[generator]`, `[analyzer]`, `[supply]`) holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource: str = Field(min_length=1, description="VISA resource of the instrument.")
    family: str = Field(description="Command family.")
    timeout_s: float = Field(5.0, gt=0, le=600, description="Per-query timeout, s.")
    compound_messages: bool | None = Field(
        None,
        description="Takes compound messages (A;:B?) with one joined reply; unset: probed.",
    )


_ROLE_TABLES = {  # role: default family, other built-in family, timeout s, resource, note
    "generator": ("keysight_mxg", "rs_smb", 5.0, "e.g. TCPIP::host::5025::SOCKET", ""),
    "analyzer": ("keysight_x", "rs_fsx", 10.0, "of the spectrum analyzer", " (+ sweep time)"),
    "supply": ("kepco_bop", "keysight_e36xx", 5.0, "(TCPIP socket or ASRL serial)", ""),
}


def _role_config(role: str) -> Any:
    """The table of one role: its default family, resource text and timeout."""
    family, other, timeout_s, resource, note = _ROLE_TABLES[role]
    return create_model(
        f"{role.title()}Config",
        __base__=RoleConfig,
        __doc__=f"The `[{role}]` table.",
        __module__=__name__,
        __validators__={"_family": family_validator(role)},
        resource=(str, Field(min_length=1, description=f"VISA resource {resource}.")),
        family=(str, Field(family, description=f"Command family: {family}, {other}, a plugin's.")),
        timeout_s=(
            float,
            Field(timeout_s, gt=0, le=600, description=f"Per-query timeout, s{note}."),
        ),
    )


GeneratorConfig = _role_config("generator")
AnalyzerConfig = _role_config("analyzer")
SupplyConfig = _role_config("supply")


class SettleTimes(BaseModel):
    """How long to wait after changing a setting before sweeping, in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bias_s: float = Field(0.3, ge=0, le=60, description="Magnet settle after a bias change, s.")
    drive_s: float = Field(0.01, ge=0, le=10, description="Generator settle after a change, s.")


class SettleConfig(SettleTimes):
    """The `[settle]` table: waits after changing a setting, and whether to sleep them."""

    wait: bool = Field(
        True,
        description="False: count settle time as instrument time without sleeping (virtual only).",
    )


class AnalyzerDefaults(BaseModel):
    """The `[analyzer_defaults]` table: the sweep grid applied when the bench opens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    center_hz: float = Field(2.15e9, gt=0, le=1e12, description="Sweep centre frequency, Hz.")
    span_hz: float = Field(300e6, gt=0, le=1e12, description="Sweep span, Hz.")
    rbw_hz: float = Field(300e3, gt=0, le=100e6, description="Resolution bandwidth, Hz.")
    points: int = Field(1001, ge=2, le=100_001, description="Trace points per sweep.")

    @model_validator(mode="after")
    def _start_positive(self) -> AnalyzerDefaults:
        if self.center_hz - self.span_hz / 2 <= 0:
            raise ValueError("center_hz - span_hz/2 must be > 0 Hz")
        return self


class BenchConfig(BaseModel):
    """A whole bench file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    visa_library: str = Field(
        "@py", min_length=1, description='"@py", a vendor VISA path, or "file.yaml@sim".'
    )
    generator: GeneratorConfig
    analyzer: AnalyzerConfig
    supply: SupplyConfig
    limits: Limits = Field(default_factory=Limits, description="Hard limits (driver-enforced).")
    settle: SettleConfig = Field(default_factory=SettleConfig, description="Settle times.")
    analyzer_defaults: AnalyzerDefaults = Field(
        default_factory=AnalyzerDefaults, description="Sweep grid applied on open."
    )
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Stored with every run and calibration made on this bench: sample, "
        "operator, notes or any key = value (a command's --sample/--operator/--notes/--meta "
        "given for the same key wins).",
    )


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the dotted field name."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "bench file"
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "greater_than":
            text = f"must be > {ctx['gt']}"
        elif kind == "greater_than_equal":
            text = f"must be >= {ctx['ge']}"
        elif kind == "less_than_equal":
            text = f"must be <= {ctx['le']}"
        elif kind == "less_than":
            text = f"must be < {ctx['lt']}"
        elif kind == "missing":
            text = "is required"
        elif kind == "extra_forbidden":
            text = "is not a known field"
        else:
            text = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {text}")
    return "; ".join(lines)


def validate_bench(data: dict[str, Any]) -> BenchConfig:
    """Build a `BenchConfig` from plain data; `BenchConfigError` names every bad field."""
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise BenchConfigError(describe_validation_error(exc)) from None


def load_bench(path: str | Path) -> BenchConfig:
    """Read and validate a bench file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchConfigError(f"bench file {path} does not exist") from None
    except OSError as exc:
        raise BenchConfigError(f"bench file {path} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BenchConfigError(f"bench file {path} is not valid TOML: {exc}") from None
    try:
        return validate_bench(data)
    except BenchConfigError as exc:
        raise BenchConfigError(f"bench file {path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} to a bench file")


def bench_toml(cfg: BenchConfig) -> str:
    """The bench file text for cfg: top-level keys, then one flat table per section."""
    data = cfg.model_dump()
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict) and table:  # an empty [metadata] is left out
            lines.append("")
            lines.append(f"[{section}]")
            # TOML has no null: a field left unset (None) is left out, and loads back as None.
            lines.extend(
                f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None
            )
    return "\n".join(lines) + "\n"


_BARE_TOML_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    """A bare TOML key where allowed, else a quoted one (free [metadata] keys)."""
    return key if _BARE_TOML_KEY.match(key) else json.dumps(key)


def dump_bench(cfg: BenchConfig, path: str | Path) -> Path:
    """Write cfg as a bench file that `load_bench` reads back equal."""
    path = Path(path)
    path.write_text(bench_toml(cfg), encoding="utf-8")
    return path


def bench_config_from_resources(
    resources: dict[str, str],
    *,
    families: dict[str, str] | None = None,
    timeouts_s: dict[str, float] | None = None,
    limits: Limits | dict[str, Any] | None = None,
    settle: SettleConfig | dict[str, Any] | None = None,
    analyzer_defaults: AnalyzerDefaults | dict[str, Any] | None = None,
    visa_library: str = "@py",
) -> BenchConfig:
    """A `BenchConfig` for {"generator": resource, "analyzer": ..., "supply": ...}."""
    missing = [role for role in ROLES if role not in resources]
    if missing:
        raise BenchConfigError(f"resources: missing {', '.join(missing)} (need {ROLES})")
    data: dict[str, Any] = {"visa_library": visa_library}
    for role in ROLES:
        table: dict[str, Any] = {"resource": resources[role]}
        if families and role in families:
            table["family"] = families[role]
        if timeouts_s and role in timeouts_s:
            table["timeout_s"] = timeouts_s[role]
        data[role] = table
    for key, value in (
        ("limits", limits),
        ("settle", settle),
        ("analyzer_defaults", analyzer_defaults),
    ):
        if value is not None:
            data[key] = value.model_dump() if isinstance(value, BaseModel) else value
    return validate_bench(data)
