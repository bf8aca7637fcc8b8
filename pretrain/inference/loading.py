"""Use a checkpoint without DeepSpeed: rebuild the model, evaluate on val shards, generate text."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch

from schema import WordpoolConfig
from pretrain.checkpoint import store as checkpoint
from data_pipeline.shard_format import shard_config
from data_pipeline.data_cache import local_root, split_location
from pretrain.training.loader import SplitSource, make_loader, sample_encoder, split_has_samples
from pretrain.evaluation.validation import WordScorer, evaluate
from pretrain.inference.export import is_export, load_checkpoint, load_exported, read_export_config
from pretrain.models.word_pooled import WordPooledLM
from pretrain.run_dir import RunDir, append_jsonl


def load_model(folder: str | Path, device: str = "cpu") -> tuple[WordPooledLM, WordpoolConfig]:
    """The model of a training checkpoint or of a `wordpool export` folder (the latter without DeepSpeed)."""
    if is_export(folder):
        return load_exported(folder, device)
    model, cfg, _ = load_checkpoint(folder)
    return model.to(device).eval(), cfg


def checkpoint_step(folder: str | Path) -> int:
    """The training step of a checkpoint (its COMPLETE marker) or of an export (its config.json)."""
    if is_export(folder):
        return read_export_config(folder)[1]["step"]
    return json.loads((Path(folder) / checkpoint.COMPLETE).read_text())["step"]


def eval_checkpoint(folder: str | Path, data_dir: str | None = None, max_batches: int | None = None,
                    loaded: tuple[WordPooledLM, WordpoolConfig] | None = None, log_to_run: bool = True,
                    mean_context_gap: bool = False) -> dict:
    """Val bits/byte, next-word accuracy and accuracy by training frequency (the same scorer for every
    model kind); appended to the run's metrics.jsonl like the trainer's unless `log_to_run` is False
    (the watcher keeps its own log: its records must not replace the trainer's eval of the same step).
    mean_context_gap (word-pooled only): also val bits/byte with every backbone context replaced by
    their mean over each batch (`val_bpb_mean_context`), and the difference (`mean_context_gap`): the
    bits/byte the decoder owes to the backbone."""
    model, cfg = loaded or load_model(folder)
    if mean_context_gap and cfg.model.kind != "word_pooled":
        raise ValueError(f"the mean-context gap measures a word-pooled model's decoder; {folder} holds a "
                         f"{cfg.model.kind} model")
    data_path, job = data_dir or cfg.data.output, f"eval:{Path(cfg.train.run_dir).resolve()}"  # beside its training
    data_dir = local_root(data_path, job)  # a remote dataset's own files, fetched to this node
    meta = shard_config(data_dir)
    if not split_has_samples(Path(data_dir) / "val"):
        raise ValueError(f"{data_path}/val holds no samples: nothing to evaluate (raise data.val_fraction)")
    _, loader = make_loader([SplitSource(*split_location(data_path, "val", job))],
                            sample_encoder(data_dir, cfg.model.max_word_bytes), cfg.train.micro_batch_size, False,
                            cfg.train.seed, cfg.train.num_canonical_nodes, 0, drop_last=False)
    scorer = WordScorer(cfg.model.kind, data_dir, meta["max_word_bytes"], meta.get("split_digits", False))
    batches = max_batches or len(loader)
    values = evaluate(model, loader, batches, torch.device("cpu"), scorer=scorer)
    if mean_context_gap:
        mean = evaluate(functools.partial(model, mean_context=True), loader, batches, torch.device("cpu"))
        values["val_bpb_mean_context"] = mean["val_bpb"]
        values["mean_context_gap"] = mean["val_bpb"] - values["val_bpb"]
    step = checkpoint_step(folder)
    record = {"kind": "eval", "step": step, "time": time.time(), "checkpoint": str(folder), **values}
    metrics = RunDir(cfg.train.run_dir).metrics
    if log_to_run and metrics.parent.is_dir():
        append_jsonl(metrics, record)
    return record


def generate_text(folder: str | Path, prompt: str, max_words: int, temperature: float = 0.0,
                  top_k: int | None = None, seed: int = 0, on_word=None,
                  loaded: tuple[WordPooledLM, WordpoolConfig] | None = None) -> str:
    """The prompt's continuation; `on_word(text)` is called as each word is produced."""
    from data_pipeline.segment import split_words

    model, cfg = loaded or load_model(folder)
    generator = torch.Generator().manual_seed(seed)
    if cfg.model.kind != "word_pooled":
        return _generate_tokens(model, cfg, prompt, max_words, temperature, top_k, generator, on_word)
    context = split_words(prompt, cfg.model.max_word_bytes, cfg.data.split_digits) if prompt else []
    produced = model.generate(context, max_words, temperature=temperature, top_k=top_k, generator=generator,
                              on_word=(lambda w: on_word(w.decode("utf-8", errors="replace"))) if on_word else None)
    return b"".join(produced).decode("utf-8", errors="replace")


def _generate_tokens(model, cfg, prompt, max_words, temperature, top_k, generator, on_word) -> str:
    """A baseline's continuation, cut after max_words words of the shared splitter."""
    from data_pipeline.segment import split_words
    from pretrain.evaluation.word_scoring import token_byte_table

    table = token_byte_table(cfg.data.output)
    eod = table.index(None)
    if cfg.model.kind == "bytes":
        ids = list(prompt.encode())
    else:
        from data_pipeline.bpe import TOKENIZER_FILE, load_bpe

        tokenizer = load_bpe((Path(cfg.data.output) / TOKENIZER_FILE).read_text())
        ids = tokenizer.encode(prompt).ids
    per_word = 8 if cfg.model.kind == "bytes" else 3  # generous: the text is cut to max_words words below
    out = model.generate(ids or [eod], max_words * per_word, temperature, top_k, generator, stop_id=None,
                         window=cfg.data.tokens_per_sample)
    text = b"".join(table[i] or b"" for i in out).decode("utf-8", errors="replace")
    words = split_words(text, cfg.model.max_word_bytes, cfg.data.split_digits)[:max_words]
    if on_word:
        for w in words:
            on_word(w.decode("utf-8", errors="replace"))
    return b"".join(words).decode("utf-8", errors="replace")
