"""Your own PyTorch model around `labpgt.ReservoirLayer`, trained by a plain torch loop.

The layer is an ordinary `nn.Module`: ``layer(u)`` measures the ring for the
encoded drive u (B, k·m) in (-1, 1) and returns normalised features (B, k·F).
Its backward is the boundary estimate (u perturbed per sample, probes measured in
the same batch as the clean shot), so any loss and any `torch.optim` optimizer
train the layers before and after it.

    python examples/custom_model.py            # 60 steps on the wine data
    python examples/custom_model.py --short    # a few steps (the test runs this)
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_wine
from torch import nn

import labpgt


class WineNet(nn.Module):
    """13 inputs -> 2 hidden -> k drive numbers -> ring -> k·F features -> 3 classes."""

    def __init__(self, layer: labpgt.ReservoirLayer) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, layer.input_dim))
        self.ring = layer
        self.readout = nn.Linear(layer.output_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.encode(x))  # keep u inside the encoding's domain (-1, 1)
        return self.readout(self.ring(u))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few steps only")
    parser.add_argument("--reservoir", default="sim", help="sim | embedded | bench.toml")
    args = parser.parse_args()
    steps, channels = (4, 2) if args.short else (60, 4)

    data = load_wine()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    with labpgt.open_reservoir(args.reservoir, bins=8, seed=0) as ring:
        model = WineNet(labpgt.ReservoirLayer.on(ring, channels=channels))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        batches = torch.Generator().manual_seed(0)
        for step in range(steps):
            idx = torch.randint(0, len(x), (32,), generator=batches)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()  # boundary estimate across the ring, exact autograd elsewhere
            optimizer.step()
            print(f"step {step + 1}: loss {loss.item():.3f}, {ring.queries} queries")
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        print(f"accuracy on all {len(x)} samples: {acc:.3f}")


if __name__ == "__main__":
    main()
