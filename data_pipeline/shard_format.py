"""The on-disk sample format shared by the writer (Ray job) and the readers (training, rebuild).

Three tokenizations of the same documents, each packed into samples of N *items*:
- words:  columns `bytes` (the words' bytes concatenated, no per-word padding) and `word_lens`
          (uint32 byte length of each word; 0 marks the end of a document);
- bytes:  column `tokens` (uint16 byte values; 256 marks the end of a document);
- bpe:    column `tokens` (uint32 BPE ids; the tokenizer's end-of-document id marks the end).
Every sample also has `docs`: one segment per (part of a) document it holds,
  [source, ordinal, offset, part, first_item, n_items, ends]
where `ends` says the document's end marker closes this segment (a long document spans samples).
No Ray import here: training nodes read shards without Ray.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

SPLITS = ("train", "val")
SHARD_HASH = "xxh64"  # written into index.json for every shard file (fast); checked by training and `verify`
STATS_FILE = "stats.json"  # written last by prepare: a data folder holding it is complete
JOB_FILE = "_job.json"  # written first by prepare: the job's config and inputs
UNITS_DIR = "_units"  # each prepare unit's done marker and word counts
TOKENIZERS = ("words", "bytes", "bpe")
EOD_LEN = 0  # words: a zero-length word is the end-of-document marker
BYTE_EOD = 256  # bytes: the token after the 256 byte values
COLUMNS = {
    "words": {"bytes": "bytes", "word_lens": "ndarray:uint32", "docs": "json"},
    "bytes": {"tokens": "ndarray:uint16", "docs": "json"},
    "bpe": {"tokens": "ndarray:uint32", "docs": "json"},
}


def read_stats(data_dir: str | Path) -> dict[str, Any]:
    """prepare's accounts of a data folder (stats.json)."""
    path = Path(data_dir) / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `wordpool prepare` to create {data_dir}")
    return json.loads(path.read_text())


def split_has_samples(split_dir: str | Path) -> bool:
    """Whether an MDS dataset folder's index.json lists any sample."""
    index = Path(split_dir) / "index.json"
    return index.is_file() and any(shard["samples"] for shard in json.loads(index.read_text())["shards"])


def shard_config(data_dir: str | Path) -> dict[str, Any]:
    """The `data` config the shards in data_dir were prepared with (stats.json's "config")."""
    return read_stats(data_dir)["config"]


def starts_document(docs: list) -> bool:
    """Whether a sample begins at a document's first item: its first `docs` segment is part 0 from item 0."""
    return bool(docs) and docs[0][3] == 0 and docs[0][4] == 0


class DocItems:
    """A document as a sequence of items (words or tokens), its end marker included. It may be a
    window [first, first + n) into arrays shared by a batch of documents (no per-document copies)."""

    def __init__(self, tokens: np.ndarray | None = None, data: bytes = b"", word_lens: np.ndarray | None = None,
                 first: int = 0, n: int | None = None, bounds: np.ndarray | None = None):
        self.tokens, self.data, self.first = tokens, data, first
        if word_lens is not None:
            self.word_lens = word_lens
            self.bounds = np.concatenate([[0], np.cumsum(word_lens, dtype=np.int64)]) if bounds is None else bounds
        self.n = n if n is not None else len(tokens) if tokens is not None else len(word_lens)

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, eod: int) -> "DocItems":
        return cls(tokens=np.append(tokens, np.array([eod], dtype=tokens.dtype)))

    def take(self, start: int, stop: int) -> dict[str, Any]:
        start, stop = self.first + start, self.first + stop
        if self.tokens is not None:
            return {"tokens": self.tokens[start:stop]}
        return {"bytes": self.data[self.bounds[start] : self.bounds[stop]], "word_lens": self.word_lens[start:stop]}


class SamplePacker:
    """Packs documents back to back into samples of exactly `items_per_sample` items (the last one
    of a writer may be shorter). `one_doc_per_sample` instead emits each added chunk on its own
    (dataset decomposition: no sample mixes documents)."""

    def __init__(self, items_per_sample: int, one_doc_per_sample: bool = False):
        self.items_per_sample = items_per_sample
        self.one_doc_per_sample = one_doc_per_sample
        self._reset()

    def _reset(self) -> None:
        self._pieces: list[dict[str, Any]] = []
        self._segments: list[list[Any]] = []
        self._count = 0

    def add(self, source: str, ordinal: int, offset: int, doc: DocItems, first_part: int = 0,
            start: int = 0, stop: int | None = None) -> Iterator[dict]:
        stop = doc.n if stop is None else stop
        pos, part = start, first_part
        while pos < stop:
            take = min(self.items_per_sample - self._count, stop - pos)
            ends = pos + take == doc.n
            self._pieces.append(doc.take(pos, pos + take))
            self._segments.append([source, ordinal, offset, part, self._count, take - int(ends), ends])
            self._count += take
            pos += take
            part += 1
            if self._count == self.items_per_sample or self.one_doc_per_sample:
                yield self._emit()

    def flush(self) -> Iterator[dict]:
        if self._count:
            yield self._emit()

    def _emit(self) -> dict:
        sample: dict[str, Any] = {"docs": self._segments}
        for key in self._pieces[0]:
            values = [p[key] for p in self._pieces]
            sample[key] = b"".join(values) if key == "bytes" else np.concatenate(values)
        self._reset()
        return sample


def decomposition(n: int, max_len: int) -> list[tuple[int, int]]:
    """Dataset decomposition (Pouransari et al., 2024): cut n items into chunks whose lengths are
    powers of two — as many max_len chunks as fit, then the binary digits of the remainder,
    largest first. Returns (start, stop) pairs covering [0, n)."""
    chunks, pos = [], 0
    while n - pos >= max_len:
        chunks.append((pos, pos + max_len))
        pos += max_len
    rest = n - pos
    for bit in reversed(range(rest.bit_length())):
        if rest >> bit & 1:
            chunks.append((pos, pos + (1 << bit)))
            pos += 1 << bit
    return chunks
