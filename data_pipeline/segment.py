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

import re
from array import array
from dataclasses import dataclass
from functools import cache

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
