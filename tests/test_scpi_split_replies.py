"""Instruments that answer each query of a message on its own line, end to end.

The virtual bench's `split_replies` roles reply "1\\n1\\n" to `*OPC?;*OPC?` instead
of "1;1". labpgt's drivers probe this at connect and then send one command per
message; a whole bench cycle must work and measure what a compound bench measures.
"""

from __future__ import annotations

import numpy as np
import pytest
from labpgt.instruments.bench import Bench, bench_config_from_resources, dump_bench, load_bench
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import ROLES, VirtualBench, VirtualBenchError

FAST_LIMITS = {"ramp_rate_a_per_s": 20.0, "ramp_step_a": 0.1}
GRID = {"center_hz": 2.15e9, "span_hz": 300e6, "rbw_hz": 300e3, "points": 1001}


def quiet_bench(**kwargs) -> VirtualBench:
    return VirtualBench(RingModel(RingParams(noise=False, drift=False)), **kwargs)


def cycle(vb: VirtualBench) -> tuple[dict[str, bool | None], np.ndarray]:
    cfg = bench_config_from_resources(
        vb.resources, families=vb.families, limits=FAST_LIMITS, analyzer_defaults=GRID
    )
    with Bench.open(cfg, handle_signals=False) as bench:
        probed = {role: inst.compound_messages for role, inst in bench.instruments.items()}
        assert bench.generator.set_cw(2.1e9, -10.0) == (2.1e9, -10.0)
        bench.enable_outputs()
        bench.supply.current_a = 0.6
        _, power_dbm = bench.analyzer.read_trace()
        for instrument in bench.instruments.values():
            assert instrument.drain_errors() == []
    return probed, power_dbm


def test_the_virtual_instrument_splits_its_replies():
    with quiet_bench(split_replies=("generator",)) as vb:
        with RawClient(vb.resources["generator"]) as c:
            assert c.ask("*OPC?;SOUR:FREQ?") == "1"
            assert c.read_line() == "+1.000000000000000E+09"
        with RawClient(vb.resources["analyzer"]) as c:
            assert c.ask("*OPC?;*OPC?") == "1;1"
    with pytest.raises(VirtualBenchError, match="split_replies"):
        VirtualBench(split_replies=("oscilloscope",))


@pytest.mark.parametrize("supply_family", ["kepco_bop", "keysight_e36xx"])
def test_a_bench_of_split_repliers_runs_one_command_per_message(supply_family):
    with quiet_bench(supply_family=supply_family) as vb:
        joined, expected = cycle(vb)
    with quiet_bench(supply_family=supply_family, split_replies=ROLES) as vb:
        split, measured = cycle(vb)
        log = list(vb.supply_log)
    assert joined == dict.fromkeys(ROLES, True)
    assert split == dict.fromkeys(ROLES, False)
    np.testing.assert_allclose(measured, expected, atol=1e-9)
    assert max(current for _, current, on in log if on) == pytest.approx(0.6)


def test_the_bench_file_keeps_compound_messages_set_or_unset(tmp_path):
    resources = {
        "generator": "TCPIP::127.0.0.1::5025::SOCKET",
        "analyzer": "TCPIP::127.0.0.1::5026::SOCKET",
        "supply": "ASRL/dev/ttyUSB0::INSTR",
    }
    cfg = bench_config_from_resources(resources)
    assert cfg.supply.compound_messages is None
    forced = cfg.model_copy(
        update={"supply": cfg.supply.model_copy(update={"compound_messages": False})}
    )
    path = dump_bench(forced, tmp_path / "bench.toml")
    text = path.read_text()
    assert "compound_messages = false" in text and text.count("compound_messages") == 1
    loaded = load_bench(path)
    assert loaded == forced
    assert loaded.generator.compound_messages is None


def test_bench_open_uses_the_bench_files_setting_instead_of_probing() -> None:
    # A compound-capable bench told "one command per message" for the supply: the
    # setting reaches the driver (not probed: it stays False), and a cycle still works.
    with quiet_bench() as vb:
        cfg = bench_config_from_resources(
            vb.resources, families=vb.families, limits=FAST_LIMITS, analyzer_defaults=GRID
        )
        cfg = cfg.model_copy(
            update={"supply": cfg.supply.model_copy(update={"compound_messages": False})}
        )
        with Bench.open(cfg, handle_signals=False) as bench:
            assert bench.supply.compound_messages is False
            assert bench.generator.compound_messages is True  # probed
            bench.enable_outputs()
            bench.supply.current_a = 0.3
            assert bench.supply.drain_errors() == []
