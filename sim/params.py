"""Every number of the simulated ring, with its unit in its name (docs/ring-physics.md).

A lab fits these to its own ring; the model reads them and nothing else. The
model is frozen so one `RingParams` can be shared by many `RingModel`s safely.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RingParams(BaseModel):
    """Physical and measurement parameters of the magnonic active ring (pydantic, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- YIG film and field -------------------------------------------------------------
    four_pi_ms_g: float = Field(
        1750.0, gt=100.0, le=25000.0, description="Saturation magnetisation 4*pi*Ms of YIG, G."
    )
    gyro_hz_per_oe: float = Field(
        2.8e6, gt=1e5, le=1e8, description="Gyromagnetic ratio gamma/2pi, Hz per Oe."
    )
    gilbert_damping: float = Field(
        2e-4, gt=0.0, le=0.1, description="Gilbert damping alpha of the film (dimensionless)."
    )
    field_per_current_oe_per_a: float = Field(
        150.0, gt=1.0, le=5000.0, description="Electromagnet constant k in H = k*I + H_rem, Oe/A."
    )
    remanence_oe: float = Field(
        2.0,
        ge=0.0,
        le=50.0,
        description="Magnitude of the remanent field H_rem of the magnet yoke, Oe.",
    )
    hysteresis_threshold_a: float = Field(
        0.1,
        gt=0.0,
        le=5.0,
        description="Current travel, A, after which the remanence takes the sign that lags the "
        "direction of travel (rising: -H_rem, falling: +H_rem).",
    )
    film_thickness_m: float = Field(
        5.0e-6, gt=1e-8, le=1e-3, description="YIG film thickness d (Damon-Eshbach dispersion), m."
    )
    propagation_length_m: float = Field(
        15.3e-3,
        gt=1e-4,
        le=0.2,
        description="Spin-wave propagation length between the transducers, m.",
    )
    electronics_delay_s: float = Field(
        20e-9,
        ge=0.0,
        le=1e-6,
        description="Group delay of amplifier, cables and couplers in the loop, s.",
    )
    amplifier_phase_rad: float = Field(
        0.0,
        ge=-10.0,
        le=10.0,
        description="Constant phase of amplifier and cables in the loop, rad.",
    )
    # --- loop gain and losses -----------------------------------------------------------
    amplifier_gain_db: float = Field(
        38.0, ge=-20.0, le=80.0, description="Small-signal gain of the loop amplifier, dB."
    )
    fixed_loss_db: float = Field(
        25.0,
        ge=0.0,
        le=100.0,
        description="Frequency-independent loop loss: couplers, cables, transducer mismatch, dB.",
    )
    transducer_k_low_rad_per_m: float = Field(
        2000.0,
        gt=1.0,
        le=1e7,
        description="Wavenumber below which the transducers couple poorly (loss toward f_FMR), "
        "rad/m.",
    )
    transducer_k_high_rad_per_m: float = Field(
        10000.0,
        gt=1.0,
        le=1e7,
        description="Wavenumber above which the transducers couple poorly (loss toward f_DE), "
        "rad/m.",
    )
    # --- saturation and mode competition ------------------------------------------------
    gain_scale_db: float = Field(
        3.0,
        gt=0.01,
        le=60.0,
        description="Net gain, dB, that gives a mode unit growth rate (and unit saturated power).",
    )
    saturation_power_dbm: float = Field(
        -4.0,
        ge=-80.0,
        le=30.0,
        description="Analyzer power of a lone mode with unit growth rate, dBm.",
    )
    cross_saturation_near: float = Field(
        1.6,
        ge=0.0,
        le=10.0,
        description="Cross-saturation c_nm between neighbouring modes (>1: they exclude each "
        "other).",
    )
    cross_saturation_far: float = Field(
        0.35,
        ge=0.0,
        le=10.0,
        description="Cross-saturation c_nm between distant modes (<1: they coexist).",
    )
    cross_saturation_width_modes: float = Field(
        4.0,
        gt=0.01,
        le=1000.0,
        description="Mode-number separation over which cross-saturation falls from near to far "
        "(count of mode spacings).",
    )
    spontaneous_emission: float = Field(
        1e-10,
        gt=0.0,
        le=1e-3,
        description="Thermal seed of every mode, in units of the saturated power per unit time.",
    )
    competition_iterations: int = Field(
        48,
        ge=1,
        le=100_000,
        description="Cap on the fixed-point iterations of the mode competition (count); a "
        "setting still moving at the cap keeps that iterate (sim/competition.py).",
    )
    competition_tolerance: float = Field(
        1e-6,
        ge=0.0,
        le=1.0,
        description="Relative change of every mode's power over one iteration below which the "
        "mode competition counts as converged (dimensionless).",
    )
    competition_sharpness: float = Field(
        60.0,
        ge=0.0,
        le=1000.0,
        description="Sharpness of the initial soft winner-per-neighbourhood guess of the "
        "competition, per unit growth rate.",
    )
    competition_step: float = Field(
        0.8, gt=0.0, le=1.0, description="Step of the mode-competition iteration (dimensionless)."
    )
    mode_count: int = Field(
        32,
        ge=4,
        le=256,
        description="Eigenmodes simulated per setting, centred on the gain maximum (count).",
    )
    nonlinear_shift_hz_per_mw: float = Field(
        6e6,
        ge=-1e9,
        le=1e9,
        description="Non-linear frequency shift per mW of mode power at the analyzer, Hz/mW "
        "(MSSW: upward).",
    )
    # --- drive -------------------------------------------------------------------------
    locking_range_hz: float = Field(
        11e6,
        ge=0.0,
        le=1e9,
        description="Adler locking half-range at the reference drive and mode power, Hz.",
    )
    locking_reference_drive_dbm: float = Field(
        -10.0,
        ge=-150.0,
        le=30.0,
        description="Drive power at which the locking range equals locking_range_hz, dBm.",
    )
    locking_reference_mode_dbm: float = Field(
        -3.0,
        ge=-150.0,
        le=30.0,
        description="Mode power at which the locking range equals locking_range_hz, dBm.",
    )
    drive_coupling_loss_db: float = Field(
        10.0,
        ge=0.0,
        le=100.0,
        description="Loss from the generator into the ring (saturation of the modes by the drive), "
        "dB.",
    )
    drive_through_loss_db: float = Field(
        30.0,
        ge=0.0,
        le=150.0,
        description="Loss of the drive tone from the generator to the analyzer through the "
        "ring, dB.",
    )
    drive_leakage_db: float = Field(
        -20.0,
        ge=-150.0,
        le=0.0,
        description="Direct coupler leakage of the drive relative to the spin-wave path, dB.",
    )
    ring_resonance_max: float = Field(
        0.7,
        ge=0.0,
        lt=1.0,
        description="Largest loop amplitude factor seen by the drive tone (resonance contrast).",
    )
    idler_efficiency: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Scale of the four-wave-mixing idler power (1: Adler sideband level).",
    )
    # --- analyzer noise and drift -------------------------------------------------------
    noise_floor_dbm_at_100khz: float = Field(
        -95.0,
        ge=-200.0,
        le=0.0,
        description="Displayed noise floor at 100 kHz RBW, dBm (scales with 10*log10(RBW)).",
    )
    noise_floor_std_db: float = Field(
        1.5, ge=0.0, le=20.0, description="Point-to-point scatter of the noise floor, dB."
    )
    jitter_db: float = Field(
        0.2, ge=0.0, le=10.0, description="Amplitude jitter of each line per sweep, dB (std)."
    )
    field_drift_oe_per_min: float = Field(
        0.05,
        ge=0.0,
        le=100.0,
        description="Random-walk rate of the field drift: std after one minute, Oe.",
    )
    gain_drift_db_per_hour: float = Field(
        0.1,
        ge=0.0,
        le=100.0,
        description="Random-walk rate of the amplifier gain drift: std after one hour, dB.",
    )
    # --- switches ------------------------------------------------------------------------
    noise: bool = Field(True, description="Analyzer noise floor scatter and line jitter on/off.")
    drift: bool = Field(True, description="Slow random-walk drift of field and gain on/off.")
    hysteresis: bool = Field(True, description="Remanent field of the magnet (hysteresis) on/off.")

    @model_validator(mode="after")
    def _ordered(self) -> RingParams:
        if self.transducer_k_low_rad_per_m >= self.transducer_k_high_rad_per_m:
            raise ValueError(
                "transducer_k_low_rad_per_m must be below transducer_k_high_rad_per_m "
                f"(got {self.transducer_k_low_rad_per_m} >= {self.transducer_k_high_rad_per_m})"
            )
        return self
