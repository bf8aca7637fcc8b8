"""UTF-8 text -> words by HAT's rules (hat-splitter), with a byte cap per word.

The splitter follows UAX #29 word boundaries; a single leading space joins the following word and
trailing punctuation the preceding one. Steps, in order:
  1. hat-splitter words, uncapped;
  2. optional number-aware splitting (`split_digits`, after "Tokenization counts", Singh & Strouse
     2024): inside a word, every maximal run of more than 3 ASCII digits is cut into groups of 3
     counted from the right. Text before the run stays with the first group, text after it with the
     last: " 1234567," -> " 1" "234" "567,". Other digits (Arabic-Indic, fullwidth) are untouched;
  3. pieces longer than the cap are cut greedily at UTF-8 character boundaries (as hat-splitter's
     `split_with_limit` does); `words_cut` counts the pieces the cap had to cut.
Lossless: b"".join(words) == text.encode(). Prefix-stable: the words of a prefix of the text equal
those of the whole text except the pieces of the prefix's last hat-splitter word (a cap cut is
left-aligned so only the last piece grows; a digit run regroups from the right as it grows).
"""
from __future__ import annotations

import functools
import re
from array import array
from dataclasses import dataclass
from functools import cache
from typing import Iterator, Sequence

import numpy as np
from hat_splitter import HATSplitter

UNCAPPED = 2**32 - 1  # split_with_limit with this cap == split(), but returns bytes (no Python re-encoding)
DIGIT_GROUP = 3
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{%d,}" % (DIGIT_GROUP + 1))


# Built lazily, once per process (each Ray worker builds its own).
# functools.cache costs less per call than lru_cache(maxsize=1): this runs once per document.
@cache
def _splitter() -> HATSplitter:
    return HATSplitter()


@dataclass
class Segmented:
    data: bytes  # the words' bytes, concatenated (== the text's UTF-8 bytes)
    lengths: np.ndarray  # uint32 byte length of each word
    words_cut: int  # words (digit groups, with split_digits) longer than the cap, each cut into pieces


def _lengths(words: list[bytes]) -> array:
    # array('I') + a Python max() cost less per call than numpy's fromiter + max on ~20 words (a median
    # paragraph is ~85 bytes, so per-call overhead counts); np.frombuffer then shares its memory
    return array("I", map(len, words))


assert array("I").itemsize == 4, "uint32 lengths need a 4-byte C unsigned int"


def group_digits(word: bytes) -> list[bytes]:
    """Cut every run of more than 3 ASCII digits in `word` into right-aligned groups of 3."""
    cuts = []
    for run in _LONG_DIGIT_RUN.finditer(word):
        start, end = run.span()
        cuts.extend(range(end - DIGIT_GROUP * ((end - start - 1) // DIGIT_GROUP), end, DIGIT_GROUP))
    bounds = [0, *cuts, len(word)]
    return [word[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _split_digit_runs(words: list[bytes], lengths: array, data: bytes) -> list[bytes]:
    # Find long runs in the whole text (one C-speed regex pass), then regroup only the words they touch.
    ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
    touched: set[int] = set()
    for run in _LONG_DIGIT_RUN.finditer(data):
        first, last = np.searchsorted(ends, [run.start(), run.end() - 1], side="right").tolist()
        touched.update(range(first, last + 1))
    if not touched:
        return words
    out: list[bytes] = []
    previous = 0
    for i in sorted(touched):
        out.extend(words[previous:i])
        out.extend(group_digits(words[i]))
        previous = i + 1
    out.extend(words[previous:])
    return out


def cap_word(word: bytes, max_word_bytes: int) -> list[bytes]:
    """Greedy cut at UTF-8 character boundaries (never before a continuation byte 10xxxxxx)."""
    pieces, start = [], 0
    while len(word) - start > max_word_bytes:
        end = start + max_word_bytes
        while word[end] & 0xC0 == 0x80:
            end -= 1
        pieces.append(word[start:end])
        start = end
    pieces.append(word[start:])
    return pieces


def _split(text: str, max_word_bytes: int, split_digits: bool) -> tuple[list[bytes], bytes, np.ndarray, int]:
    """(words, their concatenated bytes, uint32 lengths, words cut by the cap)."""
    words = _splitter().split_with_limit(text, UNCAPPED)
    data = b"".join(words)
    lengths = _lengths(words)
    if split_digits and _LONG_DIGIT_RUN.search(data):
        words = _split_digit_runs(words, lengths, data)
        lengths = _lengths(words)
    # One splitter call for both the pieces and the cut count; long words are rare, so capping them
    # in Python costs less than hat-splitter's capped split plus an uncapped one to count cuts.
    if not lengths or max(lengths) <= max_word_bytes:  # the common case: nothing to cap
        return words, data, np.frombuffer(lengths, dtype=np.uint32), 0
    too_long = np.flatnonzero(np.frombuffer(lengths, dtype=np.uint32) > max_word_bytes).tolist()
    capped: list[bytes] = []
    previous = 0
    for i in too_long:
        capped.extend(words[previous:i])
        capped.extend(cap_word(words[i], max_word_bytes))
        previous = i + 1
    capped.extend(words[previous:])
    return capped, data, np.frombuffer(_lengths(capped), dtype=np.uint32), len(too_long)


def split_words(text: str, max_word_bytes: int, split_digits: bool = False) -> list[bytes]:
    return _split(text, max_word_bytes, split_digits)[0]


def segment(text: str, max_word_bytes: int, split_digits: bool = False) -> Segmented:
    _, data, lengths, words_cut = _split(text, max_word_bytes, split_digits)
    return Segmented(data=data, lengths=lengths, words_cut=words_cut)


# ---- many documents at once: fewer splitter calls, no per-document numpy work ----
#
# Splitting a concatenation gives each document exactly its own words when every document but the
# group's last ends with "\n" (LF): UAX #29 breaks after LF whatever follows (WB3a; only CR x LF
# joins across a newline, and LF is not CR) and no rule looks back across it (ICU's dictionary runs
# stop there too); no lookahead rule (WB6/7, WB11/12, camelCase) can match an LF; and hat-splitter
# makes the LF a whitespace token of its own, which no neighbour joins (a word or punctuation joins
# only a preceding space, word or punctuation token; spaces merge only with all-space tokens). So a
# group ends after any document that does not end with LF, and each group's document ends are still
# checked against its word ends: a group that does not match falls back to one call per document.

GROUP_CHARS = 1 << 20  # text per splitter call: amortizes the call, keeps its word list modest


@dataclass
class SegmentedBatch:
    words: list[bytes]  # every document's words, in document order
    data: bytes  # their bytes, concatenated
    lengths: np.ndarray  # uint32 byte length of each word
    word_counts: np.ndarray  # int64 words per document
    words_cut: np.ndarray  # int64 words cut by the cap, per document

    def word_ends(self) -> np.ndarray:
        """Index one past each document's last word (int64, one per document)."""
        return np.cumsum(self.word_counts, dtype=np.int64)

    @functools.cached_property
    def _byte_ends(self) -> np.ndarray:
        return np.cumsum(self.lengths, dtype=np.int64)

    @functools.cached_property
    def _word_ends(self) -> np.ndarray:
        return self.word_ends()

    def document(self, i: int) -> Segmented:
        """Document i alone, as `segment()` returns it (the tests compare the two)."""
        ends = self._word_ends
        first, last = int(ends[i] - self.word_counts[i]), int(ends[i])
        byte_ends = self._byte_ends
        start = int(byte_ends[first - 1]) if first else 0
        stop = int(byte_ends[last - 1]) if last else 0
        return Segmented(data=self.data[start:stop], lengths=self.lengths[first:last].copy(),
                         words_cut=int(self.words_cut[i]))


def _byte_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # isascii() is O(1) on str


def _groups(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(first, stop) ranges of documents that may share one splitter call."""
    first, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if not text.endswith("\n") or size >= GROUP_CHARS or i == len(texts) - 1:
            yield first, i + 1
            first, size = i + 1, 0


def _split_group(texts: Sequence[str]) -> tuple[list[bytes], array, list[int]]:
    """One group's words, their byte lengths and each document's word count."""
    splitter = _splitter()
    words = splitter.split_with_limit(texts[0] if len(texts) == 1 else "".join(texts), UNCAPPED)
    lengths = _lengths(words)
    if len(texts) == 1:
        return words, lengths, [len(words)]
    word_ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
    doc_ends = np.cumsum(np.fromiter(map(_byte_len, texts), dtype=np.int64, count=len(texts)))
    last = np.searchsorted(word_ends, doc_ends)  # the word that ends each document, if one does
    if last[-1] < len(word_ends) and np.array_equal(word_ends[np.minimum(last, len(word_ends) - 1)], doc_ends):
        return words, lengths, np.diff(last + 1, prepend=0).tolist()
    per_doc = [splitter.split_with_limit(t, UNCAPPED) for t in texts]  # defensive: never seen
    words = [w for ws in per_doc for w in ws]
    return words, _lengths(words), [len(ws) for ws in per_doc]


def _split_documents(texts: Sequence[str]) -> tuple[list[bytes], array, np.ndarray]:
    """(every document's words in order, their byte lengths, words per document)."""
    words: list[bytes] = []
    lengths = array("I")
    counts: list[int] = []
    for first, stop in _groups(texts):
        group_words, group_lengths, group_counts = _split_group(texts[first:stop])
        words.extend(group_words)
        lengths.extend(group_lengths)
        counts.extend(group_counts)
    return words, lengths, np.asarray(counts, dtype=np.int64)


def _expand(words: list[bytes], indices: list[int], fn) -> tuple[list[bytes], np.ndarray]:
    """Replace words[i] (i in sorted `indices`) by fn(words[i]); returns the new list and how many
    pieces each old word became."""
    pieces = np.ones(len(words), dtype=np.int64)
    out: list[bytes] = []
    previous = 0
    for i in indices:
        out.extend(words[previous:i])
        parts = fn(words[i])
        out.extend(parts)
        pieces[i] = len(parts)
        previous = i + 1
    out.extend(words[previous:])
    return out, pieces


def _regroup_counts(word_counts: np.ndarray, pieces: np.ndarray) -> np.ndarray:
    ends = np.concatenate([[0], np.cumsum(pieces)])[np.cumsum(word_counts)]
    return np.diff(ends, prepend=0)


def segment_batch(texts: Sequence[str], max_word_bytes: int, split_digits: bool = False) -> SegmentedBatch:
    """`segment()` of every text, flat: document i's words are the same as `segment(texts[i])`'s."""
    words, lengths, word_counts = _split_documents(texts)
    data = "".join(texts).encode("utf-8")  # == b"".join(words) (lossless), at memcpy speed for ASCII
    if split_digits and _LONG_DIGIT_RUN.search(data):
        # a run found across two documents' words only makes group_digits look at both: no change
        ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
        touched: set[int] = set()
        for run in _LONG_DIGIT_RUN.finditer(data):
            a, b = np.searchsorted(ends, [run.start(), run.end() - 1], side="right").tolist()
            touched.update(range(a, b + 1))
        words, pieces = _expand(words, sorted(touched), group_digits)
        word_counts = _regroup_counts(word_counts, pieces)
        lengths = _lengths(words)
    words_cut = np.zeros(len(texts), dtype=np.int64)
    if lengths and max(lengths) > max_word_bytes:
        too_long = np.flatnonzero(np.frombuffer(lengths, dtype=np.uint32) > max_word_bytes)
        doc_of_word = np.searchsorted(np.cumsum(word_counts), too_long, side="right")
        words_cut = np.bincount(doc_of_word, minlength=len(texts)).astype(np.int64)
        words, pieces = _expand(words, too_long.tolist(), lambda w: cap_word(w, max_word_bytes))
        word_counts = _regroup_counts(word_counts, pieces)
        lengths = _lengths(words)
    return SegmentedBatch(words=words, data=data, lengths=np.frombuffer(lengths, dtype=np.uint32),
                          word_counts=word_counts, words_cut=words_cut)
