"""Scoring raw text with any of the three models: the log-likelihood of a continuation after a context,
the log-likelihood of a whole text (rolling windows), and generation with stop strings. The
lm-evaluation-harness adapter (lm_eval_adapter.py) is a thin layer over this module.

The accounting, the same for every model kind:
- A text is read as a document start (the end-of-document item, as a document follows one in the
  packed training samples) followed by the text's items: the project splitter's words (word-pooled),
  or its bytes / BPE tokens (baselines).
- `loglikelihood(context, continuation)` splits context + continuation *together* and sums the
  log-probabilities of every symbol at or after the context's last byte: the continuation's bytes, and
  for the word model the end-of-word symbols of the words that end at or after that point. A word that
  straddles the boundary is read with its context bytes teacher-forced. The last word's end-of-word
  symbol is not counted: what follows the continuation is unknown (a byte or BPE model claims nothing
  about it either; a BPE model scores spaces that end the context with the continuation, as lm-eval's
  HF models do, since its tokens carry their leading space). `is_greedy`: every counted symbol is the
  argmax (with the symbols generation may never emit banned), i.e. greedy decoding reproduces the
  continuation (exactly so while context and continuation fit in the model's window: past it,
  generation slides its window item by item).
- `rolling(text)` scores every item of the text, the word model's end-of-word symbols included (the end
  of the text ends its last word), not the end-of-document marker. Windows hold at most the model's
  sequence length (model.max_words) and overlap so that every chunk of predictions reads the window's
  remaining positions as context (lm-eval's rolling windows with context_len=1). On val samples that are
  these windows, `wordpool eval`'s val bits/byte is the same number (tests/unit/.../test_text_scoring.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from data_pipeline.segment import split_words
from pretrain.models.symbols import EOD, PAD


@dataclass
class Score:
    logprob: float  # natural log
    greedy: bool
    n_bytes: int  # UTF-8 bytes of the scored text


def windows(n: int, first: int, size: int) -> list[tuple[int, int, int]]:
    """(lo, start, hi): the model reads items [lo, hi) and scores items [start, hi). Together the
    windows score every item of [first, n) once (item 0 is never scored: it has no context); each
    window is as full of context as `size` allows."""
    out, start = [], max(first, 1)
    while start < n:
        hi = min(n, start + size - 1)
        out.append((max(0, hi - size), start, hi))
        start = hi
    return out


class TextScorer:
    """The common driver: a subclass turns text into items and scores windows of items."""

    def __init__(self, model: torch.nn.Module, max_items: int, batch_size: int = 8):
        self.model, self.max_items, self.batch_size = model, max_items, batch_size
        self.device = next(model.parameters()).device

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[Score]:
        jobs = [self._continuation_job(context, continuation) for context, continuation in requests]
        return self._run(jobs)

    def rolling(self, texts: list[str]) -> list[Score]:
        return self._run([self._rolling_job(text) for text in texts])

    def _run(self, jobs: list["_Job"]) -> list[Score]:
        """Every window of every job, scored in batches of windows; the sums per job."""
        todo = [(j, lo, start, hi) for j, job in enumerate(jobs) for lo, start, hi in
                windows(len(job.items), job.first, self.max_items)]
        logprob, greedy = [0.0] * len(jobs), [True] * len(jobs)
        with torch.no_grad():
            for b in range(0, len(todo), self.batch_size):
                batch = todo[b:b + self.batch_size]
                for (j, *_), (lp, ok) in zip(batch, self._score_batch([(jobs[j], lo, s, hi) for j, lo, s, hi in batch])):
                    logprob[j] += lp
                    greedy[j] = greedy[j] and ok
        return [Score(lp, ok, job.n_bytes) for lp, ok, job in zip(logprob, greedy, jobs)]


@dataclass
class _Job:
    items: list  # the sequence the model reads: symbols per word, or token ids
    first: int  # the first item with a scored symbol
    n_bytes: int
    from_symbol: list[int] | None = None  # word model: per item, the first scored symbol (len = none)
    eow: list[bool] | None = None  # word model: per item, whether its end-of-word symbol is scored


class WordTextScorer(TextScorer):
    """The word-pooled model: items are words (lists of symbols), scored through decoder_logits."""

    def __init__(self, model, batch_size: int = 8, split_digits: bool = False):
        super().__init__(model, model.cfg.max_words, batch_size)
        self.L, self.split_digits = model.cfg.max_word_bytes, split_digits

    def words(self, text: str) -> list[bytes]:
        return split_words(text, self.L, self.split_digits) if text else []

    def _job(self, words: list[bytes], boundary: int, last_eow: bool) -> _Job:
        items, from_symbol, eow = [[EOD]], [1], [False]
        offset = 0
        for i, word in enumerate(words):
            end = offset + len(word)
            items.append(list(word))
            from_symbol.append(min(max(boundary - offset, 0), len(word)))
            eow.append(end >= boundary and len(word) < self.L and (last_eow or i < len(words) - 1))
            offset = end
        first = next((i for i in range(1, len(items)) if from_symbol[i] < len(items[i]) or eow[i]), len(items))
        return _Job(items, first, offset - boundary, from_symbol, eow)

    def _continuation_job(self, context: str, continuation: str) -> _Job:
        return self._job(self.words(context + continuation), len(context.encode()), last_eow=False)

    def _rolling_job(self, text: str) -> _Job:
        return self._job(self.words(text), 0, last_eow=True)

    def _score_batch(self, batch) -> list[tuple[float, bool]]:
        n = max(hi - lo for _, lo, _, hi in batch)
        words = torch.full((len(batch), n, self.L), PAD, dtype=torch.long)
        lens = torch.zeros(len(batch), n, dtype=torch.long)
        for r, (job, lo, _, hi) in enumerate(batch):
            for c, symbols in enumerate(job.items[lo:hi]):
                words[r, c, :len(symbols)] = torch.tensor(symbols)
                lens[r, c] = len(symbols)
        words, lens = words.to(self.device), lens.to(self.device)
        logp = self.model.decoder_logits(words, lens).float().log_softmax(-1)  # [B, n-1, L+1, VOCAB]
        best = logp.masked_fill(self.model._banned, float("-inf")).argmax(-1)
        targets = self.model.targets(words[:, 1:], lens[:, 1:], self.L)  # [B, n-1, L+1]
        out = []
        for r, (job, lo, start, hi) in enumerate(batch):
            total, greedy = 0.0, True
            for i in range(start, hi):
                t, k = i - lo - 1, len(job.items[i])
                slots = list(range(job.from_symbol[i], k)) + ([k] if job.eow[i] else [])
                if not slots:
                    continue
                tgt = targets[r, t, slots]
                total += float(logp[r, t, slots].gather(-1, tgt.unsqueeze(-1)).sum())
                greedy = greedy and bool((best[r, t, slots] == tgt).all())
            out.append((total, greedy))
        return out

    def generate(self, context: str, until: list[str], max_bytes: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> str:
        """The continuation of `context` (greedy by default), stopped before the first stop string, at
        max_bytes bytes, or at an end-of-document word."""
        produced: list[bytes] = []

        def enough(word: bytes) -> bool:
            produced.append(word)
            text = b"".join(produced)
            return len(text) >= max_bytes or any(s.encode() in text for s in until)

        self.model.generate([b""] + self.words(context), max_words=max_bytes, temperature=temperature,
                            generator=generator, stop_at_eod=True, on_word=enough)
        return _cut(b"".join(produced), until, max_bytes)


class TokenTextScorer(TextScorer):
    """The bytes and BPE baselines: items are token ids after an end-of-document token."""

    def __init__(self, model, table: list[bytes | None], tokenizer=None, batch_size: int = 8):
        super().__init__(model, model.cfg.max_words, batch_size)
        self.table, self.tokenizer = table, tokenizer
        self.eod = table.index(None)

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer.encode(text).ids if self.tokenizer is not None else list(text.encode())

    def _continuation_job(self, context: str, continuation: str) -> _Job:
        # BPE: context spaces that end it belong to the continuation's first token (as lm-eval's HF model)
        if self.tokenizer is not None:
            stripped = context.rstrip(" ")
            context, continuation = stripped, context[len(stripped):] + continuation
        whole, n_context = self.encode(context + continuation), len(self.encode(context))
        return _Job([self.eod] + whole, 1 + n_context, len(continuation.encode()))

    def _rolling_job(self, text: str) -> _Job:
        return _Job([self.eod] + self.encode(text), 1, len(text.encode()))

    def _score_batch(self, batch) -> list[tuple[float, bool]]:
        n = max(hi - lo for _, lo, _, hi in batch)
        ids = torch.zeros(len(batch), n, dtype=torch.long)
        for r, (job, lo, _, hi) in enumerate(batch):
            ids[r, :hi - lo] = torch.tensor(job.items[lo:hi])
        logp = self.model.logits(ids.to(self.device)).float().log_softmax(-1)  # entry t predicts t+1
        out = []
        for r, (job, lo, start, hi) in enumerate(batch):
            tgt = torch.tensor(job.items[start:hi], device=logp.device)
            rows = logp[r, start - lo - 1:hi - lo - 1]
            out.append((float(rows.gather(-1, tgt.unsqueeze(-1)).sum()), bool((rows.argmax(-1) == tgt).all())))
        return out

    def generate(self, context: str, until: list[str], max_bytes: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> str:
        out = self.model.generate([self.eod] + self.encode(context), max_bytes, temperature, None, generator,
                                  stop_id=self.eod, window=self.max_items)
        return _cut(b"".join(self.table[i] or b"" for i in out if i != self.eod), until, max_bytes)


def _cut(data: bytes, until: list[str], max_bytes: int) -> str:
    """Text before the first stop string, at most max_bytes bytes (an incomplete last character dropped)."""
    text = data[:max_bytes].decode("utf-8", errors="ignore")
    for stop in until:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def text_scorer(model: torch.nn.Module, cfg, data_dir: str | Path | None = None, batch_size: int = 8) -> TextScorer:
    """The scorer of a model of any kind. Baselines need their tokenizer: the data folder's (default
    cfg.data.output) token table and, for BPE, its tokenizer.json."""
    if cfg.model.kind == "word_pooled":
        return WordTextScorer(model, batch_size, cfg.data.split_digits)
    from data_pipeline.data_cache import local_root
    from pretrain.evaluation.word_scoring import token_byte_table

    data_dir = local_root(data_dir or cfg.data.output)  # fetched to this node when it is a URL
    tokenizer = None
    if cfg.model.kind == "bpe":
        from data_pipeline.bpe import TOKENIZER_FILE, load_bpe

        tokenizer = load_bpe((data_dir / TOKENIZER_FILE).read_text())
    return TokenTextScorer(model, token_byte_table(data_dir), tokenizer, batch_size)


def bits_per_byte(scores: list[Score]) -> float:
    return -sum(s.logprob for s in scores) / math.log(2) / max(1, sum(s.n_bytes for s in scores))
