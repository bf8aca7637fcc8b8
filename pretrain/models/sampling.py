"""The next-id rule every model's generation shares: greedy, or sampled with a temperature and top-k."""
from __future__ import annotations

import torch


def pick_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
              generator: torch.Generator | None = None) -> int:
    """The next id from 1-D fp32 logits (banned ids already -inf): the argmax when temperature == 0,
    else a draw from softmax(logits / temperature), restricted to the top_k largest when top_k is set."""
    if temperature == 0.0:
        return int(logits.argmax())
    scaled = logits / temperature
    if top_k is not None:
        kth = torch.topk(scaled, min(top_k, scaled.numel())).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return int(torch.multinomial(scaled.softmax(-1), 1, generator=generator))
