"""Transports for the virtual instruments: raw TCP sockets (LXI port-5025 style) and a pty.

Both read newline-terminated program messages (a trailing CR is dropped), run
them through the instrument, apply armed faults, and write the reply back.
Every TCP connection is its own IEEE 488.2 session (error queue, status
registers); the pty is one session for as long as the server runs. Nothing a
client sends can stop a server or reach another session: malformed input
becomes an entry in its own session's error queue, a vanished client ends only
its own connection thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import tty

from labpgt.sim.ieee488 import Session
from labpgt.sim.virtual.faults import FaultPlan, garble
from labpgt.sim.virtual.instrument import VirtualInstrument

log = logging.getLogger(__name__)

# A line longer than this is junk (the longest real command is a few hundred bytes).
MAX_LINE_BYTES = 1 << 20


class LineHandler:
    """Turns one received line into (reply or None, close connection?) with faults applied."""

    def __init__(self, instrument: VirtualInstrument, faults: FaultPlan) -> None:
        self.instrument = instrument
        self.faults = faults

    def handle(self, raw: bytes, session: Session | None = None) -> tuple[bytes | None, bool]:
        line = raw.rstrip(b"\r").decode("latin-1")
        if not line.strip():
            return None, False
        if self.faults.take("drop"):
            return None, True
        refuse = self.faults.take("error")
        if refuse:
            self.instrument.push_error(-200, "injected fault: settings refused", session)
        reply = self.instrument.execute(line, session=session, refuse_settings=refuse)
        if reply is None:
            return None, False
        if self.faults.take("stall"):
            return None, False
        if self.faults.take("garble"):
            reply = garble(reply)
        return reply, False

    def feed(self, buffer: LineBuffer, data: bytes, session: Session | None = None) -> list[bytes]:
        """Append `data` and cut complete lines off the front of `buffer`.

        A line longer than `MAX_LINE_BYTES` is thrown away whole, up to and with
        its newline, and costs one -363 (Input buffer overrun) in `session`.
        """
        buffer += data
        lines = []
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            if buffer.discarding or end > MAX_LINE_BYTES:
                if not buffer.discarding:
                    self._overrun(session)
                buffer.discarding = False
            else:
                lines.append(bytes(buffer[:end]))
            del buffer[: end + 1]
        if len(buffer) > MAX_LINE_BYTES:
            buffer.clear()
            if not buffer.discarding:
                self._overrun(session)
            buffer.discarding = True
        return lines

    def _overrun(self, session: Session | None) -> None:
        self.instrument.push_error(-363, "program message too long, discarded", session)


class LineBuffer(bytearray):
    """Bytes received and not yet a whole line; `discarding`: inside an overlong line."""

    discarding = False


class TcpInstrumentServer:
    """One listening socket; one thread per client connection."""

    def __init__(self, handler: LineHandler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._closing = False
        self._accept_thread: threading.Thread | None = None
        self.connections_served = 0

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        return self._sock.getsockname()[1]

    @property
    def resource(self) -> str:
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        """Bind and listen before returning: a client may connect as soon as this returns."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
            sock.listen(32)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        name = self.handler.instrument.family.name
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"vbench-{name}-accept", daemon=True
        )
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                thread = threading.Thread(
                    target=self._serve, args=(conn,), name=f"{self._accept_thread.name}-client"
                )
                thread.daemon = True
                self._clients[conn] = thread
                self.connections_served += 1
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = LineBuffer()
        session = self.handler.instrument.open_session(f"tcp{conn.fileno()}")
        try:
            # Replies go out at once; Nagle would hold the last segment for the client's ACK.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for line in self.handler.feed(buffer, data, session):
                    reply, close = self.handler.handle(line, session)
                    if close:
                        return
                    if reply is not None:
                        conn.sendall(reply)
        except OSError:
            return  # the client went away mid-reply: its problem, not the server's
        except Exception:
            log.exception("virtual instrument connection failed")
        finally:
            with self._lock:
                self._clients.pop(conn, None)
            conn.close()

    def stop(self) -> None:
        """Stop accepting, disconnect every client, join all threads, close all sockets."""
        with self._lock:
            self._closing = True
            clients = list(self._clients.items())
        self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        for conn, _ in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes recv/sendall in the client thread
        for _, thread in clients:
            thread.join()
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()


class PtyInstrumentServer:
    """The instrument behind a pseudo-terminal, as a serial device (``ASRL<pty>::INSTR``)."""

    def __init__(self, handler: LineHandler) -> None:
        self.handler = handler
        self._master = -1
        self._slave = -1
        self.path = ""
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    @property
    def resource(self) -> str:
        return f"ASRL{self.path}::INSTR"

    def start(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw: no echo, no CR/LF translation, no line editing - bytes pass as on a serial line.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        name = self.handler.instrument.family.name
        self._thread = threading.Thread(target=self._loop, name=f"vbench-{name}-pty", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        buffer = LineBuffer()
        session: Session | None = None  # opened with the first bytes a client sends
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if session is None:
                session = self.handler.instrument.open_session("serial")
            for line in self.handler.feed(buffer, data, session):
                try:
                    reply, dropped = self.handler.handle(line, session)
                except Exception:
                    log.exception("virtual serial instrument failed on a line")
                    continue
                if dropped:
                    # A serial line cannot be hung up; a drop loses the command and any reply.
                    continue
                if reply is not None and not self._write(reply):
                    return

    def _write(self, data: bytes) -> bool:
        """Write all of `data`; False if the bench is stopping."""
        view = memoryview(data)
        while view:
            ready_r, ready_w, _ = select.select([self._wake_r], [self._master], [])
            if ready_r:
                return False
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                continue
            except OSError:
                return False
            view = view[written:]
        return True

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
