"""Virtual microwave signal generator (Keysight MXG, R&S SMB): CW frequency, power, RF on/off."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from labpgt.sim.scpi import Call, ScpiError, one_param, parse_bool, parse_choice, parse_number
from labpgt.sim.virtual.instrument import Family, ScpiInstrument


@dataclass(frozen=True)
class GeneratorFamily(Family):
    """Identity and the physical output range of one generator model."""

    frequency_min_hz: float
    frequency_max_hz: float
    power_min_dbm: float
    power_max_dbm: float


GENERATOR_FAMILIES: dict[str, GeneratorFamily] = {
    "keysight_mxg": GeneratorFamily(
        name="keysight_mxg",
        identity="Keysight Technologies,N5183B,MY00000001,B.01.80",
        number_style="keysight",
        frequency_min_hz=9e3,
        frequency_max_hz=20e9,
        power_min_dbm=-130.0,
        power_max_dbm=19.0,
        options="520,1EA,UNT",
    ),
    "rs_smb": GeneratorFamily(
        name="rs_smb",
        identity="Rohde&Schwarz,SMB100A,1406.6000k03/180001,4.20.028.58",
        number_style="rs",
        frequency_min_hz=100e3,
        frequency_max_hz=20e9,
        power_min_dbm=-145.0,
        power_max_dbm=18.0,
        options="SMB-B120,SMB-K22",
    ),
}


RESET_FREQUENCY_HZ = 1e9
RESET_POWER_DBM = -30.0


@dataclass(frozen=True)
class SourceState:
    """What the generator puts out right now."""

    frequency_hz: float
    power_dbm: float
    rf_on: bool


class SignalGeneratorInstrument(ScpiInstrument):
    """CW source: `[SOUR]:FREQ[:CW]`, `[SOUR]:POW[:LEV][:IMM][:AMPL]`, `OUTP[:STAT]`."""

    family: GeneratorFamily

    def __init__(self, family: GeneratorFamily, stop_event: threading.Event | None = None):
        super().__init__(family, stop_event)

    def _build(self) -> None:
        add = self.table.add
        add(
            "[SOURce#]:FREQuency[:CW|:FIXed]",
            setter=self._set_frequency,
            getter=lambda call: self._number_query(call, self.frequency_hz, self._frequency_limits),
        )
        add(
            "[SOURce#]:FREQuency:MODE",
            setter=self._set_frequency_mode,
            getter=lambda call: "CW",
        )
        add(
            "[SOURce#]:POWer[:LEVel][:IMMediate][:AMPLitude]",
            setter=self._set_power,
            getter=lambda call: self._number_query(call, self.power_dbm, self._power_limits),
        )
        add(
            "OUTPut#[:STATe]",
            setter=self._set_rf,
            getter=lambda call: self.boolean(self.rf_on),
        )
        # Clients commonly switch modulation off first; this source is CW only.
        add(
            "OUTPut#:MODulation[:STATe]",
            setter=self._set_modulation,
            getter=lambda call: "0",
        )

    def _reset(self) -> None:
        self.frequency_hz = RESET_FREQUENCY_HZ
        self.power_dbm = RESET_POWER_DBM
        self.rf_on = False

    @property
    def _frequency_limits(self) -> tuple[float, float]:
        return self.family.frequency_min_hz, self.family.frequency_max_hz

    @property
    def _power_limits(self) -> tuple[float, float]:
        return self.family.power_min_dbm, self.family.power_max_dbm

    def _number_query(self, call: Call, value: float, limits: tuple[float, float]) -> str:
        keyword = one_param(call, required=False)
        if keyword is None:
            return self.number(value)
        choice = parse_choice(keyword, ("MINimum", "MAXimum"))
        return self.number(limits[0] if choice == "MINimum" else limits[1])

    def _set_frequency(self, call: Call) -> None:
        low, high = self._frequency_limits
        self.frequency_hz = parse_number(
            one_param(call), "HZ", minimum=low, maximum=high, default=RESET_FREQUENCY_HZ
        )

    def _set_frequency_mode(self, call: Call) -> None:
        parse_choice(one_param(call), ("CW", "FIXed"))

    def _set_power(self, call: Call) -> None:
        low, high = self._power_limits
        self.power_dbm = parse_number(
            one_param(call), "DBM", minimum=low, maximum=high, default=RESET_POWER_DBM
        )

    def _set_rf(self, call: Call) -> None:
        self.rf_on = parse_bool(one_param(call))

    def _set_modulation(self, call: Call) -> None:
        if parse_bool(one_param(call)):
            raise ScpiError(-221, "modulation is not available on this source")

    def source_state(self) -> SourceState:
        """A consistent snapshot of frequency, power and RF state (taken under the lock)."""
        with self.lock:
            return SourceState(self.frequency_hz, self.power_dbm, self.rf_on)
