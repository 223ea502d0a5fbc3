"""Train on your own data: numpy arrays (or a CSV with a label column) into `labpgt.train`.

The data here are two interleaved half-moons with a third, noisy blob; replace
``make_data`` with your own loading. Labels may be any values (strings here);
inputs are standardised with the training part's mean and std, which the
checkpoint keeps, so ``model.classify`` takes inputs in your own units.

    python examples/own_dataset.py            # 3 epochs, 8 channels
    python examples/own_dataset.py --short    # a small query budget (the test runs this)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import make_blobs, make_moons

import labpgt


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    moons, moon_label = make_moons(n_samples=160, noise=0.1, random_state=seed)
    blob, _ = make_blobs(n_samples=40, centers=[[2.5, 1.5]], cluster_std=0.3, random_state=seed)
    x = np.vstack([moons, blob]) * 10.0  # in "millimetres", say: any units work
    y = np.array([["upper", "lower"][i] for i in moon_label] + ["blob"] * len(blob))
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a small query budget")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="labpgt-own-"))

    x, y = make_data(seed=0)
    budget = {"max_queries": 1500, "channels": 2, "bins": 8} if args.short else {"epochs": 3}
    result = labpgt.train("dense", (x, y), reservoir="sim", out=out, seed=0, **budget)
    print(f"test accuracy {result.accuracy:.3f} after {result.metrics[-1].queries} queries")

    model = labpgt.load(out)
    print("classes:", model.class_names)
    print("the first five samples:", model.classify(x[:5]), "labelled", y[:5].tolist())
    # CSV instead of arrays: labpgt.train("dense", "my.csv", target="label", ...)


if __name__ == "__main__":
    main()
