"""Word-pooled language model: byte encoder -> causal word backbone -> byte decoder.

After "Learn Your Tokens" (Thawani et al. 2023) and HAT (Neitemeier et al. 2025), with their known
defects avoided: pooling slots are learned vectors (no id shared with a byte), padding never enters
the loss, and every word is scored on all of its symbols plus, where generation emits one, its
end-of-word marker (not after a word of exactly max_word_bytes, nor after the end-of-document marker).

Byte encoder (model.byte_encoder): `word` runs a bidirectional encoder over each word alone (Learn
Your Tokens); `stream` runs a causal sliding-window encoder (model.encoder_window) over the sample's
flat byte stream (HAT, BLT), so each byte's state has the bytes before it, across word boundaries.
Optional hashed byte n-gram embeddings (model.hash_ngrams, BLT) are added to the encoder's input.

Pooling (model.pooling): `cls` prefixes each word with p learned slots (p = model.pool_tokens, 1..4);
the encoder's outputs at the slots are the word's p backbone positions. `latent` has a learned query
cross-attend to the word's byte states (one position per word); stream encoding uses it.

Decoder: the decoder of word t+1 starts from the p backbone outputs of word t (plus, with the stream
encoder, the state of word t's last byte), then reads word t+1's inputs (teacher forcing): byte
embeddings, or with the stream encoder the stream's states of those bytes. model.decoder_context:
every_layer also adds a projection of the backbone output before every decoder layer.

Layout (model.layout): the per-word stacks dominate the cost when every word is padded to
max_word_bytes (docs/ARCHITECTURE.md, "Per-word stacks"). `packed` (pretrain/models/packed_layout.py)
runs them on the words packed flat, attention through ops.varlen_attention. `bucketed` groups words by
length into power-of-two widths. `padded` runs one group at full width (the reference the others are
tested against). `auto`: packed on CUDA, bucketed elsewhere. Generation: word_generation.py.

Batch contract (see `WordPooledLM.forward`):
  words      [B, W, L] symbol ids, left-aligned, rest PAD; an end-of-document word is [EOD, PAD, ...]
  word_lens  [B, W]    symbols per word (EOD word: 1, absent word: 0; absent words only at the end)
  text_bytes [B, W]    UTF-8 text bytes per word (0 for EOD and absent words)
  sizes      BatchSizes (optional): the batch's counts as Python ints, from the loader's collate; with
             them the packed layout makes no host sync and compiles without graph breaks (train.compile)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import cross_entropy_sum
from pretrain.models import flops
from pretrain.models.byte_stream import flatten_words, last_byte_rows, word_rows
from pretrain.models.hash_ngrams import HashNgramEmbedding
from pretrain.models.layers import Stack, init_weights
from pretrain.models.packed_layout import (BatchSizes, batch_sizes, decode_loss_packed, encode_words_packed,
                                           latent_pool_packed, pack, present_rows)
from pretrain.models.pooling import LatentPool
from pretrain.models.symbols import EOD, EOW, PAD, POOL, VOCAB, banned_symbols, needs_eow
from schema import ModelConfig

__all__ = ["PAD", "EOW", "EOD", "POOL", "VOCAB", "banned_symbols", "WordPooledLM", "bucket_widths"]


def bucket_widths(L: int) -> list[int]:
    """Power-of-two word widths up to L, and L itself: 2, 4, 8, 16, L."""
    widths, w = [], 2
    while w < L:
        widths.append(w)
        w *= 2
    return widths + [L]


def word_buckets(lens: torch.Tensor, widths: list[int]) -> list[tuple[torch.Tensor, int]]:
    """(row indices, width) for each non-empty bucket; rows of length 0 (absent words) are left out."""
    bounds = torch.tensor(widths, device=lens.device)
    bucket = torch.searchsorted(bounds, lens)  # smallest width >= length
    groups = []
    for i, width in enumerate(widths):
        rows = ((bucket == i) & (lens > 0)).nonzero().squeeze(1)
        if rows.numel():
            groups.append((rows, width))
    return groups


@dataclass
class DecoderInputs:
    """The teacher-forced inputs of n predicted words: table[index[r, j]] is what the decoder reads after
    byte j of word r (byte embeddings: index = the symbols; stream states: index = stream positions).
    slot [n, d_dec] or None: added to each word's first (context) position."""
    table: torch.Tensor  # [N, d_dec]
    index: torch.Tensor  # [n, L]
    slot: torch.Tensor | None = None

    def rows(self, idx: torch.Tensor, width: int) -> torch.Tensor:
        return self.table[self.index[idx, :width]]

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.table[self.index[rows, cols]]


class WordPooledLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc, dec, L = cfg.encoder, cfg.decoder, cfg.max_word_bytes
        self.p = cfg.pool_tokens if cfg.pooling == "cls" else 1
        self.stream = cfg.byte_encoder == "stream"
        self.every_layer = cfg.decoder_context == "every_layer"
        self.enc_emb = nn.Embedding(VOCAB, enc.d_model)
        self.hash_emb = HashNgramEmbedding(cfg.hash_ngrams, cfg.hash_buckets, enc.d_model, PAD) \
            if cfg.hash_ngrams else None
        if cfg.pooling == "cls":
            self.pool_emb = nn.Parameter(torch.randn(self.p, enc.d_model) * 0.02)
        else:
            self.latent = LatentPool(enc.d_model, enc.n_heads)
        self.encoder = Stack(enc.d_model, enc.n_layers, enc.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.enc_to_word = nn.Linear(enc.d_model, cfg.d_model, bias=False)
        self.backbone = Stack(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.word_to_dec = nn.Linear(cfg.d_model, dec.d_model, bias=False)
        if self.stream:  # the decoder reads the encoder's byte states, not byte embeddings of its own
            self.enc_to_dec = nn.Linear(enc.d_model, dec.d_model, bias=False)
        else:
            self.dec_emb = nn.Embedding(VOCAB, dec.d_model)
        self.decoder = Stack(dec.d_model, dec.n_layers, dec.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base,
                             cond_dim=cfg.d_model if self.every_layer else None)
        self.head = nn.Linear(dec.d_model, VOCAB, bias=False)
        init_weights(self, [(self.encoder, enc.n_layers), (self.backbone, cfg.n_layers), (self.decoder, dec.n_layers)])
        self.widths = [L] if cfg.layout == "padded" else bucket_widths(L)
        self.register_buffer("_pos", torch.arange(L + self.p + 1), persistent=False)
        self.register_buffer("_banned", banned_symbols(L), persistent=False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train_flops(self, words: torch.Tensor, word_lens: torch.Tensor, **_) -> float:
        """Useful forward+backward FLOPs of a batch (padding excluded), for MFU."""
        return flops.word_pooled(self, words, word_lens)

    def layout_for(self, x: torch.Tensor) -> str:
        """The layout a batch runs with: model.layout (the same on every device today)."""
        return self.cfg.layout

    # ---- encoder: bytes -> word vectors ------------------------------------------------------------
    def enc_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Encoder input [..., T, d_enc]: byte embeddings, plus hashed n-gram embeddings (BLT)."""
        x = self.enc_emb(ids)
        return x if self.hash_emb is None else x + self.hash_emb(ids).to(x.dtype)

    def _encode_rows(self, symbols: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """byte_encoder=word: symbols [n, w] (PAD past each length) -> [n, p, d_model] word vectors."""
        n, w = symbols.shape
        x = self.enc_embed(symbols)
        if self.cfg.pooling == "cls":
            x = torch.cat([self.pool_emb.to(x.dtype).expand(n, -1, -1), x], dim=1)
            key_mask = self._pos[: self.p + w] < (self.p + lens).unsqueeze(1)
            h = self.encoder(x, causal=False, key_mask=key_mask[:, None, None, :])[:, : self.p]
        else:
            key_mask = self._pos[:w] < lens.unsqueeze(1)
            h = self.latent(self.encoder(x, causal=False, key_mask=key_mask[:, None, None, :]), key_mask)
        return self.enc_to_word(h)

    def _encode_present(self, flat, lens, sizes: BatchSizes) -> tuple[torch.Tensor, torch.Tensor]:
        """byte_encoder=word: (rows, vectors [len(rows), p, d_model]) of the present words of flat [n, L]."""
        if self.layout_for(flat) == "packed":
            rows = present_rows(lens, sizes.words)
            return rows, encode_words_packed(self, flat[rows], lens[rows], sizes.word_bytes)
        # bucketed / padded: which words fall in each width is data-dependent (nonzero per bucket): under
        # torch.compile each bucket is a graph break, inherent to these layouts (packed is the one to compile)
        groups = word_buckets(lens, self.widths)
        return (torch.cat([idx for idx, _ in groups]),
                torch.cat([self._encode_rows(flat[idx, :width], lens[idx]) for idx, width in groups]))

    def stream_states(self, words, word_lens, cache=None, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """byte_encoder=stream: (encoder states [B, S, d_enc] of the flat byte streams, word starts [B, W]);
        width: S if known (BatchSizes.stream_len)."""
        stream, starts = flatten_words(words, word_lens, PAD, width)
        h = self.encoder(self.enc_embed(stream), causal=True, cache=cache, window=self.cfg.encoder_window)
        return h, starts

    def pool_stream(self, states, starts, lens, sizes: BatchSizes) -> tuple[torch.Tensor, torch.Tensor]:
        """byte_encoder=stream: (rows, vectors [len(rows), 1, d_model]) of the present words (flat lens [B*W])."""
        B, S, d = states.shape
        flat = states.reshape(B * S, d)
        if self.layout_for(states) == "packed":
            rows = present_rows(lens, sizes.words)
            packing = pack(lens[rows], self.cfg.max_word_bytes, sizes.word_bytes)
            at = word_rows(B, S, starts, rows, self.cfg.max_word_bytes)[packing.seq, packing.pos]
            return rows, self.enc_to_word(latent_pool_packed(self.latent, flat[at], packing))
        groups = word_buckets(lens, self.widths)
        vectors = [self.enc_to_word(self.latent(flat[word_rows(B, S, starts, idx, width)],
                                                self._pos[:width] < lens[idx].unsqueeze(1)))
                   for idx, width in groups]
        return torch.cat([idx for idx, _ in groups]), torch.cat(vectors)

    def encode(self, words, word_lens, cache=None, sizes: BatchSizes | None = None):
        """[B, W, L] -> (backbone input [B, W*p, d_model], absent words zero; the stream's states and
        word starts, or (None, None) with the per-word encoder). sizes: the batch's counts (read here if None)."""
        B, W, L = words.shape
        lens = word_lens.reshape(B * W)
        sizes = batch_sizes(words, word_lens) if sizes is None else sizes
        if sizes.words == 0:
            raise ValueError("a batch without a single word")
        states = starts = None
        if self.stream:
            states, starts = self.stream_states(words, word_lens, cache, sizes.stream_len)
            rows, vectors = self.pool_stream(states, starts, lens, sizes)
        else:
            rows, vectors = self._encode_present(words.view(B * W, L), lens, sizes)
        out = vectors.new_zeros(B * W, self.p, vectors.shape[-1]).index_copy(0, rows, vectors)
        return out.view(B, W * self.p, -1), (states, starts)

    # ---- backbone and decoder inputs -----------------------------------------------------------------
    def _check(self, words):
        B, W, L = words.shape
        if L != self.cfg.max_word_bytes or W < 2:
            raise ValueError(f"words {tuple(words.shape)}: need W >= 2 and L == max_word_bytes={self.cfg.max_word_bytes}")

    def _clean(self, words, word_lens):
        # Anything past a word's length is forced to PAD so stray contents can never leak in.
        return torch.where(self._pos[: words.shape[-1]] < word_lens.unsqueeze(-1), words, PAD)

    def _teacher_forced(self, words, word_lens, mean_context: bool = False, sizes: BatchSizes | None = None):
        """(the checked, cleaned words; contexts [n, p, d_model] predicting words 1..W-1, n = B*(W-1);
        their DecoderInputs). mean_context: every context replaced by their mean over the predicted words
        (what the decoder does without the backbone: the mean-context gap)."""
        self._check(words)
        B, W, L = words.shape
        words = self._clean(words, word_lens)
        x, (states, starts) = self.encode(words, word_lens, sizes=sizes)
        ctx = self.backbone(x, causal=True).view(B, W, self.p, -1)[:, :-1].reshape(B * (W - 1), self.p, -1)
        nxt_lens = word_lens[:, 1:].reshape(-1)
        if mean_context:
            present = (nxt_lens > 0).to(ctx.dtype).view(-1, 1, 1)
            ctx = ((ctx * present).sum(0) / present.sum().clamp(min=1)).expand_as(ctx)
        if not self.stream:
            return words, ctx, DecoderInputs(self.dec_emb.weight, words[:, 1:].reshape(-1, L))
        S = states.shape[1]
        table = self.enc_to_dec(states).reshape(B * S, -1)
        slot = table[last_byte_rows(S, starts, word_lens)[:, :-1].flatten()]
        table = F.pad(table, (0, 0, 0, 1))  # a zero row: what positions past a word's end read
        nxt_rows = (torch.arange(B, device=words.device).unsqueeze(1) * W
                    + torch.arange(1, W, device=words.device)).flatten()
        index = word_rows(B, S, starts, nxt_rows, L).masked_fill(self._pos[:L] >= nxt_lens.unsqueeze(1), B * S)
        return words, ctx, DecoderInputs(table, index, slot)

    def decoder_start(self, ctx, slot=None):
        """(the first decoder position [n, p, d_dec], the per-layer condition [n, d_model] or None)."""
        start = self.word_to_dec(ctx)
        if slot is not None:
            start = start + slot.unsqueeze(1).to(start.dtype)
        return start, (ctx[:, -1] if self.every_layer else None)

    def _decode_rows(self, ctx, inputs: DecoderInputs, idx, width: int) -> torch.Tensor:
        """Logits [len(idx), width+1, VOCAB] of words idx read at `width`: entry i predicts symbol i of
        the word (entry len: its end-of-word)."""
        start, cond = self.decoder_start(ctx[idx], None if inputs.slot is None else inputs.slot[idx])
        x = torch.cat([start, inputs.rows(idx, width).to(start.dtype)], dim=1)
        return self.head(self.decoder(x, causal=True, cond=cond)[:, self.p - 1:])

    def decoder_logits(self, words, word_lens):
        """Teacher-forced logits [B, W-1, L+1, VOCAB] at full width: entry t predicts word t+1 from words 0..t."""
        words, ctx, inputs = self._teacher_forced(words, word_lens)
        B, W, L = words.shape
        rows = torch.arange(B * (W - 1), device=words.device)
        return self._decode_rows(ctx, inputs, rows, L).view(B, W - 1, L + 1, VOCAB)

    # ---- loss ----------------------------------------------------------------------------------------
    @staticmethod
    def targets(words, word_lens, max_word_bytes: int | None = None):
        """Targets [..., w+1] of words [..., w]: the word's symbols, then EOW where needs_eow; -100
        (ignored) elsewhere and for absent words. max_word_bytes defaults to w."""
        pos = torch.arange(words.shape[-1] + 1, device=words.device)
        lens = word_lens.unsqueeze(-1)
        eow = needs_eow(words, word_lens, max_word_bytes or words.shape[-1]).unsqueeze(-1)
        padded = F.pad(words, (0, 1), value=PAD)
        tgt = torch.where(pos < lens, padded, torch.where((pos == lens) & eow, EOW, -100))
        return tgt.masked_fill(lens == 0, -100)

    def _decode_loss(self, ctx, inputs, nxt, nxt_lens, sizes: BatchSizes) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed fp32 NLL of the n words nxt [n, L] and which ones the constrained argmax gets entirely
        right (hits [n] bool); absent words (length 0) skipped."""
        n, L = nxt.shape
        nll_sum = torch.zeros((), dtype=torch.float32, device=nxt.device)
        hits = torch.zeros(n, dtype=torch.bool, device=nxt.device)
        if self.layout_for(nxt) == "packed":
            if sizes.next_words:
                rows = present_rows(nxt_lens, sizes.next_words)
                eow = needs_eow(nxt[rows], nxt_lens[rows], L)
                nll_sum, row_hits = decode_loss_packed(self, ctx, inputs, rows, nxt[rows], nxt_lens[rows], eow, EOW,
                                                       sizes.next_bytes, sizes.next_eow)
                hits = hits.index_copy(0, rows, row_hits)
            return nll_sum, hits
        for idx, width in word_buckets(nxt_lens, self.widths):
            logits = self._decode_rows(ctx, inputs, idx, width)
            tgt = self.targets(nxt[idx, :width], nxt_lens[idx], L)
            # fp32 log-softmax (inside the op): bf16 would make the summed NLL (bits/byte) noticeably coarse.
            nll_sum = nll_sum + cross_entropy_sum(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
            pred = logits.detach().masked_fill(self._banned[: width + 1], float("-inf")).argmax(-1)
            hits = hits.index_fill(0, idx[((pred == tgt) | (tgt == -100)).all(-1)], True)
        return nll_sum, hits

    def forward(self, words, word_lens, text_bytes, details: bool = False, mean_context: bool = False,
                sizes: BatchSizes | None = None, **_) -> dict[str, torch.Tensor]:
        """Scalar fp32 tensors (sums stay tensors so a trainer can all-reduce them): loss = nll_sum /
        n_symbols; nll_sum in nats over target symbols incl. EOW and EOD; n_text_bytes (bits/byte =
        nll_sum / ln 2 / n_text_bytes); n_words = text words predicted (words 1..W-1, end-of-document
        markers excluded); n_correct = those whose every target symbol is the (constrained, see
        banned_symbols) teacher-forced argmax, i.e. greedy generate() reproduces them exactly.
        With details=True also `word_hits` [B, W-1] bool (which predicted words were correct).
        mean_context: see _teacher_forced. sizes: the batch's counts (the loader's collate); read here if None."""
        sizes = batch_sizes(words, word_lens) if sizes is None else sizes
        words, ctx, inputs = self._teacher_forced(words, word_lens, mean_context, sizes)
        B, W, L = words.shape
        nxt, nxt_lens = words[:, 1:].reshape(B * (W - 1), L), word_lens[:, 1:].reshape(B * (W - 1))
        nll_sum, hits = self._decode_loss(ctx, inputs, nxt, nxt_lens, sizes)
        n_symbols = (nxt_lens + needs_eow(nxt, nxt_lens, L)).sum().float()
        is_word = text_bytes[:, 1:] > 0
        word_hits = hits.view(B, W - 1) & is_word
        out = {
            "loss": nll_sum / n_symbols.clamp(min=1.0),
            "nll_sum": nll_sum,
            "n_symbols": n_symbols,
            "n_text_bytes": text_bytes[:, 1:].sum().float(),
            "n_words": is_word.sum().float(),
            "n_correct": word_hits.sum().float(),
        }
        if details:
            out["word_hits"] = word_hits
        return out

    @torch.no_grad()
    def generate(self, prompt_words: list[bytes], max_words: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 stop_at_eod: bool = False, use_cache: bool = True, on_word=None) -> list[bytes]:
        """Append up to max_words words to the prompt and return them; see word_generation.generate."""
        from pretrain.models.word_generation import generate

        return generate(self, prompt_words, max_words, temperature, top_k, generator, stop_at_eod, use_cache, on_word)
