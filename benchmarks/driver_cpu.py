"""Driver CPU per settings exchange, with no socket: a replayed conversation (ReplayTransport).

What the drivers' own Python costs per exchange, apart from the link and the server
(which dominate `loop_overhead.py` and make its figures swing with the machine's load):
`SignalGenerator.set_cw` (frequency and power, read-backs, error queue) and a bias
setpoint set with the supply's output off (one `CURR x;:CURR?;:SYST:ERR?`). Prints the
median over 7 rounds of 3000 exchanges of process time per exchange.

Usage: .venv/bin/python benchmarks/driver_cpu.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from labpgt.instruments.bias_supply import KepcoBOP
from labpgt.instruments.limits import Limits
from labpgt.instruments.replay import replay_driver
from labpgt.instruments.signal_generator import KeysightMXG

EXCHANGES = 3000
ROUNDS = 7
NO_ERROR = '+0,"No error"'


def _generator_script() -> list[tuple[str, str]]:
    script = []
    for i in range(EXCHANGES):
        f_hz = 2.1e9 + i
        script.append(
            (
                f"SOUR:FREQ {f_hz:.12g};:SOUR:POW -10;:SOUR:FREQ?;:SOUR:POW?;:SYST:ERR?",
                f"{f_hz:+.15E};-1.000000000000000E+01;{NO_ERROR}",
            )
        )
    return script


def _supply_script() -> list[tuple[str, str]]:
    script = []
    for i in range(EXCHANGES):
        current_a = 0.001 * (i % 1000)
        script.append((f"CURR {current_a:.12g};:CURR?;:SYST:ERR?", f"{current_a:+.15E};{NO_ERROR}"))
    return script


def _per_exchange_us(cls: type, script: list, body: Callable[[object], None]) -> float:
    instrument, _ = replay_driver(
        cls, script, limits=Limits(bias_min_a=-1.0), compound_messages=True
    )
    start_s = time.process_time()
    body(instrument)
    return (time.process_time() - start_s) / EXCHANGES * 1e6


def _set_cw(generator) -> None:
    for i in range(EXCHANGES):
        generator.set_cw(2.1e9 + i, -10.0)


def _set_bias(supply) -> None:
    for i in range(EXCHANGES):
        supply.current_a = 0.001 * (i % 1000)


def main() -> None:
    cw, bias = [], []
    for _ in range(ROUNDS):
        cw.append(_per_exchange_us(KeysightMXG, _generator_script(), _set_cw))
        bias.append(_per_exchange_us(KepcoBOP, _supply_script(), _set_bias))
    print(
        f"driver CPU per exchange (median of {ROUNDS} x {EXCHANGES}): "
        f"set_cw {statistics.median(cw):.1f} us, bias setpoint (output off) "
        f"{statistics.median(bias):.1f} us"
    )


if __name__ == "__main__":
    main()
