"""The `packed` layout of WordPooledLM: the per-word encoder and decoder run on the batch's words
packed flat, with no padding at all.

Each word becomes one sequence of `prefix` slots followed by its bytes; the sequences are laid end to
end ([total_positions, d]), so linear layers see only real positions, RoPE positions restart at 0 for
each word, and attention stays within a word through ops.varlen_attention (cu_seqlens). It computes
exactly what the padded layout computes (tested). Every size it needs is a Python int: the batch's
counts (BatchSizes, counted by the loader's collate on the host) and the static bound max_seqlen =
prefix + max_word_bytes, so a step makes no host sync and torch.compile (train.compile) traces it without
a data-dependent shape, i.e. without a graph break. A batch without counts gets them here (one sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ops import cross_entropy_sum, varlen_attention
from pretrain.models.symbols import needs_eow

__all__ = ["BatchSizes", "batch_sizes", "Packing", "pack", "present_rows", "encode_words_packed",
           "latent_pool_packed", "decode_loss_packed"]


@dataclass(frozen=True)
class BatchSizes:
    """The data-dependent sizes of a word batch (words [B, W, L], word_lens [B, W]) as Python ints."""
    words: int        # present words (length > 0) of all B*W
    word_bytes: int   # their symbols
    next_words: int   # present words among words 1..W-1 (the predicted ones)
    next_bytes: int   # their symbols
    next_eow: int     # end-of-word targets among them (symbols.needs_eow)
    stream_len: int   # symbols of the longest sample, at least 1 (byte_encoder=stream: the stream's width)


def batch_sizes(words: torch.Tensor, word_lens: torch.Tensor) -> BatchSizes:
    """The counts of a batch, read on the host (the loader's collate: pretrain.training.loader.collate)."""
    nxt, nxt_lens = words[:, 1:], word_lens[:, 1:]
    counts = torch.stack([(word_lens > 0).sum(), word_lens.sum(), (nxt_lens > 0).sum(), nxt_lens.sum(),
                          needs_eow(nxt, nxt_lens, words.shape[-1]).sum(), word_lens.sum(1).max().clamp(min=1)])
    return BatchSizes(*counts.tolist())  # one host sync


@dataclass
class Packing:
    """n sequences laid end to end: sequence i is rows cu_seqlens[i]:cu_seqlens[i+1]."""
    cu_seqlens: torch.Tensor  # [n+1] int64
    max_seqlen: int           # upper bound of the lengths (static)
    seq: torch.Tensor         # [total] which sequence each row belongs to
    pos: torch.Tensor         # [total] position of the row within its sequence

    @property
    def starts(self) -> torch.Tensor:
        return self.cu_seqlens[:-1]


def pack(seqlens: torch.Tensor, max_seqlen: int, total: int) -> Packing:
    """The packing of sequences of the given lengths (all >= 1); total = their sum, a Python int, so the
    packing's size is known without reading seqlens (no sync, no data-dependent shape when compiled)."""
    cu = F.pad(seqlens.cumsum(0), (1, 0))
    seq = torch.repeat_interleave(torch.arange(seqlens.numel(), device=seqlens.device), seqlens, output_size=total)
    pos = torch.arange(seq.numel(), device=seqlens.device) - cu[seq]
    return Packing(cu, max_seqlen, seq, pos)


def present_rows(lens: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of the n entries of lens [N] that are > 0, ascending (what `(lens > 0).nonzero()` gives,
    but a stable sort has an output size known from n: no sync, no data-dependent shape)."""
    return torch.argsort((lens <= 0).to(torch.int32), stable=True)[:n]


def _byte_cols(packing: Packing, prefix: int) -> torch.Tensor:
    """Each packed row's byte column in its word (0 on the prefix-slot rows, which are overwritten)."""
    return (packing.pos - prefix).clamp(min=0)


def _slot_rows(packing: Packing, prefix: int) -> torch.Tensor:
    """[n*prefix] packed rows of every sequence's prefix slots, sequence-major."""
    return (packing.starts.unsqueeze(1) + torch.arange(prefix, device=packing.seq.device)).flatten()


def latent_pool_packed(latent, h: torch.Tensor, packing: Packing) -> torch.Tensor:
    """LatentPool on packed encoder states h [total, d]: one query per word -> [n, 1, d]."""
    n, d, H = packing.cu_seqlens.numel() - 1, h.shape[-1], latent.n_heads
    q = latent.q(latent.query).view(1, H, d // H).expand(n, H, d // H).contiguous()  # kernels want real rows
    k, v = latent.kv(h).view(-1, 2, H, d // H).unbind(1)
    one_each = torch.arange(n + 1, device=h.device)
    y = varlen_attention(q, k, v, one_each, 1, causal=False, cu_seqlens_k=packing.cu_seqlens,
                         max_seqlen_k=packing.max_seqlen)
    return latent.norm(latent.out(y.reshape(n, 1, d)))


def encode_words_packed(model, symbols: torch.Tensor, lens: torch.Tensor, n_bytes: int) -> torch.Tensor:
    """symbols [n, L] (PAD past each length), lens [n] all >= 1, n_bytes = lens' sum -> word vectors [n, p, d_model]."""
    (n, L), p = symbols.shape, model.p
    embedded = model.enc_embed(symbols)  # [n, L, d]: n-gram hashes need each word's row intact
    if model.cfg.pooling == "cls":
        packing = pack(lens + p, p + L, n_bytes + n * p)
        x = embedded[packing.seq, _byte_cols(packing, p)]
        slots = model.pool_emb.to(x.dtype).expand(lens.numel(), -1, -1).reshape(-1, x.shape[-1])
        x = x.index_copy(0, _slot_rows(packing, p), slots)
        h = model.encoder.forward_packed(x, packing.pos, packing.cu_seqlens, packing.max_seqlen, causal=False)
        h = h[_slot_rows(packing, p)].view(lens.numel(), p, -1)
    else:
        packing = pack(lens, L, n_bytes)
        x = embedded[packing.seq, packing.pos]
        h = model.encoder.forward_packed(x, packing.pos, packing.cu_seqlens, packing.max_seqlen, causal=False)
        h = latent_pool_packed(model.latent, h, packing)
    return model.enc_to_word(h)


def decode_loss_packed(model, ctx: torch.Tensor, inputs, rows: torch.Tensor, symbols: torch.Tensor,
                       lens: torch.Tensor, with_eow: torch.Tensor, eow: int, n_bytes: int,
                       n_eow: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced decoding of the words `rows` (all present) from their contexts ctx[rows] and
    DecoderInputs; symbols [n, L], lens [n], with_eow [n] (an end-of-word target due) of those words,
    n_bytes and n_eow their sums. Returns (summed fp32 NLL over every target symbol, hits [n] bool: the
    constrained argmax got every one of them right)."""
    n, L = symbols.shape
    p = model.p
    packing = pack(lens + p, p + L, n_bytes + n * p)
    x = inputs.at(rows[packing.seq], _byte_cols(packing, p))
    start, cond = model.decoder_start(ctx[rows], None if inputs.slot is None else inputs.slot[rows])
    x = x.to(start.dtype).index_copy(0, _slot_rows(packing, p), start.reshape(n * p, -1))
    h = model.decoder.forward_packed(x, packing.pos, packing.cu_seqlens, packing.max_seqlen, causal=True,
                                     cond=cond, cond_rows=packing.seq)
    # slot p-1 predicts the first byte, ..., the last byte predicts end-of-word (where one is a target)
    out = pack(lens + with_eow.long(), L + 1, n_bytes + n_eow)
    logits = model.head(h[packing.starts[out.seq] + p - 1 + out.pos])
    symbols = F.pad(symbols, (0, 1))
    targets = torch.where(out.pos < lens[out.seq], symbols[out.seq, out.pos], eow)
    nll_sum = cross_entropy_sum(logits, targets)
    pred = logits.detach().masked_fill(model._banned[out.pos], float("-inf")).argmax(-1)
    misses = torch.zeros(n, dtype=torch.long, device=symbols.device).index_add_(0, out.seq, (pred != targets).long())
    return nll_sum, misses == 0
