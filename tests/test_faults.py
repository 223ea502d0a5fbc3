"""Reliability against the virtual bench's injected faults: drop, stall, garble, error."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from labpgt.instruments.bench import Bench, bench_config_from_resources
from labpgt.instruments.instrument_errors import (
    ExecutionError,
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

TIMEOUT_S = 0.5
"""The stall tests' timeout, short so that a stall costs the suite little."""
OPEN_TIMEOUT_S = 10.0
"""Every other exchange's: on a loaded 2-core CI machine a healthy reply (the first one on
a new connection above all) has taken over 0.5 s, which failed the fixture's Bench.open."""


@pytest.fixture
def bench_pair():
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        cfg = bench_config_from_resources(
            vb.resources,
            timeouts_s={role: OPEN_TIMEOUT_S for role in ("generator", "analyzer", "supply")},
            limits={"ramp_rate_a_per_s": 50.0, "ramp_step_a": 0.1},
        )
        with Bench.open(cfg, handle_signals=False) as bench:
            yield vb, bench


def test_drop_on_a_query_reconnects_and_the_reading_succeeds(bench_pair):
    vb, bench = bench_pair
    bench.generator.frequency_hz = 2.2e9
    vb.inject_fault("generator", "drop")
    t0 = time.perf_counter()
    assert bench.generator.frequency_hz == 2.2e9
    assert bench.generator.conn.reconnects == 1
    # Reconnected at once, not after waiting out a timeout.
    assert time.perf_counter() - t0 < OPEN_TIMEOUT_S / 2


def test_drop_on_a_setting_is_restored_after_reconnect(bench_pair):
    vb, bench = bench_pair
    vb.inject_fault("generator", "drop")  # swallows the next line: the set itself
    bench.generator.power_dbm = -7.0
    assert vb.generator.power_dbm == -7.0  # re-applied on the new session
    assert bench.generator.power_dbm == -7.0
    assert bench.generator.conn.reconnects == 1


def test_drop_during_a_trace_read(bench_pair):
    vb, bench = bench_pair
    bench.generator.power_dbm = -10.0
    bench.enable_outputs()
    bench.supply.current_a = 1.8
    _, reference = bench.analyzer.read_trace()
    vb.inject_fault("analyzer", "drop")
    _, again = bench.analyzer.read_trace()
    np.testing.assert_allclose(again, reference, atol=1e-4)
    assert bench.analyzer.conn.reconnects == 1
    # The grid was restored on the new session, not left at the server's defaults.
    assert vb.analyzer.grid.points == 1001


def test_stall_times_out_within_the_configured_time(bench_pair):
    vb, bench = bench_pair
    assert bench.analyzer.conn.timeout_s == OPEN_TIMEOUT_S  # the bench file's value arrived
    vb.inject_fault("analyzer", "stall")
    t0 = time.perf_counter()
    with (
        bench.analyzer.conn.timeout(TIMEOUT_S),
        pytest.raises(
            InstrumentTimeoutError,
            match=r"analyzer \(TCPIP::127.0.0.1::\d+::SOCKET\): no reply .* within 0.5 s",
        ),
    ):
        _ = bench.analyzer.center_hz
    elapsed = time.perf_counter() - t0
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 0.5
    assert bench.analyzer.center_hz == 2.15e9  # next exchange on a fresh session


def test_stall_during_a_sweep_wait_times_out(bench_pair):
    vb, bench = bench_pair
    sweep_s = bench.analyzer.sweep_time_s
    bench.analyzer.sweep_margin_s = 0.3
    vb.inject_fault("analyzer", "stall")
    t0 = time.perf_counter()
    with (
        bench.analyzer.conn.timeout(TIMEOUT_S),
        pytest.raises(InstrumentTimeoutError, match="INIT"),
    ):
        bench.analyzer.read_trace()
    # The sweep wait is the timeout + sweep time + margin, and no longer.
    elapsed = time.perf_counter() - t0
    assert TIMEOUT_S + sweep_s + 0.3 <= elapsed < TIMEOUT_S + sweep_s + 0.3 + 0.5
    f_hz, p_dbm = bench.analyzer.read_trace()
    assert p_dbm.shape == f_hz.shape == (1001,)


def test_garbled_text_reply_is_a_clear_error(bench_pair):
    vb, bench = bench_pair
    vb.inject_fault("supply", "garble")
    with pytest.raises(InstrumentProtocolError, match=r"supply .*MEAS:CURR\?.*expected a number"):
        _ = bench.supply.measured_current_a
    assert bench.supply.measured_current_a == 0.0


def test_garbled_sweep_handshake_is_a_clear_error(bench_pair):
    vb, bench = bench_pair
    vb.inject_fault("analyzer", "garble")
    with pytest.raises(
        InstrumentProtocolError, match=r"analyzer .*garbled reply to 'INIT;\*OPC\?.*starts b'~"
    ):
        bench.analyzer.read_trace()
    # The rest of the garbled reply is never read as a reply: a fresh session follows.
    _, p_dbm = bench.analyzer.read_trace()
    assert p_dbm.shape == (1001,)
    assert bench.analyzer.conn.reconnects == 1


def test_garbled_trace_block_is_a_clear_error(bench_pair):
    vb, bench = bench_pair
    bench.analyzer.read_trace()
    vb.inject_fault("analyzer", "garble")  # the block loses its '#' header
    with pytest.raises(InstrumentProtocolError, match=r"analyzer .*garbled reply to 'TRAC:DATA"):
        bench.analyzer.conn.query_block("TRAC:DATA? TRACE1")
    # The rest of the broken block is never read as a reply: a fresh session follows.
    _, p_dbm = bench.analyzer.read_trace()
    assert p_dbm.shape == (1001,)
    assert bench.analyzer.conn.reconnects == 1


def test_refused_setting_raises_the_queued_error(bench_pair):
    vb, bench = bench_pair
    vb.inject_fault("generator", "error")
    with pytest.raises(ExecutionError) as info:
        bench.generator.frequency_hz = 2.05e9
    assert info.value.code == -200 and info.value.instrument == "generator"
    assert "injected fault" in info.value.message


def test_unreachable_instrument_fails_open_and_leaves_the_rest_safe():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"TCPIP::127.0.0.1::{probe.getsockname()[1]}::SOCKET"
    with VirtualBench(RingModel(RingParams(noise=False, drift=False))) as vb:
        resources = {**vb.resources, "supply": dead}
        cfg = bench_config_from_resources(resources)
        with pytest.raises(InstrumentConnectionError, match=f"supply \\({dead}\\): cannot connect"):
            Bench.open(cfg, handle_signals=False)
        assert vb.generator.rf_on is False
