"""`transformer`: a small encoder with the reservoir layer between its blocks.

The flat input (B, D) is cut into T tokens of D/T numbers (T = --channels; for
``seq-digits`` the 8 image rows). Upstream: token embedding + learned positions →
``blocks_before`` encoder blocks → per token a tanh projection to the m drive
settings of that token's channel (u, B × T·m). The ring measures each token's
shot. Downstream: the token's normalised features are projected back to the model
width and added to the residual stream (carried past the ring in the context) →
``blocks_after`` encoder blocks → mean over tokens → class logits.

Attention is written with plain `nn.Linear` layers (no fused kernels) so every
estimator — including MGD's node perturbation, which hooks Linear outputs — sees
every pre-activation. ``--model-opt`` keys: ``width`` (model width, 16), ``heads``
(2), ``blocks_before`` (1), ``blocks_after`` (1), ``mlp`` (MLP width factor, 2).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from labpgt.errors import UserError
from labpgt.training.models import ModelSpec, ReservoirModel, register_model
from labpgt.training.reservoir_layer import ReservoirLayer

OPTIONS: dict[str, int] = {"width": 16, "heads": 2, "blocks_before": 1, "blocks_after": 1, "mlp": 2}


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        hd = d // self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm block: h + attn(LN(h)); h + MLP(LN(h))."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp * width)
        self.fc2 = nn.Linear(mlp * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.fc2(torch.relu(self.fc1(self.norm2(h))))


class _TokenUpstream(nn.Module):
    def __init__(self, tokens: int, token_dim: int, m: int, o: dict[str, int]) -> None:
        super().__init__()
        self.tokens, self.token_dim = tokens, token_dim
        self.embed = nn.Linear(token_dim, o["width"])
        self.position = nn.Parameter(0.1 * torch.randn(tokens, o["width"]))
        self.blocks = nn.ModuleList(
            EncoderBlock(o["width"], o["heads"], o["mlp"]) for _ in range(o["blocks_before"])
        )
        self.drive = nn.Linear(o["width"], m)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(x.reshape(x.shape[0], self.tokens, self.token_dim)) + self.position
        for block in self.blocks:
            h = block(h)
        u = torch.tanh(self.drive(h))  # (B, T, m): token t drives channel t
        return u.reshape(x.shape[0], -1), h


class _TokenDownstream(nn.Module):
    def __init__(self, tokens: int, feature_dim: int, classes: int, o: dict[str, int]) -> None:
        super().__init__()
        self.tokens, self.feature_dim = tokens, feature_dim
        self.lift = nn.Linear(feature_dim, o["width"])
        self.blocks = nn.ModuleList(
            EncoderBlock(o["width"], o["heads"], o["mlp"]) for _ in range(o["blocks_after"])
        )
        self.norm = nn.LayerNorm(o["width"])
        self.head = nn.Linear(o["width"], classes)

    def forward(self, feats: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        h = ctx + self.lift(feats.reshape(feats.shape[0], self.tokens, self.feature_dim))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


def transformer_options(given: dict[str, Any]) -> dict[str, int]:
    """Merge --model-opt values over `OPTIONS`; refuse unknown keys and bad values."""
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"--model-opt {', '.join(unknown)}: unknown for model 'transformer'; valid keys: "
            f"{', '.join(OPTIONS)}"
        )
    out = dict(OPTIONS)
    for key, value in given.items():
        if type(value) is not int or value < (0 if key.startswith("blocks") else 1):
            raise UserError(
                f"--model-opt {key}={value!r}: model 'transformer' needs an integer ≥ 1"
            )
        out[key] = value
    if out["width"] % out["heads"]:
        raise UserError(
            f"--model-opt width={out['width']} must be a multiple of heads={out['heads']}"
        )
    return out


class TransformerReservoirModel(ReservoirModel):
    """Token encoder → reservoir (one channel per token) → encoder → pooled logits."""

    def __init__(self, spec: ModelSpec, reservoir: ReservoirLayer) -> None:
        super().__init__()
        o = transformer_options(dict(getattr(spec, "options", {}) or {}))
        tokens = reservoir.channels
        if spec.input_dim % tokens:
            raise UserError(
                f"--channels {tokens}: model 'transformer' uses one channel per token and the "
                f"{spec.input_dim} inputs do not split into {tokens} equal tokens "
                "(seq-digits: --channels 8, one per image row)"
            )
        m = reservoir.dims_per_channel
        self.upstream = _TokenUpstream(tokens, spec.input_dim // tokens, m, o)
        self.reservoir = reservoir
        self.downstream = _TokenDownstream(tokens, reservoir.feature_dim, spec.num_classes, o)


def register() -> None:
    """Make ``--model transformer`` available (called from ``labpgt/training/__init__.py``)."""
    register_model("transformer")(TransformerReservoirModel)
