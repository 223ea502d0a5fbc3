"""The study on local Ray: the serial runner's rows exactly, retried dead workers, resume,
and bad input refused before any job starts."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from labpgt.cli.app import main  # noqa: E402
from labpgt.errors import UserError  # noqa: E402
from labpgt.studies.presets import Entry, StudySpec, short_study  # noqa: E402
from labpgt.studies.protocol import _slug, choose, final_jobs, run_study, search_jobs  # noqa: E402
from labpgt.studies.ray_runner import (  # noqa: E402
    ROWS_DIR,
    RayRunner,
    WorkerFault,
    comparable,
    read_stored_rows,
    run_study_ray,
)


def tiny_study(**base: Any) -> StudySpec:
    """The short preset at a quarter of its budget: 4 search jobs and 8 final ones, about
    half a second each."""
    short = short_study()
    return replace(short, name="tiny", base={**short.base, "max_queries": 1_500, **base})


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def exact(row: dict[str, Any]) -> str:
    """A row as text without its clock fields: equal text is bit-identical floats (and NaN)."""
    return json.dumps(comparable(row), sort_keys=True)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("serial")
    run_study(tiny_study(), out, workers=1)
    return {r["key"]: r for r in jsonl_rows(out / "results.jsonl")}


@pytest.fixture(scope="module")
def ray_study(
    local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[str, int, int]]]:
    """The tiny study run once on Ray: its folder and the progress calls it made."""
    out = tmp_path_factory.mktemp("ray")
    seen: list[tuple[str, int, int]] = []
    run_study_ray(tiny_study(), out, progress=lambda phase, d, t, row: seen.append((phase, d, t)))
    return out, seen


def test_a_study_on_local_ray_gives_the_serial_runners_rows_bit_for_bit(
    ray_study: tuple[Path, list[tuple[str, int, int]]],
    serial_rows: dict[str, dict[str, Any]],
) -> None:
    spec = tiny_study()
    tmp_path, seen = ray_study
    rows = jsonl_rows(tmp_path / "results.jsonl")
    assert len(rows) == len(serial_rows) == 12  # 4 search + 4 entries x 2 seeds
    assert {r["key"] for r in rows} == set(serial_rows)
    for row in rows:
        assert exact(row) == exact(serial_rows[row["key"]]), row["key"]
    # Each job stored its row and its training checkpoint in the study folder.
    assert read_stored_rows(tmp_path).keys() == serial_rows.keys()
    for key, row in serial_rows.items():
        if row["method"] != "logistic":
            assert (tmp_path / "runs" / _slug(key) / "checkpoint.pt").is_file()
    # One progress stream for the study: each phase counts up to its job total.
    assert ("search", 4, 4) in seen and ("final", 8, 8) in seen
    chosen, _ = choose(spec, {r["key"]: r for r in rows})
    assert {j.key for j in final_jobs(spec, chosen)} <= {r["key"] for r in rows}


def test_a_worker_that_dies_has_its_job_retried_no_row_lost_or_repeated(
    local_ray: None, serial_rows: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    jobs = search_jobs(tiny_study())
    victim = "boundary/search/lr=0.03/seed=100"
    marker = tmp_path / "worker-died"
    runner = RayRunner(fault=WorkerFault(victim, str(marker)))
    runner(jobs, tmp_path, workers=2, done={})
    assert len(marker.read_text().split()) == 1  # the first attempt's worker process exited
    rows = jsonl_rows(tmp_path / "results.jsonl")
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == len(jobs) == 4
    by_key = {r["key"]: r for r in rows}
    assert exact(by_key[victim]) == exact(serial_rows[victim])


@pytest.mark.slow  # Ray backs off before restarting dead workers: ~15 s
def test_a_worker_that_keeps_dying_ends_the_study_after_its_retries(
    local_ray: None, tmp_path: Path
) -> None:
    spec = tiny_study()
    victim = search_jobs(spec)[0].key
    marker = tmp_path / "deaths"
    runner = RayRunner(max_retries=1, fault=WorkerFault(victim, str(marker), deaths=5))
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        run_study_ray(spec, tmp_path / "study", runner=runner)
    assert len(marker.read_text().split()) == 2  # the first attempt and its one retry
    assert victim not in {r["key"] for r in jsonl_rows(tmp_path / "study" / "results.jsonl")}


def test_an_interrupted_study_resumes_without_redoing_or_repeating_jobs(
    ray_study: tuple[Path, list[tuple[str, int, int]]],
    serial_rows: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    spec = tiny_study()
    shutil.copytree(ray_study[0], tmp_path, dirs_exist_ok=True)
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    # The driver was interrupted: its last three rows never reached results.jsonl, and
    # the job of the last one had not stored its row either.
    results.write_text("".join(lines[:-3]))
    lost = json.loads(lines[-1])["key"]
    (tmp_path / ROWS_DIR / f"{_slug(lost)}.json").unlink()
    # A stored row computed on another checkout is not taken: its job runs again.
    stale = json.loads(lines[-2])
    stale_file = tmp_path / ROWS_DIR / f"{_slug(stale['key'])}.json"
    stale_file.write_text(json.dumps({**stale, "commit": "0000000"}))
    runner = RayRunner()
    run_study_ray(spec, tmp_path, runner=runner)
    assert sorted(runner.submitted) == sorted([lost, stale["key"]])
    assert json.loads(stale_file.read_text())["commit"] == stale["commit"]
    rows = jsonl_rows(results)
    assert sorted(r["key"] for r in rows) == sorted(serial_rows)
    assert all(exact(r) == exact(serial_rows[r["key"]]) for r in rows)


def test_a_job_config_that_fails_validation_is_refused_before_any_job(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        run_study_ray(tiny_study(batch_size=0), tmp_path / "study")
    message = str(info.value)
    assert (
        "\n" not in message
        and "batch" in message
        and "digital same-shape network/search/lr=0.01" in message
    )
    assert not (tmp_path / "study").exists()


def test_every_preset_passes_validation_and_a_bad_calibrate_is_refused() -> None:
    """Jobs that train with a calibration the study makes (PAT) validate without it."""
    from labpgt.studies.presets import PAT_TWIN, PRESETS
    from labpgt.studies.ray_runner import validate_jobs

    for make in PRESETS.values():
        validate_jobs(make())  # no calibration is made here
    bad = StudySpec(
        "bad",
        tiny_study().base,
        (Entry("pat", {**PAT_TWIN, "calibrate": "--grid small"}, lrs=(0.01,)),),
        final_seeds=(0,),
    )
    with pytest.raises(UserError, match="list of labpgt calibrate arguments"):
        validate_jobs(bad)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("engine", ["ray", "auto"])
def test_an_unreachable_cluster_is_one_line_before_any_job(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "study"
    argv = ["study", "--preset", "short", "--out", str(out), "--engine", engine]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--address", address])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"error: --address {address}: no Ray cluster answers there (Connection refused)"
    )
    assert "study short" not in captured.out  # refused before the study started
    assert not out.exists()


def test_an_unwritable_storage_path_is_one_line_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "short", "--out", str(blocker / "study"), "--engine", "ray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {blocker / 'study'}: cannot write" in err


def test_the_process_engine_gives_the_same_rows(
    serial_rows: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    run_study(tiny_study(), tmp_path, workers=2)  # the process pool (--engine process)
    rows = jsonl_rows(tmp_path / "results.jsonl")
    assert sorted(exact(r) for r in rows) == sorted(exact(r) for r in serial_rows.values())


def test_an_unknown_engine_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "short", "--engine", "spark"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --engine 'spark': valid: auto, process, ray"
