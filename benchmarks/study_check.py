"""Rerun the final runs of a committed study on this commit and compare them with it.

A refactor that leaves behaviour unchanged must regenerate the published figures. The full
protocol (search, then final seeds) of the digits study takes hours of CPU; this check reruns
only the final runs of the rows it is asked for, at the learning rate (and variant) the
committed study chose, with the committed config, and prints for each row:

- the committed mean ± 95 % CI and the new mean ± 95 % CI over the same seeds (test %);
- whether the new mean lies inside the committed interval;
- how many seeds gave the same test accuracy to the last digit (identical numerics).

    python benchmarks/study_check.py benchmarks/results/study_digits \\
        --entry "digital same-shape network" --entry boundary --out /tmp/check

Exit status 1 when a row's new mean falls outside the committed interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from labpgt.studies.presets import Entry, StudySpec
from labpgt.studies.protocol import final_jobs, mean_ci95, read_rows, run_jobs


def load_spec(study_dir: Path) -> StudySpec:
    """The StudySpec the committed study ran (the inverse of the spec.json it wrote)."""
    raw = json.loads((study_dir / "spec.json").read_text())
    entries = tuple(
        Entry(**{**e, "lrs": tuple(e["lrs"]), "variants": tuple(e["variants"])})
        for e in raw["entries"]
    )
    seeds = {k: tuple(raw[k]) for k in ("final_seeds", "search_seeds")}
    return StudySpec(**{**raw, **seeds, "entries": entries})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="a committed study folder")
    parser.add_argument(
        "--entry", action="append", required=True, help="row label to rerun (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the new rows")
    parser.add_argument("--workers", type=int, default=2, help="jobs at once (processes)")
    args = parser.parse_args(argv)

    spec = load_spec(args.study_dir)
    summary = {
        e["label"]: e for e in json.loads((args.study_dir / "summary.json").read_text())["entries"]
    }
    labels = {e.label for e in spec.entries}
    unknown = [label for label in args.entry if label not in labels]
    if unknown:
        print(f"error: no row {unknown[0]!r} in {args.study_dir}; rows: {sorted(labels)}")
        return 2
    entries = tuple(e for e in spec.entries if e.label in args.entry)
    sub = dataclasses.replace(spec, entries=entries)
    chosen = {
        label: (summary[label]["lr"], summary[label].get("variant") or {})
        for label in args.entry
        if summary[label].get("lr") is not None
    }
    jobs = final_jobs(sub, chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    done = read_rows(args.out / "results.jsonl")

    def progress(finished: int, total: int, row: dict | None) -> None:
        if row is not None:
            print(f"  {finished}/{total} {row['key']}: test {100 * row['test_acc']:.1f} %")
            sys.stdout.flush()

    run_jobs(jobs, args.out, workers=args.workers, done=done, progress=progress)

    outside = 0
    print(f"\nrows of {args.study_dir} rerun on this commit (test accuracy %, 95 % CI):")
    for label in args.entry:
        old = summary[label]["test_per_seed"]
        new = [done[j.key]["test_acc"] for j in jobs if j.entry == label]
        old_mean, old_ci, _ = mean_ci95(old)
        new_mean, new_ci, n = mean_ci95(new)
        inside = abs(new_mean - old_mean) <= old_ci
        same = sum(abs(a - b) < 1e-12 for a, b in zip(old, new, strict=True))
        outside += not inside
        print(
            f"- {label}: committed {100 * old_mean:.1f} ± {100 * old_ci:.1f}, "
            f"now {100 * new_mean:.1f} ± {100 * new_ci:.1f} (n = {n}); "
            f"{'inside' if inside else 'OUTSIDE'} the committed interval; "
            f"{same}/{n} seeds identical"
        )
    return 1 if outside else 0


if __name__ == "__main__":
    raise SystemExit(main())
