"""The Python API: ReservoirLayer as an nn.Module, labpgt.train / load, checkpoint refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import labpgt
from labpgt.cli.app import main
from labpgt.errors import UserError
from labpgt.training.build import build_model_for, normalise_features
from labpgt.training.config import make_config
from labpgt.training.environment import open_backend
from labpgt.training.estimators import make_estimator
from labpgt.training.tasks import load_task
from labpgt.training.trainer import _loss

# Small and real: iris, one channel, 8 kernel windows, the in-process ring.
TINY = {"channels": 1, "bins": 8, "hidden": 4, "batch_size": 16, "warmup_samples": 16}
TINY_ARGS = ["--channels", "1", "--bins", "8", "--hidden", "4", "--batch-size", "16"]
TINY_ARGS += ["--warmup-samples", "16"]


def test_layer_forward_trains_inside_a_plain_torch_model() -> None:
    """nn.Sequential around the layer; torch.optim.Adam steps it; the loss falls and the
    boundary backward agrees with autograd through the simulation (noise off)."""
    with labpgt.open_reservoir("sim", noise=False, drift=False, bins=8) as ring:
        torch.manual_seed(0)
        layer = labpgt.ReservoirLayer.on(ring, channels=2, delta=1e-4)
        net = torch.nn.Sequential(
            torch.nn.Linear(4, layer.input_dim),
            torch.nn.Tanh(),
            layer,
            torch.nn.Linear(layer.output_dim, 3),
        )
        x = torch.randn(24, 4, generator=torch.Generator().manual_seed(1))
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()

        def upstream_grad(gradient: str) -> torch.Tensor:
            layer.gradient = gradient
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            return net[0].weight.grad.clone().reshape(-1)

        estimated, exact = upstream_grad("boundary"), upstream_grad("backprop")
        cos = float(torch.nn.functional.cosine_similarity(estimated, exact, dim=0))
        assert cos > 0.9, cos
        layer.gradient = "none"
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        assert net[0].weight.grad is None  # nothing crosses the ring: upstream untouched
        assert net[3].weight.grad is not None

        layer.gradient, layer.delta_u = "boundary", 0.05
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        losses = []
        for _ in range(12):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0], losses
        assert ring.queries > 0


@pytest.mark.parametrize("model_name", ["dense", "transformer"])
def test_model_forward_backward_equals_the_boundary_estimator(model_name: str) -> None:
    """A shipped model's ordinary forward + backward fills the same .grad as the
    trainer's boundary estimator (coordinate directions; noise and drift off)."""
    config = make_config(fast_sim=True, noise=False, drift=False, seed=2, model=model_name, **TINY)
    task = load_task("iris", seed=2)
    x, y = task.x_train[:16], task.y_train[:16]
    with open_backend(config) as backend:
        torch.manual_seed(2)
        model = build_model_for(config, task, backend)
        normalise_features(config, task, model, backend, lambda _: None)
        est = make_estimator("boundary", config.estimator, seed=3)
        est.estimate(model, x, y, _loss)
        want = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        _loss(model(x), y).backward()
        for n, p in model.named_parameters():
            assert torch.equal(p.grad, want[n]), n


def test_train_matches_the_cli_and_load_predicts(tmp_path: Path) -> None:
    opts = {"epochs": 1, "seed": 4, "noise": False, "drift": False, **TINY}
    result = labpgt.train(
        "dense", "iris", method="boundary", reservoir="sim", out=tmp_path / "api", **opts
    )
    argv = ["train", "--task", "iris", "--fast-sim", "--epochs", "1", "--seed", "4"]
    argv += ["--no-noise", "--no-drift", *TINY_ARGS, "--out", str(tmp_path / "cli")]
    main(argv)  # returns on success (a failure exits non-zero)
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert result.accuracy == cli["selected"]["test_acc"]
    assert [m.to_dict() for m in result.metrics][-1]["train_loss"] == cli["final"]["train_loss"]

    model = labpgt.load(result.out_dir)
    task = load_task("iris", seed=4, val_fraction=0.15)
    raw = task.x_test.double() * task.input_std + task.input_mean
    labels = model.classify(raw)
    hits = sum(a == task.class_names[int(b)] for a, b in zip(labels, task.y_test, strict=True))
    assert hits / len(labels) == pytest.approx(result.accuracy)
    assert model.provenance["bench"]["reservoir"] == "simulated"
    assert model.provenance["calibration_sha256"] is None


def test_train_on_in_memory_arrays(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=gen)
    y = ["low" if v < 0 else "high" for v in x[:, 0].tolist()]
    result = labpgt.train(
        "dense", (x, y), reservoir="sim", out=tmp_path / "run", max_queries=200, **TINY
    )
    assert result.model.reservoir.backend is not None
    assert labpgt.load(tmp_path / "run").class_names == ["high", "low"]


def test_checkpoint_from_another_bench_or_model_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    labpgt.train("dense", "iris", reservoir="sim", out=out, max_queries=200, **TINY)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["provenance"]["bench"]["ring_params"]["gyro_hz_per_oe"] = 1.0
    torch.save(state, out / "checkpoint.pt")
    trainer = labpgt.Trainer("dense", "iris", reservoir="sim", out=out, max_queries=400, **TINY)
    with pytest.raises(UserError, match=r"measured on another bench \(ring_params\.gyro_hz_per_oe"):
        trainer.fit(resume=True)

    best = torch.load(out / "best.pt", weights_only=True)
    best["config"]["hidden"] = 5
    torch.save(best, out / "best.pt")
    with pytest.raises(UserError, match=r"holds another model \(upstream\.net\.0\.weight is"):
        labpgt.load(out)
    best["format"] = 1
    torch.save(best, out / "best.pt")
    with pytest.raises(UserError, match="written by another labpgt version"):
        labpgt.load(out)
    best["format"], best["config"]["hidden"] = 2, TINY["hidden"]
    del best["provenance"]
    torch.save(best, out / "best.pt")
    with pytest.raises(UserError, match=r"older labpgt \(no provenance recorded\)"):
        labpgt.load(out)


# The outer layout of a checkpoint of format 2, as the trainer wrote it by hand before it
# was a record (commit 18d0223): files written then still load.
FORMAT_2_KEYS = {
    "task", "provenance", "partial", "format", "config", "epoch", "model", "optimizer",
    "estimator", "rng", "data_generator", "ring", "counters", "metrics", "batches",
    "baseline", "best",
}  # fmt: skip


def test_a_checkpoint_is_one_record_and_a_file_that_does_not_fit_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    labpgt.train("dense", "iris", reservoir="sim", out=out, max_queries=200, **TINY)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state) == FORMAT_2_KEYS
    assert set(torch.load(out / "best.pt", weights_only=True)) == {
        "task", "provenance", "format", "config", "epoch", "model", "val_acc", "val_loss",
    }  # fmt: skip
    del state["optimizer"]
    torch.save(state, out / "checkpoint.pt")
    trainer = labpgt.Trainer("dense", "iris", reservoir="sim", out=out, max_queries=400, **TINY)
    missing = r"is not a labpgt checkpoint \(optimizer: Field required\)"
    with pytest.raises(UserError, match=r"--resume: .*checkpoint\.pt " + missing):
        trainer.fit(resume=True)
    with pytest.raises(UserError, match="load: .*" + missing):
        labpgt.load(out / "checkpoint.pt")


def test_within_epoch_checkpoints_resume_bit_identically(tmp_path: Path) -> None:
    """--checkpoint-every-min writes checkpoints inside epochs; resuming from one of them
    (noise and drift on: the ring's state travels too) ends exactly like the straight run."""
    import shutil

    ref, again = tmp_path / "ref", tmp_path / "again"
    opts = {"epochs": 2, "seed": 1, "checkpoint_every_min": 0.03, **TINY}
    labpgt.train("dense", "iris", reservoir="sim", out=ref, **opts)
    steps = sorted(ref.glob("checkpoint-step*.pt"))
    assert len(steps) >= 2, steps
    within = [p for p in steps if torch.load(p, weights_only=True)["partial"] is not None]
    assert within == steps
    shutil.copytree(ref, again)
    for name in ("checkpoint.pt", "best.pt", "metrics.csv", "batches.csv"):
        (again / name).unlink()
    pick = again / steps[len(steps) // 2].name
    assert torch.load(pick, weights_only=True)["partial"]["next_start"] > 0
    trainer = labpgt.Trainer("dense", "iris", reservoir="sim", out=again, **opts)
    trainer.fit(resume_from=pick)
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(again / "checkpoint.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["counters"]["queries"] == b["counters"]["queries"]
    assert [m["test_loss"] for m in a["metrics"]] == [m["test_loss"] for m in b["metrics"]]
    assert (ref / "batches.csv").read_text() == (again / "batches.csv").read_text()


def test_load_of_a_run_without_best_pt_gives_the_chosen_epoch(tmp_path: Path) -> None:
    """A readout-only run has no best.pt; its chosen epoch 0 comes from checkpoint.pt."""
    opts = {"seed": 5, "noise": False, "drift": False, "readout_init": "ridge", **TINY}
    result = labpgt.train("dense", "iris", method="readout", reservoir="sim", out=tmp_path, **opts)
    assert not (tmp_path / "best.pt").exists() and result.best_path.name == "checkpoint.pt"
    model = labpgt.load(tmp_path)
    task = load_task("iris", seed=5, val_fraction=0.15)
    hits = (model.predict(task.x_test).argmax(1) == task.y_test).float().mean().item()
    assert hits == pytest.approx(result.accuracy)
