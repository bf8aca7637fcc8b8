"""Useful training FLOPs per batch, counted from the batch's real lengths (padding excluded).

Matmul FLOPs only (the convention of MFU in PaLM / Megatron): a linear layer costs 2·in·out per
position forward; attention costs 2·d per (query, key) pair for the scores and 2·d for the weighted
sum; backward is twice the forward, so training = 3 × forward. Embedding lookups (hashed n-grams
included), norms and softmax are not counted. A causal sequence of n positions has n(n+1)/2 attended
pairs, a bidirectional one n², a causal one with a window of w: w(w+1)/2 + (n-w)·w once n > w.
"""
from __future__ import annotations

import torch

from pretrain.models.layers import Stack
from pretrain.models.symbols import needs_eow


def stack_linear(stack: Stack, positions: float) -> float:
    return len(stack.blocks) * 2 * (4 * stack.d * stack.d + 3 * stack.d * stack.mlp_hidden) * positions


def stack_attention(stack: Stack, pairs: float) -> float:
    return len(stack.blocks) * 4 * stack.d * pairs


def causal_pairs(n: torch.Tensor, window: int | None = None) -> float:
    """Attended (query, key) pairs of causal sequences of lengths n, optionally with a sliding window."""
    n = n.double()
    if window is None:
        return float((n * (n + 1) / 2).sum())
    w = float(window)
    return float(torch.where(n <= w, n * (n + 1) / 2, w * (w + 1) / 2 + (n - w) * w).sum())


def word_pooled_parts(model, words: torch.Tensor, word_lens: torch.Tensor) -> tuple[float, float]:
    """(linear, attention) forward FLOPs of a batch; words [B, W, L], word_lens [B, W] (0 = absent).
    See pretrain.models.word_pooled for the architecture."""
    cfg, p, enc, dec = model.cfg, model.p, model.encoder, model.decoder
    lens = word_lens.double()
    present = (lens > 0).double()
    n_words, n_bytes = float(present.sum()), float(lens.sum())
    linear = attention = 0.0
    if model.stream:  # one causal windowed sequence per sample: its words' symbols end to end
        linear += stack_linear(enc, n_bytes)
        attention += stack_attention(enc, causal_pairs(lens.sum(1), cfg.encoder_window))
        linear += n_bytes * 2 * enc.d * dec.d  # enc_to_dec on every byte state
    else:  # each present word alone, bidirectional; cls pooling adds p slots
        n = (lens + p) * present if cfg.pooling == "cls" else lens
        linear += stack_linear(enc, float(n.sum()))
        attention += stack_attention(enc, float((n * n).sum()))
    if cfg.pooling == "latent":  # the query projected once, keys/values per byte, output per word
        linear += (n_words + 1) * 2 * enc.d * enc.d + n_bytes * 4 * enc.d * enc.d
        attention += n_bytes * 4 * enc.d
    linear += n_words * p * 2 * enc.d * cfg.d_model  # enc_to_word
    # backbone: p positions per present word, causal within each sample
    pos = present.sum(1) * p
    linear += stack_linear(model.backbone, float(pos.sum()))
    attention += stack_attention(model.backbone, causal_pairs(pos))
    # decoder: words 1.. of each sample, p context slots + the word's symbols, causal; the head on each
    # target (the symbols, and the end-of-word where one is due)
    tgt = lens[:, 1:]
    tgt_present = (tgt > 0).double()
    n_tgt = float(tgt_present.sum())
    n = (tgt + p) * tgt_present
    linear += stack_linear(dec, float(n.sum()))
    attention += stack_attention(dec, causal_pairs(n))
    linear += n_tgt * p * 2 * cfg.d_model * dec.d  # word_to_dec
    if model.every_layer:
        linear += n_tgt * len(dec.blocks) * 2 * cfg.d_model * dec.d
    eow = needs_eow(words[:, 1:], word_lens[:, 1:], cfg.max_word_bytes).double()
    linear += float(tgt.sum() + eow.sum()) * 2 * dec.d * model.head.out_features
    return linear, attention


def word_pooled(model, words: torch.Tensor, word_lens: torch.Tensor) -> float:
    return 3.0 * sum(word_pooled_parts(model, words, word_lens))


def token_lm(model, valid: torch.Tensor) -> float:
    """valid [B, T] bool: real tokens (not padding). Inputs are tokens 0..T-2 of each sample."""
    n = (valid.double().sum(1) - 1).clamp(min=0)
    fwd = stack_linear(model.backbone, float(n.sum())) + stack_attention(model.backbone, causal_pairs(n))
    fwd += float(n.sum()) * 2 * model.backbone.d * model.head.out_features
    return 3.0 * fwd
