"""What the live view costs an acquisition, and how soon it shows a new shot (issue 17).

Each *pair* runs the same `labpgt acquire` on the embedded virtual bench twice, in
alternating order: once alone, once with a live view watching its file, a headless
Chromium page open on the view all along (the view started before the acquisition, as
`python -m labpgt.live`, the process ``--live`` starts: lower priority, its own session).
The acquisition takes no simulated sweep time (``--realtime`` off), so it is as CPU-bound
as the embedded bench gets: the worst case for a view sharing the machine.

1. Throughput: shots per second over the run, from the shots' own time stamps in the file
   (first to last trace read), so start-up is left out. Printed per pair, and the ratio
   with view / alone of the pooled throughputs; target: cost <= 2 %. On a machine whose
   cores are busy with other work the pairs scatter by far more than 2 %, so the CPU time
   the view process used while the acquisition ran is printed too, as a share of the
   acquisition's own CPU time: the most the view can take from the run when no core is
   spare, whatever else the machine does.
2. Latency: every time the page's data change, a listener in the page records, after the
   next frame is drawn, the browser's clock minus the time stamp of the shot now shown
   (the time its trace was read, before it was even written: so this is an upper bound
   of written-to-shown). Median, 95th percentile and maximum over all updates; target
   <= 1 s.

With ``--realtime`` the embedded bench takes its true sweep and settle times (about 21 ms
a shot): the acquisition mostly waits, as on a real bench.

Usage: .venv/bin/python benchmarks/live_view.py [--pairs 3] [--shots 6000] [--chunk 32]
       [--realtime]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

CHROMIUM = "/usr/bin/chromium"

LISTEN = """() => {
    window.__lag = [];
    const doc = Bokeh.documents[0];
    const latest = doc.get_model_by_name('latest');
    latest.change.connect(() => {
        const shot = latest.data.shot[0], stamp = latest.data.timestamp_s[0];
        requestAnimationFrame(() => setTimeout(() => {
            if (shot >= 0) window.__lag.push([shot, Date.now() / 1000 - stamp]);
        }, 0));
    });
    return true;
}"""


REALTIME: list[str] = []
"""["--realtime"] with --realtime: the embedded bench takes its true sweep and settle times."""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _acquire(out: Path, shots: int, chunk: int) -> float:
    """Run the acquisition; returns its CPU seconds."""
    before = _children_cpu_s()
    sweeps = ["--sweep", f"drive_hz=2.0e9:2.3e9:{shots // 4}", "--sweep", "bias_a=1.6,1.7,1.8,1.9"]
    argv = [sys.executable, "-m", "labpgt", "acquire", "--out", str(out), "--chunk", str(chunk),
            *sweeps, *REALTIME]  # fmt: skip
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _children_cpu_s() - before


def _throughput(out: Path) -> tuple[float, int]:
    with h5py.File(out, "r") as h5:
        t = np.sort(h5["shots/timestamp_s"][...])
    return (t.size - 1) / (t[-1] - t[0]), int(t.size)


def _with_view(
    browser: object, out: Path, shots: int, chunk: int
) -> tuple[float, list, float, float]:
    """(throughput, [shot, lag] per page update, acquire CPU s, view CPU s during it)."""
    view = subprocess.Popen(
        [sys.executable, "-m", "labpgt.live", str(out), "--kind", "acquire"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = view.stdout.readline()  # type: ignore[union-attr]
        found = re.search(r"(http://\S+/)", line)
        if not found:
            raise SystemExit(f"the view did not start: {line}{view.stdout.read()}")  # type: ignore[union-attr]
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(found.group(1))
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('latest') !== null")
        page.evaluate(LISTEN)
        view_cpu = _cpu_s(view.pid)
        acquire_cpu = _acquire(out, shots, chunk)
        # the last shot shown: every update of the run has reached the page
        page.wait_for_function(
            "(n) => Bokeh.documents[0].get_model_by_name('latest').data.shots_done[0] == n",
            arg=shots,
        )
        page.wait_for_function("(n) => window.__lag.some(([s]) => s == n - 1)", arg=shots)
        view_cpu = _cpu_s(view.pid) - view_cpu
        lags = page.evaluate("() => window.__lag")
        page.close()
    finally:
        view.terminate()
        view.wait(timeout=30)
    rate, _ = _throughput(out)
    return rate, lags, acquire_cpu, view_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--shots", type=int, default=6000)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument(
        "--realtime", action="store_true", help="true sweep times (a bench-like, idle CPU)"
    )
    args = parser.parse_args()
    if args.realtime:
        REALTIME.append("--realtime")
    from playwright.sync_api import sync_playwright

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"live view benchmark, commit {commit}, {_dt.date.today().isoformat()}")
    print(
        f"{args.shots} shots x 1001 points per run, chunk {args.chunk}, {args.pairs} pairs, "
        + ("real-time sweeps" if args.realtime else "no simulated sweep time (CPU-bound)")
        + f"; load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    alone: list[float] = []
    viewed: list[float] = []
    lags: list[float] = []
    cpu = {"acquire": 0.0, "view": 0.0}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for pair in range(args.pairs):
            order = ("alone", "view") if pair % 2 == 0 else ("view", "alone")
            rates = {}
            for mode in order:
                out = Path(tmp) / f"{mode}{pair}.h5"
                t0 = time.perf_counter()
                if mode == "alone":
                    _acquire(out, args.shots, args.chunk)
                    rates[mode], _ = _throughput(out)
                else:
                    rates[mode], pair_lags, acquire_cpu, view_cpu = _with_view(
                        browser, out, args.shots, args.chunk
                    )
                    lags.extend(lag for _, lag in pair_lags)
                    cpu["acquire"] += acquire_cpu
                    cpu["view"] += view_cpu
                print(f"  pair {pair + 1} {mode:5s}: {rates[mode]:8.1f} shots/s "
                      f"(run {time.perf_counter() - t0:5.1f} s wall)")  # fmt: skip
                out.unlink()
            alone.append(rates["alone"])
            viewed.append(rates["view"])
        browser.close()
    ratio = float(np.sum(viewed) / np.sum(alone))
    per_pair = [v / a for v, a in zip(viewed, alone, strict=True)]
    print(
        f"throughput alone {np.mean(alone):.1f} shots/s, with view {np.mean(viewed):.1f} shots/s:"
        f" ratio {ratio:.4f} (cost {100 * (1 - ratio):+.2f} %; per pair "
        + ", ".join(f"{r:.3f}" for r in per_pair)
        + "); target cost <= 2 %"
    )
    print(
        f"CPU while the view watched: acquire {cpu['acquire']:.1f} s, view process "
        f"{cpu['view']:.2f} s = {100 * cpu['view'] / cpu['acquire']:.2f} % of the acquire's "
        "(the most it can take from the run when no core is spare; the browser not counted)"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    lag = np.asarray(lags)
    print(
        f"latency shot read -> shown on the page: median {1e3 * np.median(lag):.0f} ms, "
        f"95th percentile {1e3 * np.percentile(lag, 95):.0f} ms, max {1e3 * lag.max():.0f} ms "
        f"over {lag.size} page updates; target <= 1000 ms"
    )


if __name__ == "__main__":
    main()
