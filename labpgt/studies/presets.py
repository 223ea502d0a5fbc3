"""The studies labpgt publishes: what each trains (entries, learning-rate grids, seeds, budget).

A `StudySpec` names the shared config, its entries (a method with fixed options and a
grid of rates and variants), the search and final seeds and the target accuracy;
`PRESETS` maps the names `labpgt study --preset` accepts to them. How a study runs
(search, final seeds, summary) is `labpgt.studies.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One row of a results table: a method with its fixed options and a learning-rate grid."""

    label: str
    config: dict[str, Any]
    lrs: tuple[float, ...] = (0.01,)
    kind: str = "train"
    """'train' (labpgt's trainer) or 'logistic' (scikit-learn on the raw inputs)."""
    variants: tuple[dict[str, Any], ...] = ({},)
    """Other hyperparameters searched with the rate (e.g. δ): each dict is one choice."""

    def choices(self) -> list[tuple[float, dict[str, Any]]]:
        """Every (learning rate, variant) pair the search tries."""
        return [(lr, v) for lr in self.lrs for v in self.variants]


@dataclass(frozen=True)
class StudySpec:
    """What a study runs: the shared config, the entries, the seeds and the target."""

    name: str
    base: dict[str, Any]
    entries: tuple[Entry, ...]
    final_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    search_seeds: tuple[int, ...] = (100,)
    target_acc: float = 0.85
    description: str = ""


def _digits_base(budget: int) -> dict[str, Any]:
    return {
        "task": "digits",
        "model": "dense",
        "fast_sim": True,
        "noise": True,
        "drift": True,
        "max_queries": budget,
        "batch_size": 32,
        "hidden": 32,
        "bins": 16,
        "features": "kernel",
        "channels": 8,
        "driven": ["drive_hz"],
        "lr_schedule": "cosine",
    }


def _digits_study(name: str, entries: tuple[Entry, ...], description: str) -> StudySpec:
    """A study on the digits network and budget (`_digits_base` at 200 000 queries)."""
    return StudySpec(
        name=name, base=_digits_base(200_000), entries=entries, description=description
    )


LRS = (0.003, 0.01, 0.03)
PAT_TWIN: dict[str, Any] = {
    "method": "pat",
    "method_opts": {"compare_every": 0, "jacobian": "difference"},
    "calibrate": ["--grid", "small", "--surrogate", "twin"],
}
"""PAT with the twin `labpgt calibrate --surrogate twin` fits on the job's ring (made once),
differentiated by central differences at the probing step (its autograd Jacobian follows
the ring model's ripple, as backprop's does)."""
PAT_TWIN_AUTOGRAD: dict[str, Any] = {
    **PAT_TWIN,
    "method_opts": {"compare_every": 0, "jacobian": "autograd"},
}
BACKPROP_RING: dict[str, Any] = {
    "method": "backprop",
    "method_opts": {"forward": "ring", "jacobian": "difference"},
}
"""The ring's measured features forward, the noise-free sim's central differences backward."""
DELTAS: tuple[dict[str, Any], ...] = ({"delta": 0.01}, {"delta": 0.1})
PIXEL_YARDSTICKS: tuple[Entry, ...] = (
    Entry("logistic regression (raw pixels)", {}, lrs=(), kind="logistic"),
    Entry("readout only (ridge, reservoir computing)", {"method": "readout"}, lrs=()),
    Entry("digital same-shape network", {"method": "digital"}, lrs=LRS),
)
"""The rows a table on the digits images starts with: a linear model of the pixels, the
ring's features with only the readout trained, and the ring-free network of the same shape."""


def digits_study() -> StudySpec:
    """The main table: digits, dense, fast sim with noise and drift, 200k queries.

    The shared bottleneck is k = 8 channels of one drive setting each (the drive
    frequency): 8 numbers per sample, 8 × 16 features. Two boundary rows vary it.
    """
    both = ["drive_hz", "drive_dbm"]
    entries = (
        *PIXEL_YARDSTICKS,
        Entry("backprop through the sim", {"method": "backprop"}, lrs=LRS),
        Entry("backprop, ring forward, sim differences", BACKPROP_RING, lrs=LRS),
        Entry("pat through the calibrated twin", PAT_TWIN, lrs=LRS),
        Entry("pat through the twin, autograd Jacobian", PAT_TWIN_AUTOGRAD, lrs=LRS),
        Entry("boundary", {"method": "boundary"}, lrs=LRS),
        Entry("boundary, k = 4 × 1 setting", {"method": "boundary", "channels": 4}, lrs=LRS),
        Entry(
            "boundary, k = 4 × 2 settings",
            {"method": "boundary", "channels": 4, "driven": both},
            lrs=LRS,
        ),
        Entry("spsa, q = 4, upstream", {"method": "spsa"}, lrs=LRS, variants=DELTAS),
        Entry(
            "pgt, upstream only",
            {"method": "pgt", "perturb": "upstream"},
            lrs=LRS,
            variants=DELTAS,
        ),
        Entry("pgt, paper (all parameters)", {"method": "pgt"}, lrs=LRS, variants=DELTAS),
    )
    return _digits_study(
        "digits",
        entries,
        "digits (scikit-learn, 1 797 images of 8×8), dense model 64 → 32 tanh → "
        "u (k = 8 channels × the drive frequency unless the row says otherwise) → ring → "
        "k × 16 kernel features → linear readout; in-process simulated ring with noise and "
        "drift on; 200 000 training queries per run",
    )


def pgt_size_study() -> StudySpec:
    """PGT on the smallest network: 115 parameters, against boundary and the digital network.

    Linear upstream (hidden 0), k = 1 channel × 4 kernel features, linear readout.
    The exact-gradient yardstick is the digital network of that shape (backprop
    through the sim costs one differentiable evaluation per sample: at k = 1 the
    200k budget is 6 250 steps, ~14 min a run here, too slow for this grid).
    """
    shape = {"channels": 1, "bins": 4, "hidden": 0}
    entries = (
        Entry("digital same-shape network", {"method": "digital", **shape}, LRS),
        Entry("boundary", {"method": "boundary", **shape}, LRS),
        Entry("pgt, paper (all parameters)", {"method": "pgt", **shape}, LRS, variants=DELTAS),
        Entry(
            "pgt, upstream only",
            {"method": "pgt", "perturb": "upstream", **shape},
            LRS,
            variants=DELTAS,
        ),
    )
    return _digits_study(
        "pgt-size",
        entries,
        "digits, the smallest network: linear upstream 64 → u (1 channel × the "
        "drive frequency) → ring → 4 kernel features → linear readout, 115 parameters; fast "
        "sim with noise and drift; 200 000 training queries per run",
    )


def transformer_study() -> StudySpec:
    """The paper's second network: a small transformer with the ring as its token layer.

    seq-digits: each 8×8 image is 8 tokens (its rows); every token drives one channel
    (k = 8, one drive frequency each) and the ring's features feed attention and the
    readout. Same protocol and budget as the digits table.
    """
    base = {**_digits_base(200_000), "task": "seq-digits", "model": "transformer"}
    entries = (
        *PIXEL_YARDSTICKS,
        Entry("backprop through the sim", {"method": "backprop"}, lrs=LRS),
        Entry("boundary", {"method": "boundary"}, lrs=LRS),
        Entry("pat through the calibrated twin", PAT_TWIN, lrs=LRS),
        Entry(
            "pgt, upstream only",
            {"method": "pgt", "perturb": "upstream"},
            lrs=LRS,
            variants=DELTAS,
        ),
    )
    return StudySpec(
        name="transformer",
        base=base,
        entries=entries,
        description="seq-digits (the digits images as 8 tokens of 8 pixels), transformer with "
        "the ring as the token layer: k = 8 channels (one per token) × the drive frequency → "
        "8 × 16 kernel features → attention → readout; fast sim with noise and drift; "
        "200 000 training queries per run",
    )


MGD_WIDTHS = (4, 8, 16, 32)


def mgd_scaling_study() -> StudySpec:
    """MGD's scaling claim: queries to a target accuracy against the parameter count.

    4-bit parity (the truth table ×4), dense, 1 channel × 8 kernel features; MGD with
    weight and node perturbation at hidden widths 4–32, beside the digital network of
    each width (exact gradients). Queries to 90 % validation accuracy per width show how
    the cost grows with the parameter count.
    """
    base = {
        "task": "parity",
        "task_opts": {"bits": 4, "repeat": 4},
        "model": "dense",
        "fast_sim": True,
        "noise": True,
        "drift": True,
        "max_queries": 60_000,
        "batch_size": 16,
        "bins": 8,
        "features": "kernel",
        "channels": 1,
        "driven": ["drive_hz"],
        "lr_schedule": "cosine",
        "warmup_samples": 32,
    }
    entries: list[Entry] = [
        Entry("logistic regression (raw bits)", {}, lrs=(), kind="logistic"),
        Entry("readout only (ridge, reservoir computing)", {"method": "readout"}, lrs=()),
    ]
    for hidden in MGD_WIDTHS:
        entries.append(
            Entry(f"digital, hidden {hidden}", {"method": "digital", "hidden": hidden}, LRS)
        )
        for mode in ("weight", "node"):
            entries.append(
                Entry(
                    f"mgd {mode}, hidden {hidden}",
                    {"method": "mgd", "hidden": hidden, "method_opts": {"mode": mode}},
                    LRS,
                )
            )
    return StudySpec(
        name="mgd-scaling",
        base=base,
        entries=tuple(entries),
        target_acc=0.9,
        description="4-bit parity (truth table repeated 4 times), dense 4 → hidden tanh → u "
        "(1 channel × the drive frequency) → ring → 8 kernel features → readout; MGD "
        "(CDMA codes) with weight or node perturbation at hidden widths "
        f"{', '.join(map(str, MGD_WIDTHS))}, beside the digital network of each width; "
        "fast sim with noise and drift; 60 000 training queries per run",
    )


def pat_study() -> StudySpec:
    """PAT through the twin calibrate fits, beside boundary and the yardsticks.

    The digits table's network, budget and protocol. PAT measures each sample once
    (boundary three times: clean and ±δ), so at the same query budget it takes three
    times the steps; its backward pass is the twin's, differentiated by central
    differences at boundary's step δ = 0.05, or by autograd.
    """
    entries = (
        *PIXEL_YARDSTICKS,
        Entry("boundary", {"method": "boundary"}, lrs=LRS),
        Entry("pat through the calibrated twin", PAT_TWIN, lrs=LRS),
    )
    return _digits_study(
        "pat",
        entries,
        "digits, the digits study's network (k = 8 channels × the drive "
        "frequency, 8 × 16 kernel features) and budget (200 000 training queries); PAT's "
        "backward pass through the twin that `labpgt calibrate --fast-sim --grid small "
        "--surrogate twin` fits to the simulated ring (seed 0, once per study)",
    )


def features_study() -> StudySpec:
    """The feature map decides what the estimators can follow: boundary on three maps."""
    two = (0.003, 0.01)
    entries = (
        Entry("boundary, kernel ×16 (the default)", {"method": "boundary"}, two),
        Entry(
            "boundary, hard bins ×16 (mean dB)",
            {"method": "boundary", "features": "bins"},
            two,
        ),
        Entry("digital same-shape network", {"method": "digital"}, two),
    )
    return _digits_study(
        "features",
        entries,
        "digits, the digits study's network and budget, boundary perturbation "
        "through two feature maps of the same width (16 per channel, k = 8 channels of the "
        "drive frequency)",
    )


def short_study() -> StudySpec:
    """A few minutes: the protocol end to end on iris with a small budget (tests, smoke)."""
    base = {
        "task": "iris",
        "model": "dense",
        "fast_sim": True,
        "max_queries": 6_000,
        "batch_size": 16,
        "hidden": 8,
        "bins": 8,
        "channels": 2,
        "warmup_samples": 32,
    }
    entries = (
        Entry("logistic regression (raw inputs)", {}, lrs=(), kind="logistic"),
        Entry("readout only (ridge)", {"method": "readout"}, lrs=()),
        Entry("digital same-shape network", {"method": "digital"}, lrs=(0.01, 0.03)),
        Entry("boundary", {"method": "boundary"}, lrs=(0.01, 0.03)),
    )
    return StudySpec(
        name="short",
        base=base,
        entries=entries,
        final_seeds=(0, 1),
        search_seeds=(100,),
        target_acc=0.8,
        description="iris, dense, fast sim, 6 000 training queries per run (smoke test of the "
        "protocol)",
    )


PRESETS: dict[str, Callable[[], StudySpec]] = {
    "digits": digits_study,
    "features": features_study,
    "pgt-size": pgt_size_study,
    "pat": pat_study,
    "transformer": transformer_study,
    "mgd-scaling": mgd_scaling_study,
    "short": short_study,
}
