"""What the live view costs an acquisition, and how soon it shows a new shot (issue 17).

Each *round* runs the same `labpgt acquire` on the embedded virtual bench once alone and
once with a live view watching its file, a headless Chromium page open on the view all
along (the view started before the acquisition, as `python -m labpgt.live`, the process
``--live`` starts: lower priority, its own session); the order alternates from round to
round. With ``--baseline REV`` each round also runs the acquisition watched by the view of
commit REV (its labpgt/live/ files, the rest of the tree as checked out), in a rotating
order, so a change to the view is compared with what it replaces in the same run, on the
same machine load.

With ``--realtime`` the embedded bench takes its true sweep and settle times (the
acquisition's sweeps run at about 110 shots a second, 9 ms a shot): the acquisition
mostly waits, as on a real bench, and it loses throughput when its wake-ups are delayed
by other runnable work (the view, the browser drawing the page). Without it, it takes
no simulated sweep time: as CPU-bound as the embedded bench gets, the worst case for a
view sharing the machine.

Printed:

1. Throughput: shots per second of each run, from the shots' own time stamps in the file
   (first to last trace read), so start-up is left out. Per round, the ratio with view /
   alone; the cost is 1 - ratio. The mean cost over the rounds with a 95 % confidence
   interval (Student t, and a bootstrap of the rounds), the pooled cost (ratio of summed
   throughputs), and the verdict against the target (cost <= 2 %): met when the upper
   bound of the t interval is <= 2 %, missed when its lower bound is above, else
   unresolved (more rounds, or a quieter machine).
2. CPU: while the acquisition runs with a view, the CPU seconds of the view's process and
   of the browser's processes (every Chromium process under this one: browser, renderer,
   GPU and utility processes), per second of the run (% of one core) and as a share of the
   acquisition's own CPU. These are what the view and its page take from the machine;
   load from other work disturbs them far less than it does throughput.
3. Latency: every time the page's data change, a listener in the page records, after the
   next frame is drawn, the browser's clock minus the time stamp of the shot now shown
   (the time its trace was read, before it was even written). Median, 95th percentile and
   maximum over all updates. The page skips shots (it shows the latest at each update), so
   the wait of every shot is printed too: for each chunk of shots written (its last trace
   read, then flushed), the time until the page first shows one of its shots or a later
   one. Target for both: <= 1 s.

Usage: .venv/bin/python benchmarks/live_view.py [--realtime] [--rounds 12] [--shots N]
       [--chunk 32] [--baseline REV]
(shots: 1000 with --realtime, 4000 without; the default --realtime run takes 6-8 minutes
on 2 idle cores, about 1.5 times that with --baseline.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
TARGET_COST = 0.02

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
    """User + system CPU seconds of a running process (Linux /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _browser_pids() -> list[int]:
    """The Chromium processes under this one (Playwright's driver starts the browser)."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        pid = int(entry.name)
        names[pid] = head.split("(", 1)[1]
        parent[pid] = int(tail.split()[1])
    mine = {os.getpid()}
    grown = True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        grown = bool(more)
        mine |= more
    return sorted(pid for pid in mine if "chrom" in names[pid].lower())


def _browser_cpu_s() -> dict[int, float]:
    return {pid: _cpu_s(pid) for pid in _browser_pids()}


def _cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the browser's processes used since ``before`` (new processes counted whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in _browser_cpu_s().items())


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


def _throughput(out: Path) -> float:
    with h5py.File(out, "r") as h5:
        t = np.sort(h5["shots/timestamp_s"][...])
    return (t.size - 1) / (t[-1] - t[0])


def _start_view(out: Path, tree: Path | None) -> tuple[subprocess.Popen, str]:
    """The view process (of ``tree``'s labpgt/live when given) and its page's address."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(":")
    view = subprocess.Popen(
        [sys.executable, "-m", "labpgt.live", str(out), "--kind", "acquire"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tree or ROOT,
        env=env,
    )
    line = view.stdout.readline()  # type: ignore[union-attr]
    found = re.search(r"(http://\S+/)", line)
    if not found:
        view.kill()
        raise SystemExit(f"the view did not start: {line}{view.stdout.read()}")  # type: ignore[union-attr]
    return view, found.group(1)


def _with_view(browser: object, out: Path, shots: int, chunk: int, tree: Path | None) -> dict:
    """One acquisition watched by a view and a page: its throughput, lags and CPU figures."""
    view, url = _start_view(out, tree)
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(url)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('latest') !== null")
        page.evaluate(LISTEN)
        view_cpu, browser_cpu, t0 = _cpu_s(view.pid), _browser_cpu_s(), time.perf_counter()
        acquire_cpu = _acquire(out, shots, chunk)
        # the last shot shown: every update of the run has reached the page
        page.wait_for_function(
            "(n) => Bokeh.documents[0].get_model_by_name('latest').data.shots_done[0] == n",
            arg=shots,
        )
        page.wait_for_function("(n) => window.__lag.some(([s]) => s == n - 1)", arg=shots)
        run = {
            "view_cpu": _cpu_s(view.pid) - view_cpu,
            "browser_cpu": _cpu_since(browser_cpu),
            "window_s": time.perf_counter() - t0,
            "acquire_cpu": acquire_cpu,
            "shown": page.evaluate("() => window.__lag"),
        }
        page.close()
    finally:
        view.terminate()
        view.wait(timeout=30)
    run["rate"] = _throughput(out)
    run["lags"] = [lag for _, lag in run["shown"]]
    run["waits"] = _waits(out, run.pop("shown"), chunk)
    return run


def _waits(out: Path, shown: list, chunk: int) -> list[float]:
    """Per chunk of shots written: from its writing (the last trace of the chunk read; it is
    flushed right after) to the first page update that shows one of its shots or a later one.
    This bounds how long any written shot waits to be on the page, updates skipped included."""
    with h5py.File(out, "r") as h5:
        stamps = h5["shots/timestamp_s"][...]
    shots = np.array([s for s, _ in shown], dtype=int)
    drawn = stamps[shots] + np.array([lag for _, lag in shown])
    waits = []
    for first in range(0, stamps.size, chunk):
        later = drawn[shots >= first]
        if later.size:
            waits.append(float(later.min() - stamps[first : first + chunk].max()))
    return waits


def _baseline_tree(rev: str, into: Path) -> Path:
    """A labpgt package as checked out, with labpgt/live/ as of commit ``rev``."""
    tree = into / "baseline"
    shutil.copytree(ROOT / "labpgt", tree / "labpgt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(tree / "labpgt" / "live")
    archive = subprocess.run(["git", "archive", rev, "labpgt/live"], cwd=ROOT, capture_output=True)
    if archive.returncode:
        raise SystemExit(f"--baseline {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _interval(costs: np.ndarray) -> tuple[float, float, float, float]:
    """(t low, t high, bootstrap low, bootstrap high): 95 % intervals of the mean cost."""
    n = costs.size
    if n < 2:
        return (np.nan,) * 4  # type: ignore[return-value]
    from scipy import stats

    half = stats.t.ppf(0.975, n - 1) * costs.std(ddof=1) / np.sqrt(n)
    rng = np.random.default_rng(0)
    means = costs[rng.integers(0, n, size=(10000, n))].mean(axis=1)
    boot = np.percentile(means, [2.5, 97.5])
    return costs.mean() - half, costs.mean() + half, float(boot[0]), float(boot[1])


def _verdict(low: float, high: float) -> str:
    if high <= TARGET_COST:
        return "MET (the whole interval is <= 2 %)"
    if low > TARGET_COST:
        return "MISSED (the whole interval is above 2 %)"
    return "UNRESOLVED (the interval straddles 2 %: more rounds or a quieter machine)"


def _run_round(
    browser: object, rnd: int, args: argparse.Namespace, tmp: Path, trees: dict
) -> dict[str, dict]:
    """One round: the acquisition alone and with each view, the order rotating by round."""
    modes = list(trees)
    modes = modes[rnd % len(modes) :] + modes[: rnd % len(modes)]
    runs: dict[str, dict] = {}
    for mode in modes:
        out = tmp / f"{mode}{rnd}.h5"
        t0 = time.perf_counter()
        if mode == "alone":
            _acquire(out, args.shots, args.chunk)
            runs[mode] = {"rate": _throughput(out)}
        else:
            runs[mode] = _with_view(browser, out, args.shots, args.chunk, trees[mode])
        extra = ""
        if mode != "alone":
            r = runs[mode]
            extra = (f"; CPU of a core: view {100 * r['view_cpu'] / r['window_s']:.1f} %, "
                     f"browser {100 * r['browser_cpu'] / r['window_s']:.1f} %")  # fmt: skip
        print(f"  round {rnd + 1:2d} {mode:8s}: {runs[mode]['rate']:8.1f} shots/s "
              f"(run {time.perf_counter() - t0:5.1f} s wall{extra})", flush=True)  # fmt: skip
        out.unlink()
    return runs


def _report_view(name: str, rounds: list[dict[str, dict]]) -> dict[str, float]:
    """Print the figures of one view against the runs alone; returns its CPU per second."""
    alone = np.array([r["alone"]["rate"] for r in rounds])
    viewed = np.array([r[name]["rate"] for r in rounds])
    costs = 1 - viewed / alone
    low, high, b_low, b_high = _interval(costs)
    pooled = 1 - viewed.sum() / alone.sum()
    print(f"[{name}] throughput alone {alone.mean():.1f} shots/s, with view {viewed.mean():.1f}")
    print("  cost per round (%): " + ", ".join(f"{100 * c:+.2f}" for c in costs))
    print(f"  cost: mean {100 * costs.mean():+.2f} %, 95 % CI t [{100 * low:+.2f}, "
          f"{100 * high:+.2f}] %, bootstrap [{100 * b_low:+.2f}, {100 * b_high:+.2f}] %; "
          f"pooled {100 * pooled:+.2f} %; target <= 2 %: {_verdict(low, high)}")  # fmt: skip
    window = sum(r[name]["window_s"] for r in rounds)
    cpu = {k: sum(r[name][k] for r in rounds) for k in ("view_cpu", "browser_cpu", "acquire_cpu")}
    both = cpu["view_cpu"] + cpu["browser_cpu"]
    print(f"  CPU over {window:.0f} s of runs with a view: view process {cpu['view_cpu']:.2f} s "
          f"({100 * cpu['view_cpu'] / window:.2f} % of a core), browser {cpu['browser_cpu']:.2f} s "
          f"({100 * cpu['browser_cpu'] / window:.2f} %), together {100 * both / window:.2f} % of "
          f"a core = {100 * both / cpu['acquire_cpu']:.1f} % of the acquisition's CPU "
          f"({cpu['acquire_cpu']:.1f} s)")  # fmt: skip
    lag = np.asarray([x for r in rounds for x in r[name]["lags"]])
    print(f"  latency shot read -> shown on the page: median {1e3 * np.median(lag):.0f} ms, "
          f"95th percentile {1e3 * np.percentile(lag, 95):.0f} ms, max {1e3 * lag.max():.0f} ms "
          f"over {lag.size} page updates; target <= 1000 ms: "
          f"{'met' if lag.max() <= 1.0 else 'MISSED'}")  # fmt: skip
    waits = np.asarray([x for r in rounds for x in r[name]["waits"]])
    print(f"  shot written -> on the page (it or a later one; updates skipped counted): median "
          f"{1e3 * np.median(waits):.0f} ms, 95th percentile {1e3 * np.percentile(waits, 95):.0f}"
          f" ms, max {1e3 * waits.max():.0f} ms over {waits.size} chunks written; target <= "
          f"1000 ms: {'met' if waits.max() <= 1.0 else 'MISSED'}")  # fmt: skip
    return {"per_s": both / window, "cost": float(costs.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", "--pairs", type=int, default=12)
    parser.add_argument("--shots", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument(
        "--realtime", action="store_true", help="true sweep times (a bench-like, idle CPU)"
    )
    parser.add_argument("--baseline", help="also run the view of this commit (labpgt/live/)")
    args = parser.parse_args()
    if args.realtime:
        REALTIME.append("--realtime")
    args.shots = args.shots or (1000 if args.realtime else 4000)
    from playwright.sync_api import sync_playwright

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "labpgt/live"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    print(f"live view benchmark, commit {commit}{' (labpgt/live modified)' if dirty else ''}, "
          f"{_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    print(
        f"{args.shots} shots x 1001 points per run, chunk {args.chunk}, {args.rounds} rounds, "
        + ("real-time sweeps" if args.realtime else "no simulated sweep time (CPU-bound)")
        + f"; load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, Path | None] = {"alone": None, "view": None}
        if args.baseline:
            trees[f"view@{args.baseline}"] = _baseline_tree(args.baseline, Path(tmp))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        rounds = [_run_round(browser, r, args, Path(tmp), trees) for r in range(args.rounds)]
        browser.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    shown = {name: _report_view(name, rounds) for name in trees if name != "alone"}
    if args.baseline:
        now, base = shown["view"], shown[f"view@{args.baseline}"]
        print(f"view + page CPU per second of run: {100 * now['per_s']:.2f} % of a core, "
              f"{now['per_s'] / base['per_s']:.2f} x that of {args.baseline} "
              f"({100 * base['per_s']:.2f} %); mean cost {100 * now['cost']:+.2f} % against "
              f"{100 * base['cost']:+.2f} %")  # fmt: skip


if __name__ == "__main__":
    main()
