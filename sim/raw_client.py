"""A bare line-based SCPI client over a raw socket (tests and benchmarks of the virtual bench).

It does what any program does at the lowest level: open a TCP connection to the
instrument's port (one connection is one session on the instrument), write
newline-terminated messages, read lines and IEEE 488.2 definite-length blocks
by their byte count. No VISA layer, no driver: the floor of what an exchange costs.
"""

from __future__ import annotations

import socket


def socket_address(resource: str) -> tuple[str, int]:
    """("127.0.0.1", port) of a ``TCPIP::host::port::SOCKET`` resource."""
    parts = resource.split("::")
    if len(parts) != 4 or parts[0] != "TCPIP" or parts[3] != "SOCKET":
        raise ValueError(f"not a raw-socket resource: {resource!r}")
    return parts[1], int(parts[2])


class RawClient:
    """One connection = one session on the instrument."""

    def __init__(self, resource: str, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(socket_address(resource), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()

    def send(self, message: str | bytes) -> None:
        data = message.encode("ascii") if isinstance(message, str) else message
        self.sock.sendall(data if data.endswith(b"\n") else data + b"\n")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("instrument closed the connection")
        self._buffer += chunk

    def read_line(self) -> str:
        while b"\n" not in self._buffer:
            self._fill()
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line.decode("ascii")

    def read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read_block(self) -> bytes:
        """An IEEE 488.2 definite-length block (``#<n><length><bytes>``) and its newline."""
        head = self.read_exact(2)
        if head[:1] != b"#":
            raise ValueError(f"no block header: {head!r}")
        digits = int(head[1:2])
        length = int(self.read_exact(digits))
        payload = self.read_exact(length)
        if self.read_exact(1) != b"\n":
            raise ValueError("block not followed by a newline")
        return payload

    def ask(self, message: str) -> str:
        self.send(message)
        return self.read_line()

    def errors(self) -> list[str]:
        """Every entry of this session's error queue (read one by one until 0)."""
        entries = []
        for _ in range(200):
            entry = self.ask("SYST:ERR?")
            if entry.startswith(("+0,", "0,")):
                return entries
            entries.append(entry)
        raise AssertionError("error queue did not empty")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
