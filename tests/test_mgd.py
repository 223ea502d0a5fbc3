"""MGD against the true gradient of a small model on the simulated ring (noise and drift off).

The ring's features have sharp resonance lines, so the loss is smooth only on a
small scale: Δ = 1e-5 keeps the one-sided cost changes in the linear regime.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.training.estimators.backprop import true_gradient
from labpgt.training.estimators.base import EstimatorOptions
from labpgt.training.estimators.mgd import (
    MGDEstimator,
    code_period,
    code_vector,
    walsh_rows,
)
from labpgt.training.models import ReservoirModel

DELTA = 1e-5


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


@pytest.fixture(scope="module")
def small(iris_setup) -> tuple[ReservoirModel, torch.Tensor, torch.Tensor]:
    """iris, 1 channel, 8 bins, linear upstream: 37 parameters, 5 pre-activation nodes."""
    model, task, _ = iris_setup
    return model, task.x_train[:8], task.y_train[:8]


def _cosine(model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, opts: dict) -> float:
    truth = true_gradient(model, x, y, _loss)
    est = MGDEstimator(EstimatorOptions(delta=DELTA), seed=3, method_opts=opts)
    est.estimate(model, x, y, _loss)
    names = sorted(truth)
    got = torch.cat([dict(model.named_parameters())[n].grad.flatten() for n in names])
    want = torch.cat([truth[n].flatten() for n in names])
    return float(F.cosine_similarity(got, want, dim=0))


def test_codes_are_orthogonal_over_a_period() -> None:
    gen = torch.Generator().manual_seed(0)
    for code in ("walsh", "fdma", "tdma"):
        n = 11
        period = code_period(code, n)
        s = torch.stack([code_vector(code, n, j, sparsity=0, generator=gen) for j in range(period)])
        gram = s.T @ s / period
        kappa = 1.0 / n if code == "tdma" else 1.0
        assert torch.allclose(gram, kappa * torch.eye(n), atol=1e-5), code
    assert walsh_rows(4, 3).tolist() == [1.0, -1.0, -1.0, 1.0]


def test_walsh_weight_full_period_recovers_true_gradient(small) -> None:
    # 37 parameters: one Walsh period is 64 steps.
    assert _cosine(*small, {"code": "walsh", "tau_theta": 64}) > 0.95


def test_walsh_node_full_period_recovers_true_gradient(small) -> None:
    # Node perturbation: 2 + 3 pre-activations per sample, period 8.
    assert _cosine(*small, {"mode": "node", "code": "walsh", "tau_theta": 8}) > 0.95


def test_random_codes_beat_threshold(small) -> None:
    # CDMA with 16 steps for 37 parameters: a noisy but clearly aligned estimate.
    assert _cosine(*small, {"code": "cdma", "tau_theta": 16}) > 0.3
    assert _cosine(*small, {"mode": "node", "code": "cdma", "tau_theta": 8}) > 0.5


def test_fills_grad_for_adam_and_counts_queries(small) -> None:
    model, x, y = small
    est = MGDEstimator(
        EstimatorOptions(delta=DELTA), seed=1, method_opts={"code": "cdma", "tau_theta": 4}
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = est.estimate(model, x, y, _loss)
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved
    assert result.queries <= est.queries_per_step(len(y), 1, 2) == 5 * len(y)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(before[n])


def test_bad_method_option_is_refused() -> None:
    with pytest.raises(UserError, match="tau_p"):
        MGDEstimator(EstimatorOptions(), seed=0, method_opts={"tau_p": 0})
    with pytest.raises(UserError, match="keys: "):
        MGDEstimator(EstimatorOptions(), seed=0, method_opts={"colour": "red"})
