"""What a training reads: data.output, or the datasets of train.streams mixed as mosaicml-streaming Streams;
each a local data folder or an s3:// URL read through a copy on this node (data_pipeline.data_cache).

Streams must share their tokenization and the settings the model is sized by: checked by `wordpool train`
before torchrun starts (preflight) and again by each rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_pipeline.data_cache import local_root, split_location
from data_pipeline.shard_format import shard_config, split_has_samples
from pretrain.training.loader import SplitSource
from schema import UserError, WordpoolConfig

# the shards' settings every stream of a mixture must share (stats.json's "config")
SHARED_SETTINGS = ("tokenizer", "packing", "max_word_bytes", "words_per_sample", "tokens_per_sample",
                   "split_digits", "bpe_vocab_size")


@dataclass(frozen=True)
class TrainingData:
    """One dataset of the run: where it is, its files on this node, its place in the mixture."""

    name: str
    path: str  # data folder or URL
    root: Path  # this node's folder holding its stats.json, tokenizer, index files
    key: str  # names it in messages: data.output or train.streams[i]
    data_local: str | None
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None

    def split(self, split: str, job: str | None) -> SplitSource:
        remote, local = split_location(self.path, split, job, self.data_local)
        return SplitSource(remote, local, self.name, self.proportion, self.repeat, self.choose)

    def has_samples(self, split: str) -> bool:
        return split_has_samples(self.root / split)


def job_key(cfg: WordpoolConfig) -> str:
    """Which node cache the run reads through: its run directory (two jobs on one node need their own)."""
    return str(Path(cfg.train.run_dir).resolve())


def training_data(cfg: WordpoolConfig) -> list[TrainingData]:
    """The run's datasets, their own files fetched to this node when remote (once per node)."""
    t, job = cfg.train, job_key(cfg)
    if not t.streams:
        return [TrainingData("data", cfg.data.output, local_root(cfg.data.output, job, t.data_local),
                             "data.output", t.data_local)]
    out = []
    for i, s in enumerate(t.streams):
        data_local = str(Path(t.data_local) / s.name) if t.data_local else None  # one folder per stream
        out.append(TrainingData(s.name, s.path, local_root(s.path, job, data_local), f"train.streams[{i}]",
                                data_local, s.proportion, s.repeat, s.choose))
    return out


def check_same_settings(datasets: list[TrainingData]) -> None:
    """Every stream was prepared like the first: same tokenization, sizes and (BPE) tokenizer."""
    first, reference = datasets[0], shard_config(datasets[0].root)
    for other in datasets[1:]:
        meta = shard_config(other.root)
        for key in SHARED_SETTINGS:
            if meta.get(key) != reference.get(key):
                raise UserError(f"{other.key} ({other.name}, {other.path}) was prepared with data.{key}="
                                f"{meta.get(key)} but {first.key} ({first.name}) with data.{key}="
                                f"{reference.get(key)}: the streams of a mixture must share tokenization and "
                                f"settings; prepare it again with the first one's")
        if reference.get("tokenizer") == "bpe" and _tokenizer(other) != _tokenizer(first):
            raise UserError(f"{other.key} ({other.name}) has another BPE tokenizer than {first.key} ({first.name}): "
                            f"the streams of a mixture must share one (prepare them with the same tokenizer.json)")


def _tokenizer(data: TrainingData) -> str | None:
    from data_pipeline.bpe import TOKENIZER_FILE

    path = data.root / TOKENIZER_FILE
    return path.read_text() if path.is_file() else None


def download_settings(cfg: WordpoolConfig) -> dict:
    """StreamingDataset's download keywords from the train section."""
    t = cfg.train
    return {"cache_limit": t.cache_limit, "predownload": t.predownload, "download_timeout": t.download_timeout}


def build_loaders(cfg: WordpoolConfig, datasets: list[TrainingData], encode, position, world: int):
    """(endless training batches, the val loader, each stream's val loader by name: only with train.streams).
    Collective (StreamingDataset)."""
    from pretrain.training.loader import endless_batches, make_loader

    t, job, download = cfg.train, job_key(cfg), download_settings(cfg)
    train_set, train_loader = make_loader([d.split("train", job) for d in datasets], encode, t.micro_batch_size,
                                          t.shuffle, t.seed, t.num_canonical_nodes, t.num_workers, drop_last=True,
                                          validate_hash=t.validate_hash, download=download)
    batches = endless_batches(train_set, train_loader, position, t.micro_batch_size * world)
    val = {}
    for d in datasets:
        if d.has_samples("val"):
            split = d.split("val", job)
            val[d.name] = make_loader([SplitSource(split.remote, split.local, d.name)], encode, t.micro_batch_size,
                                      False, t.seed, t.num_canonical_nodes, 0, drop_last=False,
                                      validate_hash=t.validate_hash, download=download)[1]
    return batches, next(iter(val.values()), None), val if t.streams else {}
