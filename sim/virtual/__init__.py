"""The virtual bench: SCPI servers for generator, analyzer and supply around one ring.

Clients reach it exactly as they reach real instruments, through VISA resource
strings (``TCPIP::127.0.0.1::<port>::SOCKET``, ``ASRL/dev/pts/N::INSTR``).
"""

from labpgt.sim.virtual.faults import FAULT_KINDS, FaultError
from labpgt.sim.virtual.virtual_bench import ROLES, VirtualBench, VirtualBenchError, is_loopback

__all__ = [
    "FAULT_KINDS",
    "ROLES",
    "FaultError",
    "VirtualBench",
    "VirtualBenchError",
    "is_loopback",
]
