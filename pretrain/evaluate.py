"""Validation pass shared by the trainer (every `train.eval_every` steps) and `wordpool eval`."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from pretrain.metrics import stack_sums, summarize


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(forward: Callable, loader: Iterable, max_batches: int, device: torch.device,
             all_reduce: Callable[[torch.Tensor], None] | None = None) -> dict[str, float]:
    """Val bits/byte and next-word accuracy over at most `max_batches` micro-batches (per rank)."""
    sums = torch.zeros(5, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        sums += stack_sums(forward(**to_device(batch, device))).cpu()
    if all_reduce is not None:
        all_reduce(sums)
    return summarize(sums, "val_")
