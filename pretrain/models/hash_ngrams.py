"""Hashed byte n-gram embeddings (BLT): each position also gets, for every n in `sizes`, the embedding of
a hash of the n symbols ending there, so the encoder sees short spellings as units from its first layer.

The hash is a polynomial over the symbol ids, deterministic and the same on every device (no Python
hash()), so a checkpoint reads the same rows wherever it runs. An n-gram reaching before the start of
the sequence (or across a padding id) contributes nothing.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_PRIME, _MODULUS = 1_000_003, 2_147_483_647  # products stay below 2**51: exact in int64


def ngram_hashes(ids: torch.Tensor, n: int, buckets: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [..., T] -> (bucket [..., T] of the n-gram ending at each position, valid [..., T] bool)."""
    windows = F.pad(ids, (n - 1, 0), value=-1).unfold(-1, n, 1)  # [..., T, n]
    h = torch.zeros_like(ids)
    for j in range(n):
        h = (h * _PRIME + windows[..., j] + 2) % _MODULUS
    valid = ((windows >= 0) & (windows != pad)).all(-1)
    return h % buckets, valid


class HashNgramEmbedding(nn.Module):
    """Sum over n in `sizes` of a table lookup [buckets, d] at each position's n-gram hash."""

    def __init__(self, sizes: list[int], buckets: int, d: int, pad: int):
        super().__init__()
        self.sizes, self.buckets, self.pad = list(sizes), buckets, pad
        self.table = nn.Embedding(len(self.sizes) * buckets, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [..., T] -> [..., T, d]."""
        out = None
        for i, n in enumerate(self.sizes):
            bucket, valid = ngram_hashes(ids, n, self.buckets, self.pad)
            e = self.table(bucket + i * self.buckets) * valid.unsqueeze(-1).to(self.table.weight.dtype)
            out = e if out is None else out + e
        return out
