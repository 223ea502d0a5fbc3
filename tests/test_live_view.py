"""The live view (`labpgt view`, ``--live``): bad input, a busy port, and a real browser.

The browser tests drive the distribution's Chromium (/usr/bin/chromium, installed by
`make`) through the Playwright package, against a real `labpgt acquire --live` on the
embedded virtual bench and a real short training run. They wait on what the page shows
(Bokeh's document in the page), never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import cli_lines, small_run

from labpgt.live.source import RunSource, classify

CHROMIUM = Path("/usr/bin/chromium")
TINY_TRAIN = (
    "--channels 1 --bins 8 --hidden 4 --batch-size 12 --warmup-samples 16 --fast-sim "
    "--method boundary --directions rademacher --probes 1 --epochs 3 --seed 5"
)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory.mktemp("live") / "good.h5")


def _tiny_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    rows = [f"{a:.4f},{b:.4f},{c:.4f},{t}" for (a, b, c), t in zip(x, y, strict=True)]
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return path


def _bad_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a piece of the expected error line)."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (folder / "nothere.h5", "does not exist")
    empty = folder / "empty.h5"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "empty (0 bytes)")
    text = folder / "notes.h5"
    text.write_text("sample 7, operator A\n")
    cases["text"] = (text, "not an HDF5 file")
    plain = folder / "plain.h5"
    with h5py.File(plain, "w") as h5:
        h5["x"] = np.arange(3)
    cases["foreign-hdf5"] = (plain, "without a labpgt 'format' attribute")
    other = folder / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.attrs["format"] = "someone-else/3"
    cases["other-format"] = (other, "not a labpgt run file (format 'someone-else/3')")
    old = folder / "old.h5"
    shutil.copy(good, old)
    with h5py.File(old, "r+") as h5:  # a layout of another version: no per-shot flags
        del h5["shots/done"]
    cases["old-version"] = (old, "written by another labpgt version")
    half = folder / "half.h5"
    data = good.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    cases["half-written"] = (half, str(half))
    empty_dir = folder / "notarun"
    empty_dir.mkdir()
    cases["folder"] = (empty_dir, "not a labpgt train run directory")
    return cases


BAD = ["missing", "empty", "text", "foreign-hdf5", "other-format", "old-version"]
BAD += ["half-written", "folder"]


@pytest.mark.parametrize("name", BAD)
def test_bad_run_is_one_error_line(
    name: str, tmp_path: Path, good_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, message = _bad_files(tmp_path, good_run)[name]
    code, lines = cli_lines(capsys, ["view", str(path)])
    text = "\n".join(lines)
    assert code == 2, text
    assert "Traceback" not in text
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert message in " ".join(text.split()), text


def test_port_in_use_says_so_and_offers_another(
    good_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, lines = cli_lines(capsys, ["view", str(good_run), "--port", str(port)])
    text = "\n".join(lines)
    assert code == 2, text
    assert len(lines) == 1, text
    found = re.search(rf"port {port} on 127\.0\.0\.1 is in use.*try --port (\d+)", text)
    assert found, text
    offered = int(found.group(1))
    assert offered != port
    with socket.socket() as probe:  # the port offered is one a server can listen on
        probe.bind(("127.0.0.1", offered))


def test_source_reads_what_the_run_file_holds(good_run: Path) -> None:
    assert classify(good_run) == "acquire"
    source = RunSource(good_run, "acquire", min_read_s=0.0)
    snap = source.poll()
    assert snap is not None and source.poll() is None  # an unchanged file is not read again
    good_run.touch()  # a new time stamp: read again
    assert source.poll() is not None
    with h5py.File(good_run, "r") as h5:
        last = int(np.argmax(h5["shots/timestamp_s"][...]))
        np.testing.assert_array_equal(snap.spectrum_dbm, h5["traces_dbm"][last])
        assert snap.drive_hz == h5["shots/settings"][last, 0]
        assert snap.shots_done == snap.shots_total == h5["shots/done"].shape[0]
        np.testing.assert_array_equal(snap.settings, h5["shots/settings"][...])


# ---- the real browser --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Chromium is missing: make installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


class _Lines:
    """Collects a process's stderr lines in a thread; `wait_for` waits for a pattern."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")  # end of stream
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        regex = re.compile(pattern)
        with self.cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if line == "":
                        raise AssertionError("process ended first:\n" + "".join(self.lines))
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                if not self.cond.wait(timeout_s):
                    raise AssertionError(
                        f"no {pattern!r} within {timeout_s} s:\n" + "".join(self.lines)
                    )


def _open_page(browser: object, url: str, timeout_s: float = 180.0) -> object:
    """Open ``url`` once the view listens: it starts at low priority, slowly on a busy machine."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex((host, int(port))) == 0:
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {url} after {timeout_s} s")
        time.sleep(0.25)
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(url, timeout=60_000)
    return page


MODEL = "Bokeh.documents.length && Bokeh.documents[0].get_model_by_name"
RANGES_HOLD_THE_DATA = """() => {
    const get = (n) => Bokeh.documents[0].get_model_by_name(n);
    const holds = (range, values) => values.length > 0 && values.every(
        (v) => !Number.isFinite(v) || (range.start <= v && v <= range.end));
    const spectrum = get('spectrum').data, settings = get('settings').data;
    return holds(get('spectrum_x'), Array.from(spectrum.frequency_ghz))
        && holds(get('spectrum_y'), Array.from(spectrum.power_dbm))
        && holds(get('settings_x'), Array.from(settings.x))
        && ['drive_ghz', 'drive_dbm', 'bias_a'].every(
            (c) => holds(get('settings_' + c), Array.from(settings[c])));
}"""


def test_acquire_live_page_shows_the_spectrum_and_follows_new_shots(
    browser: object, tmp_path: Path
) -> None:
    out = tmp_path / "run.h5"
    argv = ["acquire", "--out", str(out), "--realtime", "--sweep", "drive_hz=2.0e9:2.3e9:1000",
            "--sweep", "bias_a=1.6:1.9:8", "--chunk", "8"]  # fmt: skip
    with _live_page(browser, argv) as (_, page):
        spectrum = f"({MODEL}('spectrum'))"
        page.wait_for_function(  # type: ignore[attr-defined]
            f"() => window.Bokeh && {spectrum} && {spectrum}.data.power_dbm.length > 0",
            timeout=60_000,
        )
        shown = page.evaluate(  # type: ignore[attr-defined]
            """() => {
                const doc = Bokeh.documents[0];
                const s = doc.get_model_by_name('spectrum').data;
                const latest = doc.get_model_by_name('latest').data;
                return {points: s.power_dbm.length, ghz: Array.from(s.frequency_ghz),
                        dbm: Array.from(s.power_dbm), shot: latest.shot[0],
                        drive: Array.from(doc.get_model_by_name('drive').data.drive_ghz),
                        total: latest.shots_total[0]};
            }"""
        )
        with h5py.File(out, "r", locking=False) as h5:
            points = h5["frequency_hz"].shape[0]
            trace = h5["traces_dbm"][shown["shot"]]
            setting = h5["shots/settings"][shown["shot"]]
        assert shown["points"] == points
        assert shown["total"] == 8000
        np.testing.assert_allclose(shown["dbm"], trace, rtol=0, atol=1e-4)
        assert shown["drive"] == pytest.approx([setting[0] / 1e9])
        assert min(shown["ghz"]) <= setting[0] / 1e9 <= max(shown["ghz"])
        assert shown["shot"] < 7999, "the run ended before the page loaded: make it longer"
        # new shots arrive: the page shows a later shot, with that shot's trace
        page.wait_for_function(  # type: ignore[attr-defined]
            f"(before) => {MODEL}('latest').data.shot[0] > before",
            arg=shown["shot"],
            timeout=30_000,
        )
        later = page.evaluate(f"() => {MODEL}('latest').data.shot[0]")  # type: ignore[attr-defined]
        assert later > shown["shot"]
        settings = page.evaluate(f"() => {MODEL}('settings').data.x.length")  # type: ignore[attr-defined]
        assert settings > 1
        # the page sets its axes' ranges: every point shown lies within them (a range and
        # the data it must hold may arrive a moment apart, hence a wait)
        page.wait_for_function(RANGES_HOLD_THE_DATA, timeout=30_000)  # type: ignore[attr-defined]
        # a view started late, with `labpgt view`, on the file being written: it shows the
        # run from the file as it is now, and follows it too
        late = subprocess.Popen(
            [sys.executable, "-m", "labpgt", "view", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            found = _Lines(late.stderr).wait_for(r"live view of .*: (http://\S+/)", 120)
            late_page = _open_page(browser, found.group(1))
            late_page.wait_for_function(  # type: ignore[attr-defined]
                f"(before) => window.Bokeh && {MODEL}('latest') && "
                f"{MODEL}('latest').data.shot[0] > before && "
                f"{MODEL}('spectrum').data.power_dbm.length == {points}",
                arg=later,
                timeout=60_000,
            )
        finally:
            late.terminate()
            late.wait(timeout=30)


@contextlib.contextmanager
def _live_page(browser: object, argv: list[str]) -> Iterator[tuple[subprocess.Popen, object]]:
    """Start ``labpgt ARGV --live`` and open its page; (the run's process, the page). The run
    and its view are stopped on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labpgt", *argv, "--live"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    view_pid = None
    try:
        found = _Lines(proc.stderr).wait_for(
            r"live view: (http://127\.0\.0\.1:\d+/) \(view process (\d+)", 120
        )
        view_pid = int(found.group(2))
        yield proc, _open_page(browser, found.group(1))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if view_pid is not None:
            _stop(view_pid)


def test_train_live_page_shows_the_curves(browser: object, tmp_path: Path) -> None:
    data = _tiny_csv(tmp_path / "d.csv")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--target", "label", *shlex.split(TINY_TRAIN)]
    with _live_page(browser, [*argv, "--out", str(out)]) as (proc, page):
        # the page follows the run's epochs until the last (0 is before any training)
        page.wait_for_function(  # type: ignore[attr-defined]
            f"() => window.Bokeh && {MODEL}('metrics') && "
            f"{MODEL}('metrics').data.epoch.length == 4",
            timeout=120_000,
        )
        assert proc.wait(timeout=120) == 0
        shown = page.evaluate(  # type: ignore[attr-defined]
            f"""() => ({{epoch: Array.from({MODEL}('metrics').data.epoch),
                        queries: Array.from({MODEL}('metrics').data.queries),
                        steps: Array.from({MODEL}('batches').data.step),
                        status: {MODEL}('status').text}})"""
        )
        source = RunSource.open(out)
        assert source.kind == "train"
        with (out / "metrics.csv").open() as fh:  # the columns as the trainer wrote them
            rows = list(csv.DictReader(fh))
        with (out / "batches.csv").open() as fh:
            steps = [float(r["step"]) for r in csv.DictReader(fh)]
        assert shown["epoch"] == [0, 1, 2, 3] == [float(r["epoch"]) for r in rows]
        assert shown["queries"] == [float(r["queries"]) for r in rows]
        assert shown["queries"][-1] > 0
        assert shown["steps"] == steps and steps
        assert "epoch 3 done" in shown["status"]


def test_calibrate_live_page_shows_the_response_curves(browser: object, tmp_path: Path) -> None:
    out = tmp_path / "calib.h5"
    # a longer surrogate fit: calibrate goes on well after its response grid is measured
    argv = ["calibrate", "--out", str(out), "--grid", "small", "--surrogate-steps", "1500"]
    response = f"{MODEL}('response')"
    with _live_page(browser, [*argv, "--no-plots"]) as (proc, page):
        # calibrate writes each chunk of shots as it measures it: the page shows the response
        # grid measured so far (finite points) while calibrate still runs
        page.wait_for_function(  # type: ignore[attr-defined]
            f"() => window.Bokeh && {response} && "
            f"{response}.data.ys.some((y) => Array.from(y).some(Number.isFinite))",
            timeout=300_000,
        )
        early = page.evaluate(  # type: ignore[attr-defined]
            f"() => ({{status: {MODEL}('status').text, "
            f"total: {MODEL}('latest').data.shots_total[0], "
            f"done: {MODEL}('latest').data.shots_done[0]}})"
        )
        assert proc.poll() is None, "calibrate ended before the page showed its response grid"
        assert "calibration measuring" in early["status"], early
        assert 0 < early["done"] <= early["total"], early
        # at the end the page shows the stored analysis: sensitivity / noise per bias
        page.wait_for_function(  # type: ignore[attr-defined]
            f"() => {MODEL}('status').text.includes('stored shots shown')", timeout=300_000
        )
        assert proc.wait(timeout=120) == 0
        shown = page.evaluate(  # type: ignore[attr-defined]
            f"""() => ({{curves: {response}.data.ys.map((y) => Array.from(y)),
                        labels: {response}.data.label,
                        points: {MODEL}('spectrum').data.power_dbm.length}})"""
        )
        with h5py.File(out, "r") as h5:
            sensitivity = h5["response/sensitivity"][...]
            bias_a = h5["response/bias_a"][...]
            points = h5["frequency_hz"].shape[0]
        assert shown["points"] == points
        assert shown["labels"] == [f"bias {b:.2f} A" for b in bias_a]
        # one curve per bias, at one of the measured drive powers
        curves = np.asarray(shown["curves"])
        assert any(np.allclose(curves, sensitivity[:, p, :]) for p in range(sensitivity.shape[1]))


def _stop(pid: int) -> None:
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _same_view(a: object, b: object) -> None:
    assert a is not None and b is not None
    assert (a.shot, a.shots_done, a.shots_total) == (b.shot, b.shots_done, b.shots_total)  # type: ignore[attr-defined]
    for name in ("spectrum_dbm", "settings", "settings_x"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_a_source_following_a_run_reads_what_a_new_one_reads(tmp_path: Path) -> None:
    """The view reads only what was added since its last read; it shows what a reader that
    opens the file afresh shows, half-way and after a resume finished the run."""
    from cli_runner import stopped_acquire

    from labpgt.acquisition import acquire, grid_inputs, parse_sweep
    from labpgt.embedded import embedded_bench
    from labpgt.features import FeatureSpec

    out = tmp_path / "half.h5"
    sweep = "drive_hz=2.0e9:2.3e9:40"
    stopped_acquire(out, sweep, seed=3, stop_after=16, chunk_shots=8)
    following = RunSource(out, "acquire", min_read_s=0.0)
    half = following.poll()
    assert half is not None and 0 < half.shots_done < half.shots_total
    _same_view(half, RunSource(out, "acquire", min_read_s=0.0).poll())
    with embedded_bench(seed=3, features=FeatureSpec(bins=1)) as reservoir:
        acquire(reservoir, out, grid_inputs([parse_sweep(sweep)]), resume=True, chunk_shots=8)
    full = following.poll()
    assert full is not None and full.shots_done == full.shots_total == 40
    _same_view(full, RunSource(out, "acquire", min_read_s=0.0).poll())


def test_a_source_waiting_for_its_file_tells_the_page_only_what_changed(
    tmp_path: Path, good_run: Path
) -> None:
    """A view started before its run polls a missing file: the page hears of it once, not
    at every look, and again when the reason changes or the run is readable."""
    path = tmp_path / "later.h5"
    source = RunSource(path, "acquire", min_read_s=0.0)
    first = source.poll()
    assert first is not None and "waiting for" in first.status
    version = source.version
    assert source.poll() is None and source.version == version
    path.write_text("not an HDF5 file yet")
    damaged = source.poll()
    assert damaged is not None and "cannot be read" in damaged.status
    assert source.version == version + 1
    shutil.copy(good_run, path)
    readable = source.poll()
    assert readable is not None and readable.shots_done == readable.shots_total > 0
