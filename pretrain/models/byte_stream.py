"""The flat byte stream of a sample (model.byte_encoder: stream): its words' symbols end to end.

HAT and BLT run their byte encoder over this stream (causal, sliding window) rather than over each
word alone, so the first byte of a word is encoded, and decoded, with the bytes before it in view.
These helpers go from the word grid [B, W, L] to the stream [B, S] and back to per-word rows of the
stream's states.
"""
from __future__ import annotations

import torch


def flatten_words(words: torch.Tensor, lens: torch.Tensor, pad: int,
                  width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """words [B, W, L] (left-aligned), lens [B, W] -> (stream [B, S] with `pad` after each sample's end,
    starts [B, W]: where each word begins in its sample's stream). S = `width`, the longest sample's
    length as a Python int (BatchSizes.stream_len: no sync, no data-dependent shape), else read here."""
    B, W, L = words.shape
    starts = lens.cumsum(1) - lens
    S = width if width is not None else max(int(lens.sum(1).max()), 1)  # without `width`: one host sync
    at = starts.unsqueeze(-1) + torch.arange(L, device=words.device)
    inside = torch.arange(L, device=words.device) < lens.unsqueeze(-1)
    flat_at = (torch.arange(B, device=words.device).view(B, 1, 1) * S + at).masked_fill(~inside, B * S)
    stream = torch.full((B * S + 1,), pad, dtype=words.dtype, device=words.device)  # the last entry: a sink
    stream = stream.scatter(0, flat_at.flatten(), words.flatten())
    return stream[:-1].view(B, S), starts


def word_rows(n_samples: int, stream_len: int, starts: torch.Tensor, words_at: torch.Tensor,
              width: int) -> torch.Tensor:
    """Flat stream indices [n, width] of the first `width` bytes of words words_at (flat b*W+t indices
    into starts [B, W]); indices past the stream's end are clamped (those positions are masked)."""
    W = starts.shape[1]
    base = (words_at // W) * stream_len + starts.flatten()[words_at]
    return (base.unsqueeze(1) + torch.arange(width, device=starts.device)).clamp(max=n_samples * stream_len - 1)


def last_byte_rows(stream_len: int, starts: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Flat stream index [B, W] of each word's last byte (absent words: their start, clamped)."""
    B = starts.shape[0]
    base = torch.arange(B, device=starts.device).unsqueeze(1) * stream_len
    return (base + starts + (lens - 1).clamp(min=0)).clamp(max=B * stream_len - 1)
