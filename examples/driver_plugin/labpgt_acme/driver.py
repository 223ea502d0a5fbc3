"""The Acme SG-6: a CW generator whose SCPI is the R&S SGS subset with its own serial format.

A driver is a subclass of the role's base class (`SignalGenerator`,
`SpectrumAnalyzer` or `BiasSupply`) with a ``family`` name; the controls
(frequency_hz, power_dbm, rf_on), limit checks, read-back, reconnect and safe
shutdown come from the base class. What a new model changes is usually its
set-up commands, the odd command spelling (a `Control` of a setting definition
with the family's SCPI, see `labpgt.instruments.setting_defs`) and how its *IDN? reads.
"""

from __future__ import annotations

from typing import ClassVar

from labpgt.instruments.signal_generator import SignalGenerator


class AcmeSG6(SignalGenerator):
    """Acme SG-6 (family acme_sg)."""

    family: ClassVar[str] = "acme_sg"
    # CW mode on open; the SG-6 has no modulation subsystem to switch off.
    setup_commands: ClassVar[tuple[str, ...]] = ("SOUR:FREQ:MODE CW",)
    # The SG-6 reports "<part number>/<serial>" in *IDN?, like the R&S sources it copies.
    serial_after: ClassVar[str] = "/"
