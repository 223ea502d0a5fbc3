"""`labpgt instruments check` against the virtual bench."""

from __future__ import annotations

import socket

import pytest
from cli_runner import exit_code
from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    # rich wraps at the terminal width; a wide one keeps table cells and errors whole.
    monkeypatch.setenv("COLUMNS", "240")


@pytest.fixture
def vb():
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as bench:
        yield bench


def test_check_prints_identity_and_settings(vb, tmp_path, capsys):
    path = dump_bench(bench_config_from_resources(vb.resources), tmp_path / "bench.toml")
    vb.generator.push_error(-113, "left over from an earlier session")
    assert exit_code(["instruments", "check", "--bench", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("N5183B", "N9020A", "KEPCO", "MY00000001", "frequency_hz", "compliance_v=20 V"):
        assert text in out
    assert "left over" in out  # stale queue entries are shown, not blamed on the check
    assert vb.generator.rf_on is False and vb.supply.output_on is False


def test_check_fails_with_one_line_when_an_instrument_is_unreachable(vb, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"TCPIP::127.0.0.1::{probe.getsockname()[1]}::SOCKET"
    cfg = bench_config_from_resources({**vb.resources, "supply": dead})
    path = dump_bench(cfg, tmp_path / "bench.toml")
    assert exit_code(["instruments", "check", "--bench", str(path)]) == 2
    captured = capsys.readouterr()
    assert "N5183B" in captured.out  # the reachable ones are still reported
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and f"supply ({dead})" in err_lines[0]


def test_check_fails_when_an_instrument_misbehaves(vb, tmp_path, capsys):
    path = dump_bench(bench_config_from_resources(vb.resources), tmp_path / "bench.toml")
    vb.inject_fault("analyzer", "garble", count=2)
    assert exit_code(["instruments", "check", "--bench", str(path)]) == 2
    assert "analyzer (TCPIP::127.0.0.1" in capsys.readouterr().err


def test_check_reports_a_bad_bench_file(tmp_path, capsys):
    path = tmp_path / "bench.toml"
    path.write_text("[limits]\nramp_rate_a_per_s = 0\n")
    assert exit_code(["instruments", "check", "--bench", str(path)]) == 2
    err = capsys.readouterr().err
    assert "limits.ramp_rate_a_per_s: must be > 0" in err and "generator: is required" in err
