"""Virtual microwave signal generators: CW frequency, power, RF on/off, phase, references.

Models (the key `VirtualBench(generator_family=...)` takes, and the driver family):

* ``keysight_mxg``: Keysight N5183B MXG (family keysight_mxg), options 520/1EA/UNT
* ``keysight_psg``: Agilent E8257D PSG (family keysight_mxg), options 520/1E1/UNT;
  also answers ``DIAG:CPU:INFO:OPT:DET?``, which the MXG does not know
* ``rs_smb``: R&S SMB100A (family rs_smb)
* ``rs_sgs``: R&S SGS100A (family rs_smb): no AM/FM/PM, but IQ and LO settings

The output is a clean carrier: modulation states read 0 and switching one on
is refused with -221 (the ring model has no modulated drive). Phase,
reference-oscillator and similar settings are stored and read back; they do
not change what the ring sees. The MXG, PSG and SMB run their step sweeps and
lists (`labpgt.sim.virtual.generator_sweep`): while one runs, the output is the
point whose dwell covers the time asked for (`source_state(at_s)`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from labpgt.sim.scpi_parser import Call, ScpiError, one_param, parse_bool, parse_choice
from labpgt.sim.virtual.generator_sweep import KeysightSweep, RsSweep, SweepControl
from labpgt.sim.virtual.instrument import Family, StoredRow, VirtualInstrument


@dataclass(frozen=True)
class GeneratorFamily(Family):
    """Identity and the physical output range of one generator model."""

    frequency_range_hz: tuple[float, float]
    power_range_dbm: tuple[float, float]


_IDENTITIES = {
    "keysight_mxg": "Keysight Technologies,N5183B,MY00000001,B.01.80",
    "keysight_psg": "Agilent Technologies, E8257D, US00000004, C.06.28",
    "rs_smb": "Rohde&Schwarz,SMB100A,1406.6000k03/180001,4.20.028.58",
    "rs_sgs": "Rohde&Schwarz,SGS100A,1416.0505k02/110005,4.2.76.0-4.30.046.295",
}
_MODELS = {  # model: driver family, number style, frequency range Hz, power range dBm, *OPT?
    "keysight_mxg": ("keysight_mxg", "keysight", (9e3, 20e9), (-130.0, 19.0), "520,1EA,UNT"),
    "keysight_psg": ("keysight_mxg", "keysight", (250e3, 20e9), (-135.0, 10.0), "520,1E1,UNT"),
    "rs_smb": ("rs_smb", "rs", (100e3, 20e9), (-145.0, 18.0), "SMB-B120,SMB-K22"),
    "rs_sgs": ("rs_smb", "rs", (1e6, 20e9), (-120.0, 22.0), "SGS-B26,SGS-K22"),
}
GENERATOR_FAMILIES: dict[str, GeneratorFamily] = {
    model: GeneratorFamily(
        name,
        _IDENTITIES[model],
        style,  # type: ignore[arg-type]
        frequency_range_hz,
        power_range_dbm,
        model="" if model == name else model,
        options=options,
    )
    for model, (name, style, frequency_range_hz, power_range_dbm, options) in _MODELS.items()
}


_IO = ("INTernal", "EXTernal")
_POLARITY = ("NORMal", "INVerted")
_KEYSIGHT_SOURCE = (
    ("[SOURce]:PHASe[:ADJust]", "phase", 0.0, (-360.0, 360.0)),  # radians (MXG); PSG the same
    ("[SOURce]:ROSCillator:SOURce:AUTO", "ref_auto", True, None),
    *(
        (f"[SOURce]:{node}[:STATe]", f"{node.lower()}_on", False, "off")
        for node in ("AM", "FM", "PM", "PULM")
    ),
)
# The PSG's sweep centre is stored, not coupled to start/stop (the sweep runs start to stop).
_PSG = (("[SOURce]:FREQuency:CENTer", "sweep_center_hz", 1.5e9, "frequency"),)
# Modulation and low-frequency-output configuration of the PSG (stored; states stay off).
_PSG_MODULATION = (
    ("[SOURce]:AM:DEPTh", "am_depth_percent", 0.1, (0.0, 100.0)),
    ("[SOURce]:AM:SOURce", "am_source", "INT", ("INTernal", "INTernal2", "EXTernal", "EXTernal2")),
    ("[SOURce]:AM:INTernal:FREQuency", "am_rate_hz", 400.0, None),
    (
        "[SOURce]:AM:INTernal:FUNCtion:SHAPe",
        "am_shape",
        "SINE",
        ("SINE", "TRIangle", "SQUare", "RAMP", "NOISe", "DUALsine", "SWEPtsine"),
    ),
    ("[SOURce]:PULM:SOURce", "pulm_source", "INT", ("INTernal", "EXTernal", "SCALar")),
    (
        "[SOURce]:PULM:SOURce:INTernal",
        "pulm_input",
        "SQU",
        ("SQUare", "FRUN", "TRIGgered", "DOUBlet", "GATEd"),
    ),
    ("[SOURce]:PULM:INTernal:FREQuency", "pulm_rate_hz", 400.0, None),
    ("[SOURce]:LFOutput:AMPLitude", "lf_amplitude_v", 0.0, None),
    (
        "[SOURce]:LFOutput:SOURce",
        "lf_source",
        "INT",
        ("INTernal", "INTernal2", "FUNCtion", "FUNCtion2"),
    ),
    ("[SOURce]:LFOutput:STATe", "lf_on", False, None),
)
_RS_SOURCE = (
    ("[SOURce#]:PHASe", "phase", 0.0, (-720.0, 720.0)),
    ("[SOURce]:ROSCillator:SOURce", "ref_source", "INT", _IO),
    ("[SOURce]:PULM:STATe", "pulm_on", False, "off"),
)
# The SMB's modulation states (its sweeps and list: `generator_sweep.RsSweep`).
_SMB = tuple(
    (f"[SOURce]:{node}:STATe", f"{node.lower()}_on", False, "off") for node in ("AM", "FM", "PM")
)
_REFERENCES = ("10MHZ", "100MHZ", "1000MHZ")
_SGS = (
    ("[SOURce]:LOSCillator:SOURce", "lo_source", "INT", _IO),
    ("[SOURce]:IQ:STATe", "iq_on", False, "off"),
    ("CONNector:REFLo:OUTPut", "ref_lo_out", "OFF", ("REF", "LO", "OFF")),
    ("[SOURce]:ROSCillator:OUTPut:FREQuency", "ref_out", "10MHZ", _REFERENCES),
    ("[SOURce]:ROSCillator:EXTernal:FREQuency", "ref_ext", "10MHZ", _REFERENCES),
    ("[SOURce]:OPMode", "opmode", "NORM", ("NORMal", "BBBYpass")),
    # IQ impairments and pulse modulation configuration (stored; the states stay off).
    ("[SOURce]:IQ:IMPairment[:STATe]", "iq_impairment_on", False, None),
    ("[SOURce]:IQ:IMPairment:LEAKage:I", "iq_leak_i", 0.0, (-10, 10)),
    ("[SOURce]:IQ:IMPairment:LEAKage:Q", "iq_leak_q", 0.0, (-10, 10)),
    ("[SOURce]:IQ:IMPairment:IQRatio", "iq_ratio", 0.0, (-1, 1)),
    ("[SOURce]:IQ:IMPairment:QUADrature", "iq_quad", 0.0, (-8, 8)),
    (
        "CONNector:TRIGger:OMODe",
        "trigger_out",
        "SVAL",
        ("SVALid", "SNValid", "PVOut", "PETrigger", "PEMSource"),
    ),
    ("[SOURce]:PULM:SOURce", "pulm_source", "INT", _IO),
    ("[SOURce]:PULM:DELay", "pulm_delay_s", 0.0, (0.0, 100.0)),
    ("[SOURce]:PULM:DOUBle:DELay", "pulm_double_delay_s", 1e-6, (40e-9, 100.0)),
    ("[SOURce]:PULM:DOUBle:WIDTh", "pulm_double_width_s", 1e-6, (20e-9, 100.0)),
    ("[SOURce]:PULM:PERiod", "pulm_period_s", 10e-6, (100e-9, 100.0)),
    ("[SOURce]:PULM:WIDTh", "pulm_width_s", 1e-6, (20e-9, 100.0)),
    ("[SOURce]:PULM:MODE", "pulm_mode", "SING", ("SINGle", "DOUBle")),
    ("[SOURce]:PULM:POLarity", "pulm_polarity", "NORM", _POLARITY),
    ("[SOURce]:PULM:TRIGger:EXTernal:GATE:POLarity", "pulm_gate", "NORM", _POLARITY),
    ("[SOURce]:PULM:TRIGger:EXTernal:IMPedance", "pulm_impedance", "G50", ("G50", "G10K")),
    ("[SOURce]:PULM:TRIGger:EXTernal:SLOPe", "pulm_slope", "POS", ("NEGative", "POSitive")),
    ("[SOURce]:PULM:TRIGger:MODE", "pulm_trigger", "AUTO", ("AUTO", "EXTernal", "EGATe")),
)
_FAMILY_STORED: dict[str, tuple[StoredRow, ...]] = {
    "keysight_mxg": _KEYSIGHT_SOURCE,
    "rs_smb": _RS_SOURCE,
}
"""The settings each driver family's models store and read back (no effect on the ring)."""
_MODEL_STORED: dict[str, tuple[StoredRow, ...]] = {
    "keysight_psg": (*_PSG, *_PSG_MODULATION),
    "rs_smb": _SMB,
    "rs_sgs": _SGS,
}
"""What one model stores on top of its family's."""


RESET_FREQUENCY_HZ = 1e9
RESET_POWER_DBM = -30.0


@dataclass(frozen=True)
class SourceState:
    """What the generator puts out right now."""

    frequency_hz: float
    power_dbm: float
    rf_on: bool


class SignalGeneratorInstrument(VirtualInstrument):
    """CW source: `[SOUR]:FREQ[:CW]`, `[SOUR]:POW[:LEV][:IMM][:AMPL]`, `OUTP[:STAT]`."""

    family: GeneratorFamily

    def __init__(
        self,
        family: GeneratorFamily,
        stop_event: threading.Event | None = None,
        *,
        realtime: bool = False,
    ) -> None:
        self.realtime = realtime
        """True: a single sweep takes its dwell times and `*OPC?` waits for its end."""
        self.sweep: SweepControl | None = None
        if family.key in ("keysight_mxg", "keysight_psg"):
            self.sweep = KeysightSweep(self)
        elif family.key == "rs_smb":
            self.sweep = RsSweep(self)
        super().__init__(family, stop_event)

    def _build(self) -> None:
        add = self.table.add
        self.add_number(
            "[SOURce#]:FREQuency[:CW|:FIXed]",
            "frequency_hz",
            "HZ",
            "frequency_range_hz",
            default=RESET_FREQUENCY_HZ,
            then=self._cw_changed,
            reading=self._frequency_reading,
        )
        if self.sweep is not None:
            self.sweep.build()
        else:
            add("[SOURce#]:FREQuency:MODE", setter=self._set_cw_mode, getter=lambda call: "CW")
        self.add_number(
            "[SOURce#]:POWer[:LEVel][:IMMediate][:AMPLitude]",
            "power_dbm",
            "DBM",
            "power_range_dbm",
            default=RESET_POWER_DBM,
            then=self._cw_changed,
        )
        add("OUTPut#[:STATe]", setter=self._set_rf, getter=lambda call: self.boolean(self.rf_on))
        # Clients commonly switch modulation off first; this source is CW only.
        add("OUTPut#:MODulation[:STATe]", setter=self._set_modulation, getter=lambda call: "0")
        if self.family.name == "keysight_mxg":
            add("[SOURce]:ROSCillator:SOURce", getter=lambda call: "INT")
        if self.family.key == "keysight_psg":
            add("DIAGnostic:CPU:INFOrmation:OPTions:DETail", getter=self._psg_options_detail)
        rows = _FAMILY_STORED[self.family.name] + _MODEL_STORED.get(self.family.key, ())
        self.add_settings(
            rows, {"frequency": self.frequency_range_hz, "power": self.power_range_dbm}
        )

    def _reset(self) -> None:
        self.frequency_hz = RESET_FREQUENCY_HZ
        self.power_dbm = RESET_POWER_DBM
        self.rf_on = False
        if self.sweep is not None:
            self.sweep.reset()  # FREQ:MODE CW (FIX), no sweep armed or running

    @property
    def frequency_range_hz(self) -> tuple[float, float]:
        return self.family.frequency_range_hz

    @property
    def power_range_dbm(self) -> tuple[float, float]:
        return self.family.power_range_dbm

    def _set_cw_mode(self, call: Call) -> None:
        """A model without sweep or list (SGS100A): CW or FIXed only."""
        parse_choice(one_param(call), ("CW", "FIXed"))

    def _cw_changed(self) -> None:
        """A sweep that uses the CW frequency or power (at its fixed points) is built again."""
        if self.sweep is not None and self.sweep.run is not None:
            self.sweep.restart()

    def _frequency_reading(self) -> float:
        reading = self.sweep.frequency_reading() if self.sweep is not None else None
        return self.frequency_hz if reading is None else reading

    def _set_rf(self, call: Call) -> None:
        self.rf_on = parse_bool(one_param(call))

    def _psg_options_detail(self, call: Call) -> str:
        """The PSG's option list with descriptions (what `DIAG:CPU:INFO:OPT:DET?` answers)."""
        text = {"520": "20 GHz frequency range", "1E1": "step attenuator", "UNT": "AM/FM/PM"}
        return (
            '"'
            + ", ".join(f"{o} {text.get(o, '')}".strip() for o in self.family.options.split(","))
            + '"'
        )

    def _set_modulation(self, call: Call) -> None:
        if parse_bool(one_param(call)):
            raise ScpiError(-221, "modulation is not available on this source")

    def source_state(self, at_s: float | None = None) -> SourceState:
        """What the output is at `at_s` (`time.monotonic()`; default now): the CW setting,
        or the sweep's or list's point whose dwell covers that time. Taken under the lock."""
        with self.lock:
            point = None
            if self.sweep is not None:
                point = self.sweep.output_at(time.monotonic() if at_s is None else at_s)
            if point is None:
                return SourceState(self.frequency_hz, self.power_dbm, self.rf_on)
            return SourceState(point[0], point[1], self.rf_on)

    def pending_until_s(self) -> float:
        """When the running single sweep or list ends (0.0: none runs)."""
        return 0.0 if self.sweep is None else self.sweep.pending_until_s()

    def wait_pending(self) -> None:
        """`*OPC?`/`*WAI`: wait for the single sweep's end, the instrument lock released
        meanwhile (the analyzer reads the output while the sweep runs; other sessions'
        commands run too, as the real instrument's other interfaces would)."""
        deadline_s = self.pending_until_s()
        if deadline_s <= time.monotonic():
            return
        session = self.session
        self.lock.release()
        try:
            self.wait_until(deadline_s)
        finally:
            self.lock.acquire()
            self.session = session
