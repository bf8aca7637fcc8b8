"""Word-pooled language model: byte encoder -> causal word backbone -> byte decoder.

After "Learn Your Tokens" (Thawani et al. 2023) and HAT (Neitemeier et al. 2025), with their known
defects avoided: the pooling token has its own id, padding never enters the loss, and every word is
scored on all of its symbols plus the end-of-word marker.

Batch contract (see `WordPooledLM.forward`):
  words      [B, W, L] symbol ids, left-aligned, rest PAD; an end-of-document word is [EOD, PAD, ...]
  word_lens  [B, W]    symbols per word (EOD word: 1, absent word: 0)
  text_bytes [B, W]    UTF-8 text bytes per word (0 for EOD and absent words)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.config import ModelConfig

PAD, EOW, EOD, POOL = 256, 257, 258, 259
VOCAB = 260

__all__ = ["PAD", "EOW", "EOD", "POOL", "VOCAB", "RMSNorm", "Block", "Stack", "banned_symbols", "WordPooledLM",
           "rope_angles", "apply_rope"]

# The CUDA memory-efficient/flash kernels have a 65535 limit on the grid's batch dimension in some
# torch versions; B*W per-word sequences can exceed it, so attention is run in chunks of this size.
_MAX_SDPA_BATCH = 32768


def rope_angles(seq_len: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq_len, head_dim/2], always fp32 (recomputed per call: it is tiny, and it
    keeps precision even when the module itself is cast to bf16)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, head_dim] by position (half-split / GPT-NeoX layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def banned_symbols(L: int, device=None) -> torch.Tensor:
    """[L+1, VOCAB] bool, True where decoder slot i may never emit that id: PAD and POOL anywhere,
    EOW at slot 0 (no empty words), EOD after slot 0 (it is a one-symbol word). Shared by greedy
    generation and the n_correct metric so that the two agree."""
    ban = torch.zeros(L + 1, VOCAB, dtype=torch.bool, device=device)
    ban[:, [PAD, POOL]] = True
    ban[0, EOW] = True
    ban[1:, EOD] = True
    return ban


class RMSNorm(nn.Module):
    # Normalizes in fp32 whatever the activation dtype: works the same under autocast (where
    # nn.RMSNorm warns about bf16 input vs fp32 weight) and in a model cast to bf16.
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight.type_as(x)


def _sdpa(q, k, v, mask, causal: bool, dropout_p: float):
    if q.shape[0] <= _MAX_SDPA_BATCH:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)
    outs = []
    for i in range(0, q.shape[0], _MAX_SDPA_BATCH):
        s = slice(i, i + _MAX_SDPA_BATCH)
        outs.append(F.scaled_dot_product_attention(
            q[s], k[s], v[s], attn_mask=None if mask is None else mask[s], is_causal=causal, dropout_p=dropout_p))
    return torch.cat(outs)


class Block(nn.Module):
    """Pre-norm transformer block: RoPE self-attention + SwiGLU MLP, RMSNorm. Causal, or
    bidirectional with a boolean key mask [N, 1, 1, T] (True = may be attended to)."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        hidden = round(mlp_ratio * d)
        self.attn_norm = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.mlp_norm = RMSNorm(d)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.mlp_out = nn.Linear(hidden, d, bias=False)
        self.attn_out.is_residual_proj = self.mlp_out.is_residual_proj = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, causal: bool, key_mask=None):
        N, T, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(N, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = _sdpa(q, k, v, key_mask, causal, self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_out(y.transpose(1, 2).reshape(N, T, d)))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.drop(self.mlp_out(F.silu(gate) * up))


class Stack(nn.Module):
    """n_layers Blocks + final RMSNorm; the same class serves encoder, backbone and decoder."""

    def __init__(self, d: int, n_layers: int, n_heads: int, mlp_ratio: float, dropout: float, rope_base: float):
        super().__init__()
        if (d // n_heads) % 2:
            raise ValueError(f"head dim {d // n_heads} (d_model={d}, n_heads={n_heads}) must be even for RoPE")
        self.head_dim, self.rope_base = d // n_heads, rope_base
        self.blocks = nn.ModuleList(Block(d, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.norm = RMSNorm(d)

    def forward(self, x, causal: bool, key_mask=None):
        rope = rope_angles(x.shape[1], self.head_dim, self.rope_base, x.device)
        for block in self.blocks:
            x = block(x, rope, causal, key_mask)
        return self.norm(x)


class WordPooledLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc, dec, L = cfg.encoder, cfg.decoder, cfg.max_word_bytes
        self.enc_emb = nn.Embedding(VOCAB, enc.d_model)
        self.encoder = Stack(enc.d_model, enc.n_layers, enc.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.enc_to_word = nn.Linear(enc.d_model, cfg.d_model, bias=False)
        self.backbone = Stack(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.word_to_dec = nn.Linear(cfg.d_model, dec.d_model, bias=False)
        self.dec_emb = nn.Embedding(VOCAB, dec.d_model)
        self.decoder = Stack(dec.d_model, dec.n_layers, dec.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.head = nn.Linear(dec.d_model, VOCAB, bias=False)
        for stack, n_layers in ((self.encoder, enc.n_layers), (self.backbone, cfg.n_layers), (self.decoder, dec.n_layers)):
            for m in stack.modules():
                if getattr(m, "is_residual_proj", False):
                    # GPT-2 scaling: keeps the residual stream's variance independent of depth.
                    m.init_std = 0.02 / math.sqrt(2 * n_layers)
        self.apply(self._init_weights)
        self.register_buffer("_pos", torch.arange(L + 1), persistent=False)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=getattr(m, "init_std", 0.02))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- the three stages -------------------------------------------------------------------
    def _clean(self, words, word_lens):
        # Anything past a word's length is forced to PAD so stray contents can never leak in.
        L = words.shape[-1]
        return torch.where(self._pos[:L] < word_lens.unsqueeze(-1), words, PAD)

    def encode_words(self, words, word_lens):
        """[B, W, L] symbols -> [B, W, d_model] word vectors (bidirectional within each word)."""
        B, W, L = words.shape
        x = torch.cat([torch.full_like(words[..., :1], POOL), words], dim=-1).view(B * W, L + 1)
        # Key mask: POOL (slot 0) plus the word's symbols; the POOL slot keeps every row non-empty.
        key_mask = self._pos[: L + 1] <= word_lens.reshape(B * W, 1)
        h = self.encoder(self.enc_emb(x), causal=False, key_mask=key_mask[:, None, None, :])
        return self.enc_to_word(h[:, 0]).view(B, W, -1)

    def _decode(self, ctx, next_words):
        """ctx [N, d_model] backbone states, next_words [N, L] (teacher forcing) -> logits [N, L+1, VOCAB].
        Slot 0 holds the context, slot i the i-th symbol, so slot i predicts symbol i+1 (or EOW)."""
        x = torch.cat([self.word_to_dec(ctx).unsqueeze(1), self.dec_emb(next_words)], dim=1)
        return self.head(self.decoder(x, causal=True))

    def decoder_logits(self, words, word_lens):
        """Teacher-forced logits [B, W-1, L+1, VOCAB]: entry t predicts word t+1 from words 0..t."""
        B, W, L = words.shape
        if L != self.cfg.max_word_bytes or W < 2:
            raise ValueError(f"words {tuple(words.shape)}: need W >= 2 and L == max_word_bytes={self.cfg.max_word_bytes}")
        words = self._clean(words, word_lens)
        h = self.backbone(self.encode_words(words, word_lens), causal=True)
        logits = self._decode(h[:, :-1].reshape(B * (W - 1), -1), words[:, 1:].reshape(B * (W - 1), L))
        return logits.view(B, W - 1, L + 1, VOCAB)

    @staticmethod
    def targets(words, word_lens):
        """Targets [B, W, L+1]: the word's symbols, then EOW; -100 (ignored) elsewhere and for absent words."""
        pos = torch.arange(words.shape[-1] + 1, device=words.device)
        lens = word_lens.unsqueeze(-1)
        padded = F.pad(words, (0, 1), value=PAD)
        tgt = torch.where(pos < lens, padded, torch.where(pos == lens, EOW, -100))
        return tgt.masked_fill(lens == 0, -100)

    def forward(self, words, word_lens, text_bytes) -> dict[str, torch.Tensor]:
        """Scalar fp32 tensors (sums stay tensors so a trainer can all-reduce them): loss = nll_sum /
        n_symbols; nll_sum in nats over target symbols incl. EOW; n_text_bytes (bits/byte = nll_sum /
        ln 2 / n_text_bytes); n_words = predicted words 1..W-1 incl. EOD markers; n_correct = words
        whose every target symbol is the (constrained, see banned_symbols) teacher-forced argmax,
        i.e. greedy generate() reproduces them (for an EOD word the EOW after EOD is required here,
        while generate() ends the word at EOD, so this is at most stricter)."""
        logits = self.decoder_logits(words, word_lens)
        tgt = self.targets(words[:, 1:], word_lens[:, 1:])
        valid = tgt != -100
        # fp32 log-softmax: bf16 would make the summed NLL (and thus bits/byte) noticeably coarse.
        nll_sum = F.cross_entropy(logits.float().view(-1, VOCAB), tgt.reshape(-1), ignore_index=-100, reduction="sum")
        n_symbols = valid.sum().float()
        word_present = word_lens[:, 1:] > 0
        pred = logits.detach().masked_fill(banned_symbols(logits.shape[-2] - 1, logits.device), float("-inf")).argmax(-1)
        hit = (pred == tgt) | ~valid
        return {
            "loss": nll_sum / n_symbols.clamp(min=1.0),
            "nll_sum": nll_sum,
            "n_symbols": n_symbols,
            "n_text_bytes": (text_bytes[:, 1:] * word_present).sum().float(),
            "n_words": word_present.sum().float(),
            "n_correct": (hit.all(-1) & word_present).sum().float(),
        }

    # ---- generation -----------------------------------------------------------------------------
    def _to_symbols(self, word: bytes) -> list[list[int]]:
        # b"" stands for the end-of-document marker (the same convention generate() returns);
        # words longer than L are cut into L-byte pieces, as the data pipeline's word limit would.
        if word == b"":
            return [[EOD]]
        L = self.cfg.max_word_bytes
        return [list(word[i:i + L]) for i in range(0, len(word), L)]

    @torch.no_grad()
    def generate(self, prompt_words: list[bytes], max_words: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 stop_at_eod: bool = False) -> list[bytes]:
        """Append up to max_words words to the prompt and return the new ones.

        An end-of-document word is returned as b"" (and b"" in the prompt means one); generation
        continues past it into a new document unless stop_at_eod. An empty prompt starts a document
        (context = one EOD marker). Greedy when temperature == 0, else sampling (optionally top-k)."""
        was_training = self.training
        self.eval()
        L, dev = self.cfg.max_word_bytes, self._pos.device
        context = [s for w in prompt_words for s in self._to_symbols(w)] or [[EOD]]
        out: list[bytes] = []
        banned = banned_symbols(L, dev)
        for _ in range(max_words):
            ctx = context[-self.cfg.max_words:]
            words = torch.full((1, len(ctx), L), PAD, dtype=torch.long, device=dev)
            for i, s in enumerate(ctx):
                words[0, i, :len(s)] = torch.tensor(s, dtype=torch.long, device=dev)
            lens = torch.tensor([[len(s) for s in ctx]], dtype=torch.long, device=dev)
            h = self.backbone(self.encode_words(words, lens), causal=True)[:, -1]
            sym: list[int] = []
            while len(sym) < L:
                prefix = torch.tensor([sym], dtype=torch.long, device=dev).view(1, len(sym))
                logits = self._decode(h, prefix)[0, -1].float()
                logits = logits.masked_fill(banned[len(sym)], float("-inf"))
                if temperature == 0.0:
                    nxt = int(logits.argmax())
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, VOCAB)).values[-1]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    nxt = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
                if nxt == EOW:
                    break
                sym.append(nxt)
                if nxt == EOD:
                    break
            context.append(sym)
            out.append(b"" if sym == [EOD] else bytes(sym))
            if stop_at_eod and sym == [EOD]:
                break
        if was_training:
            self.train()
        return out
