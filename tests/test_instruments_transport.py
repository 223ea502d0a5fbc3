"""Transports over real loopback sockets: framing, split arrival, timeouts, pyvisa fallback."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest
from labpgt.instruments.bench import Bench, bench_config_from_resources
from labpgt.instruments.replay import ieee_block
from labpgt.instruments.spectrum_analyzer import KeysightX
from labpgt.instruments.transport import (
    SocketTransport,
    TransportClosed,
    TransportGarbled,
    TransportTimeout,
    VisaTransport,
    acquire_resource_manager,
    release_resource_manager,
)
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench


class ScriptedPeer:
    """A loopback TCP peer: answers each received line with scripted byte pieces.

    Each reply is a list of (delay_s, bytes) pieces, sent with a pause before each,
    so one reply can arrive split across several segments. A `threading.Event` in place
    of the delay holds the piece back until the test sets it.
    """

    def __init__(self, replies: list[list[tuple[float | threading.Event, bytes]]]) -> None:
        self.replies = replies
        self.received: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.resource = f"TCPIP::127.0.0.1::{self._server.getsockname()[1]}::SOCKET"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        with conn:
            for reply in self.replies:
                while b"\n" not in buffer:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buffer += data
                line, buffer = buffer.split(b"\n", 1)
                self.received.append(line)
                for delay_s, piece in reply:
                    if isinstance(delay_s, threading.Event):
                        delay_s.wait(10.0)
                    else:
                        time.sleep(delay_s)
                    if piece == b"<close>":
                        return
                    conn.sendall(piece)
            conn.recv(4096)  # hold the connection until the client closes it

    def close(self) -> None:
        self._server.close()
        self._thread.join(5)


@pytest.fixture
def rm():
    manager = acquire_resource_manager("@py")
    yield manager
    release_resource_manager(manager)


def test_socket_transport_is_chosen_for_pyvisa_py_raw_sockets(rm):
    peer = ScriptedPeer([[(0.0, b"1\n")]])
    transport = SocketTransport.open(rm, peer.resource, 5.0)
    try:
        assert type(transport) is SocketTransport and transport.nodelay
        transport.write("*OPC?")
        assert transport.read() == "1"
        assert peer.received == [b"*OPC?"]
    finally:
        transport.close()
        peer.close()


def test_block_split_across_segments_with_newlines_inside(rm):
    values = np.full(1001, -90.0, dtype="<f4")
    values[0] = struct.unpack("<f", b"\x0a\x0a\xb4\xc2")[0]  # "\n" bytes inside the data
    block = ieee_block(values.tolist())
    reply = b"1;" + block
    pieces = [(0.0, reply[:1]), (0.02, reply[1:5]), (0.02, reply[5:2000]), (0.02, reply[2000:])]
    peer = ScriptedPeer([pieces, [(0.0, b"+1;" + ieee_block([-1.0, -2.0]))]])
    transport = SocketTransport.open(rm, peer.resource, 5.0)
    try:
        transport.write("INIT;*OPC?;:TRAC:DATA? TRACE1")
        assert transport.read_exact(2) == b"1;"
        np.testing.assert_array_equal(transport.read_block_float32(), values.astype(np.float64))
        transport.write("INIT;*OPC?;:TRAC:DATA? TRACE1")
        assert transport.read_exact(2) == b"+1"
        assert transport.read_exact(1) == b";"
        np.testing.assert_array_equal(transport.read_block_float32(), [-1.0, -2.0])
    finally:
        transport.close()
        peer.close()


def test_a_timed_out_wait_keeps_the_bytes_that_came(rm):
    # The rest of the block is held back until the wait has timed out: with a fixed
    # delay (0.4 s) a test thread stalled 0.3 s on a loaded machine would see it arrive.
    rest = threading.Event()
    peer = ScriptedPeer([[(0.0, b"1;#14\x00\x00"), (rest, b"\x80\xbf\n")]])
    transport = SocketTransport.open(rm, peer.resource, 5.0)
    try:
        transport.write("X?")
        assert transport.read_exact(2) == b"1;"
        transport.timeout_s = 0.1
        with pytest.raises(TransportTimeout):
            transport.read_block_float32()  # half the block is in, the rest comes later
        transport.timeout_s = 2.0
        assert not transport.peer_closed()
        rest.set()
        np.testing.assert_array_equal(transport.read_block_float32(), [-1.0])
    finally:
        transport.close()
        peer.close()


def test_garbled_header_and_closed_peer(rm):
    peer = ScriptedPeer([[(0.0, b"?42004xxxx\n")], [(0.0, b"<close>")]])
    transport = SocketTransport.open(rm, peer.resource, 5.0)
    try:
        transport.write("TRAC:DATA? TRACE1")
        with pytest.raises(TransportGarbled, match="block header"):
            transport.read_block_float32()
        transport.read()  # the rest of that line
        transport.write("X?")
        with pytest.raises(TransportClosed):
            transport.read()
        assert transport.peer_closed()
    finally:
        transport.close()
        peer.close()


def test_a_trace_through_pyvisa_own_io_matches_the_socket_transport():
    # The pyvisa I/O path (vendor VISA, serial) stays correct for raw sockets too.
    ring = RingModel(RingParams(noise=False, drift=False))
    with VirtualBench(ring) as vb:
        cfg = bench_config_from_resources(vb.resources, families=vb.families)
        with Bench.open(cfg, handle_signals=False) as bench:
            bench.generator.set_cw(2.1e9, -10.0)
            bench.enable_outputs()
            bench.supply.current_a = 1.5
            assert isinstance(bench.analyzer.conn._transport, SocketTransport)
            _, fast = bench.analyzer.read_trace()
            resource = vb.resources["analyzer"]
            sa = KeysightX(lambda: VisaTransport(bench.rm, resource, 5.0), timeout_s=5.0)
            sa.connect()
            try:
                assert type(sa.conn._transport) is VisaTransport
                d = cfg.analyzer_defaults
                sa.configure(d.center_hz, d.span_hz, d.rbw_hz, d.points)
                _, slow = sa.read_trace()
            finally:
                sa.close()
    np.testing.assert_allclose(slow, fast, atol=1e-4)


def _answer_twice_then_see_the_hang_up(rm, expected_type: type) -> None:
    """Two exchanges with a peer that hangs up after the second: an idle live link
    never reads as closed (nor blocks the check), the hang-up does, unread."""
    peer = ScriptedPeer([[(0.0, b"1\n")], [(0.0, b"2\n"), (0.0, b"<close>")]])
    transport = SocketTransport.open(rm, peer.resource, 5.0)
    try:
        assert type(transport) is expected_type
        assert not transport.peer_closed()
        transport.write("A?")
        assert transport.read() == "1"
        assert not transport.peer_closed()
        transport.write("B?")
        assert transport.read() == "2"
        deadline = time.monotonic() + 5.0
        while not transport.peer_closed():
            assert time.monotonic() < deadline, "the hang-up was never seen"
            time.sleep(0.005)
    finally:
        transport.close()
        peer.close()


def test_a_peer_that_hangs_up_between_exchanges_is_seen_before_the_next_write(rm):
    # The check that runs before every exchange.
    _answer_twice_then_see_the_hang_up(rm, SocketTransport)


def test_without_poll_and_dontwait_raw_sockets_use_pyvisa_io_and_still_see_a_hang_up(
    rm, monkeypatch
):
    # Windows has neither select.poll nor socket.MSG_DONTWAIT: the platform facts are
    # switched off here; everything else runs as it would there.
    import labpgt.instruments.transport as transport_module

    monkeypatch.setattr(transport_module, "_HAS_POLL", False)
    monkeypatch.setattr(transport_module, "_HAS_DONTWAIT", False)
    monkeypatch.setattr(transport_module, "_PEEK_NOWAIT", int(socket.MSG_PEEK))
    _answer_twice_then_see_the_hang_up(rm, VisaTransport)
