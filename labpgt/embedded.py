"""The embedded virtual bench: what every command runs on when no bench file is given.

`embedded_bench()` starts `sim.virtual.VirtualBench` (three SCPI servers on
ephemeral loopback ports around one simulated ring), writes a `BenchConfig`
for it, opens it through the real drivers (`instruments.bench.Bench`) and
yields an `InstrumentReservoir`. So the embedded path exercises the whole
stack: SCPI over sockets, drivers, limits, safe shutdown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from labpgt.features import FeatureSpec
from labpgt.instrument_reservoir import InstrumentReservoir
from labpgt.sim.grid import AnalyzerGrid

EMBEDDED_LIMITS: dict[str, float] = {"ramp_rate_a_per_s": 50.0, "ramp_step_a": 0.25}
"""The virtual magnet is no inductor: ramp fast so a run is not dominated by ramp sleeps.
Every other limit is the bench-file default."""


@contextmanager
def embedded_bench(
    *,
    seed: int = 0,
    features: FeatureSpec = FeatureSpec(),
    noise: bool = True,
    drift: bool = True,
    hysteresis: bool = True,
    realtime: bool = False,
    grid: AnalyzerGrid = AnalyzerGrid(),
    keep_traces: bool = False,
    handle_signals: bool = True,
) -> Iterator[InstrumentReservoir]:
    """Virtual bench + bench config + `Bench` -> `InstrumentReservoir`; all shut down on exit.

    ``noise``/``drift``/``hysteresis`` switch the ring's effects (off: a
    deterministic ring, for exact comparisons); ``realtime`` makes the virtual
    analyzer take its true sweep time. Settle times are counted but not slept
    (``settle.wait = false``): the virtual magnet has nothing to settle.
    """
    from labpgt.instruments.bench import Bench, bench_config_from_resources
    from labpgt.sim.params import RingParams
    from labpgt.sim.ring import RingModel
    from labpgt.sim.virtual import VirtualBench

    ring = RingModel(RingParams(noise=noise, drift=drift, hysteresis=hysteresis), seed=seed)
    with VirtualBench(ring, seed=seed, realtime=realtime) as vb:
        cfg = bench_config_from_resources(
            vb.resources,
            families=vb.families,
            limits=EMBEDDED_LIMITS,
            settle={"wait": False},
            analyzer_defaults=grid.model_dump(),
        )
        with Bench.open(cfg, handle_signals=handle_signals) as bench:
            reservoir = InstrumentReservoir(bench, features, keep_traces=keep_traces)
            reservoir.virtual_bench = vb  # tests and calibration reach the ring and faults
            yield reservoir
