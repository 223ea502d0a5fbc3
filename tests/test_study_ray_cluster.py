"""`labpgt study --address`: the study joins a Ray cluster that was started on its own.

The cluster here is a head node started with `ray start --head` in another process (as a
lab would on a server), on this machine; the study connects to it by address, runs its
jobs there and gives the serial runner's rows bit for bit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from test_study_ray import exact, jsonl_rows, tiny_study  # noqa: E402

from labpgt.studies.protocol import run_study  # noqa: E402
from labpgt.studies.ray_runner import run_study_ray  # noqa: E402

MARK = "labpgt_test_cluster"
"""A custom resource only the separately started head has: proof the study ran there."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head node in its own process group; stopped (SIGTERM) at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # no token: this machine only
    argv = [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
            f'--resources={{"{MARK}": 1}}', "--include-dashboard=false",
            "--disable-usage-stats", "--block"]  # fmt: skip
    with log.open("w") as fh:
        head = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert head.poll() is None, "ray start --head ended:\n" + log.read_text()
            assert time.monotonic() < deadline, "the head did not listen:\n" + log.read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # --block stops the node's processes on SIGTERM
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            head.kill()


def test_a_study_joins_a_cluster_by_address_and_gives_the_serial_rows(
    cluster: str, tmp_path: Path
) -> None:
    seen: list[dict[str, float]] = []

    def progress(phase: str, done: int, total: int, row: Any) -> None:
        seen.append(ray.cluster_resources())  # the driver is connected while jobs run

    run_study_ray(tiny_study(), tmp_path / "cluster", address=cluster, progress=progress)
    assert seen and all(resources.get(MARK) == 1 for resources in seen)
    assert not ray.is_initialized()  # the study leaves the cluster, which keeps running
    run_study(tiny_study(), tmp_path / "serial", workers=1)
    on_cluster = jsonl_rows(tmp_path / "cluster" / "results.jsonl")
    serial = jsonl_rows(tmp_path / "serial" / "results.jsonl")
    assert len(on_cluster) == len(serial) == 12
    assert sorted(exact(r) for r in on_cluster) == sorted(exact(r) for r in serial)
