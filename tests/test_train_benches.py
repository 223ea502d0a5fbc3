"""`labpgt train` on several benches: two bench files (two virtual benches served on loopback)
and Ray actors that each own an embedded bench; the one-line refusals before anything runs."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from cli_runner import cli_error, tiny_csv
from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

from labpgt.embedded import EMBEDDED_LIMITS

TINY = shlex.split("--channels 2 --bins 8 --hidden 4 --batch-size 12 --warmup-samples 16")


@contextmanager
def served_bench_files(
    folder: Path, n: int, *, exact: bool = False
) -> Iterator[tuple[list[Path], list[VirtualBench]]]:
    """n virtual benches on loopback sockets, each described by its own bench file.
    ``exact``: rings without noise, drift or hysteresis, all of seed 0, so a setting's
    features do not depend on the bench nor on what it measured before."""
    params = RingParams(noise=False, drift=False, hysteresis=False) if exact else RingParams()
    with ExitStack() as stack:
        paths, benches = [], []
        for i in range(n):
            seed = 0 if exact else i
            vb = stack.enter_context(VirtualBench(RingModel(params, seed=seed), seed=seed))
            cfg = bench_config_from_resources(
                vb.resources,
                families=vb.families,
                limits=EMBEDDED_LIMITS,
                settle={"wait": False},
                analyzer_defaults=AnalyzerGrid().model_dump(),
            )
            paths.append(dump_bench(cfg, folder / f"bench-{len(list(folder.glob('*.toml')))}.toml"))
            benches.append(vb)
        yield paths, benches


def _train(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> tuple[int, str]:
    data = tiny_csv(tmp_path / "tiny.csv")
    argv = ["train", "--data", str(data), "--target", "label", *TINY, "--epochs", "1"]
    return cli_error(capsys, *argv, "--out", str(tmp_path / "run"), *extra)


def _check_benches_json(out: Path, names: list[str]) -> list[dict]:
    """benches.json names every bench; each measured; together more than the training's
    queries (warm-up, baseline and evaluation shots went to them too)."""
    benches = json.loads((out / "benches.json").read_text())
    assert [b["name"] for b in benches] == names
    assert all(b["failed"] is None and b["chunks"] > 0 and b["queries"] > 0 for b in benches)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(b["queries"] for b in benches) > summary["final"]["queries"] > 0
    return benches


def test_train_on_two_bench_files_measures_on_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_bench_files(tmp_path, 2) as (paths, virtual):
        bench_args = [arg for path in paths for arg in ("--bench", str(path))]
        code, err = _train(capsys, tmp_path, *bench_args)
        assert code == 0, err
        benches = _check_benches_json(tmp_path / "run", [str(p) for p in paths])
        # each bench's shots are sweeps of its own analyzer, one sweep a shot
        for record, vb in zip(benches, virtual, strict=True):
            assert vb.analyzer.sweeps >= record["queries"] > 0
        assert all(not vb.generator.rf_on for vb in virtual)  # both left safe
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["bench"] == [str(p) for p in paths]


def _metrics_but_time(out: Path) -> list[list[str]]:
    """metrics.csv without its clock columns (wall and instrument time)."""
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in ("wall_s", "instrument_time_s")]
    return [[row[i] for i in keep] for row in rows]


def test_a_bench_file_killed_mid_run_drains_to_the_other_with_no_probe_lost_or_repeated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The multi-bench test's kill (tests/test_multibench.py) through `labpgt train`: every
    server of one of two exact benches stops mid-run; the run goes on on the other and its
    figures and query counts are those of a run on one bench."""
    with served_bench_files(tmp_path, 1, exact=True) as ([alone], _):
        code, err = _train(capsys, tmp_path, "--bench", str(alone), "--epochs", "2")
        assert code == 0, err
    reference = _metrics_but_time(tmp_path / "run")
    (tmp_path / "run").rename(tmp_path / "reference")
    with served_bench_files(tmp_path, 2, exact=True) as (paths, (live, victim)):
        resources = victim.resources, live.resources

        def kill_after_some_sweeps() -> None:
            while victim.analyzer.sweeps < 60 and not stop.is_set():
                time.sleep(0.002)
            victim.stop()  # every server of that bench closes, mid-run

        stop = threading.Event()
        killer = threading.Thread(target=kill_after_some_sweeps)
        killer.start()
        bench_args = [arg for path in paths for arg in ("--bench", str(path))]
        try:
            code, err = _train(capsys, tmp_path, *bench_args, "--epochs", "2")
        finally:
            stop.set()
            killer.join()
    # Nothing confirms the dead bench's RF is off: the run ends in the unsafe-shutdown report
    # (exit 3) after training finished on the live bench.
    assert code == 3 and "the safe shutdown FAILED" in err, err
    assert resources[0]["generator"] in err and resources[1]["generator"] not in err
    benches = json.loads((tmp_path / "run" / "benches.json").read_text())
    assert benches[0]["failed"] is None and benches[1]["failed"] is not None
    assert benches[1]["chunks"] >= 1  # it measured before it died
    assert _metrics_but_time(tmp_path / "run") == reference


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--fast-sim"], "--ray runs benches in Ray actors; not with --fast-sim"),
        (["--address", "127.0.0.1:1"], "--address is the Ray cluster of --ray: add --ray"),
        (
            ["--ray", "--benches", "2", "--address", "127.0.0.1:1"],
            "--address 127.0.0.1:1: no Ray cluster answers there",
        ),
        (["--ray", "--address", "nowhere"], "--address 'nowhere': expected HOST:PORT"),
    ],
)
def test_bench_choices_that_cannot_run_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, err = _train(capsys, tmp_path, *extra)
    assert code == 2 and message in err, err
    assert "\n" not in err.strip() and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_same_bench_file_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_bench_files(tmp_path, 1) as ([path], [vb]):
        code, err = _train(capsys, tmp_path, "--bench", str(path), "--bench", str(path))
        assert code == 2 and f"--bench {path} is given twice" in err, err
        assert vb.analyzer.sweeps == 0  # refused before any instrument was opened


def test_ray_missing_is_refused_before_any_bench_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    code, err = _train(capsys, tmp_path, "--ray", "--benches", "2")
    assert code == 2 and "--ray needs Ray, which is not installed" in err, err
    assert not (tmp_path / "run" / "benches.json").exists()


def test_train_on_two_ray_actors_each_owning_a_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    code, err = _train(capsys, tmp_path, "--ray", "--benches", "2")
    assert code == 0, err
    _check_benches_json(tmp_path / "run", ["bench0", "bench1"])
    assert not ray.is_initialized()  # the local Ray this run started is stopped


def test_train_on_two_bench_files_each_opened_by_a_ray_actor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ray with bench files: each file's instruments are opened and driven by its own Ray
    actor (here two virtual benches on loopback), not by this process."""
    ray = pytest.importorskip("ray")
    with served_bench_files(tmp_path, 2) as (paths, virtual):
        bench_args = [arg for path in paths for arg in ("--bench", str(path))]
        code, err = _train(capsys, tmp_path, "--ray", *bench_args)
        assert code == 0, err
        benches = _check_benches_json(tmp_path / "run", [str(p) for p in paths])
        for record, vb in zip(benches, virtual, strict=True):
            assert vb.analyzer.sweeps >= record["queries"] > 0
        assert all(not vb.generator.rf_on for vb in virtual)  # both left safe by their actor
    assert not ray.is_initialized()


def test_a_bench_file_a_ray_actor_cannot_open_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    with served_bench_files(tmp_path, 1) as ([path], _):
        pass  # the servers are gone: nothing answers at the file's addresses
    code, err = _train(capsys, tmp_path, "--ray", "--bench", str(path))
    assert code == 2 and err.startswith(f"error: {path}: the bench's Ray actor did not start"), err
    assert "\n" not in err.strip()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bench-resource", "pc_a"], "--bench-resource places a bench's Ray actor: add --ray"),
        (
            ["--ray", "--benches", "2", "--bench-resource", "pc_a"],
            "--bench-resource is given 1 times for 2 benches",
        ),
        (
            ["--ray", "--benches", "2", "--bench-resource", "pc_a", "--bench-resource", "pc_a"],
            "--bench-resource pc_a is given twice",
        ),
    ],
)
def test_bench_resources_that_cannot_place_the_benches_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, err = _train(capsys, tmp_path, *extra)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_bench_resource_no_node_offers_is_one_line_before_any_actor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, resources={"pc_a": 1}, include_dashboard=False)
    try:
        places = ["--bench-resource", "pc_a", "--bench-resource", "pc_z"]
        code, err = _train(capsys, tmp_path, "--ray", "--benches", "2", *places)
        assert ray.available_resources().get("pc_a") == 1  # no actor took it
    finally:
        ray.shutdown()
    assert code == 2 and "--bench-resource pc_z: no node of the Ray cluster offers it" in err
    assert "\n" not in err.strip()


def test_each_bench_actor_starts_on_the_node_with_its_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bench-resource: a bench file's actor needs its node's custom resource. While the run
    measures, the resource is held (the actor is placed on it); at the end it is free again."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, resources={"pc_a": 1, "pc_b": 1}, include_dashboard=False)
    held: list[dict[str, float]] = []
    stop = threading.Event()
    try:
        with served_bench_files(tmp_path, 2) as (paths, virtual):

            def watch() -> None:  # what the cluster has free while both benches measure
                while not stop.wait(0.05):
                    if all(vb.analyzer.sweeps > 0 for vb in virtual):
                        held.append(ray.available_resources())

            watcher = threading.Thread(target=watch)
            watcher.start()
            bench_args = [arg for path in paths for arg in ("--bench", str(path))]
            places = ["--bench-resource", "pc_a", "--bench-resource", "pc_b"]
            try:
                code, err = _train(capsys, tmp_path, "--ray", *bench_args, *places)
            finally:
                stop.set()
                watcher.join()
        assert code == 0, err
        _check_benches_json(tmp_path / "run", [str(p) for p in paths])
        assert any(r.get("pc_a", 0) == 0 and r.get("pc_b", 0) == 0 for r in held)
        deadline = time.monotonic() + 30  # the actors are killed at the end: Ray frees soon
        while ray.available_resources().get("pc_a") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ray.available_resources().get("pc_a") == 1
    finally:
        ray.shutdown()


@pytest.mark.parametrize("count", [1, 2])
def test_a_run_opens_the_bench_configs_its_checks_loaded_never_the_files_again(
    tmp_path: Path, count: int
) -> None:
    """`check_run` reads each bench file once; what the run opens is the config it produced
    (a file rewritten after the check, here made unreadable as TOML, is not read again)."""
    from labpgt.runner import check_run
    from labpgt.training.config import make_config
    from labpgt.training.environment import open_backend

    data = tiny_csv(tmp_path / "tiny.csv")
    with served_bench_files(tmp_path, count) as (paths, _):
        files = [str(path) for path in paths]
        config = make_config(
            data=str(data), target="label", channels=2, bins=8, hidden=4, batch_size=12,
            warmup_samples=16, epochs=1, out=str(tmp_path / "run"),
            bench=files[0] if count == 1 else tuple(files),
        )  # fmt: skip
        _, benches = check_run(config, None, resume=False, overwrite=False)
        for path in paths:
            path.write_text("not = [a bench file\n")
        with open_backend(config, benches) as backend:
            if count == 1:
                opened = [backend.reservoir.bench.cfg]
            else:
                opened = [b.reservoir.bench.cfg for b in backend.scheduler.benches]
        assert len(benches) == count
        assert all(a is b for a, b in zip(opened, benches, strict=True))
