"""Useful training FLOPs per batch, counted from the batch's real lengths (padding excluded).

Matmul FLOPs only (the convention of MFU in PaLM / Megatron): a linear layer costs 2·in·out per
position forward; attention costs 2·d per (query, key) pair for the scores and 2·d for the weighted
sum; backward is twice the forward, so training = 3 × forward. Embedding lookups, norms and softmax
are not counted. A causal sequence of n positions has n(n+1)/2 attended pairs, a bidirectional one n².
"""
from __future__ import annotations

import torch

from pretrain.models.layers import Stack


def stack_forward(stack: Stack, positions: float, pairs: float) -> float:
    per_position = 2 * (4 * stack.d * stack.d + 3 * stack.d * stack.mlp_hidden)
    return len(stack.blocks) * (per_position * positions + 4 * stack.d * pairs)


def word_pooled(model, word_lens: torch.Tensor) -> float:
    """word_lens [B, W] symbols per word (0 = absent); see pretrain.models.word_pooled for the architecture."""
    lens = word_lens.double()
    present = (lens > 0).double()
    p, enc, dec = model.p, model.encoder, model.decoder
    d_model, vocab = model.cfg.d_model, model.head.out_features
    n_words = float(present.sum())
    # encoder: each present word alone, bidirectional; cls pooling adds p slots
    n = (lens + p) * present if model.cfg.pooling == "cls" else lens
    fwd = stack_forward(enc, float(n.sum()), float((n * n).sum()))
    if model.cfg.pooling == "latent":  # the query projected once, keys/values per byte, output per word
        fwd += (n_words + 1) * 2 * enc.d * enc.d + float(lens.sum()) * (4 * enc.d * enc.d + 4 * enc.d)
    fwd += n_words * p * 2 * enc.d * d_model  # enc_to_word
    # backbone: p positions per present word, causal within each sample
    pos = present.sum(1) * p
    fwd += stack_forward(model.backbone, float(pos.sum()), float((pos * (pos + 1) / 2).sum()))
    # decoder: words 1.. of each sample, p context slots + the word's symbols, causal; head on len+1 slots
    tgt = lens[:, 1:]
    tgt_present = (tgt > 0).double()
    n = (tgt + p) * tgt_present
    fwd += stack_forward(dec, float(n.sum()), float((n * (n + 1) / 2).sum()))
    fwd += float(tgt_present.sum()) * p * 2 * d_model * dec.d
    fwd += float(((tgt + 1) * tgt_present).sum()) * 2 * dec.d * vocab
    return 3.0 * fwd


def token_lm(model, valid: torch.Tensor) -> float:
    """valid [B, T] bool: real tokens (not padding). Inputs are tokens 0..T-2 of each sample."""
    n = (valid.double().sum(1) - 1).clamp(min=0)
    fwd = stack_forward(model.backbone, float(n.sum()), float((n * (n + 1) / 2).sum()))
    fwd += float(n.sum()) * 2 * model.backbone.d * model.head.out_features
    return 3.0 * fwd
