"""Connection handling with replayed links: drop -> reconnect + restore, stall, exhaustion."""

from __future__ import annotations

import pytest
from labpgt.instruments.instrument_errors import InstrumentConnectionError, InstrumentTimeoutError
from labpgt.instruments.replay import DROP, STALL, ReplayTransport
from labpgt.instruments.signal_generator import KeysightMXG
from labpgt.instruments.transport import TransportClosed

RESOURCE = "TCPIP::10.0.0.7::5025::SOCKET"


def scripted_opener(*scripts):
    """Each (re)open returns the next scripted transport."""
    transports = [ReplayTransport(s, resource=RESOURCE) for s in scripts]
    opened = []

    def opener():
        if not transports:
            raise TransportClosed("connection refused")
        opened.append(transports.pop(0))
        return opened[-1]

    return opener, opened


@pytest.fixture(autouse=True)
def no_backoff(mocker):
    return mocker.patch("labpgt.instruments.connection.time.sleep")


def test_drop_reconnects_restores_settings_and_retries(no_backoff):
    opener, opened = scripted_opener(
        [
            ("SOUR:FREQ 2200000000;:SOUR:FREQ?;:SYST:ERR?", "2.2E9;" + '0,"No error"'),
            ("SOUR:POW?", DROP),
        ],
        [
            ("SOUR:FREQ:MODE CW", None),
            ("OUTP:MOD:STAT OFF", None),
            ("SOUR:FREQ 2200000000", None),  # the last setting, restored
            ("*OPC?", "1"),
            ("SOUR:POW?", "-20"),  # the interrupted query, retried
        ],
    )
    gen = KeysightMXG(opener)
    gen.conn.resource = RESOURCE
    gen.conn.open()
    gen.frequency_hz = 2.2e9
    assert gen.power_dbm == -20.0
    assert gen.conn.reconnects == 1
    assert opened[0].closed
    for t in opened:
        t.assert_done()


def test_unreachable_after_bounded_retries_names_instrument_and_resource(no_backoff):
    opener, _ = scripted_opener([("SOUR:POW?", DROP)])
    gen = KeysightMXG(opener, retries=3)
    gen.conn.resource = RESOURCE
    gen.conn.open()
    with pytest.raises(InstrumentConnectionError) as info:
        _ = gen.power_dbm
    message = str(info.value)
    assert message.startswith(f"generator ({RESOURCE}): unreachable after 3 reconnect attempts")
    assert "connection refused" in message
    # Backed off exponentially between attempts.
    assert [c.args[0] for c in no_backoff.call_args_list] == [0.05, 0.1, 0.2]


def test_stall_times_out_and_the_next_exchange_uses_a_fresh_session():
    opener, opened = scripted_opener(
        [("SOUR:POW?", STALL)],
        [
            ("SOUR:FREQ:MODE CW", None),
            ("OUTP:MOD:STAT OFF", None),
            ("*OPC?", "1"),
            ("SOUR:POW?", "-30"),
        ],
    )
    gen = KeysightMXG(opener, timeout_s=0.25)
    gen.conn.open()
    with pytest.raises(InstrumentTimeoutError, match=r"no reply to 'SOUR:POW\?' within 0.25 s"):
        _ = gen.power_dbm
    # A late reply to the stalled query must never be read as the next answer.
    assert gen.power_dbm == -30.0
    for t in opened:
        t.assert_done()


def test_first_connect_failure_is_a_connection_error():
    def opener():
        raise TransportClosed("cannot open TCPIP::1.2.3.4::5025::SOCKET: refused")

    gen = KeysightMXG(opener)
    with pytest.raises(InstrumentConnectionError, match="generator .*cannot connect"):
        gen.connect()
