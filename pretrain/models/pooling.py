"""Pooling a word's byte states into one vector: HAT's latent query (the `cls` slots live in the encoder)."""
from __future__ import annotations

import torch
import torch.nn as nn

from pretrain.models.layers import RMSNorm, sdpa


class LatentPool(nn.Module):
    """A learned query cross-attending to a word's encoder states: one vector per word."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.randn(1, d) * 0.02)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm = RMSNorm(d)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """h [n, T, d] states, key_mask [n, T] (True = a byte of the word) -> [n, 1, d]."""
        n, T, d = h.shape
        H = self.n_heads
        q = self.q(self.query).view(1, H, 1, d // H).expand(n, H, 1, d // H)
        k, v = self.kv(h).view(n, T, 2, H, d // H).permute(2, 0, 3, 1, 4)
        y = sdpa(q, k, v, key_mask[:, None, None, :], causal=False)
        return self.norm(self.out(y.transpose(1, 2).reshape(n, 1, d)))
