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
not change what the ring sees.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from labpgt.sim.scpi_parser import (
    Call,
    ScpiError,
    one_param,
    parse_bool,
    parse_choice,
    parse_number,
)
from labpgt.sim.virtual.instrument import Family, VirtualInstrument


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
    "keysight_psg": GeneratorFamily(
        name="keysight_mxg",
        model="keysight_psg",
        identity="Agilent Technologies, E8257D, US00000004, C.06.28",
        number_style="keysight",
        frequency_min_hz=250e3,
        frequency_max_hz=20e9,
        power_min_dbm=-135.0,
        power_max_dbm=10.0,
        options="520,1E1,UNT",
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
    "rs_sgs": GeneratorFamily(
        name="rs_smb",
        model="rs_sgs",
        identity="Rohde&Schwarz,SGS100A,1416.0505k02/110005,4.2.76.0-4.30.046.295",
        number_style="rs",
        frequency_min_hz=1e6,
        frequency_max_hz=20e9,
        power_min_dbm=-120.0,
        power_max_dbm=22.0,
        options="SGS-B26,SGS-K22",
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


class SignalGeneratorInstrument(VirtualInstrument):
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
        model = self.family.key
        setting = self.add_setting
        if self.family.name == "keysight_mxg":
            # Phase offset in radians (MXG) / the PSG's PHASe takes the same node.
            setting("[SOURce]:PHASe[:ADJust]", "phase", 0.0, limits=(-360.0, 360.0))
            setting("[SOURce]:ROSCillator:SOURce:AUTO", "ref_auto", True)
            add("[SOURce]:ROSCillator:SOURce", getter=lambda call: "INT")
            for node in ("AM", "FM", "PM", "PULM"):
                setting(f"[SOURce]:{node}[:STATe]", f"{node.lower()}_on", False, only_off=True)
        else:
            setting("[SOURce#]:PHASe", "phase", 0.0, limits=(-720.0, 720.0))
            choices = ("INTernal", "EXTernal")
            setting("[SOURce]:ROSCillator:SOURce", "ref_source", "INT", choices=choices)
            setting("[SOURce]:PULM:STATe", "pulm_on", False, only_off=True)
            if model == "rs_smb":
                for node in ("AM", "FM", "PM"):
                    setting(f"[SOURce]:{node}:STATe", f"{node.lower()}_on", False, only_off=True)
        frequency_limits = self._frequency_limits
        power_limits = self._power_limits
        if self.family.name == "keysight_mxg":
            # Step sweep and list settings of the MXG and PSG (stored; the output stays
            # CW: `FREQ:MODE LIST` is refused with -221).
            sweep = [
                ("[SOURce]:FREQuency:STARt", "sweep_start_hz", 1e9, "HZ", frequency_limits),
                ("[SOURce]:FREQuency:STOP", "sweep_stop_hz", 2e9, "HZ", frequency_limits),
                ("[SOURce]:POWer:STARt", "sweep_start_dbm", -30.0, "DBM", power_limits),
                ("[SOURce]:POWer:STOP", "sweep_stop_dbm", -30.0, "DBM", power_limits),
                ("[SOURce]:SWEep:DWELl#", "sweep_dwell_s", 2e-3, "S", (1e-3, 60.0)),
                ("[SOURce]:SWEep:POINts", "sweep_points", 101.0, None, (2.0, 65535.0)),
            ]
            if model == "keysight_psg":
                sweep.append(
                    ("[SOURce]:FREQuency:CENTer", "sweep_center_hz", 1.5e9, "HZ", frequency_limits)
                )
            for node, name, initial, unit, limits in sweep:
                setting(node, name, initial, unit=unit, limits=limits)
            setting("[SOURce]:LIST:TYPE", "list_type", "STEP", choices=("LIST", "STEP"))
            setting("[SOURce]:LIST:DIRection", "list_direction", "UP", choices=("UP", "DOWN"))
            setting("[SOURce]:LIST:MODE", "list_mode", "AUTO", choices=("AUTOmatic", "MANual"))
        if model == "rs_smb":
            # The SMB's frequency and level sweeps (stored; `FREQ:MODE SWE|LIST` -221).
            for node, name, initial, unit, limits in (
                ("[SOURce]:FREQuency:STARt", "sweep_start_hz", 100e6, "HZ", frequency_limits),
                ("[SOURce]:FREQuency:STOP", "sweep_stop_hz", 500e6, "HZ", frequency_limits),
                ("[SOURce]:FREQuency:CENTer", "sweep_center_hz", 300e6, "HZ", frequency_limits),
                ("[SOURce]:FREQuency:SPAN", "sweep_span_hz", 400e6, "HZ", (0.0, 20e9)),
                ("[SOURce]:SWEep[:FREQuency]:POINts", "sweep_points", 401.0, None, (2, 1e7)),
                ("[SOURce]:SWEep[:FREQuency]:STEP[:LINear]", "sweep_step_hz", 1e6, "HZ", None),
                ("[SOURce]:SWEep[:FREQuency]:DWELl", "sweep_dwell_s", 10e-3, "S", (1e-3, 100.0)),
                ("[SOURce]:POWer:STARt", "sweep_start_dbm", -30.0, "DBM", power_limits),
                ("[SOURce]:POWer:STOP", "sweep_stop_dbm", -10.0, "DBM", power_limits),
                ("[SOURce]:SWEep:POWer:POINts", "power_sweep_points", 21.0, None, (2, 1e7)),
                ("[SOURce]:SWEep:POWer:DWELl", "power_sweep_dwell_s", 10e-3, "S", (1e-3, 100.0)),
                ("[SOURce]:LIST:DWELl", "list_dwell_s", 10e-3, "S", (1e-3, 100.0)),
            ):
                setting(node, name, initial, unit=unit, limits=limits)
            spacing = ("LINear", "LOGarithmic")
            setting("[SOURce]:SWEep[:FREQuency]:SPACing", "sweep_spacing", "LIN", choices=spacing)
            modes = ("AUTO", "MANual", "STEP")
            setting("[SOURce]:SWEep[:FREQuency]:MODE", "sweep_mode", "AUTO", choices=modes)
            setting("[SOURce]:LIST:MODE", "list_mode", "AUTO", choices=("AUTO", "STEP"))
        if model == "keysight_psg":
            add("DIAGnostic:CPU:INFOrmation:OPTions:DETail", getter=self._psg_options_detail)
            # Modulation and low-frequency-output configuration (stored; states stay off).
            setting("[SOURce]:AM:DEPTh", "am_depth_percent", 0.1, limits=(0.0, 100.0))
            sources = ("INTernal", "INTernal2", "EXTernal", "EXTernal2")
            setting("[SOURce]:AM:SOURce", "am_source", "INT", choices=sources)
            setting("[SOURce]:AM:INTernal:FREQuency", "am_rate_hz", 400.0, unit="HZ")
            shapes = ("SINE", "TRIangle", "SQUare", "RAMP", "NOISe", "DUALsine", "SWEPtsine")
            setting("[SOURce]:AM:INTernal:FUNCtion:SHAPe", "am_shape", "SINE", choices=shapes)
            pulse_sources = ("INTernal", "EXTernal", "SCALar")
            setting("[SOURce]:PULM:SOURce", "pulm_source", "INT", choices=pulse_sources)
            inputs = ("SQUare", "FRUN", "TRIGgered", "DOUBlet", "GATEd")
            setting("[SOURce]:PULM:SOURce:INTernal", "pulm_input", "SQU", choices=inputs)
            setting("[SOURce]:PULM:INTernal:FREQuency", "pulm_rate_hz", 400.0, unit="HZ")
            setting("[SOURce]:LFOutput:AMPLitude", "lf_amplitude_v", 0.0, unit="V")
            lf_sources = ("INTernal", "INTernal2", "FUNCtion", "FUNCtion2")
            setting("[SOURce]:LFOutput:SOURce", "lf_source", "INT", choices=lf_sources)
            setting("[SOURce]:LFOutput:STATe", "lf_on", False)
        if model == "rs_sgs":
            io = ("INTernal", "EXTernal")
            setting("[SOURce]:LOSCillator:SOURce", "lo_source", "INT", choices=io)
            setting("[SOURce]:IQ:STATe", "iq_on", False, only_off=True)
            setting("CONNector:REFLo:OUTPut", "ref_lo_out", "OFF", choices=("REF", "LO", "OFF"))
            frequencies = ("10MHZ", "100MHZ", "1000MHZ")
            setting(
                "[SOURce]:ROSCillator:OUTPut:FREQuency", "ref_out", "10MHZ", choices=frequencies
            )
            setting(
                "[SOURce]:ROSCillator:EXTernal:FREQuency", "ref_ext", "10MHZ", choices=frequencies
            )
            setting("[SOURce]:OPMode", "opmode", "NORM", choices=("NORMal", "BBBYpass"))
            # IQ impairments and pulse modulation configuration (stored; the states stay off).
            setting("[SOURce]:IQ:IMPairment[:STATe]", "iq_impairment_on", False)
            setting("[SOURce]:IQ:IMPairment:LEAKage:I", "iq_leak_i", 0.0, limits=(-10, 10))
            setting("[SOURce]:IQ:IMPairment:LEAKage:Q", "iq_leak_q", 0.0, limits=(-10, 10))
            setting("[SOURce]:IQ:IMPairment:IQRatio", "iq_ratio", 0.0, limits=(-1, 1))
            setting("[SOURce]:IQ:IMPairment:QUADrature", "iq_quad", 0.0, limits=(-8, 8))
            modes = ("SVALid", "SNValid", "PVOut", "PETrigger", "PEMSource")
            setting("CONNector:TRIGger:OMODe", "trigger_out", "SVAL", choices=modes)
            setting("[SOURce]:PULM:SOURce", "pulm_source", "INT", choices=io)
            for node, name, initial, low in (
                ("DELay", "pulm_delay_s", 0.0, 0.0),
                ("DOUBle:DELay", "pulm_double_delay_s", 1e-6, 40e-9),
                ("DOUBle:WIDTh", "pulm_double_width_s", 1e-6, 20e-9),
                ("PERiod", "pulm_period_s", 10e-6, 100e-9),
                ("WIDTh", "pulm_width_s", 1e-6, 20e-9),
            ):
                setting(f"[SOURce]:PULM:{node}", name, initial, unit="S", limits=(low, 100.0))
            polarity = ("NORMal", "INVerted")
            setting("[SOURce]:PULM:MODE", "pulm_mode", "SING", choices=("SINGle", "DOUBle"))
            setting("[SOURce]:PULM:POLarity", "pulm_polarity", "NORM", choices=polarity)
            setting(
                "[SOURce]:PULM:TRIGger:EXTernal:GATE:POLarity",
                "pulm_gate",
                "NORM",
                choices=polarity,
            )
            setting(
                "[SOURce]:PULM:TRIGger:EXTernal:IMPedance",
                "pulm_impedance",
                "G50",
                choices=("G50", "G10K"),
            )
            setting(
                "[SOURce]:PULM:TRIGger:EXTernal:SLOPe",
                "pulm_slope",
                "POS",
                choices=("NEGative", "POSitive"),
            )
            setting(
                "[SOURce]:PULM:TRIGger:MODE",
                "pulm_trigger",
                "AUTO",
                choices=("AUTO", "EXTernal", "EGATe"),
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
        """CW or FIXed; the model's sweep modes are known but refused (-221): the output
        stays a CW carrier, which is all the ring model takes."""
        modes: tuple[str, ...] = ("CW", "FIXed")
        if self.family.name == "keysight_mxg":
            modes += ("LIST",)
        elif self.family.key == "rs_smb":
            modes += ("SWEep", "LIST")
        if parse_choice(one_param(call), modes) not in ("CW", "FIXed"):
            raise ScpiError(
                -221, "frequency sweep and list are not available on the virtual source"
            )

    def _set_power(self, call: Call) -> None:
        low, high = self._power_limits
        self.power_dbm = parse_number(
            one_param(call), "DBM", minimum=low, maximum=high, default=RESET_POWER_DBM
        )

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

    def source_state(self) -> SourceState:
        """A consistent snapshot of frequency, power and RF state (taken under the lock)."""
        with self.lock:
            return SourceState(self.frequency_hz, self.power_dbm, self.rf_on)
