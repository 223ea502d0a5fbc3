"""`labpgt sim serve`: run the virtual bench (three SCPI servers, one ring) until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labpgt.cli.commands.sim import sim_app
from labpgt.cli.options import takes_options
from labpgt.cli.tables import print_table
from labpgt.errors import UserError
from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
from labpgt.instruments.instrument_errors import InstrumentsError
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench
from labpgt.sim.virtual.analyzer import ANALYZER_FAMILIES
from labpgt.sim.virtual.generator import GENERATOR_FAMILIES
from labpgt.sim.virtual.supply import SUPPLY_FAMILIES
from labpgt.sim.virtual.virtual_bench import VirtualBenchError, is_loopback

_POLL_S = 0.2


def _check_family(option: str, value: str, allowed: dict) -> None:
    if value not in allowed:
        raise UserError(f"{option} must be one of {', '.join(sorted(allowed))}, got {value!r}")


@dataclass(frozen=True)
class ServeOptions:
    """The options of `labpgt sim serve` (each field's default is its typer declaration)."""

    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (loopback only unless --allow-remote)."
    )
    realtime: bool = typer.Option(
        False, "--realtime", help="Sleep the true sweep times (default: answer at once)."
    )
    write_bench: Path | None = typer.Option(
        None, "--write-bench", help="Write a ready bench file (TOML) for these servers."
    )
    seed: int = typer.Option(0, "--seed", help="Seed of the ring's noise and drift.")
    no_noise: bool = typer.Option(False, "--no-noise", help="Noise-free, drift-free ring.")
    serial_supply: bool = typer.Option(
        False, "--serial-supply", help="Serve the bias supply on a pty (ASRL resource)."
    )
    generator_family: str = typer.Option(
        "keysight_mxg", "--generator-family", help="keysight_mxg or rs_smb."
    )
    analyzer_family: str = typer.Option(
        "keysight_x", "--analyzer-family", help="keysight_x or rs_fsx."
    )
    supply_family: str = typer.Option(
        "kepco_bop", "--supply-family", help="kepco_bop or keysight_e36xx."
    )
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Permit a non-loopback --host (the servers have no authentication).",
    )


@takes_options(ServeOptions)
def serve(**values: Any) -> None:
    """Start the virtual bench, print its VISA resources, serve until Ctrl-C (or SIGTERM)."""
    options = ServeOptions(**values)
    _check_serve_options(options)
    params = RingParams(noise=False, drift=False) if options.no_noise else RingParams()
    console = Console()
    if options.allow_remote:
        _warn_remote(options.host)
    with _stop_requested() as stop:
        vb = _start_bench(options, params)
        try:
            _announce(console, vb, options.realtime, options.seed, params)
            if options.write_bench is not None:
                _write_bench_file(console, vb, options.write_bench, options.realtime)
            console.print("serving; press Ctrl-C to stop", style="green")
            sys.stdout.flush()
            started = time.monotonic()
            while not stop.wait(_POLL_S):
                pass
            elapsed_s = time.monotonic() - started
        finally:
            vb.stop()
    console.print(
        f"stopped after {elapsed_s:.1f} s; the supply logged {len(vb.supply_log)} bias steps"
    )


def _check_serve_options(options: ServeOptions) -> None:
    """Refuse an unknown family, a non-loopback host without --allow-remote and a
    --write-bench path in a folder that does not exist."""
    _check_family("--generator-family", options.generator_family, GENERATOR_FAMILIES)
    _check_family("--analyzer-family", options.analyzer_family, ANALYZER_FAMILIES)
    _check_family("--supply-family", options.supply_family, SUPPLY_FAMILIES)
    host = options.host
    if not is_loopback(host) and not options.allow_remote:
        raise UserError(
            f"--host {host!r} is not a loopback address; the virtual bench has no "
            "authentication, so pass --allow-remote to bind it anyway"
        )
    write_bench = options.write_bench
    if write_bench is not None and not write_bench.parent.is_dir():
        raise UserError(f"--write-bench: directory {str(write_bench.parent)!r} does not exist")


def _warn_remote(host: str) -> None:
    Console(stderr=True).print(
        Text(
            f"WARNING: --allow-remote: the virtual bench servers have NO authentication; "
            f"anyone who can reach {host} can drive them (and read what they serve). "
            "Use it only on a trusted network.",
            style="bold yellow",
        ),
        soft_wrap=True,
    )


@contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event SIGINT or SIGTERM sets while inside; the previous handlers come back after."""
    stop = threading.Event()

    def _request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_bench(options: ServeOptions, params: RingParams) -> VirtualBench:
    """The three servers on one ring, started; a failure to bind is one line."""
    try:
        return VirtualBench(
            RingModel(params, seed=options.seed),
            host=options.host,
            realtime=options.realtime,
            serial_supply=options.serial_supply,
            generator_family=options.generator_family,
            analyzer_family=options.analyzer_family,
            supply_family=options.supply_family,
            allow_remote=options.allow_remote,
        ).start()
    except (VirtualBenchError, OSError) as exc:
        raise UserError(f"cannot start the virtual bench on {options.host}: {exc}") from None


def _write_bench_file(console: Console, vb: VirtualBench, path: Path, realtime: bool) -> None:
    """A ready bench file (TOML) pointing at these servers."""
    try:
        cfg = bench_config_from_resources(
            vb.resources, families=vb.families, settle={"wait": realtime}
        )
        dump_bench(cfg, path)
    except (InstrumentsError, OSError) as exc:
        raise UserError(f"--write-bench {str(path)!r}: {exc}") from None
    console.print(f"bench file written: {path}")


def _announce(console: Console, vb: VirtualBench, realtime: bool, seed: int, params) -> None:
    table = Table(title="Virtual bench")
    table.add_column("role")
    table.add_column("family")
    table.add_column("VISA resource")
    families = vb.families
    for role, resource in vb.resources.items():
        table.add_row(role, families[role], resource)
    print_table(console, table)
    # One plain line per resource, easy to copy or to parse from a script.
    for role, resource in vb.resources.items():
        console.print(f"{role}: {resource}", highlight=False, soft_wrap=True)
    timing = "real-time sweeps and settles" if realtime else "no simulated delays"
    console.print(
        f"ring seed {seed}, noise {'on' if params.noise else 'off'}, "
        f"drift {'on' if params.drift else 'off'}, {timing}"
    )


def register(app: typer.Typer) -> None:
    sim_app.command("serve")(serve)
