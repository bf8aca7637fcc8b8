"""Read prepared shards back with mosaicml-streaming, and rebuild the documents they hold."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from streaming import StreamingDataset

from data_pipeline.shard_format import SPLITS


def iter_samples(split_dir: str | Path) -> Iterator[dict]:
    """Every sample of one split, in shard order (no shuffling)."""
    index = Path(split_dir) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no index.json in {split_dir}: not a finished prepare output")
    if not json.loads(index.read_text())["shards"]:
        return  # an empty split (e.g. no document drew val) is valid; StreamingDataset refuses it
    dataset = StreamingDataset(local=str(split_dir), shuffle=False, batch_size=1)
    for i in range(dataset.num_samples):
        yield dataset[i]


def rebuild_documents(root: str | Path) -> dict[tuple[str, int], tuple[int, bytes]]:
    """{(source, ordinal): (offset, text bytes)} for every document in the train and val shards.

    Raises if a document is missing a part or its end-of-document marker."""
    parts: dict[tuple[str, int], list[tuple[int, bytes, bool]]] = defaultdict(list)
    offsets: dict[tuple[str, int], int] = {}
    for split in SPLITS:
        for sample in iter_samples(Path(root) / split):
            data, lens = sample["bytes"], sample["word_lens"]
            bounds = [0]
            for n in lens:
                bounds.append(bounds[-1] + int(n))
            for source, ordinal, offset, part, first, n_words, ends in sample["docs"]:
                key = (source, ordinal)
                offsets[key] = offset
                parts[key].append((part, data[bounds[first] : bounds[first + n_words]], ends))
    documents = {}
    for key, pieces in parts.items():
        pieces.sort()
        if [p for p, _, _ in pieces] != list(range(len(pieces))) or not pieces[-1][2]:
            raise ValueError(f"document {key} is incomplete in the shards")
        documents[key] = (offsets[key], b"".join(piece for _, piece, _ in pieces))
    return documents


def rebuild_sources(root: str | Path) -> dict[str, bytes]:
    """Each source file's accepted documents concatenated in file order (plain text: the file itself
    when nothing was rejected)."""
    by_source: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for (source, _), (offset, text) in rebuild_documents(root).items():
        by_source[source].append((offset, text))
    return {source: b"".join(t for _, t in sorted(docs)) for source, docs in by_source.items()}
