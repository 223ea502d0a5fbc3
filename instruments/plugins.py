"""Driver plugins: instrument families from other packages, through the entry point group
``labpgt.drivers``.

A plugin package declares, in its pyproject.toml,

```toml
[project.entry-points."labpgt.drivers"]
acme_sg = "labpgt_acme.driver:AcmeSG"
```

where the entry point's name is the family a bench file selects (``family =
"acme_sg"``) and its value a subclass of `SignalGenerator`, `SpectrumAnalyzer` or
`BiasSupply` (the base class says which role it plays; its ``family`` ClassVar,
when set, must equal the entry point's name). Plugins load once, on the first
bench file validated or bench opened. A plugin that fails to import (or is not a
driver class) is recorded under its name; every other driver still works, and a
bench file selecting that family gets the recorded reason, naming the plugin. A
plugin cannot replace a built-in family.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

ENTRY_POINT_GROUP = "labpgt.drivers"

PLUGIN_FAMILIES: dict[str, str] = {}
"""family -> the plugin that provided it ("<distribution> (<module:class>)")."""
FAILED: dict[str, str] = {}
"""entry point name -> why that plugin is unusable (one line, naming the plugin)."""
_state = {"loaded": False}


def _builtin() -> dict[str, dict[str, type]]:
    from labpgt.instruments.bias_supply import SUPPLY_FAMILIES, BiasSupply
    from labpgt.instruments.signal_generator import GENERATOR_FAMILIES, SignalGenerator
    from labpgt.instruments.spectrum_analyzer import ANALYZER_FAMILIES, SpectrumAnalyzer

    _BASES.update(generator=SignalGenerator, analyzer=SpectrumAnalyzer, supply=BiasSupply)
    return {
        "generator": GENERATOR_FAMILIES,
        "analyzer": ANALYZER_FAMILIES,
        "supply": SUPPLY_FAMILIES,
    }


_BASES: dict[str, type] = {}


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) or "?"
    return f"{name} ({ep.value})"


def load_plugins(*, reload: bool = False) -> None:
    """Register every ``labpgt.drivers`` entry point into its role's family table."""
    if _state["loaded"] and not reload:
        return
    _state["loaded"] = True
    tables = _builtin()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = _origin(ep)
        if ep.name in PLUGIN_FAMILIES and not reload:
            continue
        try:
            cls: Any = ep.load()
        except Exception as exc:  # any failure of someone else's import: record, go on
            FAILED[ep.name] = (
                f"driver plugin {ep.name!r} from {origin} failed to import: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        roles = [r for r, base in _BASES.items() if isinstance(cls, type) and issubclass(cls, base)]
        if not roles:
            FAILED[ep.name] = (
                f"driver plugin {ep.name!r} from {origin} is not a SignalGenerator, "
                "SpectrumAnalyzer or BiasSupply subclass"
            )
            continue
        family = getattr(cls, "family", "") or ep.name
        table = tables[roles[0]]
        if family != ep.name:
            FAILED[ep.name] = (
                f"driver plugin {ep.name!r} from {origin}: its class says family {family!r}; "
                "the entry point's name must be the family"
            )
        elif family in table and PLUGIN_FAMILIES.get(family) is None:
            FAILED[ep.name] = (
                f"driver plugin {ep.name!r} from {origin} would replace the built-in family "
                f"{family!r}; rename it"
            )
        else:
            cls.family = family
            table[family] = cls
            PLUGIN_FAMILIES[family] = origin
            FAILED.pop(ep.name, None)


def families(role: str) -> dict[str, type]:
    """Every family of `role` ("generator", "analyzer", "supply"): built in and plugins."""
    load_plugins()
    return _builtin()[role]


def check_family(role: str, family: str) -> str:
    """The bench file's family check: known, else the failed plugin's reason or the list."""
    known = families(role)
    if family in known:
        return family
    if family in FAILED:
        raise ValueError(FAILED[family])
    raise ValueError(f"unknown {role} family {family!r}; known: {', '.join(sorted(known))}")


def family_validator(role: str) -> Any:
    """A pydantic field validator of ``family`` for the bench file table of `role`."""
    from pydantic import field_validator

    def check(cls: type, value: str) -> str:
        return check_family(role, value)

    check.__name__ = f"_check_{role}_family"
    return field_validator("family")(check)
