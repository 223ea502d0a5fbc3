"""The study's grid of jobs on Ray: a local Ray sized to the cores, or a cluster by address.

`RayRunner` has the signature of `labpgt.studies.protocol.run_jobs`, so `run_study(..., runner=...)`
runs the protocol (search, choice on validation, final seeds) unchanged; only where
each job runs differs. Per job:

- the job runs as a Ray task (`run_job` in a worker process, one CPU, one torch thread),
  so a row is the one the serial runner computes for the same config and seed;
- the worker writes its row to ``<out>/rows/<job>.json`` (atomically) and its training
  checkpoint under ``<out>/runs/`` -- the study folder is the storage path, and on a
  cluster it must be a folder every node sees (a shared file system);
- the driver appends each row to ``results.jsonl`` once, by key; a row that a worker
  wrote but the driver never recorded (the driver was interrupted) is picked up by the
  next run instead of being recomputed;
- a worker process that dies (killed, out of memory, node lost) has its task retried
  by Ray (``max_retries``); an exception raised by the job itself is not retried and
  ends the study with that error.

Before any job starts: the cluster address must answer, the storage path must be
writable from a worker, and every job config must pass `make_config`'s validation.

The search phase runs the same fixed grid as the serial runner (every rate and variant
on the search seeds) as Ray tasks, so its rows, and therefore the chosen rate, are
identical to the serial runner's. Ray Tune's samplers (TPE) would try other points.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labpgt.errors import UserError
from labpgt.studies.presets import StudySpec
from labpgt.studies.protocol import (
    STARTED,
    Job,
    JobProgress,
    StudyProgress,
    _slug,
    append_row,
    ensure_writable,
    final_jobs,
    no_progress,
    run_job,
    search_jobs,
    train_kwargs,
)

ROWS_DIR = "rows"
"""Folder (inside the study folder) of the rows the workers write, one JSON file per job."""

TIMING_KEYS = ("seconds", "wall_s", "provenance")
"""Row fields that differ between two runs of the same job (clock, date): the rest is exact."""


def ray_available() -> bool:
    """True if the ``[scale]`` extra (Ray) is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class WorkerFault:
    """Test hook: the first `deaths` attempts of job `key` kill their worker (``os._exit``).

    `key` names a job of the grid (`Job.key`) or a trial of a Tune search
    (`labpgt.studies.tune_runner.trial_key`). Each dying attempt appends its process id to
    the file `marker` first, so the attempts after them run normally (and the file shows
    which worker processes died).
    """

    key: str
    marker: str
    deaths: int = 1

    def strike(self, key: str) -> None:
        """In a worker, at the start of job or trial `key`: die if this attempt is to."""
        if key != self.key:
            return
        marker = Path(self.marker)
        died = marker.read_text().split() if marker.exists() else []
        if len(died) < self.deaths:
            with marker.open("a") as fh:
                fh.write(f"{os.getpid()}\n")
            os._exit(1)  # the worker process dies: no exception, no cleanup


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its clock and date fields: equal for two runs of the same job."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def validate_jobs(spec: StudySpec) -> None:
    """Refuse a study with a job config that fails validation, before any job starts.

    Checks every search job and every final job each entry could be given (any of its
    choices), with `make_config` (the final jobs differ from the search ones by seed
    and ``eval_test``).
    """
    from labpgt.training.config import make_config

    jobs = list(search_jobs(spec))
    for entry in spec.entries:
        choices = entry.choices() if entry.lrs else [(0.01, {})]
        for choice in choices:
            jobs += [j for j in final_jobs(spec, {entry.label: choice}) if j.entry == entry.label]
    for job in jobs:
        if job.kind != "train":
            continue
        try:
            make_config(**train_kwargs(job.config, Path("."), make_calibration=False))
        except UserError as exc:
            raise UserError(f"study {spec.name}: job {job.key!r}: {exc}") from None
        except TypeError as exc:
            raise UserError(f"study {spec.name}: job {job.key!r}: {exc}") from None


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a cluster address that is malformed or where nothing answers (one line)."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"--address {address}: no Ray cluster answers there ({reason})") from None


def _write_row(out_dir: Path, row: dict[str, Any]) -> None:
    """Write a row to rows/<job>.json atomically (a retried job overwrites its own file)."""
    folder = out_dir / ROWS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(row))
    os.replace(tmp, folder / f"{_slug(row['key'])}.json")


def _job_task(
    job: Job, out_dir: str, fault: WorkerFault | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    """One job in a Ray worker: run it, store its row, return the row.

    A worker on the driver's commit records the driver's provenance (taken when the study
    started, as a forked process pool worker inherits it): a file edited since then must
    not flag the rows of this study as computed on a dirty tree. On another commit it keeps
    its own, and the driver refuses the row.
    """
    import labpgt.studies.protocol

    if labpgt.studies.protocol.STARTED["commit"] == provenance["commit"]:
        labpgt.studies.protocol.STARTED.update(provenance)
    if fault is not None:
        fault.strike(job.key)
    row = run_job(job, Path(out_dir))
    _write_row(Path(out_dir), row)
    return row


def _check_storage_task(out_dir: str) -> str | None:
    """In a worker: None if the study folder can be written there, else the reason."""
    try:
        folder = Path(out_dir) / ROWS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class RayRunner:
    """Runs a study's jobs as Ray tasks (a drop-in for `labpgt.studies.protocol.run_jobs`).

    ``address=None`` starts a local Ray with ``workers`` CPUs (0: every core) unless this
    process is connected to one already; an address joins that cluster.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        max_retries: int = 3,
        fault: WorkerFault | None = None,
    ) -> None:
        self.address = address
        self.max_retries = max_retries
        self.fault = fault
        self.submitted: list[str] = []
        """Keys of the jobs this runner sent to Ray, in order (what a resume recomputed)."""
        self._started_ray = False

    # --- setup -----------------------------------------------------------------------------

    def connect(self, workers: int = 0) -> None:
        """Start (or join) Ray; refuses an unreachable address before anything runs."""
        import logging

        import ray

        if self.address is not None:
            check_address(self.address)
        if ray.is_initialized():
            return
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,
        }
        if self.address is None:
            options["num_cpus"] = workers if workers > 0 else (os.cpu_count() or 1)
        try:
            # "local": a new Ray of our own, never one another program (or a stale
            # /tmp/ray/ray_current_cluster) points at
            ray.init(address=self.address or "local", **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--address {where}: cannot connect ({first})") from None
        self._started_ray = True

    def check_storage(self, out_dir: Path) -> None:
        """Refuse a study folder that a worker cannot write (on a cluster: not shared)."""
        import ray

        check = ray.remote(num_cpus=0)(_check_storage_task)
        reason = ray.get(check.remote(str(out_dir.resolve())))
        if reason is not None:
            raise UserError(f"--out {out_dir}: a Ray worker cannot write there ({reason})")

    def shutdown(self) -> None:
        """Stop the local Ray this runner started (a joined cluster keeps running)."""
        import ray

        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # --- the run_jobs interface ------------------------------------------------------------

    def __call__(
        self,
        jobs: list[Job],
        out_dir: Path,
        *,
        workers: int,
        done: dict[str, dict[str, Any]],
        progress: JobProgress = no_progress,
    ) -> dict[str, dict[str, Any]]:
        """Run the jobs not yet in `done` on Ray, appending each row to results.jsonl once."""
        self.connect(workers)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._recover_stored_rows(jobs, out_dir, done)
        todo = [j for j in jobs if j.key not in done]
        progress(len(jobs) - len(todo), len(jobs), None)
        if not todo:
            return done
        finished = len(jobs) - len(todo)
        with contextlib.closing(self._run_remote(todo, out_dir)) as rows:  # cancels on a raise
            for row in rows:
                _record(out_dir, row, done)
                finished += 1
                progress(finished, len(jobs), row)
        return done

    def _recover_stored_rows(
        self, jobs: list[Job], out_dir: Path, done: dict[str, dict[str, Any]]
    ) -> None:
        """Record the rows a worker stored but the driver never recorded (an interrupted
        driver); one computed on another checkout is left to be recomputed (and its file
        overwritten)."""
        wanted = {j.key for j in jobs}
        here = (STARTED["commit"], STARTED["dirty"])
        for row in read_stored_rows(out_dir).values():
            same_code = (row.get("commit"), row.get("provenance", {}).get("dirty")) == here
            if row["key"] in wanted and same_code:
                _record(out_dir, row, done)

    def _run_remote(self, todo: list[Job], out_dir: Path) -> Iterator[dict[str, Any]]:
        """Each job as a Ray task; their rows as they finish. A job's UserError is one line;
        the tasks still pending when this stops are cancelled."""
        import ray

        task = ray.remote(num_cpus=1, max_retries=self.max_retries)(_job_task)
        storage = str(out_dir.resolve())
        pending = {}
        for job in todo:
            pending[task.remote(job, storage, self.fault, STARTED)] = job
            self.submitted.append(job.key)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    row = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, Exception) else exc
                    if isinstance(cause, UserError):
                        raise UserError(f"job {job.key!r}: {cause}") from None
                    raise cause from None
                yield row
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _record(out_dir: Path, row: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
    """Append a row computed on this study's commit, once, whatever happened before."""
    if row["key"] in done:
        return
    if row.get("commit") != STARTED["commit"]:
        raise UserError(
            f"job {row['key']!r} ran on commit {row.get('commit')} but this study "
            f"runs {STARTED['commit']}: every Ray node must have this checkout "
            "installed"
        )
    append_row(out_dir, row, done)


def read_stored_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows the workers wrote to ``<out>/rows/`` (a file that cannot be read is skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    folder = out_dir / ROWS_DIR
    if not folder.is_dir():
        return rows
    for file in sorted(folder.glob("*.json")):
        if file.name.startswith(".tmp-"):
            continue
        try:
            row = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows[row["key"]] = row
    return rows


def connected_runner(
    spec: StudySpec,
    out_dir: Path,
    address: str | None,
    workers: int,
    runner: RayRunner | None = None,
) -> RayRunner:
    """Bad input refused before any job: job configs, the storage path (from this
    process and from a worker), the cluster; returns the connected runner."""
    validate_jobs(spec)
    ensure_writable(out_dir)
    runner = runner if runner is not None else RayRunner(address)
    runner.connect(workers)
    try:
        runner.check_storage(out_dir)
    except BaseException:
        runner.shutdown()
        raise
    return runner


def run_study_ray(
    spec: StudySpec,
    out_dir: Path,
    *,
    workers: int = 0,
    address: str | None = None,
    progress: StudyProgress = no_progress,
    runner: RayRunner | None = None,
) -> dict[str, Any]:
    """`run_study` on Ray: bad input refused first, then search and final seeds."""
    from labpgt.studies.protocol import run_study

    runner = connected_runner(spec, out_dir, address, workers, runner)
    try:
        return run_study(spec, out_dir, workers=workers, progress=progress, runner=runner)
    finally:
        runner.shutdown()
