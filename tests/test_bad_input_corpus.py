"""Bad input, every kind: each case must end in one `error:` line and exit status 2.

The corpus covers bench files, settings CSVs (acquire --inputs), data CSVs (train
--data), flags, run files (show, acquire --resume: truncated, corrupted, missing
datasets, broken JSON) and calibration files. The CLI runs in process (an exception
other than the handled ones fails the test with its traceback); a few cases run as
real subprocesses. Property tests (hypothesis) feed arbitrary text to the loaders.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import cli_lines, small_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labpgt.instruments.bench import bench_config_from_resources, bench_toml

from labpgt.acquisition import parse_sweep, read_inputs_csv
from labpgt.benches import check_bench_file
from labpgt.errors import UserError
from labpgt.training.tasks import load_csv

ROLES = ("generator", "analyzer", "supply")


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DEAD = f"TCPIP::127.0.0.1::{_dead_port()}::SOCKET"
"""A port nobody listens on: connecting is refused at once."""
BENCH = bench_toml(bench_config_from_resources(dict.fromkeys(ROLES, DEAD)))
"""A valid bench file (its instruments unreachable)."""


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], list[str]]
    """Writes the case's files into a folder and returns the argv."""
    message: str = ""
    """A piece of the expected error line (empty: any one-line error)."""
    needs_run: bool = False
    """`build(folder, good_run_file)` instead of `build(folder)`."""


CASES: list[Case] = []


def case(name: str, message: str = "", needs_run: bool = False):
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(name, build, message, needs_run))
        return build

    return register


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _file_cases(
    prefix: str, table: dict[str, tuple[str | bytes, str]], filename: str, argv: list[str]
) -> None:
    """A case per entry (file content, piece of the expected error) of `table`: the content
    written to `filename` in the case's folder, then `argv` with ``{file}`` (that file) and
    ``{d}`` (the folder) filled in."""
    for name, (text, message) in table.items():

        def build(d: Path, text: str | bytes = text) -> list[str]:
            path = _write(d / filename, text)
            return [a.replace("{file}", str(path)).replace("{d}", str(d)) for a in argv]

        CASES.append(Case(f"{prefix}-{name}", build, message))


# -- bench files --------------------------------------------------------------------------


def _edit(old: str, new: str) -> str:
    assert old in BENCH, old
    return BENCH.replace(old, new, 1)


BENCH_TEXTS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "generator"),
    "not-toml": ("[generator\nresource = 1", "not valid TOML"),
    "latin-1": ("# caf\xe9\n".encode("latin-1") + BENCH.encode(), "not UTF-8"),
    "nul-bytes": (b"\0\0\0\0", ""),
    "random-bytes": (bytes(range(256)) * 4, ""),
    "no-generator": (BENCH.split("[analyzer]")[1].join(["[analyzer]", ""]), "generator"),
    "generator-not-table": ("generator = 5\n" + BENCH.split("[generator]")[1][200:], ""),
    "unknown-table": (BENCH + "\n[foo]\nbar = 1\n", "foo"),
    "unknown-field": (_edit("bias_min_a = 0.0", "bias_min_a = 0.0\nbias_typo = 1"), "typo"),
    "bias-max-negative": (_edit("bias_max_a = 2.5", "bias_max_a = -1.0"), "bias"),
    "ramp-rate-zero": (_edit("ramp_rate_a_per_s = 2.0", "ramp_rate_a_per_s = 0.0"), "ramp_rate"),
    "ramp-rate-nan": (_edit("ramp_rate_a_per_s = 2.0", "ramp_rate_a_per_s = nan"), "ramp_rate"),
    "ramp-step-negative": (_edit("ramp_step_a = 0.05", "ramp_step_a = -0.05"), "ramp_step"),
    "ramp-step-text": (_edit("ramp_step_a = 0.05", 'ramp_step_a = "small"'), "ramp_step"),
    "compliance-inf": (_edit("compliance_v = 20.0", "compliance_v = inf"), "compliance"),
    "freq-min-above-max": (
        _edit("frequency_min_hz = 2000000000.0", "frequency_min_hz = 2400000000.0"),
        "frequency",
    ),
    "power-min-above-max": (_edit("power_min_dbm = -40.0", "power_min_dbm = 10.0"), "power"),
    "power-nan": (_edit("power_max_dbm = 0.0", "power_max_dbm = nan"), "power"),
    "family-unknown": (_edit('family = "keysight_mxg"', 'family = "acme_9000"'), "family"),
    "family-of-other-role": (_edit('family = "keysight_mxg"', 'family = "kepco_bop"'), "family"),
    "resource-empty": (_edit(f'resource = "{DEAD}"', 'resource = ""'), ""),
    "resource-number": (_edit(f'resource = "{DEAD}"', "resource = 5025"), "resource"),
    "timeout-zero": (_edit("timeout_s = 5.0", "timeout_s = 0.0"), "timeout"),
    "timeout-negative": (_edit("timeout_s = 5.0", "timeout_s = -1.0"), "timeout"),
    "timeout-text": (_edit("timeout_s = 5.0", 'timeout_s = "fast"'), "timeout"),
    "settle-negative": (_edit("bias_s = 0.3", "bias_s = -0.3"), "bias_s"),
    "settle-wait-text": (_edit("wait = true", 'wait = "sometimes"'), "wait"),
    "points-one": (_edit("points = 1001", "points = 1"), "points"),
    "points-huge": (_edit("points = 1001", "points = 1000000000"), "points"),
    "points-fraction": (_edit("points = 1001", "points = 10.5"), "points"),
    "span-too-wide": (_edit("span_hz = 300000000.0", "span_hz = 5000000000.0"), ""),
    "rbw-zero": (_edit("rbw_hz = 300000.0", "rbw_hz = 0.0"), "rbw"),
    "visa-library-missing": (
        _edit('visa_library = "@py"', 'visa_library = "/nonexistent/libvisa.so"'),
        "",
    ),
    "unreachable": (BENCH, "cannot connect"),
    "resource-garbage": (_edit(f'resource = "{DEAD}"', 'resource = "NOT::A::RESOURCE"'), ""),
}

_file_cases(
    "acquire-bench",
    BENCH_TEXTS,
    "bench.toml",
    ["acquire", "--bench", "{file}", "--sweep", "drive_hz=2.1e9", "--out", "{d}/r.h5"],
)

SOME_BENCH_TEXTS = {
    name: BENCH_TEXTS[name]
    for name in ("empty", "not-toml", "latin-1", "unknown-field", "timeout-zero", "unreachable")
}
_file_cases(
    "train-bench",
    SOME_BENCH_TEXTS,
    "bench.toml",
    ["train", "--bench", "{file}", "--method", "pgt", "--out", "{d}/t"],
)
_file_cases(
    "instruments-check",
    {name: (text, "") for name, (text, _) in SOME_BENCH_TEXTS.items()},
    "bench.toml",
    ["instruments", "check", "--bench", "{file}"],
)


# -- settings CSVs (acquire --inputs) ---------------------------------------------------------

INPUT_CSVS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "empty file"),
    "header-only": ("drive_hz,bias_a\n", "no settings after the header"),
    "blank-lines-only": ("drive_hz\n\n\n\n", "no settings after the header"),
    "unknown-column": ("drive_hz,gain\n2.1e9,1\n", "unknown setting 'gain'"),
    "duplicate-column": ("bias_a,bias_a\n1,1\n", "listed twice"),
    "text-value": ("drive_hz\nabc\n", "'abc' is not a number"),
    "empty-value": ("drive_hz,bias_a\n2.1e9,\n", "is not a number"),
    "nan": ("bias_a\nnan\n", "not finite"),
    "inf": ("bias_a\ninf\n", "not finite"),
    "minus-inf": ("drive_dbm\n-inf\n", "not finite"),
    "too-many-values": ("bias_a\n1.0,2.0\n", "2 values, but the header has 1"),
    "too-few-values": ("drive_hz,bias_a\n2.1e9\n", "1 values, but the header has 2"),
    "bias-above-limit": ("bias_a\n9.9\n", "outside the bench limits"),
    "bias-negative": ("bias_a\n-1\n", "outside the bench limits"),
    "frequency-below": ("drive_hz\n1e9\n", "outside the bench limits"),
    "power-above": ("drive_dbm\n10\n", "outside the bench limits"),
    "latin-1": ("bias_a\n1.8 # \xb5A\n".encode("latin-1"), "not UTF-8"),
    "utf-16": ("bias_a\n1.8\n".encode("utf-16"), "not UTF-8"),
    "nul-bytes": (b"bias_a\n1.8\0\n", "NUL"),
    "binary": (bytes(range(256)), ""),
    "semicolons": ("drive_hz;bias_a\n2.1e9;1.8\n", "unknown setting"),
    "header-numbers": ("1.8,2.1e9\n1.9,2.2e9\n", "unknown setting"),
    "quoted-garbage": ('bias_a\n"1.8" "2"\n', "is not a number"),
    "hex-value": ("bias_a\n0x1\n", "is not a number"),
    "huge-exponent": ("bias_a\n1e999\n", "not finite"),
    "comma-decimal": ('bias_a\n"1,8"\n', "is not a number"),
    "markup-name": ("[bold]x[/bold]\n1\n", "unknown setting '[bold]x[/bold]'"),
    "emoji-code": (":b:\n1\n", "unknown setting ':b:'"),
}

_file_cases(
    "acquire-inputs", INPUT_CSVS, "in.csv", ["acquire", "--inputs", "{file}", "--out", "{d}/r.h5"]
)


@case("acquire-inputs-missing", "does not exist")
def _(d: Path) -> list[str]:
    return ["acquire", "--inputs", str(d / "nope.csv"), "--out", str(d / "r.h5")]


@case("acquire-inputs-is-folder", "does not exist")
def _(d: Path) -> list[str]:
    return ["acquire", "--inputs", str(d), "--out", str(d / "r.h5")]


# -- data CSVs (train --data) ---------------------------------------------------------------

DATA_CSVS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "needs a header row"),
    "header-only": ("a,b,label\n", "needs a header row"),
    "no-target": ("a,b\n1,2\n3,4\n", "column 'label' is not in"),
    "one-class": ("a,label\n1,x\n2,x\n3,x\n", "single class"),
    "ragged": ("a,b,label\n1,2,x\n3,y\n", "has 2 fields"),
    "text-input": ("a,label\n1,x\nfoo,y\n1,x\n2,y\n", "non-numeric input column"),
    "nan-input": ("a,label\n1,x\nnan,y\n1,x\n2,y\n", "data row 2 (line 3), column 'a'"),
    "inf-input": ("a,label\n1,x\ninf,y\n1,x\n2,y\n", "is not a finite number"),
    "only-target": ("label\nx\ny\n", "no input columns"),
    "latin-1": ("a,label\n1,caf\xe9\n2,th\xe9\n".encode("latin-1"), "line 2 is not UTF-8"),
    "utf-16": ("a,label\n1,x\n".encode("utf-16"), "not UTF-8"),
    "nul-bytes": (b"a,label\n1,x\0\n", "NUL"),
    "binary": (bytes(range(256)) * 2, ""),
    "too-few-per-class": ("a,label\n1,x\n2,y\n3,y\n", "fewer than 2 samples"),
    "quoted-garbage": ('a,label\n"1,x\n', ""),
}

_file_cases(
    "train-data",
    DATA_CSVS,
    "data.csv",
    ["train", "--fast-sim", "--data", "{file}", "--target", "label", "--out", "{d}/t"],
)


@case("train-data-missing", "does not exist")
def _(d: Path) -> list[str]:
    return ["train", "--fast-sim", "--data", str(d / "no.csv"), "--target", "y", "--out", str(d)]


@case("train-data-without-target", "--target")
def _(d: Path) -> list[str]:
    data = _write(d / "data.csv", "a,label\n1,x\n2,y\n")
    return ["train", "--fast-sim", "--data", str(data), "--out", str(d / "t")]


# -- flags ----------------------------------------------------------------------------------

FLAGS: dict[str, tuple[list[str], str]] = {
    "acquire-nothing": (["acquire"], "--out"),
    "acquire-no-settings": (["acquire", "--out", "{d}/r.h5"], "give the settings"),
    "acquire-both": (
        ["acquire", "--inputs", "{d}/a.csv", "--sweep", "bias_a=1", "--out", "{d}/r.h5"],
        "exclude each other",
    ),
    "acquire-sweep-no-equals": (["acquire", "--sweep", "bias_a", "--out", "{d}/r.h5"], "expected"),
    "acquire-sweep-empty": (["acquire", "--sweep", "bias_a=", "--out", "{d}/r.h5"], "expected"),
    "acquire-sweep-unknown": (["acquire", "--sweep", "gain=1", "--out", "{d}/r.h5"], "unknown"),
    "acquire-sweep-two-colons": (["acquire", "--sweep", "bias_a=1:2", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-four-parts": (["acquire", "--sweep", "bias_a=1:2:3:4", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-count-zero": (["acquire", "--sweep", "bias_a=1:2:0", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-count-negative": (
        ["acquire", "--sweep", "bias_a=1:2:-3", "--out", "{d}/r.h5"],
        "",
    ),
    "acquire-sweep-count-nan": (["acquire", "--sweep", "bias_a=1:2:nan", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-count-inf": (["acquire", "--sweep", "bias_a=1:2:inf", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-count-huge": (
        ["acquire", "--sweep", "drive_hz=2e9:2.3e9:1e12", "--out", "{d}/r.h5"],
        "points",
    ),
    "acquire-sweep-start-nan": (["acquire", "--sweep", "bias_a=nan:2:3", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-list-text": (["acquire", "--sweep", "bias_a=1,x", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-list-inf": (["acquire", "--sweep", "bias_a=1,inf", "--out", "{d}/r.h5"], ""),
    "acquire-sweep-twice": (
        ["acquire", "--sweep", "bias_a=1", "--sweep", "bias_a=2", "--out", "{d}/r.h5"],
        "swept twice",
    ),
    "acquire-sweep-outside": (["acquire", "--sweep", "bias_a=0:9:3", "--out", "{d}/r.h5"], "range"),
    "acquire-grid-too-large": (
        [
            "acquire",
            "--sweep",
            "drive_hz=2e9:2.3e9:100000000",
            "--sweep",
            "bias_a=0:2:100000",
            "--out",
            "{d}/r.h5",
        ],
        "would need",
    ),  # fmt: skip
    "acquire-repeats-zero": (
        ["acquire", "--sweep", "bias_a=1", "--repeats", "0", "--out", "{d}/r.h5"],
        "",
    ),
    "acquire-repeats-text": (
        ["acquire", "--sweep", "bias_a=1", "--repeats", "x", "--out", "{d}/r.h5"],
        "",
    ),
    "acquire-chunk-zero": (
        ["acquire", "--sweep", "bias_a=1", "--chunk", "0", "--out", "{d}/r.h5"],
        "",
    ),
    "acquire-unknown-flag": (["acquire", "--frobnicate", "--out", "{d}/r.h5"], ""),
    "acquire-out-folder-missing": (
        ["acquire", "--sweep", "bias_a=1", "--out", "{d}/no/such/r.h5"],
        "does not exist",
    ),
    "acquire-out-is-folder": (["acquire", "--sweep", "bias_a=1", "--out", "{d}"], "already exists"),
    "acquire-out-unwritable": (
        ["acquire", "--sweep", "bias_a=1", "--out", "/sys/labpgt-corpus.h5"],
        "",
    ),
    "acquire-resume-missing": (["acquire", "--resume", "--out", "{d}/none.h5"], "does not exist"),
    "acquire-allow-change-alone": (
        ["acquire", "--sweep", "bias_a=1", "--allow-bench-change", "--out", "{d}/r.h5"],
        "goes with --resume",
    ),
    "acquire-bench-missing": (
        ["acquire", "--bench", "{d}/none.toml", "--sweep", "bias_a=1", "--out", "{d}/r.h5"],
        "does not exist",
    ),
    "train-unknown-task": (["train", "--task", "chess", "--out", "{d}/t"], "unknown task"),
    "train-unknown-method": (["train", "--method", "magic", "--out", "{d}/t"], "unknown method"),
    "train-unknown-model": (["train", "--model", "huge", "--out", "{d}/t"], "unknown model"),
    "train-bench-and-fast-sim": (
        ["train", "--bench", "{d}/b.toml", "--fast-sim", "--out", "{d}/t"],
        "exclude each other",
    ),
    "train-backprop-on-bench": (
        ["train", "--method", "backprop", "--out", "{d}/t"],
        "only possible with --fast-sim",
    ),
    "train-test-fraction": (
        ["train", "--fast-sim", "--test-fraction", "2", "--out", "{d}/t"],
        "test-fraction",
    ),
    "train-method-opt-bad": (
        ["train", "--fast-sim", "--method-opt", "novalue", "--out", "{d}/t"],
        "",
    ),
    "train-task-opt-unknown": (
        ["train", "--fast-sim", "--task-opt", "frob=1", "--out", "{d}/t"],
        "",
    ),
    "train-epochs-text": (["train", "--epochs", "many", "--out", "{d}/t"], ""),
    "train-calibration-missing": (
        ["train", "--fast-sim", "--calibration", "{d}/none.h5", "--out", "{d}/t"],
        "does not exist",
    ),
    "train-out-unwritable": (["train", "--fast-sim", "--epochs", "1", "--out", "/sys/t"], ""),
    "show-missing": (["show", "{d}/none.h5"], "does not exist"),
    "show-plot-and-no-plot": (
        ["show", "{d}/none.h5", "--plot", "{d}/a.png", "--no-plot"],
        "exclude each other",
    ),
    "show-no-args": (["show"], ""),
    "sim-serve-bad-family": (["sim", "serve", "--generator-family", "acme"], "must be one of"),
    "sim-serve-remote-host": (["sim", "serve", "--host", "0.0.0.0"], "--allow-remote"),
    "sim-serve-bench-folder": (
        ["sim", "serve", "--write-bench", "{d}/no/b.toml"],
        "does not exist",
    ),
    "unknown-command": (["frobnicate"], ""),
}

for _name, (_argv, _message) in FLAGS.items():

    def _flags(d: Path, argv=_argv) -> list[str]:
        _write(d / "a.csv", "bias_a\n1.8\n")
        _write(d / "b.toml", BENCH)
        return [a.replace("{d}", str(d)) for a in argv]

    CASES.append(Case(f"flags-{_name}", _flags, _message))


# -- run files (show, acquire --resume) -------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory.mktemp("good") / "good.h5")


def _mutate(fn: Callable[[h5py.File], None]) -> Callable[[Path, Path], Path]:
    def build(good: Path, d: Path) -> Path:
        path = d / "run.h5"
        shutil.copy(good, path)
        with h5py.File(path, "r+") as f:
            fn(f)
        return path

    return build


def _bytes(fn: Callable[[bytes], bytes]) -> Callable[[Path, Path], Path]:
    def build(good: Path, d: Path) -> Path:
        return _write(d / "run.h5", fn(good.read_bytes()))

    return build


def _flip(data: bytes, at: float) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes(b ^ 0xFF for b in data[i : i + 64]) + data[i + 64 :]


def _set_attr(name: str, value: str) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        f.attrs[name] = value

    return fn


def _drop(name: str) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[name]

    return fn


def _reshape(name: str, shape: tuple[int, ...], dtype: str = "f8") -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=np.zeros(shape, dtype=dtype))

    return fn


RUN_FILES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "zero-bytes": (lambda g, d: _write(d / "run.h5", b""), "empty (0 bytes)"),
    "text": (lambda g, d: _write(d / "run.h5", "hello\n"), "not an HDF5 file"),
    "random": (lambda g, d: _write(d / "run.h5", bytes(range(256)) * 64), "not an HDF5 file"),
    "csv": (lambda g, d: _write(d / "run.h5", "bias_a\n1.8\n"), "not an HDF5 file"),
    "truncated-1pc": (_bytes(lambda b: b[: len(b) // 100]), ""),
    "truncated-10pc": (_bytes(lambda b: b[: len(b) // 10]), ""),
    "truncated-50pc": (_bytes(lambda b: b[: len(b) // 2]), ""),
    "truncated-90pc": (_bytes(lambda b: b[: len(b) * 9 // 10]), ""),
    "truncated-superblock": (_bytes(lambda b: b[:40]), ""),
    "flipped-superblock": (_bytes(lambda b: _flip(b, 0.0)), ""),
    "flipped-header": (_bytes(lambda b: _flip(b, 0.001)), ""),
    "format-wrong": (_mutate(_set_attr("format", "something-else/9")), "not a labpgt acquisition"),
    "format-missing": (_mutate(lambda f: f.attrs.__delitem__("format")), "not a labpgt"),
    "snapshot-broken-json": (_mutate(_set_attr("snapshot", "{not json")), "not valid JSON"),
    "snapshot-list": (_mutate(_set_attr("snapshot", "[1, 2]")), "not a JSON dict"),
    "sweeps-broken-json": (_mutate(_set_attr("sweeps", "[")), "not valid JSON"),
    "resumes-broken-json": (_mutate(_set_attr("resumes", "{")), "not valid JSON"),
    "resumes-dict": (_mutate(_set_attr("resumes", "{}")), "not a JSON list"),
    "no-traces": (_mutate(_drop("traces_dbm")), "/traces_dbm is missing"),
    "no-done": (_mutate(_drop("shots/done")), "/shots/done is missing"),
    "no-settings": (_mutate(_drop("shots/settings")), "/shots/settings is missing"),
    "no-inputs": (_mutate(_drop("inputs")), "/inputs is missing"),
    "no-frequency": (_mutate(_drop("frequency_hz")), "/frequency_hz is missing"),
    "no-shots-group": (_mutate(_drop("shots")), "is missing"),
    "no-timestamps": (_mutate(_drop("shots/timestamp_s")), "/shots/timestamp_s is missing"),
    "no-repeat-index": (_mutate(_drop("shots/repeat_index")), "/shots/repeat_index is missing"),
    "traces-wrong-shape": (_mutate(_reshape("traces_dbm", (6, 5), "f4")), "/traces_dbm has shape"),
    "done-wrong-length": (_mutate(_reshape("shots/done", (3,), "bool")), "has shape"),
    "settings-1d": (_mutate(_reshape("shots/settings", (6,))), "dimension"),
    "inputs-wrong-width": (_mutate(_reshape("inputs", (6, 2))), "/inputs has shape"),
    "input-index-outside": (
        _mutate(lambda f: f["shots/input_index"].__setitem__(0, 99)),
        "points outside /inputs",
    ),
    "settings-text": (
        _mutate(
            lambda f: (
                f.__delitem__("shots/settings"),
                f.create_dataset("shots/settings", data=np.array([b"x"] * 6)),
            )
        ),
        "",
    ),
    "traces-is-group": (
        _mutate(lambda f: (f.__delitem__("traces_dbm"), f.create_group("traces_dbm"))),
        "missing",
    ),
}

for _name, (_build, _message) in RUN_FILES.items():

    def _show(d: Path, good: Path, build=_build) -> list[str]:
        return ["show", str(build(good, d)), "--no-plot"]

    def _resume(d: Path, good: Path, build=_build) -> list[str]:
        return ["acquire", "--resume", "--no-noise", "--out", str(build(good, d))]

    CASES.append(Case(f"show-run-{_name}", _show, _message, True))  # type: ignore[arg-type]
    CASES.append(Case(f"resume-run-{_name}", _resume, _message, True))  # type: ignore[arg-type]


@case("show-plot-unwritable", "cannot write", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    return ["show", str(good), "--plot", "/sys/labpgt-corpus.png"]


@case("show-plot-folder-missing", "does not exist", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    return ["show", str(good), "--plot", str(d / "no" / "x.png")]


@case("show-plot-bad-format", "", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    return ["show", str(good), "--plot", str(d / "x.notaformat")]


def _resume_copy(d: Path, good: Path, *args: str) -> list[str]:
    """`acquire --resume ARGS` on a copy of the good run."""
    run = d / "run.h5"
    shutil.copy(good, run)
    return ["acquire", "--resume", *args, "--no-noise", "--out", str(run)]


@case("resume-other-settings", "created for other settings", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    return _resume_copy(d, good, "--sweep", "bias_a=1")


@case("resume-with-a-huge-sweep", "created for other settings", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    sweeps = ["--sweep", "drive_hz=2e9:2.3e9:100000000", "--sweep", "bias_a=0:2:100000"]
    return _resume_copy(d, good, *sweeps)


@case("resume-other-seed", "recorded on another bench", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    return _resume_copy(d, good, "--seed", "7")


@case("resume-calibration-as-run", "not a labpgt acquisition", needs_run=True)
def _(d: Path, good: Path) -> list[str]:  # type: ignore[misc]
    path = d / "cal.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "labpgt-calibration/1"
    return ["acquire", "--resume", "--out", str(path)]


# -- calibration files ----------------------------------------------------------------------


def _cal_with(attrs: dict[str, str]) -> Callable[[Path, Path], Path]:
    def build(good: Path, d: Path) -> Path:
        from labpgt.calibration.store import FORMAT

        path = d / "cal.h5"
        with h5py.File(path, "w") as f:
            f.attrs["format"] = FORMAT
            for key, value in attrs.items():
                f.attrs[key] = value
        return path

    return build


CALIBRATIONS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "zero-bytes": (lambda g, d: _write(d / "cal.h5", b""), ""),
    "text": (lambda g, d: _write(d / "cal.h5", "calibration\n"), ""),
    "run-file": (lambda g, d: g, "not a calibration"),
    "format-only": (_cal_with({}), "damaged calibration file"),
    "summary-broken-json": (_cal_with({"summary": "{oops"}), "damaged calibration file"),
    "all-attrs-broken": (
        _cal_with(
            {
                k: "["
                for k in (
                    "summary",
                    "operating",
                    "encoding_ranges",
                    "surrogate_architecture",
                    "feature_spec",
                    "feature_names",
                    "snapshot",
                    "plan",
                    "labpgt_version",
                )
            }
        ),
        "damaged calibration file",
    ),  # fmt: skip
    "truncated-run": (_bytes(lambda b: b[: len(b) // 3]), ""),
}

for _name, (_build, _message) in CALIBRATIONS.items():

    def _train_cal(d: Path, good: Path, build=_build) -> list[str]:
        cal = build(good, d)
        return ["train", "--fast-sim", "--calibration", str(cal), "--out", str(d / "t")]

    def _check_cal(d: Path, good: Path, build=_build) -> list[str]:
        return ["calibrate", "--check", str(build(good, d))]

    CASES.append(Case(f"train-calibration-{_name}", _train_cal, _message, True))  # type: ignore[arg-type]
    CASES.append(Case(f"calibrate-check-{_name}", _check_cal, _message, True))  # type: ignore[arg-type]


# -- the corpus -----------------------------------------------------------------------------


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 150, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)


def _argv(item: Case, folder: Path, good_run: Path) -> list[str]:
    if item.needs_run:
        return item.build(folder, good_run)  # type: ignore[call-arg]
    return item.build(folder)


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_one_error_line_and_exit_2(
    item: Case, tmp_path: Path, good_run: Path, capsys: pytest.CaptureFixture[str]
):
    argv = _argv(item, tmp_path, good_run)
    code, lines = cli_lines(capsys, argv)
    text = "\n".join(lines)
    assert code == 2, text
    assert "Traceback" not in text
    errors = [line for line in lines if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, text
    if item.message:
        assert item.message in " ".join(text.split()), text


SUBPROCESS_CASES = [
    "acquire-bench-latin-1",
    "acquire-inputs-nul-bytes",
    "train-data-latin-1",
    "show-run-truncated-50pc",
    "resume-run-snapshot-broken-json",
    "flags-acquire-grid-too-large",
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_as_a_real_process(name: str, tmp_path: Path, good_run: Path):
    item = next(c for c in CASES if c.name == name)
    argv = _argv(item, tmp_path, good_run)
    r = subprocess.run(
        [sys.executable, "-m", "labpgt", *argv], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()][-1].startswith("error:")


# -- property tests of the loaders ----------------------------------------------------------

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CSV_ALPHABET = st.sampled_from(list("drive_hzbias_dbm,0123456789.eE+-naif \n\t\"';:\r\x00\xe9"))


@FAST
@given(text=st.text(CSV_ALPHABET, max_size=200))
def test_any_settings_csv_loads_or_is_a_user_error(text: str, tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_text(text, encoding="utf-8")
    try:
        inputs = read_inputs_csv(path)
    except UserError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert inputs.ndim == 2 and inputs.shape[1] == 3 and bool(inputs.isfinite().all())


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.text(CSV_ALPHABET, max_size=200).map(lambda t: ("a,b,label\n" + t).encode()),
    )
)
def test_any_data_csv_loads_or_is_a_user_error(data: bytes, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    path.write_bytes(data)
    try:
        x, y, classes = load_csv(path, "label")
    except UserError:
        return
    assert np.isfinite(x).all() and len(classes) >= 2 and y.shape[0] == x.shape[0]


_TOML_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.text(max_size=20),
)


@FAST
@given(
    table=st.sampled_from(
        ["generator", "analyzer", "supply", "limits", "settle", "analyzer_defaults"]
    ),
    field=st.sampled_from(
        ["resource", "family", "timeout_s", "bias_max_a", "ramp_rate_a_per_s", "ramp_step_a",
         "points", "rbw_hz", "bias_s", "wait", "frequency_min_hz", "other"]
    ),
    value=_TOML_VALUES,
)  # fmt: skip
def test_any_bench_field_value_loads_or_is_a_user_error(table, field, value, tmp_path_factory):
    from labpgt.instruments.bench_file import _toml_value

    path = tmp_path_factory.mktemp("bench") / "bench.toml"
    lines, section = [], None
    for line in BENCH.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        key = line.split("=")[0].strip()
        if section == table and key == field:
            continue
        lines.append(line)
        if line == f"[{table}]":
            lines.append(f"{field} = {_toml_value(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        check_bench_file(path)
    except UserError as exc:
        assert str(exc).strip()


@FAST
@given(text=st.text(st.sampled_from(list("drive_hzbias=0123456789.:,eE+-naif ")), max_size=40))
def test_any_sweep_text_parses_or_is_a_user_error(text: str):
    try:
        sweep = parse_sweep(text)
    except UserError:
        return
    assert sweep.count >= 1
