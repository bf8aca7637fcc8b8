"""Checks that need no rank: run by `wordpool train` / `wordpool launch` before torchrun starts, so a missing
data folder, shards that do not fit the model, a run directory another job holds or a bad --resume path
fail in a second with one line, not after N ranks started (the ranks run the same checks again)."""
from __future__ import annotations

from pathlib import Path

from data_pipeline.data_cache import is_remote
from data_pipeline.shard_format import shard_config, split_has_samples
from pretrain.run_dir import RunDir
from pretrain.training.data_sources import check_same_settings, training_data
from schema import TOKENIZER_OF, UserError, WordpoolConfig


def check_shards(cfg: WordpoolConfig) -> tuple[WordpoolConfig, dict]:
    """The settings the shards in data.output were prepared with (their stats.json), checked against the
    config (and, with train.streams, against every stream's); a baseline's vocab_size is filled in from them."""
    datasets = training_data(cfg)  # a remote dataset's own files come to this node here
    check_same_settings(datasets)
    data_dir, root = cfg.data.output, datasets[0].root
    meta = shard_config(root)
    if meta.get("packing") == "decompose" and (cfg.train.streams or is_remote(data_dir)):
        raise UserError(f"{data_dir} holds decomposed shards (data.packing=decompose): they train from one local "
                        f"data folder, not from train.streams or an s3:// data.output")
    kind, tokenizer = cfg.model.kind, meta.get("tokenizer", "words")
    if tokenizer != TOKENIZER_OF[kind]:
        raise ValueError(f"shards in {data_dir} hold data.tokenizer={tokenizer}; model.kind={kind} trains on "
                         f"data.tokenizer={TOKENIZER_OF[kind]}")
    if kind != "word_pooled":
        from pretrain.evaluation.word_scoring import token_byte_table

        vocab = len(token_byte_table(root))
        if cfg.model.vocab_size not in (None, vocab):
            raise ValueError(f"model.vocab_size={cfg.model.vocab_size} but the shards' tokenizer has {vocab} ids")
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"vocab_size": vocab})}), meta
    for key in ("max_word_bytes", "words_per_sample"):  # the model is sized by these (schema/load.py derives it)
        if meta[key] > getattr(cfg.data, key):
            raise ValueError(f"shards in {data_dir} were prepared with data.{key}={meta[key]} but the config has "
                             f"data.{key}={getattr(cfg.data, key)} (the model is sized by it): set "
                             f"data.{key}={meta[key]}, or prepare {data_dir} again")
    return cfg, meta


def check_train_split(split_dir: Path) -> None:
    buckets = sorted(split_dir.glob("len-*/index.json"))  # decomposed data: one dataset per length
    if buckets:
        if not any(split_has_samples(b.parent) for b in buckets):
            raise UserError(f"the training split {split_dir} holds no samples: prepare more text")
        return
    index = split_dir / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no shards in {split_dir} ({index.name} missing): prepare did not finish there")
    if not split_has_samples(split_dir):
        raise UserError(f"the training split {split_dir} holds no samples: prepare more text, or lower "
                        f"data.val_fraction")


def check_run_dir_free(run_dir: str | Path) -> None:
    """RunDirLocked if a live job holds RUN_DIR/.lock: taken and let go at once (run_files.lock_run_dir)."""
    from pretrain.training.run_files import lock_run_dir

    path = RunDir(run_dir).lock
    if path.is_file():
        lock_run_dir(path).close()


def preflight(cfg: WordpoolConfig, resume: str | None, check_lock: bool = True) -> None:
    """Every check a rank would fail on at start-up that can be made here. `check_lock` is off for one node
    of a multi-node job: another node's rank 0 may already hold the shared run directory's lock."""
    if resume not in (None, "auto", "none"):  # the explicit argument first
        from pretrain.checkpoint.store import resolve_resume

        resolve_resume(resume, RunDir(cfg.train.run_dir).checkpoints)
    cfg, _ = check_shards(cfg)  # with what the shards decide (a baseline's vocabulary size)
    for data in training_data(cfg):
        check_train_split(data.root / "train")
    if cfg.train.init_from:
        from pretrain.checkpoint.warm_start import check_before_launch

        check_before_launch(cfg)
    if check_lock:
        check_run_dir_free(cfg.train.run_dir)
