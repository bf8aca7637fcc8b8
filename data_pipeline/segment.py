"""UTF-8 text -> words by HAT's rules (hat-splitter), with a byte cap per word.

The splitter follows UAX #29 word boundaries; a single leading space joins the following word and
trailing punctuation the preceding one. Words longer than the cap are cut at UTF-8 character
boundaries. Lossless: b"".join(words) == text.encode().
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from hat_splitter import HATSplitter


@lru_cache(maxsize=1)
def _splitter() -> HATSplitter:
    return HATSplitter()


@dataclass
class Segmented:
    data: bytes  # the words' bytes, concatenated (== the text's UTF-8 bytes)
    lengths: np.ndarray  # uint32 byte length of each word
    words_cut: int  # words longer than the cap, each cut into several pieces


def split_words(text: str, max_word_bytes: int) -> list[bytes]:
    return _splitter().split_with_limit(text, max_word_bytes)


def segment(text: str, max_word_bytes: int) -> Segmented:
    words = split_words(text, max_word_bytes)
    lengths = np.fromiter((len(w) for w in words), dtype=np.uint32, count=len(words))
    data = b"".join(words)
    # A cut piece is at least cap-3 bytes long (a char is <= 4 bytes): only then is a second,
    # uncapped split needed to count how many words the cap cut.
    words_cut = 0
    if len(lengths) and int(lengths.max()) > max_word_bytes - 4:
        words_cut = sum(1 for w in _splitter().split(text) if len(w.encode("utf-8")) > max_word_bytes)
    return Segmented(data=data, lengths=lengths, words_cut=words_cut)
