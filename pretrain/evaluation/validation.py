"""Validation pass shared by the trainer (every `train.eval_every` steps) and `wordpool eval`.

The same metrics for every model kind: bits per UTF-8 text byte from the model's summed NLL, and
next-word accuracy overall and by the target word's training frequency. The word-pooled model marks
each predicted word right or wrong itself (greedy bytes + its end-of-word); for the byte and BPE
baselines the words and their boundaries come from the same splitter (pretrain.evaluation.word_scoring).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from pretrain.training.metrics import stack_sums, summarize


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`; anything else (a word batch's `sizes`) as it is."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class WordScorer:
    """Per-word results of evaluation batches -> word counts, overall and per frequency bucket."""

    def __init__(self, kind: str, data_dir: str | Path, max_word_bytes: int, split_digits: bool):
        from pretrain.evaluation.word_scoring import FrequencyBuckets, token_byte_table

        self.kind, self.max_word_bytes, self.split_digits = kind, max_word_bytes, split_digits
        self.table = None if kind == "word_pooled" else token_byte_table(data_dir)
        self.buckets = FrequencyBuckets.from_data_dir(data_dir)
        self.reset()

    def reset(self) -> None:
        from pretrain.evaluation.word_scoring import BucketCounts

        self.counts = BucketCounts(self.buckets)

    def _word_pairs(self, batch, out) -> list[tuple[bytes, bool]]:
        if self.kind == "word_pooled":
            hits = out["word_hits"].cpu().numpy()
            words, lens, text = (batch[k].cpu().numpy() for k in ("words", "word_lens", "text_bytes"))
            rows, cols = np.nonzero(text[:, 1:] > 0)
            return [(words[b, t + 1, : lens[b, t + 1]].astype(np.uint8).tobytes(), bool(hits[b, t]))
                    for b, t in zip(rows.tolist(), cols.tolist())]
        from pretrain.evaluation.word_scoring import score_token_predictions

        preds, tokens = out["preds"].cpu().numpy(), batch["tokens"].cpu().numpy()
        pairs = []
        for b in range(len(tokens)):
            n = int((tokens[b] >= 0).sum())
            pairs += score_token_predictions(tokens[b, :n], preds[b, : n - 1], self.table, bool(batch["doc_start"][b]),
                                             self.max_word_bytes, self.split_digits)
        return pairs

    def add(self, batch, out) -> None:
        self.counts.add(self._word_pairs(batch, out))

    def as_tensor(self) -> torch.Tensor:
        return self.counts.as_tensor()

    def summary(self, reduced: torch.Tensor, prefix: str) -> dict[str, float]:
        """Word metrics (see BucketCounts.summary) from the all-reduced counts."""
        return type(self.counts).from_tensor(self.buckets, reduced).summary(prefix)


@torch.no_grad()
def evaluate(forward: Callable, loader: Iterable, max_batches: int, device: torch.device,
             all_reduce: Callable[[torch.Tensor], None] | None = None,
             scorer: WordScorer | None = None) -> dict[str, float]:
    """Val metrics over at most `max_batches` micro-batches (per rank). Next-word accuracy comes from the
    scorer only (the same splitter-based word classes for every model kind); without one, none."""
    return evaluate_streams(forward, {"": loader}, max_batches, device, all_reduce, scorer)


@torch.no_grad()
def evaluate_streams(forward: Callable, loaders: dict[str, Iterable], max_batches: int, device: torch.device,
                     all_reduce: Callable[[torch.Tensor], None] | None = None,
                     scorer: WordScorer | None = None) -> dict[str, float]:
    """evaluate() over several val splits (train.streams), `max_batches` from each: the overall figures
    over all of them, and each stream's loss and bits/byte as val_loss/<name>, val_bpb/<name>."""
    if scorer is not None:
        scorer.reset()
    per_stream = torch.zeros(len(loaders), 5, dtype=torch.float64)
    for row, loader in enumerate(loaders.values()):
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            out = forward(**to_device(batch, device), details=scorer is not None)
            per_stream[row] += stack_sums(out).cpu()
            if scorer is not None:
                scorer.add(batch, out)
    if all_reduce is not None:
        all_reduce(per_stream)
    words: dict[str, float] = {}
    if scorer is not None:
        counts = scorer.as_tensor()
        if all_reduce is not None:
            all_reduce(counts)
        words = scorer.summary(counts, "val_")
    values = {**summarize(per_stream.sum(0), "val_"), **words}
    for name, sums in zip(loaders, per_stream):
        if name:
            stream = summarize(sums, "val_")
            values.update({f"{key}/{name}": stream[key] for key in ("val_loss", "val_bpb")})
    return values
