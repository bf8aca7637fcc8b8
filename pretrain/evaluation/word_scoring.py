"""Next-word accuracy for the token-level baselines (bytes, BPE), and word-frequency buckets for all models.

Words are `data_pipeline.segment.split_words(document, max_word_bytes, split_digits)` — the words the
word-pooled model reads. That model scores a word correct iff greedy decoding reproduces all its bytes
and then its end-of-word symbol. A token model has no end-of-word symbol, so the splitter decides:

  A word w, at bytes [s, e) of its document, is correct iff greedy decoding, conditioned on the tokens
  that end at or before s, first reproduces the rest of the token containing s that precedes s, then
  exactly the bytes of w, and then a continuation C such that split_words(w + C)[0] == w (an
  end-of-document token, true or predicted, ends the text: C stops there).

Teacher forcing gives greedy decoding exactly while it matches the truth: from the conditioning token
on, the greedy tokens are the true ones up to the first position j where preds[j-1] != tokens[j]; there
the greedy token is preds[j-1], and what follows is unknown. So C is the true text after w, taken one
token at a time until it decides the boundary, or up to the first mismatching prediction. Choices:
  - Decided: C holds whole UTF-8 characters and w + C spans two hat-splitter words (hat-splitter is
    prefix-stable, so the first word can no longer change), or w + C is cut into pieces by the byte cap
    with no digit regrouping possible (cap cuts are left-aligned, so the first piece is final).
  - Greedy output known only up to a mismatching predicted token: the known text is taken as the end
    of the text. A predicted token that stops exactly at the word's end thus ends the word (the model
    chose a token boundary there); one that stops before the word's end makes it wrong (a
    non-canonical tokenization that would have spelled the word is not credited).
  - Known text ending in an incomplete UTF-8 character (a byte, or a BPE token cut inside a character):
    the word ends only if it ends before every character those bytes can begin (checked on a sample:
    8 values spread over 80-BF for each missing byte). A CJK lead byte thus ends the previous word, a
    Cyrillic or Latin-1 lead byte (which may begin a lowercase letter) does not. Decoding with
    errors="replace" instead would make U+FFFD, which the splitter cuts off, crediting words the model
    was gluing letters to. Invalid bytes read as U+FFFD.
Not scored (the same for every model is impossible, or the context is missing):
  - words starting in token 0 (no context);
  - if the sample starts mid-document: every piece of its first hat-splitter word (it may be cut);
  - if the sample ends mid-document (no end-of-document token after its last piece): every piece of the
    last hat-splitter word (its segmentation depends on text beyond the sample), and any word whose
    continuation would need a prediction beyond the sample's last token.
No torch and no Ray here: numpy arrays in, Python values out (BucketCounts.as_tensor imports torch lazily).
"""
from __future__ import annotations

import bisect
import codecs
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data_pipeline.segment import _LONG_DIGIT_RUN, UNCAPPED, _splitter, split_words
from data_pipeline.shard_format import BYTE_EOD
from data_pipeline.shard_format import shard_config as data_config

TokenTable = Sequence["bytes | None"]  # token id -> its text bytes; None for end-of-document
_DIGIT = re.compile(rb"[0-9]")


# ---------------------------------------------------------------- token -> bytes

def token_byte_table(data_dir: str | Path) -> list[bytes | None]:
    """id -> UTF-8 text bytes of that token for the shards' tokenizer; None for end-of-document."""
    tokenizer = data_config(data_dir)["tokenizer"]
    if tokenizer == "bytes":
        table: list[bytes | None] = [bytes([i]) for i in range(256)]
        assert len(table) == BYTE_EOD
        return table + [None]
    if tokenizer == "bpe":
        from data_pipeline.bpe import TOKENIZER_FILE

        return bpe_byte_table((Path(data_dir) / TOKENIZER_FILE).read_text())
    raise ValueError(f"{data_dir} holds {tokenizer!r} shards: only bytes and bpe shards have tokens")


def _utf8_with_byte(b: int) -> str | None:
    """A character whose UTF-8 encoding holds byte b (None for bytes valid UTF-8 never holds)."""
    if b < 0x80:
        return chr(b)
    if b < 0xC0:
        return bytes([0xC2, b]).decode()
    if 0xC2 <= b <= 0xDF:
        return bytes([b, 0x80]).decode()
    if 0xE0 <= b <= 0xEF:
        return bytes([b, 0xA0 if b == 0xE0 else 0x80, 0x80]).decode()
    if 0xF0 <= b <= 0xF4:
        return bytes([b, 0x90 if b == 0xF0 else 0x80, 0x80, 0x80]).decode()
    return None


@lru_cache(maxsize=1)  # fixed by the tokenizers library; callers only read it
def byte_level_char_map() -> dict[str, int]:
    """ByteLevel's unicode char -> byte, read off the `tokenizers` pre-tokenizer itself (one char per byte)."""
    from tokenizers import pre_tokenizers

    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    byte_of: dict[str, int] = {}
    unreachable = []
    for b in range(256):
        char = _utf8_with_byte(b)
        if char is None:
            unreachable.append(b)
            continue
        raw, mapped = char.encode(), level.pre_tokenize_str(char)[0][0]
        assert len(mapped) == len(raw)
        byte_of[mapped[raw.index(b)]] = b
    # C0, C1, F5-FF never occur in UTF-8; the alphabet's chars left over are those bytes as Latin-1
    leftover = set(pre_tokenizers.ByteLevel.alphabet()) - set(byte_of)
    assert leftover == {chr(b) for b in unreachable}, "unexpected ByteLevel alphabet"
    byte_of.update({chr(b): b for b in unreachable})
    assert sorted(byte_of.values()) == list(range(256))
    return byte_of


@lru_cache(maxsize=4)  # built once per tokenizer (trainer, loader and scorer all ask); callers only read it
def bpe_byte_table(tokenizer_json: str) -> list[bytes | None]:
    """id -> bytes for a byte-level BPE (data_pipeline.bpe); its special tokens (end of document) -> None."""
    from data_pipeline.bpe import load_bpe

    tokenizer = load_bpe(tokenizer_json)
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    byte_of = byte_level_char_map()
    return [None if i in special else bytes(byte_of[ch] for ch in tokenizer.id_to_token(i))
            for i in range(tokenizer.get_vocab_size(with_added_tokens=True))]


# ---------------------------------------------------------------- scoring one sample

# Values tried for each missing continuation byte of an incomplete final character: spread over 80-BF.
_CONTINUATION_SAMPLE = (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xAF, 0xB0, 0xBF)


def _split_incomplete_char(data: bytes) -> tuple[bytes, bytes]:
    """(data without its incomplete final UTF-8 character, that character's bytes or b"")."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data, final=False)
    pending = decoder.getstate()[0]  # a valid but incomplete final character, or b""
    return data[: len(data) - len(pending)], pending


def _completions(pending: bytes) -> list[bytes]:
    """Valid characters that begin with `pending`, a sample of them (8 values per missing byte)."""
    size = 2 if pending[0] < 0xE0 else 3 if pending[0] < 0xF0 else 4
    tails = [b""]
    for _ in range(size - len(pending)):
        tails = [t + bytes([c]) for t in tails for c in _CONTINUATION_SAMPLE]
    return [pending + t for t in tails if _is_complete_utf8(pending + t)]


class _Splitter:
    """split_words' first word of a text, from hat-splitter's first word alone (digit groups and cap
    cuts never cross hat-splitter words)."""

    def __init__(self, max_word_bytes: int, split_digits: bool):
        self.max_word_bytes, self.split_digits = max_word_bytes, split_digits

    def words(self, text: str) -> list[bytes]:
        return split_words(text, self.max_word_bytes, self.split_digits)

    def _first_piece(self, hat_word: bytes) -> bytes:
        if len(hat_word) <= self.max_word_bytes and not (self.split_digits and _LONG_DIGIT_RUN.search(hat_word)):
            return hat_word
        return self.words(hat_word.decode())[0]

    def decided_first_word(self, data: bytes) -> bytes | None:
        """The first word of `data` (whole characters) if no further text can change it, else None."""
        hat = _splitter().split_with_limit(data.decode(), UNCAPPED)
        if len(hat) >= 2:  # prefix-stable: only the last hat-splitter word may still change
            return self._first_piece(hat[0])
        if len(hat[0]) > self.max_word_bytes and not (self.split_digits and _DIGIT.search(data)):
            return self._first_piece(hat[0])  # left-aligned cap cuts: the first piece is final
        return None

    def first_word(self, data: bytes) -> bytes:
        """The first word of `data` taken as a whole text (invalid bytes read as U+FFFD)."""
        text = data.decode("utf-8", errors="replace")
        return self._first_piece(_splitter().split_with_limit(text, UNCAPPED)[0])

    def ends(self, word: bytes, continuation: bytes) -> bool:
        """Does `word` end before `continuation`, the end of what greedy decoding is known to produce?
        An incomplete final character ends it only if every character it may begin would."""
        known, pending = _split_incomplete_char(continuation)
        if not pending:
            return self.first_word(word + known) == word
        return self._ends_before_any(word + known, pending, len(word))

    @lru_cache(maxsize=1 << 16)  # CJK byte models hit this at every mispredicted character
    def _ends_before_any(self, text: bytes, pending: bytes, word_length: int) -> bool:
        word = text[:word_length]
        return all(self.first_word(text + char) == word for char in _completions(pending))


@lru_cache(maxsize=8)
def _splitter_for(max_word_bytes: int, split_digits: bool) -> _Splitter:
    return _Splitter(max_word_bytes, split_digits)  # one per config, so its cache outlives a sample


def _is_complete_utf8(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


def score_token_predictions(tokens, preds, table: TokenTable, starts_at_document: bool, max_word_bytes: int,
                            split_digits: bool = False) -> list[tuple[bytes, bool]]:
    """(word bytes, correct) for every scorable word of one sample (see the module docstring).

    tokens: int array [T], the sample; preds: int array [T-1], preds[i] = argmax prediction of
    tokens[i+1] given tokens[:i+1]; table: token_byte_table(...)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    n = len(tokens)
    if len(preds) != n - 1:
        raise ValueError(f"preds must have one entry per token after the first: {len(preds)} for {n} tokens")
    pieces = [table[t] for t in tokens.tolist()]
    is_eod = np.fromiter((p is None for p in pieces), dtype=bool, count=n)
    starts = np.zeros(n + 1, dtype=np.int64)  # starts[k] = byte offset of token k in the sample's text
    np.cumsum([len(p) if p is not None else 0 for p in pieces], out=starts[1:])
    text = b"".join(p for p in pieces if p is not None)
    # first_mismatch[k]: first token index j >= k (j >= 1) whose greedy token differs from the truth
    mismatch_at = np.full(n + 1, n, dtype=np.int64)
    wrong = np.flatnonzero(preds != tokens[1:]) + 1
    mismatch_at[wrong] = wrong
    first_mismatch = np.minimum.accumulate(mismatch_at[::-1])[::-1]
    splitter = _splitter_for(max_word_bytes, split_digits)

    def correct(word: bytes, e: int, first: int, k: int) -> bool | None:
        """k: first token starting at or after e. None: the continuation needs tokens beyond the sample."""
        m = int(first_mismatch[first])
        if starts[m] < e:  # greedy leaves the truth before the word's end: the predicted token must finish it
            predicted = table[int(preds[m - 1])]
            rest = text[starts[m]:e]
            if predicted is None or predicted[:len(rest)] != rest:
                return False
            return splitter.ends(word, predicted[len(rest):])
        greedy = word + text[e:starts[k]]  # the word, then the rest of the token it ends in
        while True:
            if len(greedy) > len(word) and _is_complete_utf8(greedy):
                decided = splitter.decided_first_word(greedy)
                if decided is not None:
                    return decided == word
            if k == n:
                return None
            if k == m:
                return splitter.ends(word, greedy[len(word):] + (table[int(preds[k - 1])] or b""))
            if is_eod[k]:
                return splitter.ends(word, greedy[len(word):])
            greedy += pieces[k]
            k += 1

    results: list[tuple[bytes, bool]] = []
    eods = np.flatnonzero(is_eod).tolist()
    bounds = list(zip([0] + [i + 1 for i in eods], eods + [n]))  # token ranges of the document pieces
    for number, (a, b) in enumerate(bounds):
        data = text[starts[a]:starts[b]]
        mid_start = number == 0 and not starts_at_document
        ends = b < n  # an end-of-document token closes this piece
        lead = 0
        if mid_start:  # the sample may begin inside a character
            while lead < len(data) and data[lead] & 0xC0 == 0x80:
                lead += 1
        piece = codecs.getincrementaldecoder("utf-8")().decode(data[lead:], final=ends)
        if not piece:
            continue
        hat = _splitter().split_with_limit(piece, UNCAPPED)
        # relative byte range whose words are scored: not the first hat word of a cut start, nor the last
        # one of a cut end (an incomplete final character was already left out by the decoder)
        first_scorable = lead + (len(hat[0]) if mid_start else 0)
        last_scorable = lead + len(piece.encode()) - (0 if ends else len(hat[-1]))
        words = splitter.words(piece)
        word_starts = starts[a] + lead + np.concatenate([[0], np.cumsum([len(w) for w in words])[:-1]])
        word_ends = word_starts + np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        first_tokens = np.searchsorted(starts, word_starts, side="right") - 1  # the token holding each start
        next_tokens = np.searchsorted(starts, word_ends, side="left")  # first token at or after each end
        for word, s, e, first, k in zip(words, word_starts.tolist(), word_ends.tolist(), first_tokens.tolist(),
                                        next_tokens.tolist()):
            relative = s - starts[a]
            if first == 0 or relative < first_scorable or relative >= last_scorable:
                continue
            verdict = correct(word, e, first, k)
            if verdict is not None:
                results.append((word, verdict))
    return results


# ---------------------------------------------------------------- frequency buckets

def count_training_words(data_dir: str | Path) -> Counter:
    """Word counts of the training split, from the shards (what word_freq.parquet holds)."""
    from data_pipeline.reader import dataset_dirs, iter_samples, rebuild_documents

    cfg = data_config(data_dir)
    counts: Counter = Counter()
    if cfg.get("tokenizer", "words") == "words":  # words are stored whole, even when a document spans samples
        for dataset in dataset_dirs(data_dir, "train"):
            for sample in iter_samples(dataset):
                ends = np.cumsum(np.asarray(sample["word_lens"], dtype=np.int64)).tolist()
                data = sample["bytes"]
                counts.update(data[a:b] for a, b in zip([0] + ends[:-1], ends) if b > a)
        return counts
    for _, data in rebuild_documents(data_dir, ("train",)).values():
        counts.update(split_words(data.decode(), cfg["max_word_bytes"], cfg["split_digits"]))
    return counts


class FrequencyBuckets:
    """Words grouped by their training-split count. edges (0, 10, 100) -> "0", "1-10", "11-100", ">100";
    keys are split_words pieces (capped, digit-grouped), as in word_freq.parquet."""

    def __init__(self, counts: dict[bytes, int], edges: Sequence[int] = (0, 10, 100)):
        edges = tuple(int(x) for x in edges)
        if not edges or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"bucket edges must be increasing counts >= 0, got {edges}")
        self.counts, self.edges = counts, edges
        self.names = [str(edges[0]) if edges[0] == 0 else f"0-{edges[0]}"]
        for lo, hi in zip(edges, edges[1:]):
            self.names.append(f"{lo + 1}" if hi == lo + 1 else f"{lo + 1}-{hi}")
        self.names.append(f">{edges[-1]}")

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, edges: Sequence[int] = (0, 10, 100)) -> "FrequencyBuckets":
        from data_pipeline.stats import WORD_FREQ_FILE, read_word_freq

        if (Path(data_dir) / WORD_FREQ_FILE).is_file():
            return cls(read_word_freq(data_dir), edges)
        return cls(count_training_words(data_dir), edges)

    def index(self, word: bytes) -> int:
        return bisect.bisect_left(self.edges, self.counts.get(word, 0))

    def bucket(self, word: bytes) -> str:
        return self.names[self.index(word)]


WORD_CLASSES = ("content", "space", "punct")


def word_class(word: bytes) -> str:
    """content: holds a letter or a digit (the headline accuracy counts these); space: whitespace only
    (newlines make up a sixth of some corpora's words and are easy); punct: everything else."""
    text = word.decode("utf-8", errors="replace")
    if any(ch.isalnum() for ch in text):
        return "content"
    return "space" if text.isspace() else "punct"


class BucketCounts:
    """Scored words and correct ones: content words per frequency bucket, whitespace-only and
    punctuation-only words apart. Sums, so ranks all-reduce them as one tensor."""

    def __init__(self, buckets: FrequencyBuckets):
        self.buckets = buckets
        self.totals = np.zeros(len(buckets.names), dtype=np.float64)  # content words per bucket
        self.correct = np.zeros(len(buckets.names), dtype=np.float64)
        self.other_totals = np.zeros(2, dtype=np.float64)  # space, punct
        self.other_correct = np.zeros(2, dtype=np.float64)

    def add(self, words_and_hits: Iterable[tuple[bytes, bool]]) -> "BucketCounts":
        for word, hit in words_and_hits:
            kind = word_class(word)
            if kind == "content":
                i = self.buckets.index(word)
                self.totals[i] += 1
                self.correct[i] += bool(hit)
            else:
                j = WORD_CLASSES.index(kind) - 1
                self.other_totals[j] += 1
                self.other_correct[j] += bool(hit)
        return self

    def merge(self, other: "BucketCounts") -> "BucketCounts":
        if other.buckets.names != self.buckets.names:
            raise ValueError("cannot merge counts over different buckets")
        for name in ("totals", "correct", "other_totals", "other_correct"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def as_array(self) -> np.ndarray:
        return np.concatenate([self.totals, self.correct, self.other_totals, self.other_correct])

    def as_tensor(self, device=None):
        """[totals..., correct..., space/punct totals, space/punct correct] as one float64 tensor
        (for torch.distributed.all_reduce)."""
        import torch

        return torch.tensor(self.as_array(), dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls, buckets: FrequencyBuckets, values) -> "BucketCounts":
        array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
        n = len(buckets.names)
        if array.shape != (2 * n + 4,):
            raise ValueError(f"expected {2 * n + 4} values, got shape {array.shape}")
        counts = cls(buckets)
        counts.totals, counts.correct = array[:n].copy(), array[n:2 * n].copy()
        counts.other_totals, counts.other_correct = array[2 * n:2 * n + 2].copy(), array[2 * n + 2:].copy()
        return counts

    def summary(self, prefix: str = "") -> dict[str, float]:
        """{prefix}word_acc / words over content words; {prefix}word_acc_space / words_space and _punct
        for the others; {prefix}word_acc_freq_{name} / words_freq_{name} per bucket of content words
        (an empty group's accuracy is 0.0, like metrics.summarize)."""
        out = {f"{prefix}word_acc": self.correct.sum() / max(self.totals.sum(), 1.0),
               f"{prefix}words": float(self.totals.sum())}
        for kind, total, hits in zip(WORD_CLASSES[1:], self.other_totals.tolist(), self.other_correct.tolist()):
            out[f"{prefix}word_acc_{kind}"] = hits / max(total, 1.0)
            out[f"{prefix}words_{kind}"] = total
        for name, total, hits in zip(self.buckets.names, self.totals.tolist(), self.correct.tolist()):
            out[f"{prefix}word_acc_freq_{name}"] = hits / max(total, 1.0)
            out[f"{prefix}words_freq_{name}"] = total
        return {k: float(v) for k, v in out.items()}
