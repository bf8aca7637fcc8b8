"""Word-pooled language model: byte encoder -> causal word backbone -> byte decoder.

After "Learn Your Tokens" (Thawani et al. 2023) and HAT (Neitemeier et al. 2025), with their known
defects avoided: pooling slots are learned vectors (no id shared with a byte), padding never enters
the loss, and every word is scored on all of its symbols plus the end-of-word marker.

Pooling (model.pooling): `cls` prefixes each word with p learned slots (p = model.pool_tokens, 1..4);
the encoder's outputs at the slots are the word's p backbone positions. `latent` runs the encoder
over the bytes alone and a learned query cross-attends to them (one position per word). The decoder
for word t+1 starts from the p backbone outputs of word t, then reads word t+1's bytes (teacher forcing).

Layout (model.layout): the per-word encoder and decoder dominate the cost when every word is padded to
max_word_bytes (docs/ARCHITECTURE.md, "Per-word stacks"). `packed` (pretrain/models/packed_layout.py) runs them on the words packed flat, no padding
at all, attention through ops.varlen_attention. `bucketed` groups the batch's words by length into
power-of-two widths and runs each group at its own width. `padded` runs one group at full width (the
reference the others are tested against). Absent words are skipped by all three. `auto` resolves per
batch: packed on CUDA (varlen kernels), bucketed elsewhere (packed measured no faster on CPU, where
its varlen attention is the pad-and-mask reference).

Batch contract (see `WordPooledLM.forward`):
  words      [B, W, L] symbol ids, left-aligned, rest PAD; an end-of-document word is [EOD, PAD, ...]
  word_lens  [B, W]    symbols per word (EOD word: 1, absent word: 0; absent words only at the end)
  text_bytes [B, W]    UTF-8 text bytes per word (0 for EOD and absent words)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import cross_entropy_sum
from pretrain.models import flops
from schema import ModelConfig
from pretrain.models.layers import KVCache, RMSNorm, Stack, init_weights, sdpa
from pretrain.models.packed_layout import decode_loss_packed, encode_words_packed
from pretrain.models.sampling import pick_next

PAD, EOW, EOD, POOL = 256, 257, 258, 259  # POOL: kept out of the vocabulary's use, banned in output
VOCAB = 260

__all__ = ["PAD", "EOW", "EOD", "POOL", "VOCAB", "banned_symbols", "WordPooledLM", "bucket_widths"]


def banned_symbols(L: int, device=None) -> torch.Tensor:
    """[L+1, VOCAB] bool, True where decoder slot i may never emit that id: PAD and POOL anywhere,
    EOW at slot 0 (no empty words), EOD after slot 0 (it is a one-symbol word). Shared by greedy
    generation and the n_correct metric so that the two agree."""
    ban = torch.zeros(L + 1, VOCAB, dtype=torch.bool, device=device)
    ban[:, [PAD, POOL]] = True
    ban[0, EOW] = True
    ban[1:, EOD] = True
    return ban


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


class LatentPool(nn.Module):
    """A learned query cross-attending to a word's encoder states (HAT's pooling): one vector per word."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.randn(1, d) * 0.02)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm = RMSNorm(d)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n, T, d = h.shape
        H = self.n_heads
        q = self.q(self.query).view(1, H, 1, d // H).expand(n, H, 1, d // H)
        k, v = self.kv(h).view(n, T, 2, H, d // H).permute(2, 0, 3, 1, 4)
        y = sdpa(q, k, v, key_mask[:, None, None, :], causal=False)
        return self.norm(self.out(y.transpose(1, 2).reshape(n, 1, d)))


class WordPooledLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc, dec, L = cfg.encoder, cfg.decoder, cfg.max_word_bytes
        self.p = cfg.pool_tokens if cfg.pooling == "cls" else 1
        self.enc_emb = nn.Embedding(VOCAB, enc.d_model)
        if cfg.pooling == "cls":
            self.pool_emb = nn.Parameter(torch.randn(self.p, enc.d_model) * 0.02)
        else:
            self.latent = LatentPool(enc.d_model, enc.n_heads)
        self.encoder = Stack(enc.d_model, enc.n_layers, enc.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.enc_to_word = nn.Linear(enc.d_model, cfg.d_model, bias=False)
        self.backbone = Stack(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.word_to_dec = nn.Linear(cfg.d_model, dec.d_model, bias=False)
        self.dec_emb = nn.Embedding(VOCAB, dec.d_model)
        self.decoder = Stack(dec.d_model, dec.n_layers, dec.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.head = nn.Linear(dec.d_model, VOCAB, bias=False)
        init_weights(self, [(self.encoder, enc.n_layers), (self.backbone, cfg.n_layers), (self.decoder, dec.n_layers)])
        self.widths = [L] if cfg.layout == "padded" else bucket_widths(L)
        self.register_buffer("_pos", torch.arange(L + self.p + 1), persistent=False)
        self.register_buffer("_banned", banned_symbols(L), persistent=False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train_flops(self, word_lens: torch.Tensor, **_) -> float:
        """Useful forward+backward FLOPs of a batch (padding excluded), for MFU."""
        return flops.word_pooled(self, word_lens)

    def layout_for(self, x: torch.Tensor) -> str:
        """The layout a batch runs with: model.layout (the same on every device today)."""
        return self.cfg.layout

    # ---- the three stages, on rows of words --------------------------------------------------
    def _encode_rows(self, symbols: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """symbols [n, w] (PAD past each length) -> [n, p, d_model] word vectors."""
        n, w = symbols.shape
        x = self.enc_emb(symbols)
        if self.cfg.pooling == "cls":
            x = torch.cat([self.pool_emb.to(x.dtype).expand(n, -1, -1), x], dim=1)
            key_mask = self._pos[: self.p + w] < (self.p + lens).unsqueeze(1)
            h = self.encoder(x, causal=False, key_mask=key_mask[:, None, None, :])[:, : self.p]
        else:
            key_mask = self._pos[:w] < lens.unsqueeze(1)
            h = self.latent(self.encoder(x, causal=False, key_mask=key_mask[:, None, None, :]), key_mask)
        return self.enc_to_word(h)

    def _decode_rows(self, ctx: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        """ctx [n, p, d_model] backbone states, symbols [n, w] (teacher forcing) -> logits [n, w+1, VOCAB]:
        entry i predicts symbol i of the word (entry len: its end-of-word)."""
        x = torch.cat([self.word_to_dec(ctx), self.dec_emb(symbols)], dim=1)
        return self.head(self.decoder(x, causal=True)[:, self.p - 1:])

    def encode_words(self, words: torch.Tensor, word_lens: torch.Tensor) -> torch.Tensor:
        """[B, W, L] -> backbone input [B, W*p, d_model]; absent words get zero vectors."""
        B, W, L = words.shape
        flat, lens = words.view(B * W, L), word_lens.reshape(B * W)
        if not bool((lens > 0).any()):
            raise ValueError("a batch without a single word")
        rows, vectors = self._encode_present(flat, lens)
        out = vectors.new_zeros(B * W, self.p, vectors.shape[-1]).index_copy(0, rows, vectors)
        return out.view(B, W * self.p, -1)

    def _encode_present(self, flat, lens) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, vectors [len(rows), p, d_model]) of the present words (length > 0) of flat [n, L]."""
        if self.layout_for(flat) == "packed":
            rows = (lens > 0).nonzero().squeeze(1)
            return rows, encode_words_packed(self, flat[rows], lens[rows])
        groups = word_buckets(lens, self.widths)
        return (torch.cat([idx for idx, _ in groups]),
                torch.cat([self._encode_rows(flat[idx, :width], lens[idx]) for idx, width in groups]))

    def _check(self, words):
        B, W, L = words.shape
        if L != self.cfg.max_word_bytes or W < 2:
            raise ValueError(f"words {tuple(words.shape)}: need W >= 2 and L == max_word_bytes={self.cfg.max_word_bytes}")

    def _clean(self, words, word_lens):
        # Anything past a word's length is forced to PAD so stray contents can never leak in.
        return torch.where(self._pos[: words.shape[-1]] < word_lens.unsqueeze(-1), words, PAD)

    def _contexts(self, words, word_lens):
        """Backbone states [B, W-1, p, d_model]: entry t conditions the decoder of word t+1."""
        B, W, _ = words.shape
        h = self.backbone(self.encode_words(words, word_lens), causal=True)
        return h.view(B, W, self.p, -1)[:, :-1]

    def _teacher_forced(self, words, word_lens) -> tuple[torch.Tensor, torch.Tensor]:
        """(the checked, cleaned words, the contexts [B*(W-1), p, d_model] that predict words 1..W-1)."""
        self._check(words)
        B, W, _ = words.shape
        words = self._clean(words, word_lens)
        return words, self._contexts(words, word_lens).reshape(B * (W - 1), self.p, -1)

    def decoder_logits(self, words, word_lens):
        """Teacher-forced logits [B, W-1, L+1, VOCAB] at full width: entry t predicts word t+1 from words 0..t."""
        words, ctx = self._teacher_forced(words, word_lens)
        B, W, L = words.shape
        return self._decode_rows(ctx, words[:, 1:].reshape(B * (W - 1), L)).view(B, W - 1, L + 1, VOCAB)

    def _decode_loss(self, ctx, nxt, nxt_lens) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed fp32 NLL of the n words nxt [n, L] given their contexts ctx [n, p, d_model], and which
        words the constrained argmax gets entirely right (hits [n] bool); absent words (length 0) skipped."""
        n = nxt.shape[0]
        nll_sum = torch.zeros((), dtype=torch.float32, device=nxt.device)
        hits = torch.zeros(n, dtype=torch.bool, device=nxt.device)
        if self.layout_for(nxt) == "packed":
            rows = (nxt_lens > 0).nonzero().squeeze(1)
            if rows.numel():
                nll_sum, row_hits = decode_loss_packed(self, ctx[rows], nxt[rows], nxt_lens[rows], EOW)
                hits = hits.index_fill(0, rows[row_hits], True)
            return nll_sum, hits
        for idx, width in word_buckets(nxt_lens, self.widths):
            logits = self._decode_rows(ctx[idx], nxt[idx, :width])
            tgt = self.targets(nxt[idx, :width], nxt_lens[idx])
            # fp32 log-softmax (inside the op): bf16 would make the summed NLL (bits/byte) noticeably coarse.
            nll_sum = nll_sum + cross_entropy_sum(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
            pred = logits.detach().masked_fill(self._banned[: width + 1], float("-inf")).argmax(-1)
            hits = hits.index_fill(0, idx[((pred == tgt) | (tgt == -100)).all(-1)], True)
        return nll_sum, hits

    @staticmethod
    def targets(words, word_lens):
        """Targets [B, W, L+1]: the word's symbols, then EOW; -100 (ignored) elsewhere and for absent words."""
        pos = torch.arange(words.shape[-1] + 1, device=words.device)
        lens = word_lens.unsqueeze(-1)
        padded = F.pad(words, (0, 1), value=PAD)
        tgt = torch.where(pos < lens, padded, torch.where(pos == lens, EOW, -100))
        return tgt.masked_fill(lens == 0, -100)

    def forward(self, words, word_lens, text_bytes, details: bool = False, **_) -> dict[str, torch.Tensor]:
        """Scalar fp32 tensors (sums stay tensors so a trainer can all-reduce them): loss = nll_sum /
        n_symbols; nll_sum in nats over target symbols incl. EOW and EOD; n_text_bytes (bits/byte =
        nll_sum / ln 2 / n_text_bytes); n_words = text words predicted (words 1..W-1, end-of-document
        markers excluded); n_correct = those whose every symbol and end-of-word is the (constrained,
        see banned_symbols) teacher-forced argmax, i.e. greedy generate() reproduces them exactly.
        With details=True also `word_hits` [B, W-1] bool (which predicted words were correct)."""
        words, ctx = self._teacher_forced(words, word_lens)
        B, W, L = words.shape
        nxt, nxt_lens = words[:, 1:].reshape(B * (W - 1), L), word_lens[:, 1:].reshape(B * (W - 1))
        nll_sum, hits = self._decode_loss(ctx, nxt, nxt_lens)
        n_symbols = (nxt_lens + (nxt_lens > 0)).sum().float()  # each word's symbols + its EOW
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

    # ---- generation -----------------------------------------------------------------------------
    def _to_symbols(self, word: bytes) -> list[list[int]]:
        # b"" stands for the end-of-document marker (the same convention generate() returns);
        # words longer than L are cut into L-byte pieces, as the data pipeline's word limit would.
        if word == b"":
            return [[EOD]]
        L = self.cfg.max_word_bytes
        return [list(word[i:i + L]) for i in range(0, len(word), L)]

    def _encode_context(self, context: list[list[int]]) -> torch.Tensor:
        L, dev = self.cfg.max_word_bytes, self._pos.device
        words = torch.full((1, len(context), L), PAD, dtype=torch.long, device=dev)
        for i, s in enumerate(context):
            words[0, i, :len(s)] = torch.tensor(s, dtype=torch.long, device=dev)
        lens = torch.tensor([[len(s) for s in context]], dtype=torch.long, device=dev)
        return self.encode_words(words, lens)

    def _pick(self, logits, slot, temperature, top_k, generator) -> int:
        return pick_next(logits.float().masked_fill(self._banned[slot], float("-inf")), temperature, top_k, generator)

    def _decode_word(self, ctx, cached: bool, pick) -> list[int]:
        """Greedy/sampled symbols of one word from its context [1, p, d_model], until EOW or EOD."""
        L, dev = self.cfg.max_word_bytes, self._pos.device
        sym: list[int] = []
        cache = KVCache() if cached else None
        h = self.decoder(self.word_to_dec(ctx), causal=True, cache=cache) if cached else None
        while len(sym) < L:
            if cached:
                logits = self.head(h[0, -1])
            else:
                prefix = torch.tensor([sym], dtype=torch.long, device=dev).view(1, len(sym))
                logits = self._decode_rows(ctx, prefix)[0, -1]
            nxt = pick(logits, len(sym))
            if nxt == EOW:
                break
            sym.append(nxt)
            if nxt == EOD:
                break
            if cached:
                h = self.decoder(self.dec_emb(torch.tensor([[nxt]], device=dev)), causal=True, cache=cache)
        return sym

    @torch.no_grad()
    def generate(self, prompt_words: list[bytes], max_words: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 stop_at_eod: bool = False, use_cache: bool = True, on_word=None) -> list[bytes]:
        """Append up to max_words words to the prompt and return the new ones.

        An end-of-document word is returned as b"" (and b"" in the prompt means one); generation
        continues past it into a new document unless stop_at_eod. An empty prompt starts a document
        (context = one EOD marker). Greedy when temperature == 0, else sampling (optionally top-k).
        With use_cache the backbone keeps a KV cache across words and each word's bytes are decoded
        incrementally; the context is the last model.max_words words either way (the cache is rebuilt
        when that window slides), so cached and uncached generation give the same words.
        `on_word(word)` is called as each word is produced."""
        was_training = self.training
        self.eval()
        window = self.cfg.max_words
        context = [s for w in prompt_words for s in self._to_symbols(w)] or [[EOD]]
        out: list[bytes] = []
        cache, h = None, None

        def pick(logits, slot):
            return self._pick(logits, slot, temperature, top_k, generator)

        for _ in range(max_words):
            if not use_cache or cache is None:
                cache = KVCache() if use_cache else None
                h = self.backbone(self._encode_context(context[-window:]), causal=True, cache=cache)
            sym = self._decode_word(h[:, -self.p:], use_cache, pick)
            context.append(sym)
            out.append(b"" if sym == [EOD] else bytes(sym))
            if on_word:
                on_word(out[-1])
            if stop_at_eod and sym == [EOD]:
                break
            if use_cache:
                if len(context) > window:
                    cache = None  # the window slid: rebuild from the last `window` words next time
                else:
                    h = self.backbone(self._encode_context([sym]), causal=True, cache=cache)
        if was_training:
            self.train()
        return out
