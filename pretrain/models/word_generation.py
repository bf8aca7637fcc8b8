"""Word-by-word generation from a WordPooledLM, greedy or sampled, with or without KV caches.

Uncached (the reference): each symbol is read off decoder_logits on the context plus the word so far,
so it is the trained computation itself. Cached: the backbone keeps a KV cache across words and the
decoder one within a word; with the stream encoder, the byte encoder keeps a third one over the byte
stream (HAT's three caches), stepped with every emitted symbol. Both read the last model.max_words
words: the caches are rebuilt when that window slides, so the two give the same words (tested).
"""
from __future__ import annotations

import torch

from pretrain.models.layers import KVCache
from pretrain.models.sampling import pick_next
from pretrain.models.symbols import EOD, EOW, PAD


def to_symbols(word: bytes, L: int) -> list[list[int]]:
    """b"" stands for the end-of-document marker (the convention generate() returns); words longer
    than L are cut into L-byte pieces, as the data pipeline's word limit would."""
    if word == b"":
        return [[EOD]]
    return [list(word[i:i + L]) for i in range(0, len(word), L)]


def word_grid(model, context: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's words [1, n, L] (PAD-filled) and lengths [1, n]."""
    L, dev = model.cfg.max_word_bytes, model._pos.device
    words = torch.full((1, len(context), L), PAD, dtype=torch.long, device=dev)
    for i, s in enumerate(context):
        words[0, i, :len(s)] = torch.tensor(s, dtype=torch.long, device=dev)
    return words, torch.tensor([[len(s) for s in context]], dtype=torch.long, device=dev)


def _next_word_uncached(model, context: list[list[int]], pick) -> list[int]:
    sym: list[int] = []
    while len(sym) < model.cfg.max_word_bytes:
        words, lens = word_grid(model, context + [sym + [0]])  # a placeholder byte: causal, never read
        nxt = pick(model.decoder_logits(words, lens)[0, -1, len(sym)], len(sym))
        if nxt == EOW:
            break
        sym.append(nxt)
        if nxt == EOD:
            break
    return sym


class CachedGeneration:
    """The caches of one generation over a fixed window of words (see the module docstring)."""

    def __init__(self, model, context: list[list[int]]):
        self.model, self.backbone = model, KVCache()
        words, lens = word_grid(model, context)
        if model.stream:
            self.encoder, self.stream = KVCache(), [s for w in context for s in w]
            self.ngram = max(model.cfg.hash_ngrams, default=1)  # the stream tail one byte's embedding needs
        x, (states, _) = model.encode(words, lens, cache=self.encoder if model.stream else None)
        self.last = None if states is None else states[:, -1]  # the state of the byte before the next word
        self.h = model.backbone(x, causal=True, cache=self.backbone)

    def _encode_byte(self, symbol: int) -> torch.Tensor:
        """Step the stream encoder by one symbol -> its state [1, 1, d_enc]."""
        m = self.model
        self.stream.append(symbol)
        tail = torch.tensor([self.stream[-self.ngram:]], dtype=torch.long, device=m._pos.device)
        return m.encoder(m.enc_embed(tail)[:, -1:], causal=True, cache=self.encoder, window=m.cfg.encoder_window)

    def next_word(self, pick) -> list[int]:
        """Decode one word from the current context, then take it into the caches."""
        m, L = self.model, self.model.cfg.max_word_bytes
        decoder = KVCache()
        start, cond = m.decoder_start(self.h[:, -m.p:], None if self.last is None else m.enc_to_dec(self.last))
        h = m.decoder(start, causal=True, cache=decoder, cond=cond)
        sym, states = [], []
        while len(sym) < L:
            nxt = pick(m.head(h[0, -1]), len(sym))
            if nxt == EOW:
                break
            sym.append(nxt)
            if m.stream:
                states.append(self._encode_byte(nxt))
            if nxt == EOD or len(sym) == L:
                break
            step = m.enc_to_dec(states[-1]) if m.stream else m.dec_emb(torch.tensor([[nxt]], device=m._pos.device))
            h = m.decoder(step, causal=True, cache=decoder, cond=cond)
        self._take(sym, states)
        return sym

    def _take(self, sym: list[int], states: list[torch.Tensor]) -> None:
        m = self.model
        if m.stream:
            h = torch.cat(states, dim=1)
            x = m.enc_to_word(m.latent(h, torch.ones(1, h.shape[1], dtype=torch.bool, device=h.device)))
            self.last = h[:, -1]
        else:
            x, _ = m.encode(*word_grid(m, [sym]))
        self.h = m.backbone(x, causal=True, cache=self.backbone)


@torch.no_grad()
def generate(model, prompt_words: list[bytes], max_words: int, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             stop_at_eod: bool = False, use_cache: bool = True, on_word=None) -> list[bytes]:
    """Append up to max_words words to the prompt and return the new ones.

    An end-of-document word is returned as b"" (and b"" in the prompt means one); generation continues
    past it into a new document unless stop_at_eod. An empty prompt starts a document (context = one
    EOD marker). Greedy when temperature == 0, else sampling (optionally top-k). `on_word(word)` is
    called as each word is produced; a true return value stops generation there (stop strings)."""
    was_training = model.training
    model.eval()
    window, L = model.cfg.max_words, model.cfg.max_word_bytes
    context = [s for w in prompt_words for s in to_symbols(w, L)] or [[EOD]]
    out: list[bytes] = []
    cached = None

    def pick(logits, slot):
        return pick_next(logits.float().masked_fill(model._banned[slot], float("-inf")), temperature, top_k, generator)

    for _ in range(max_words):
        if use_cache:
            if cached is None:
                cached = CachedGeneration(model, context[-window:])
            sym = cached.next_word(pick)
        else:
            sym = _next_word_uncached(model, context[-window:], pick)
        context.append(sym)
        if len(context) > window:
            cached = None  # the window slid: rebuild the caches from the last `window` words
        out.append(b"" if sym == [EOD] else bytes(sym))
        if on_word and on_word(out[-1]):
            break
        if stop_at_eod and sym == [EOD]:
            break
    if was_training:
        model.train()
    return out
