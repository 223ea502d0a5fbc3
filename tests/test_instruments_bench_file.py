"""The bench file: TOML in and out, validation errors that name the field."""

from __future__ import annotations

import tomllib

import pytest
from labpgt.instruments.bench import (
    BenchConfig,
    bench_config_from_resources,
    bench_toml,
    dump_bench,
    load_bench,
    validate_bench,
)
from labpgt.instruments.instrument_errors import BenchConfigError

CONTRACT_EXAMPLE = """
visa_library = "@py"                 # or a vendor VISA path, or "file.yaml@sim"

[generator]
resource = "TCPIP::127.0.0.1::5025::SOCKET"
family = "keysight_mxg"              # or "rs_smb"
timeout_s = 5.0

[analyzer]
resource = "TCPIP::127.0.0.1::5026::SOCKET"
family = "keysight_x"                # or "rs_fsx"
timeout_s = 10.0

[supply]
resource = "ASRL/dev/pts/3::INSTR"
family = "kepco_bop"                 # or "keysight_e36xx"
timeout_s = 5.0

[limits]
bias_min_a = 0.0
bias_max_a = 2.5
ramp_rate_a_per_s = 2.0
ramp_step_a = 0.05
compliance_v = 20.0
power_min_dbm = -40.0
power_max_dbm = 0.0
frequency_min_hz = 2.0e9
frequency_max_hz = 2.3e9

[settle]
bias_s = 0.3
drive_s = 0.01
wait = true

[analyzer_defaults]
center_hz = 2.15e9
span_hz = 300e6
rbw_hz = 300e3
points = 1001
"""

RESOURCES = {
    "generator": "TCPIP::127.0.0.1::5025::SOCKET",
    "analyzer": "TCPIP::127.0.0.1::5026::SOCKET",
    "supply": "ASRL/dev/pts/3::INSTR",
}


def test_contract_example_loads_and_round_trips(tmp_path):
    src = tmp_path / "bench.toml"
    src.write_text(CONTRACT_EXAMPLE)
    cfg = load_bench(src)
    assert cfg.supply.resource == "ASRL/dev/pts/3::INSTR"
    assert cfg.limits.ramp_rate_a_per_s == 2.0 and cfg.settle.wait is True
    assert cfg.analyzer_defaults.points == 1001
    out = dump_bench(cfg, tmp_path / "again.toml")
    assert load_bench(out) == cfg
    # Flat tables only, in the contract's order.
    sections = [line for line in out.read_text().splitlines() if line.startswith("[")]
    assert sections == [
        "[generator]",
        "[analyzer]",
        "[supply]",
        "[limits]",
        "[settle]",
        "[analyzer_defaults]",
    ]


def test_from_resources_builds_a_ready_config():
    cfg = bench_config_from_resources(
        RESOURCES,
        families={"generator": "rs_smb", "supply": "keysight_e36xx"},
        timeouts_s={"analyzer": 2.0},
        limits={"bias_max_a": 1.0},
    )
    assert isinstance(cfg, BenchConfig)
    assert cfg.generator.family == "rs_smb" and cfg.analyzer.family == "keysight_x"
    assert cfg.analyzer.timeout_s == 2.0 and cfg.limits.bias_max_a == 1.0
    assert tomllib.loads(bench_toml(cfg))["generator"]["family"] == "rs_smb"


def test_strings_are_escaped_for_toml(tmp_path):
    cfg = bench_config_from_resources(RESOURCES, visa_library='C:\\VISA\\"odd" path.dll')
    assert load_bench(dump_bench(cfg, tmp_path / "b.toml")).visa_library == cfg.visa_library


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("ramp_rate_a_per_s = 2.0", "limits.ramp_rate_a_per_s: must be > 0"),
        ("ramp_step_a = 0.05", "limits.ramp_step_a: must be > 0"),
        ("bias_max_a = 2.5", "bias_min_a (0.0) must be <= bias_max_a"),
        ('family = "kepco_bop"                 # or "keysight_e36xx"', "supply.family: "),
        ("points = 1001", "analyzer_defaults.points: must be >= 2"),
        ("timeout_s = 10.0", "analyzer.timeout_s: must be > 0"),
    ],
)
def test_errors_name_the_field(tmp_path, patch, message):
    key = patch.split("=")[0].strip()
    bad = {
        "ramp_rate_a_per_s": "ramp_rate_a_per_s = 0",
        "ramp_step_a": "ramp_step_a = -1",
        "bias_max_a": "bias_max_a = -1.0",
        "family": 'family = "lambda_genesys"',
        "points": "points = 1",
        "timeout_s": "timeout_s = 0",
    }[key]
    path = tmp_path / "bench.toml"
    path.write_text(CONTRACT_EXAMPLE.replace(patch, bad))
    with pytest.raises(BenchConfigError) as info:
        load_bench(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_and_missing_fields(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(CONTRACT_EXAMPLE.replace("[settle]", "[settle]\nsettle_ms = 3"))
    with pytest.raises(BenchConfigError, match="settle.settle_ms: is not a known field"):
        load_bench(path)
    with pytest.raises(BenchConfigError, match="analyzer: is required"):
        validate_bench({"generator": {"resource": "x"}, "supply": {"resource": "y"}})


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(BenchConfigError, match="does not exist"):
        load_bench(tmp_path / "nope.toml")
    path = tmp_path / "broken.toml"
    path.write_text("[generator\nresource = 1")
    with pytest.raises(BenchConfigError, match="not valid TOML"):
        load_bench(path)


def test_missing_resource_role():
    with pytest.raises(BenchConfigError, match="resources: missing supply"):
        bench_config_from_resources({k: v for k, v in RESOURCES.items() if k != "supply"})
