"""Microwave signal generator: CW frequency, power and RF output.

Families: "keysight_mxg" (Keysight/Agilent MXG/PSG: N5183B, E8257D) and
"rs_smb" (Rohde & Schwarz SMB100A/B, SGS100A). Both speak `SOUR:FREQ`,
`SOUR:POW`, `OUTP:STAT`; they differ in identity format and setup.
"""

from __future__ import annotations

from typing import ClassVar

from labpgt.instruments.scpi import Control, ScpiInstrument
from labpgt.instruments.setting_defs import DRIVE_FREQUENCY, DRIVE_POWER, RF_ON


class SignalGenerator(ScpiInstrument):
    """A CW microwave source with hard frequency and power limits."""

    role: ClassVar[str] = "generator"

    families: ClassVar[dict[str, type[ScpiInstrument]]] = {}

    frequency_hz = Control(DRIVE_FREQUENCY)
    power_dbm = Control(DRIVE_POWER)
    # Declaration order is restore order: frequency and power are re-applied before the
    # output state after a reconnect, so RF never comes back at a stale setting.
    rf_on = Control(RF_ON)

    def set_cw(self, frequency_hz: float, power_dbm: float) -> tuple[float, float]:
        """Frequency and power in one exchange; returns what the generator took (Hz, dBm).

        Both limits are checked before anything is sent; then
        `SOUR:FREQ f;:SOUR:POW p;:SOUR:FREQ?;:SOUR:POW?;:SYST:ERR?` sets, reads back
        and raises a queued error as a typed error, as two property sets would.
        """
        taken = self.set_controls(frequency_hz=frequency_hz, power_dbm=power_dbm)
        return taken["frequency_hz"], taken["power_dbm"]

    def safe_off(self) -> None:
        """RF output off."""
        self.rf_on = False


class KeysightMXG(SignalGenerator):
    """Keysight/Agilent MXG and PSG (N5183B, E8257D)."""

    family: ClassVar[str] = "keysight_mxg"
    # CW mode, and modulation off so the output is a clean carrier.
    setup_commands: ClassVar[tuple[str, ...]] = ("SOUR:FREQ:MODE CW", "OUTP:MOD:STAT OFF")


class RohdeSchwarzSMB(SignalGenerator):
    """Rohde & Schwarz SMB100A/B and SGS100A."""

    family: ClassVar[str] = "rs_smb"
    setup_commands: ClassVar[tuple[str, ...]] = ("SOUR:FREQ:MODE CW",)
    serial_after: ClassVar[str] = "/"  # "<order number>/<serial>", e.g. "1406.6000k03/102345"


GENERATOR_FAMILIES: dict[str, type[ScpiInstrument]] = SignalGenerator.families
GENERATOR_FAMILIES.update(
    {KeysightMXG.family: KeysightMXG, RohdeSchwarzSMB.family: RohdeSchwarzSMB}
)
