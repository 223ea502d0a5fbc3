"""`labpgt sim serve` as a user runs it: a subprocess, its bench file, a check, then Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli_runner import exit_code
from labpgt.instruments.bench import Bench
from labpgt.instruments.bench_file import load_bench

STARTUP_S = 60.0  # importing torch on a loaded 2-core CI machine can take a while


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")


def read_until(proc: subprocess.Popen, marker: str, timeout_s: float) -> list[str]:
    """Lines the child prints up to and including the one containing `marker`."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
            if marker in line:
                return
        lines.put("")  # end of output: the child died

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line == "" and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} from the server; stdout so far: {seen}")


def start_server(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "240"}
    return subprocess.Popen(
        [sys.executable, "-m", "labpgt", "sim", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop_server(proc: subprocess.Popen, signum: int) -> tuple[int, str, str]:
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_writes_a_bench_file_that_checks_and_stops_cleanly(tmp_path, capsys, signum):
    bench_path = tmp_path / "bench.toml"
    serial = signum == signal.SIGTERM  # one run exercises the supply on a pty
    args = ["--write-bench", str(bench_path), "--no-noise"]
    if serial:
        args += ["--serial-supply", "--supply-family", "keysight_e36xx"]
    proc = start_server(args)
    try:
        lines = read_until(proc, "serving", STARTUP_S)
        printed = {
            line.split(": ", 1)[0]: line.split(": ", 1)[1]
            for line in lines
            if line.split(": ", 1)[0] in ("generator", "analyzer", "supply")
        }
        cfg = load_bench(bench_path)
        assert printed == {
            "generator": cfg.generator.resource,
            "analyzer": cfg.analyzer.resource,
            "supply": cfg.supply.resource,
        }
        assert cfg.generator.resource.startswith("TCPIP::127.0.0.1::")
        assert cfg.supply.resource.startswith("ASRL/dev/" if serial else "TCPIP::127.0.0.1::")
        assert cfg.supply.family == ("keysight_e36xx" if serial else "kepco_bop")

        assert exit_code(["instruments", "check", "--bench", str(bench_path)]) == 0
        out = capsys.readouterr().out
        assert "N5183B" in out and "N9020A" in out
        assert ("E36" if serial else "KEPCO") in out

        # The bench file drives the coupled servers: bias on the supply moves the spectrum.
        with Bench.open(cfg) as bench:
            bench.generator.power_dbm = -10.0
            bench.enable_outputs()
            bench.supply.current_a = 0.2
            assert abs(bench.supply.measured_current_a - 0.2) < 1e-6
            _, p_dbm = bench.analyzer.read_trace()
            assert p_dbm.shape == (cfg.analyzer_defaults.points,)
    finally:
        code, out, err = stop_server(proc, signum)
    assert code == 0, err
    assert "stopped after" in out and "bias steps" in out
    assert "Traceback" not in err


def test_serve_refuses_a_remote_host_without_consent(capsys):
    assert exit_code(["sim", "serve", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_names_a_bad_family(capsys):
    assert exit_code(["sim", "serve", "--analyzer-family", "hp8563"]) == 2
    assert "--analyzer-family must be one of keysight_x, rs_fsx" in capsys.readouterr().err
