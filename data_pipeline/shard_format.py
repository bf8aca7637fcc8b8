"""The on-disk sample format shared by the writer (Ray job) and the readers (training, rebuild).

A sample is a run of `words_per_sample` words, documents packed back to back. Columns:
- `bytes`: the words' bytes concatenated (no per-word padding on disk);
- `word_lens`: uint32 byte length of each word; a 0 marks the end of a document;
- `docs`: one segment per (part of a) document in the sample:
  [source, ordinal, offset, part, first_word, n_words, ends] — `ends` says the document's
  end-of-document marker closes this segment (a long document spans several samples).
No Ray import here: training nodes read shards without Ray.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

COLUMNS = {"bytes": "bytes", "word_lens": "ndarray:uint32", "docs": "json"}
SPLITS = ("train", "val")
EOD_LEN = 0


class SamplePacker:
    """Packs documents' words (plus an end-of-document marker each) into fixed-size samples."""

    def __init__(self, words_per_sample: int):
        self.words_per_sample = words_per_sample
        self._reset()

    def _reset(self) -> None:
        self._pieces: list[bytes] = []
        self._lens: list[np.ndarray] = []
        self._segments: list[list[Any]] = []
        self._count = 0

    def add(self, source: str, ordinal: int, offset: int, data: bytes, lengths: np.ndarray) -> Iterator[dict]:
        lens = np.append(lengths.astype(np.uint32), np.uint32(EOD_LEN))
        bounds = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
        pos, part, n = 0, 0, len(lens)
        while pos < n:
            take = min(self.words_per_sample - self._count, n - pos)
            ends = pos + take == n
            self._pieces.append(data[bounds[pos] : bounds[pos + take]])
            self._lens.append(lens[pos : pos + take])
            self._segments.append([source, ordinal, offset, part, self._count, take - int(ends), ends])
            self._count += take
            pos += take
            part += 1
            if self._count == self.words_per_sample:
                yield self._emit()

    def flush(self) -> Iterator[dict]:
        if self._count:
            yield self._emit()

    def _emit(self) -> dict:
        sample = {"bytes": b"".join(self._pieces), "word_lens": np.concatenate(self._lens), "docs": self._segments}
        self._reset()
        return sample


def sample_words(sample: dict) -> list[bytes]:
    """The sample's words as bytes; end-of-document markers come out as b""."""
    data, lens = sample["bytes"], np.asarray(sample["word_lens"], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(lens)])
    return [data[bounds[i] : bounds[i + 1]] for i in range(len(lens))]
