"""MDS shards -> model-ready tensors, through mosaicml-streaming (no Ray on training nodes).

words shards -> the word-pooled model's padded word tensors; bytes / bpe shards -> token ids with the
text bytes each token stands for (the baselines' batch contract, pretrain.models.token_lm).

The loader position is the pair (epoch, samples consumed in the epoch, counted globally). It is
saved in every checkpoint and loaded into a *fresh* dataset before iterating, which is the only
way StreamingDataset resumes exactly.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from streaming import Stream, StreamingDataLoader, StreamingDataset
from streaming.base.dataset import _ShardState

from data_pipeline.data_cache import is_remote
from data_pipeline.reader import node_cache, open_dataset
from data_pipeline.shard_format import SHARD_HASH, shard_config, split_has_samples  # noqa: F401 (re-exported)
from data_pipeline.shard_format import starts_document
from pretrain.models.packed_layout import batch_sizes
from pretrain.models.word_pooled import EOD, PAD
from pretrain.models.token_lm import PAD_TOKEN
from schema import UserError


def encode_sample(sample: dict, words_per_sample: int, max_word_bytes: int) -> dict[str, torch.Tensor]:
    """One MDS sample -> fixed-shape tensors (the model's batch contract)."""
    lens = np.asarray(sample["word_lens"], dtype=np.int64)
    n = len(lens)
    if n > words_per_sample or int(lens.max(initial=0)) > max_word_bytes:
        raise ValueError(f"sample with {n} words / longest {lens.max()} bytes exceeds the model's "
                         f"{words_per_sample} words / {max_word_bytes} bytes: model and shards disagree")
    words = np.full((words_per_sample, max_word_bytes), PAD, dtype=np.int64)
    flat = np.frombuffer(sample["bytes"], dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if n else np.zeros(0, np.int64)
    # scatter all bytes at once: row = word index, column = position inside the word
    row = np.repeat(np.arange(n), lens)
    col = np.arange(len(flat)) - np.repeat(starts, lens)
    words[row, col] = flat
    eod = lens == 0
    words[np.flatnonzero(eod), 0] = EOD
    word_lens = np.zeros(words_per_sample, dtype=np.int64)
    word_lens[:n] = np.where(eod, 1, lens)
    text_bytes = np.zeros(words_per_sample, dtype=np.int64)
    text_bytes[:n] = lens
    return {"words": torch.from_numpy(words), "word_lens": torch.from_numpy(word_lens),
            "text_bytes": torch.from_numpy(text_bytes)}


def encode_token_sample(sample: dict, tokens_per_sample: int, token_bytes: np.ndarray) -> dict[str, torch.Tensor]:
    """One bytes/bpe MDS sample -> tokens [T] (PAD_TOKEN past a short sample's end) and the text bytes
    of each token; `doc_start` says whether the sample begins a document (the scorer needs it)."""
    ids = np.asarray(sample["tokens"], dtype=np.int64)
    if len(ids) > tokens_per_sample:
        raise ValueError(f"sample with {len(ids)} tokens exceeds data.tokens_per_sample={tokens_per_sample}")
    tokens = np.full(tokens_per_sample, PAD_TOKEN, dtype=np.int64)
    tokens[: len(ids)] = ids
    nbytes = np.zeros(tokens_per_sample, dtype=np.int64)
    nbytes[: len(ids)] = token_bytes[ids]
    return {"tokens": torch.from_numpy(tokens), "token_bytes": torch.from_numpy(nbytes),
            "doc_start": torch.tensor(starts_document(sample["docs"]))}


def collate(samples: list[dict[str, torch.Tensor]]) -> dict:
    """Samples -> a batch; a word batch also gets `sizes`, its data-dependent counts as Python ints
    (pretrain.models.packed_layout.BatchSizes), read here on the host so the model's step needs no sync
    and compiles without graph breaks (train.compile)."""
    batch = torch.utils.data.default_collate(samples)
    if "word_lens" in batch:
        batch["sizes"] = batch_sizes(batch["words"], batch["word_lens"])
    return batch


def sample_encoder(data_dir: str | Path, max_word_bytes: int | None = None) -> Callable[[dict], dict]:
    """The encoder for the shards in data_dir (picklable, for DataLoader workers)."""
    meta = shard_config(data_dir)
    if meta.get("tokenizer", "words") == "words":
        return functools.partial(encode_sample, words_per_sample=meta["words_per_sample"],
                                 max_word_bytes=max_word_bytes or meta["max_word_bytes"])
    from pretrain.evaluation.word_scoring import token_byte_table

    table = token_byte_table(data_dir)
    lens = np.array([0 if b is None else len(b) for b in table], dtype=np.int64)
    return functools.partial(encode_token_sample, tokens_per_sample=meta["tokens_per_sample"], token_bytes=lens)


_LOCAL = _ShardState.LOCAL


class CorruptShard(UserError):
    """A shard file is not what prepare wrote (its hash, size or compression says so)."""


class Shards(StreamingDataset):
    """StreamingDataset yielding model-ready tensors (`encode` turns one MDS sample into them). A shard that
    fails to load is reported by name, split and prepare unit (streaming's own error, raised in its
    download thread, reaches the caller only as "Background thread failed")."""

    def __init__(self, encode: Callable[[dict], dict], **kwargs):
        super().__init__(**kwargs)
        self.encode = encode
        self.shard_error: CorruptShard | None = None

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        try:
            super().prepare_shard(shard_id, blocking)
        except Exception as exc:
            self.shard_error = self._corrupt(shard_id, exc)
            raise self.shard_error from exc

    def _evict_coldest_shard(self) -> None:
        """Streaming evicts the least recently touched shard, which may be one this process's iterator is about
        to read: its ready thread then waits for that shard forever (a stall seen with a tight
        train.cache_limit). Shards the iterator no longer needs go first (coldest first); else the one it
        needs last, never the next. Other ranks' needs on the node are unknown here: keep the limit roomy."""
        it = getattr(self, "_iterator", None)
        if it is None:
            return super()._evict_coldest_shard()
        states, times = self._shard_states.numpy(), self._shard_access_times.numpy()
        first_use: dict[int, int] = {}
        for pos, sample in enumerate(it.sample_ids[it.ready_index : it.prepare_index + 1].tolist()):
            if sample >= 0:
                first_use.setdefault(int(self.spanner[sample][0]), pos)
        local = np.flatnonzero(states == _LOCAL).tolist()
        unneeded = [i for i in local if i not in first_use]
        if unneeded:
            return self._evict_shard(min(unneeded, key=lambda i: times[i]))
        if len(local) < 2:
            return super()._evict_coldest_shard()
        self._evict_shard(max(local, key=lambda i: first_use[i]))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # after a shard failed, streaming's iterator just stops early (an epoch short of samples, silently)
        yield from super().__iter__()
        if self.shard_error is not None:
            raise self.shard_error

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        try:
            sample = super().__getitem__(idx)
        except Exception as exc:
            if self.shard_error is not None and exc is not self.shard_error:
                raise self.shard_error from exc
            raise
        return self.encode(sample)

    def _corrupt(self, shard_id: int, exc: Exception) -> CorruptShard:
        from data_pipeline.verify import data_root, shard_origin

        shard, stream = self.shards[shard_id], self.streams[self.stream_per_shard[shard_id]]
        raw, zipped = shard.file_pairs[0]
        name = (zipped or raw).basename
        cause = "its hash differs from index.json's" if "Checksum failure" in str(exc) else f"{type(exc).__name__}: {exc}"
        origin = shard_origin(stream.remote, name, cause)
        return CorruptShard(f"corrupt shard {origin.line()}; rebuild the units that wrote bad shards with "
                            f"`wordpool verify {data_root(stream.remote)} --repair`")


def clean_stale_streaming_state() -> None:
    """Collective. Removes the /dev/shm blocks a killed or finished run left behind.

    Streaming's own cleaner skips the `*_resume` blocks; a stale one silently re-applies an old run's
    position to a new dataset that gets the same prefix, so drop those whose owner (`*_locals`) is gone."""
    from streaming.base.util import clean_stale_shared_memory

    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and Path("/dev/shm").is_dir():
        for resume in Path("/dev/shm").glob("[0-9]*_resume"):
            if not resume.with_name(resume.name.replace("_resume", "_locals")).exists():
                resume.unlink(missing_ok=True)
    clean_stale_shared_memory()  # ends with a barrier across ranks


@dataclass
class LoaderPosition:
    epoch: int = 0
    samples_in_epoch: int = 0  # global count, all ranks together
    batches_in_epoch: int = 0  # decomposed data: micro-batches taken this epoch (length_buckets.py)
    initial_physical_nodes: int | None = None  # streaming keeps the first run's node count for its shuffle


def hash_to_validate(split_dir: str | Path, setting: str | None) -> str | None:
    """train.validate_hash: "auto" -> the hash prepare recorded in index.json (none for older data)."""
    if setting in (None, "none"):
        return None
    if setting != "auto":
        return setting
    shards = json.loads((Path(split_dir) / "index.json").read_text())["shards"]
    recorded = (shards[0].get("zip_data") or shards[0]["raw_data"]).get("hashes") or {} if shards else {}
    return SHARD_HASH if SHARD_HASH in recorded else next(iter(recorded), None)


@dataclass(frozen=True)
class SplitSource:
    """One dataset's split as StreamingDataset reads it (data_pipeline.data_cache.split_location), with the
    mixing weight of its train.streams entry (at most one of proportion, repeat, choose)."""

    remote: str
    local: str
    name: str = "data"
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None

    @property
    def index_dir(self) -> Path:
        """Where its index.json is on this node: a remote's was fetched into the local copy."""
        return Path(self.local if is_remote(self.remote) else self.remote)

    @property
    def mixed(self) -> bool:
        return (self.proportion, self.repeat, self.choose) != (None, None, None)


def make_loader(split: str | list[SplitSource], encode: Callable[[dict], dict], micro_batch_size: int,
                shuffle: bool, seed: int, num_canonical_nodes: int, num_workers: int, drop_last: bool,
                validate_hash: str | None = "auto", job: str | None = None,
                download: dict | None = None) -> tuple[Shards, StreamingDataLoader]:
    """Collective when distributed (see streaming_prefix_lock). `split`: a local split folder, read through
    this node's cache of `job` (data_pipeline.reader.node_cache: concurrent jobs on one node need their
    own), or SplitSources, several of them mixed as streams. Each shard file is checked against its hash in
    index.json as this node first copies it (validate_hash). `download`: StreamingDataset's cache_limit,
    predownload and download_timeout."""
    sources = [SplitSource(str(Path(split).resolve()), str(node_cache(split, job)))] \
        if isinstance(split, (str, Path)) else list(split)
    for source in sources:
        if not (source.index_dir / "index.json").is_file():
            raise FileNotFoundError(f"no shards in {source.remote} (index.json missing)")
    if len(sources) == 1 and not sources[0].mixed:
        s = sources[0]
        where = {"remote": s.remote, "local": s.local, "validate_hash": hash_to_validate(s.index_dir, validate_hash)}
    else:
        where = {"streams": [Stream(remote=s.remote, local=s.local, proportion=s.proportion, repeat=s.repeat,
                                    choose=s.choose, validate_hash=hash_to_validate(s.index_dir, validate_hash))
                             for s in sources]}
    dataset = open_dataset(None, Shards, encode=encode, shuffle=shuffle, shuffle_seed=seed,
                           batch_size=micro_batch_size, num_canonical_nodes=num_canonical_nodes,
                           **where, **(download or {}))
    loader = StreamingDataLoader(dataset, batch_size=micro_batch_size, num_workers=num_workers,
                                 drop_last=drop_last, persistent_workers=False, collate_fn=collate)
    return dataset, loader


def seek(dataset: Shards, position: LoaderPosition) -> None:
    """Place a fresh (never iterated) dataset at `position`.

    The state is built here, not by `dataset.state_dict()`: that reads the node-shared resume block,
    which another local rank may have just created empty (a race that crashes with a JSON error)."""
    if position.initial_physical_nodes is None:
        world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        position.initial_physical_nodes = max(1, world // local)
    dataset.load_state_dict({
        "epoch": position.epoch,
        "sample_in_epoch": position.samples_in_epoch,
        "num_canonical_nodes": dataset.num_canonical_nodes,
        "shuffle_seed": dataset.shuffle_seed,
        "initial_physical_nodes": position.initial_physical_nodes,
    })


def endless_batches(dataset: Shards, loader: StreamingDataLoader, position: LoaderPosition,
                    global_batch: int) -> Iterator[dict[str, torch.Tensor]]:
    """Micro-batches forever, epoch after epoch, keeping `position` up to date as batches are handed out."""
    seek(dataset, position)
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            position.samples_in_epoch += global_batch
            yield batch
        if not yielded and position.samples_in_epoch == 0:
            raise RuntimeError("the training split yields no batch: too few samples for the batch size")
        position.epoch += 1
        position.samples_in_epoch = 0
