"""Variable-length training on decomposed data (dataset decomposition, Pouransari et al., 2024).

`wordpool prepare data.packing=decompose` cuts every document into power-of-two chunks, one MDS
dataset per chunk length (`train/len-00064/`, ...), no sample mixing documents. Here each optimizer
step reads one bucket: a sample of n items is encoded at width n (no padding to words_per_sample), and
the bucket's micro-batch holds micro_batch_size * max_len / n samples, so every step sees the same
number of items (words or tokens) whatever its length.

Bucket order, per epoch (each bucket's batches exactly once): `random` shuffles the list of all
buckets' steps with the seed and the epoch, which is sampling each step's bucket with probability
proportional to its remaining batches (the paper's default); `short_to_long` takes the buckets
shortest first (a curriculum restarting every epoch). The schedule is a pure function of
(seed, epoch, bucket sizes), so the data position is just (epoch, micro-batches taken in the epoch):
a resume recomputes how far each bucket got and seeks each dataset there (exact, tested). Buckets of
one item are skipped: a sample's first item is never predicted.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from pretrain.training.loader import LoaderPosition, make_loader, seek


@dataclass
class Bucket:
    length: int  # items per sample
    batch_size: int  # samples per rank per micro-batch
    dataset: object
    loader: object
    steps: int  # optimizer steps this bucket fills per epoch


def bucket_length(folder: Path) -> int:
    return int(folder.name.removeprefix("len-"))


def epoch_schedule(steps: list[int], lengths: list[int], order: str, seed: int, epoch: int) -> list[int]:
    """The bucket (index) of each optimizer step of one epoch: bucket i appears steps[i] times."""
    schedule = [i for i in sorted(range(len(steps)), key=lambda i: lengths[i]) for _ in range(steps[i])]
    if order == "random":
        random.Random(f"{seed}:{epoch}").shuffle(schedule)
    return schedule


def open_buckets(folders: list[Path], encode_for, micro_batch_size: int, max_len: int, grad_accum: int,
                 seed: int, num_canonical_nodes: int, validate_hash, job: str) -> list[Bucket]:
    """One shuffled StreamingDataset per bucket (collective: every rank opens the same ones)."""
    buckets = []
    for folder in sorted(folders, key=bucket_length):
        length = bucket_length(folder)
        if length < 2:
            continue
        size = max(1, micro_batch_size * max_len // length)
        dataset, loader = make_loader(str(folder), encode_for(length), size, True, seed, num_canonical_nodes, 0,
                                      drop_last=True, validate_hash=validate_hash, job=f"{job}:{folder.name}")
        steps = len(loader) // grad_accum
        if steps:
            buckets.append(Bucket(length, size, dataset, loader, steps))
    if not buckets:
        raise ValueError(f"no length bucket of {Path(folders[0]).parent} fills one step of "
                         f"{micro_batch_size} x {max_len} items per rank: lower train.micro_batch_size")
    return buckets


def bucket_batches(buckets: list[Bucket], position: LoaderPosition, world: int, grad_accum: int, order: str,
                   seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Micro-batches forever, each optimizer step's from one bucket, keeping `position` (epoch, micro-batches
    taken in the epoch) up to date as batches are handed out."""
    steps, lengths = [b.steps for b in buckets], [b.length for b in buckets]
    first = True
    while True:
        schedule = [i for i in epoch_schedule(steps, lengths, order, seed, position.epoch) for _ in range(grad_accum)]
        taken = position.batches_in_epoch
        if first:  # a (re)start: place every bucket's fresh dataset where this epoch's schedule left it
            for i, bucket in enumerate(buckets):
                done = schedule[:taken].count(i)
                at = (LoaderPosition(position.epoch, done * bucket.batch_size * world) if done < steps[i] * grad_accum
                      else LoaderPosition(position.epoch + 1, 0))  # this epoch's share is spent
                at.initial_physical_nodes = position.initial_physical_nodes
                seek(bucket.dataset, at)
                position.initial_physical_nodes = at.initial_physical_nodes
            first = False
        iterators: dict[int, Iterator] = {}
        for k in range(taken, len(schedule)):
            i = schedule[k]
            if i not in iterators:
                iterators[i] = iter(buckets[i].loader)
            batch = next(iterators[i])
            position.batches_in_epoch = k + 1
            position.samples_in_epoch += buckets[i].batch_size * world
            yield batch
        position.epoch += 1
        position.batches_in_epoch = position.samples_in_epoch = 0


def encoder_for(encode: functools.partial):
    """n -> the sample encoder (loader.sample_encoder) at width n: its items per sample set to n."""
    key = "words_per_sample" if "words_per_sample" in encode.keywords else "tokens_per_sample"
    return lambda n: functools.partial(encode.func, **{**encode.keywords, key: n})


def is_decomposed(data_dir: Path) -> bool:
    return any((Path(data_dir) / "train").glob("len-*/index.json"))


def decomposed_loaders(data_dir: Path, encode: functools.partial, t, world: int, grad_accum: int,
                       position: LoaderPosition, job: str) -> tuple[Iterator[dict], InterleavedLoaders | None]:
    """(the training micro-batches, bucket by bucket; the val loader over every val bucket or None)."""
    from data_pipeline.reader import dataset_dirs
    from data_pipeline.shard_format import split_has_samples

    max_len = encode.keywords.get("words_per_sample", encode.keywords.get("tokens_per_sample"))
    at_width = encoder_for(encode)
    buckets = open_buckets(dataset_dirs(data_dir, "train"), at_width, t.micro_batch_size, max_len, grad_accum,
                           t.seed, t.num_canonical_nodes, t.validate_hash, job)
    batches = bucket_batches(buckets, position, world, grad_accum, t.bucket_order, t.seed)
    val = [make_loader(str(d), at_width(bucket_length(d)), max(1, t.micro_batch_size * max_len // bucket_length(d)),
                       False, t.seed, t.num_canonical_nodes, 0, drop_last=False, validate_hash=t.validate_hash,
                       job=f"{job}:val-{d.name}")[1]
           for d in dataset_dirs(data_dir, "val")
           if d.name.startswith("len-") and bucket_length(d) >= 2 and split_has_samples(d)]
    val_loader = InterleavedLoaders(val)
    return batches, val_loader if len(val_loader) else None


class InterleavedLoaders:
    """The val buckets' loaders as one: batches interleaved in proportion to each bucket's size, so the
    first N batches (train.eval_batches) sample every length as the whole split does."""

    def __init__(self, loaders: list):
        self.loaders = [loader for loader in loaders if len(loader)]

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        slots = sorted(((k + 0.5) / len(loader), i) for i, loader in enumerate(self.loaders)
                       for k in range(len(loader)))
        iterators = [iter(loader) for loader in self.loaders]
        for _, i in slots:
            yield next(iterators[i])
