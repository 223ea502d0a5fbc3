"""`labpgt train` end to end: bad input, refusals, kill + resume bit-identity, a short run."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import cli_error, tiny_csv

# Tiny but real: a 48-row CSV through the in-process ring and the real scheduler.
TINY = shlex.split("--channels 1 --bins 8 --hidden 4 --batch-size 12 --warmup-samples 16")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--task", "mnist"],
            "unknown task 'mnist'; valid tasks: digits, iris, parity, seq-digits, wine",
        ),
        (
            ["--method", "sgd"],
            "valid methods: backprop, boundary, digital, mgd, pat, pgt, readout, spsa",
        ),
        (["--model", "cnn"], "unknown model 'cnn'; valid models: dense, transformer"),
        (["--delta", "0"], "--delta 0.0: Input should be greater than 0"),
        (["--delta", "-0.5"], "--delta -0.5: Input should be greater than 0"),
        (["--probes", "0"], "--probes 0: Input should be greater than or equal to 1"),
        (["--lr", "0"], "--lr 0.0: Input should be greater than 0"),
        (["--lr", "-1"], "--lr -1.0: Input should be greater than 0"),
        (["--method-opt", "foo=1"], "--method-opt foo: unknown for method 'boundary'"),
        (
            ["--fast-sim", "--method", "pat", "--method-opt", "jacobain=autograd"],
            "--method-opt jacobain: unknown for method 'pat'; valid keys: compare_every, jacobian",
        ),
        (
            ["--fast-sim", "--method", "mgd", "--method-opt", "sparsity=x"],
            "--method-opt sparsity='x': method 'mgd' expects a float",
        ),
        (["--method-opt", "foo"], "--method-opt 'foo': expected KEY=VALUE"),
        (["--task-opt", "n=3"], "--task-opt n: unknown for task 'digits'; valid keys: none"),
        (
            ["--fast-sim", "--max-queries", "100"],
            "--max-queries 100 is too small for one step: one boundary step costs 768 queries",
        ),
        (
            ["--method", "backprop", "--bench", "bench.toml"],
            "only possible with --fast-sim; on a bench file (--bench) use pgt, spsa or boundary",
        ),
        (
            ["--method", "backprop"],
            "only possible with --fast-sim; on the embedded virtual bench use pgt, spsa",
        ),
    ],
)
def test_bad_input_is_refused_with_its_message(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = cli_error(capsys, *["train", *argv, "--out", str(tmp_path / "run")])
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_csv_with_text_columns_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("x,site,y\n" + "".join(f"{i},lab{i % 2},{i % 2}\n" for i in range(20)))
    argv = ["train", "--data", str(csv), "--target", "y", "--fast-sim", "--out", str(tmp_path)]
    code, err = cli_error(capsys, *argv)
    assert code == 2
    assert "non-numeric input column(s) in d.csv: site" in err


def _cli(out: Path, data: Path, *extra: str) -> list[str]:
    args = "--fast-sim --method boundary --directions rademacher --probes 1 --epochs 4 --seed 5"
    return [sys.executable, "-m", "labpgt", "train", "--data", str(data), "--target", "label",
            *TINY, *shlex.split(args), "--out", str(out), *extra]  # fmt: skip


def _final_state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def test_killed_fast_sim_run_resumes_bit_identically(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    data = tiny_csv(tmp_path / "tiny.csv")
    subprocess.run(_cli(ref, data), check=True, capture_output=True, env=env, timeout=300)

    proc = subprocess.Popen(
        _cli(killed, data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # readiness signal: the line printed after epoch 1's checkpoint
        if line.startswith("epoch 1:"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _final_state(killed)["epoch"] < 4  # it really was cut short

    subprocess.run(
        _cli(killed, data, "--resume"), check=True, capture_output=True, env=env, timeout=300
    )
    a, b = _final_state(ref), _final_state(killed)
    assert a["epoch"] == b["epoch"] == 4
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key in ("queries", "forward_passes", "eval_queries", "steps"):
        assert a["counters"][key] == b["counters"][key], key
    assert [m["test_loss"] for m in a["metrics"]] == [m["test_loss"] for m in b["metrics"]]
    assert (killed / "metrics.csv").read_text().count("\n") == 6  # header + epochs 0..4
    # one row per training step; the killed epoch's steps were run again, not repeated
    batches = (killed / "batches.csv").read_text()
    assert batches == (ref / "batches.csv").read_text()
    assert batches.count("\n") == 1 + a["counters"]["steps"]
    assert [m["queries"] for m in a["metrics"]][-1] == int(batches.splitlines()[-1].split(",")[1])
    assert (killed / "curves.png").stat().st_size > 1000


def _digits_csv(path: Path, rows: int) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    cols = [f"p{i}" for i in range(d.data.shape[1])]
    lines = [",".join(cols + ["label"])]
    keep = d.target < 3  # digits 0, 1, 2: learnable in a few short epochs
    lines += [
        ",".join(f"{v:g}" for v in x) + f",{int(t)}"
        for x, t in zip(d.data[keep][:rows], d.target[keep][:rows], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_short_boundary_run_on_the_virtual_bench_lowers_the_loss(tmp_path: Path) -> None:
    """The full loop: drivers -> loopback sockets -> virtual instruments -> simulated ring."""
    from labpgt.runner import run_training
    from labpgt.training.config import make_config

    data = _digits_csv(tmp_path / "digits.csv", 120)
    config = make_config(
        data=str(data), target="label", method="boundary", channels=1, bins=8, hidden=8,
        batch_size=8, warmup_samples=16, epochs=3, lr=0.01, seed=0, out=str(tmp_path / "r"),
        noise=False, drift=False,
    )  # fmt: skip
    result = run_training(config, resume=False, quiet=True)
    assert result.config.bench_kind() == "embedded"
    first, last = result.metrics[0], result.metrics[-1]
    # 3 epochs × 3 passes (u has m = 1 drive setting) × 76 training samples (90 less 15 %
    # for validation) × 1 channel
    assert last.queries == 3 * 3 * 76
    assert last.test_loss < first.test_loss - 0.05, (first, last)
    assert last.train_loss < first.train_loss


def test_train_on_two_embedded_benches_splits_the_shots_and_records_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import json

    data = tiny_csv(tmp_path / "tiny.csv")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--target", "label", *TINY, "--channels", "2"]
    argv += ["--benches", "2", "--epochs", "2", "--seed", "3", "--out", str(out)]
    code, err = cli_error(capsys, *argv)
    assert code == 0, err
    benches = json.loads((out / "benches.json").read_text())
    assert [b["name"] for b in benches] == ["bench0", "bench1"]
    assert all(b["failed"] is None and b["chunks"] > 0 and b["queries"] > 0 for b in benches)
    # every shot of the run went to one of the two benches: training, evaluation, warm-up
    summary = json.loads((out / "summary.json").read_text())
    assert sum(b["queries"] for b in benches) > summary["final"]["queries"]
    code, err = cli_error(
        capsys, "train", "--fast-sim", "--benches", "2", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--benches 2 runs that many embedded virtual benches" in err
