"""Read prepared shards back with mosaicml-streaming, and rebuild the documents they hold."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from streaming import StreamingDataset

from data_pipeline.shard_format import SPLITS


@contextlib.contextmanager
def streaming_prefix_lock():
    """mosaicml-streaming claims a shared-memory prefix by scanning /dev/shm
    and then creating the next free one, so two jobs starting together on one machine (a training run
    and `wordpool eval`, parallel compare runs) can pick the same one and fail with FileExistsError
    ("/000123_locals"). Each job's local leader holds a machine-wide file lock while its ranks claim
    their prefix; the other ranks wait for their leader at a barrier. Collective when distributed, as
    a StreamingDataset's construction already is."""
    import torch.distributed as dist  # streaming imports torch anyway

    distributed = dist.is_available() and dist.is_initialized()
    handle = None
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # beside what it protects: /dev/shm is per machine, a TMPDIR may be shared by every node of a cluster
        # (where one node's leader would hold the lock inside the barrier the other's leader never reaches)
        shm = Path("/dev/shm")
        handle = open((shm if shm.is_dir() else Path(tempfile.gettempdir())) / "wordpool-streaming-prefix.lock", "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        if distributed:
            dist.barrier()
        yield
        if distributed:
            dist.barrier()
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def node_cache(dataset_dir: str | Path, job: str | None = None) -> Path:
    """Where this node keeps its working copy of an MDS dataset folder.

    StreamingDataset decompresses each shard next to its `local` copy. Pointed at a shared data folder,
    two nodes would decompress the same shard into the same `.tmp` file at once (a race that corrupts
    reads) and write into a folder that may be read-only; so the shared folder is the `remote` and each
    node works in its own cache. The key includes index.json's content: shards prepared again under the
    same path never meet an old copy. `job` (a training's run directory) keeps two jobs that read the same
    dataset on one node apart: mosaicml-streaming refuses a local folder that a live dataset of another
    process already uses ("Reused local directory"). WORDPOOL_SHARD_CACHE moves the cache (default: TMPDIR)."""
    folder = Path(dataset_dir).resolve()
    index = folder / "index.json"
    key = str(folder).encode() + b"\0" + index.read_bytes() + b"\0" + (job or "").encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    root = Path(os.environ.get("WORDPOOL_SHARD_CACHE") or Path(tempfile.gettempdir()) / "wordpool-shards")
    return root / f"{folder.name}-{digest}"


def open_dataset(dataset_dir: str | Path | None, dataset_class=None, job: str | None = None, **kwargs):
    """A StreamingDataset over one MDS dataset folder, read through this node's cache (node_cache) of
    `job`; with dataset_dir None, kwargs name what it reads (remote/local, or streams). Collective when
    distributed (streaming_prefix_lock)."""
    dataset_class = dataset_class or StreamingDataset
    if dataset_dir is not None:
        kwargs.update(remote=str(Path(dataset_dir).resolve()), local=str(node_cache(dataset_dir, job)))
    with streaming_prefix_lock():
        return dataset_class(**kwargs)


def dataset_dirs(root: str | Path, split: str) -> list[Path]:
    """The split's MDS datasets: the split folder itself, or one per length bucket (decomposition)."""
    base = Path(root) / split
    buckets = sorted(p.parent for p in base.glob("len-*/index.json"))
    return buckets or [base]


def iter_samples(dataset_dir: str | Path) -> Iterator[dict]:
    """Every sample of one MDS dataset folder, in shard order (no shuffling)."""
    index = Path(dataset_dir) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no index.json in {dataset_dir}: not a finished prepare output")
    if not json.loads(index.read_text())["shards"]:
        return  # an empty split (e.g. no document drew val) is valid; StreamingDataset refuses it
    dataset = open_dataset(dataset_dir, shuffle=False, batch_size=1)
    for i in range(dataset.num_samples):
        yield dataset[i]


def _segment_items(sample: dict, first: int, n: int) -> Any:
    if "word_lens" in sample:
        lens = np.asarray(sample["word_lens"], dtype=np.int64)
        start = int(lens[:first].sum())
        return sample["bytes"][start : start + int(lens[first : first + n].sum())]
    return np.asarray(sample["tokens"][first : first + n])


def _to_bytes(pieces: list[Any], tokenizer) -> bytes:
    if isinstance(pieces[0], bytes):
        return b"".join(pieces)
    tokens = np.concatenate(pieces)
    if tokens.dtype == np.uint16:  # bytes tokenization
        return tokens.astype(np.uint8).tobytes()
    return tokenizer.decode(tokens.tolist(), skip_special_tokens=False).encode("utf-8")


def _bpe_tokenizer(root: Path):
    """The shards' BPE tokenizer, read once (None for words/bytes shards)."""
    from data_pipeline.bpe import TOKENIZER_FILE, load_bpe

    path = root / TOKENIZER_FILE
    return load_bpe(path.read_text()) if path.is_file() else None


def rebuild_documents(root: str | Path, splits=SPLITS) -> dict[tuple[str, int], tuple[int, bytes]]:
    """{(source, ordinal): (offset, text bytes)} for every document in the shards, any tokenization
    or packing. Raises if a document misses a part or its end-of-document marker."""
    root = Path(root)
    parts: dict[tuple[str, int], list[tuple[int, Any, bool]]] = defaultdict(list)
    offsets: dict[tuple[str, int], int] = {}
    for split in splits:
        for dataset in dataset_dirs(root, split):
            for sample in iter_samples(dataset):
                for source, ordinal, offset, part, first, n_items, ends in sample["docs"]:
                    offsets[(source, ordinal)] = offset
                    parts[(source, ordinal)].append((part, _segment_items(sample, first, n_items), ends))
    documents = {}
    tokenizer = _bpe_tokenizer(root)
    for key, pieces in parts.items():
        pieces.sort(key=lambda p: p[0])
        if [p for p, _, _ in pieces] != list(range(len(pieces))) or not pieces[-1][2]:
            raise ValueError(f"document {key} is incomplete in the shards")
        documents[key] = (offsets[key], _to_bytes([items for _, items, _ in pieces], tokenizer))
    return documents


def document_splits(root: str | Path) -> dict[tuple[str, int], str]:
    """{(source, ordinal): split} — to check that tokenizations share documents and split."""
    return {key: split for split in SPLITS for key in rebuild_documents(root, (split,))}


def rebuild_sources(root: str | Path) -> dict[str, bytes]:
    """Each source file's accepted documents concatenated in file order (plain text: the file itself
    when nothing was rejected)."""
    by_source: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for (source, _), (offset, text) in rebuild_documents(root).items():
        by_source[source].append((offset, text))
    return {source: b"".join(t for _, t in sorted(docs)) for source, docs in by_source.items()}
