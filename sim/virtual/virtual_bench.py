"""VirtualBench: generator, analyzer and supply servers sharing one simulated ring."""

from __future__ import annotations

import ipaddress
import threading
from types import TracebackType

from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual.analyzer import ANALYZER_FAMILIES, SpectrumAnalyzerInstrument
from labpgt.sim.virtual.faults import FAULT_KINDS, FaultError, FaultPlan
from labpgt.sim.virtual.generator import GENERATOR_FAMILIES, SignalGeneratorInstrument
from labpgt.sim.virtual.instrument import VirtualInstrument
from labpgt.sim.virtual.server import LineHandler, PtyInstrumentServer, TcpInstrumentServer
from labpgt.sim.virtual.supply import SUPPLY_FAMILIES, BiasLogEntry, BiasSupplyInstrument

ROLES = ("generator", "analyzer", "supply")


class VirtualBenchError(ValueError):
    """A bad VirtualBench option: unknown family or role, non-loopback host without consent."""


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _family(table: dict, name: str, role: str):
    if name not in table:
        raise VirtualBenchError(
            f"{role}_family must be one of {', '.join(sorted(table))}, got {name!r}"
        )
    return table[name]


class VirtualBench:
    """Three SCPI servers (TCP sockets; the supply optionally on a pty) around one RingModel.

    `generator_family`, `analyzer_family` and `supply_family` name a virtual model:
    a driver family (keysight_mxg, rs_smb, keysight_x, rs_fsx, kepco_bop,
    keysight_e36xx) or another model of one (keysight_psg, rs_sgs, keysight_e3642a).
    The roles in `split_replies` answer each query of a compound message on its own
    line instead of one `;`-joined reply (what some instruments and simulators do).

    `start()` returns once every server is listening; `stop()` (or leaving the
    `with` block) disconnects clients and joins every thread.
    """

    def __init__(
        self,
        ring: RingModel | None = None,
        *,
        host: str = "127.0.0.1",
        realtime: bool = False,
        seed: int = 0,
        serial_supply: bool = False,
        generator_family: str = "keysight_mxg",
        analyzer_family: str = "keysight_x",
        supply_family: str = "kepco_bop",
        allow_remote: bool = False,
        coil_resistance_ohm: float = 4.0,
        split_replies: tuple[str, ...] = (),
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise VirtualBenchError(
                f"host {host!r} is not a loopback address; the virtual bench has no "
                "authentication, so it binds to 127.0.0.1 unless allow_remote=True"
            )
        generator_spec = _family(GENERATOR_FAMILIES, generator_family, "generator")
        analyzer_spec = _family(ANALYZER_FAMILIES, analyzer_family, "analyzer")
        supply_spec = _family(SUPPLY_FAMILIES, supply_family, "supply")
        self.ring = ring if ring is not None else RingModel(RingParams(), seed=seed)
        self.host = host
        self.realtime = realtime
        self.serial_supply = serial_supply
        self.supply_log: list[BiasLogEntry] = []
        self._stop_event = threading.Event()
        # One lock around the ring: the supply's set_bias and the analyzer's sweeps
        # come from different connection threads.
        self.ring_lock = threading.Lock()
        self.generator = SignalGeneratorInstrument(
            generator_spec, self._stop_event, realtime=realtime
        )
        self.supply = BiasSupplyInstrument(
            supply_spec,
            self.ring,
            self.ring_lock,
            coil_resistance_ohm=coil_resistance_ohm,
            log=self.supply_log,
            stop_event=self._stop_event,
        )
        self.analyzer = SpectrumAnalyzerInstrument(
            analyzer_spec,
            self.ring,
            self.ring_lock,
            self.generator.source_state,
            self.supply.applied_current_a,
            realtime=realtime,
            stop_event=self._stop_event,
        )
        unknown = sorted(set(split_replies) - set(ROLES))
        if unknown:
            raise VirtualBenchError(f"split_replies: unknown roles {unknown}; roles are {ROLES}")
        for role in split_replies:
            self.instruments[role].joined_replies = False
        self.faults = {role: FaultPlan() for role in ROLES}
        self._servers: dict[str, TcpInstrumentServer | PtyInstrumentServer] = {}
        self._started = False

    @property
    def instruments(self) -> dict[str, VirtualInstrument]:
        return {"generator": self.generator, "analyzer": self.analyzer, "supply": self.supply}

    def start(self) -> VirtualBench:
        """Start all servers; returns when each one accepts connections."""
        if self._started:
            return self
        try:
            for role, instrument in self.instruments.items():
                handler = LineHandler(instrument, self.faults[role])
                if role == "supply" and self.serial_supply:
                    server: TcpInstrumentServer | PtyInstrumentServer = PtyInstrumentServer(handler)
                else:
                    server = TcpInstrumentServer(handler, self.host)
                server.start()
                self._servers[role] = server
        except BaseException:
            self._stop_servers()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        """Disconnect all clients, stop all servers, release every socket, fd and thread."""
        self._stop_event.set()  # wakes any realtime sweep wait
        self._stop_servers()
        self._started = False

    def _stop_servers(self) -> None:
        while self._servers:
            _, server = self._servers.popitem()
            server.stop()

    @property
    def resources(self) -> dict[str, str]:
        """VISA resource string per role."""
        if not self._started:
            raise VirtualBenchError("the virtual bench is not running; call start() first")
        return {role: server.resource for role, server in self._servers.items()}

    @property
    def families(self) -> dict[str, str]:
        """The driver family of each role (what a bench file names)."""
        return {role: inst.family.name for role, inst in self.instruments.items()}

    @property
    def models(self) -> dict[str, str]:
        """The virtual model of each role (e.g. ``keysight_psg`` in family keysight_mxg)."""
        return {role: inst.family.key for role, inst in self.instruments.items()}

    def inject_fault(self, role: str, kind: str, count: int = 1) -> None:
        """Arm `count` faults of `kind` (drop|stall|error|garble) on one instrument."""
        if role not in ROLES:
            raise FaultError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if kind not in FAULT_KINDS:
            raise FaultError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        self.faults[role].arm(kind, count)

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
