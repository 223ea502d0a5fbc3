"""Read an acquisition run (``labpgt acquire --out run.h5``) into numpy with plain h5py.

    labpgt acquire --out run.h5 --sweep drive_hz=2.0e9:2.3e9:31 --repeats 2
    python examples/read_acquire.py run.h5

The file layout is in labpgt/storage.py: one row per shot, in measurement order,
with the settings it measured, the row of /inputs it belongs to, its repeat,
and the trace in dBm on the /frequency_hz axis.
"""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np


def read_run(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        done = f["shots/done"][...]
        return {
            "frequency_hz": f["frequency_hz"][...],
            "settings": f["shots/settings"][...][done],  # (M, 3): drive_hz, drive_dbm, bias_a
            "input_index": f["shots/input_index"][...][done],
            "repeat_index": f["shots/repeat_index"][...][done],
            "traces_dbm": f["traces_dbm"][...][done],  # (M, P) float32
            "instrument_time_s": f["shots/instrument_time_s"][...][done],
            "snapshot": json.loads(f.attrs["snapshot"]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="HDF5 file written by labpgt acquire")
    args = parser.parse_args()
    run = read_run(args.run)
    traces, f_hz = run["traces_dbm"], run["frequency_hz"]
    print(f"{traces.shape[0]} shots × {traces.shape[1]} points, {f_hz[0]:.4g}–{f_hz[-1]:.4g} Hz")
    reservoir = run["snapshot"].get("reservoir", {})
    bench = reservoir.get("bench", {}) if isinstance(reservoir, dict) else {}
    for role in ("generator", "analyzer", "supply"):
        if role in bench:
            ident = bench[role]["identity"]
            print(f"{role}: {ident['vendor']} {ident['model']} (serial {ident['serial']})")
    # The mean over repeats of each requested setting, and where its strongest line sits.
    for i in np.unique(run["input_index"]):
        rows = run["input_index"] == i
        mean_dbm = traces[rows].mean(axis=0)
        drive_hz = run["settings"][rows][0, 0]
        peak = int(mean_dbm.argmax())
        print(
            f"input {i}: drive {drive_hz:.4g} Hz, {rows.sum()} shots, "
            f"peak {mean_dbm[peak]:.2f} dBm at {f_hz[peak]:.6g} Hz"
        )


if __name__ == "__main__":
    main()
