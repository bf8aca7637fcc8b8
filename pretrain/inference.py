"""Use a checkpoint without DeepSpeed: rebuild the model, evaluate on val shards, generate text."""
from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import torch

from launcher.config import WordpoolConfig, validate
from pretrain import checkpoint
from pretrain.data import make_loader, shard_meta, split_has_samples
from pretrain.evaluate import evaluate
from pretrain.export import is_export, load_exported, read_export_config
from pretrain.model import WordPooledLM
from pretrain.models import build_model


def load_model(folder: str | Path, device: str = "cpu") -> tuple[WordPooledLM, WordpoolConfig]:
    """The model of a training checkpoint or of a `wordpool export` folder (the latter without DeepSpeed)."""
    folder = Path(folder)
    if is_export(folder):
        return load_exported(folder, device)
    cfg = validate(checkpoint.load_config_dict(folder), str(folder / checkpoint.CONFIG))
    model = build_model(cfg.model)
    # DeepSpeed's consolidation narrates every shard
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        weights = checkpoint.load_module_weights(folder)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg


def checkpoint_step(folder: str | Path) -> int:
    """The training step of a checkpoint (its COMPLETE marker) or of an export (its config.json)."""
    if is_export(folder):
        return read_export_config(folder)[1]["step"]
    return json.loads((Path(folder) / checkpoint.COMPLETE).read_text())["step"]


def eval_checkpoint(folder: str | Path, data_dir: str | None = None, max_batches: int | None = None,
                    loaded: tuple[WordPooledLM, WordpoolConfig] | None = None) -> dict:
    """Val bits/byte and next-word accuracy; appended to the run's metrics.jsonl like the trainer's."""
    model, cfg = loaded or load_model(folder)
    data_dir = data_dir or cfg.train.data_dir
    words = shard_meta(data_dir)["words_per_sample"]
    if not split_has_samples(Path(data_dir) / "val"):
        raise ValueError(f"{data_dir}/val holds no samples: nothing to evaluate (raise data.val_fraction)")
    _, loader = make_loader(str(Path(data_dir) / "val"), words, cfg.model.max_word_bytes, cfg.train.micro_batch_size,
                            False, cfg.train.seed, cfg.train.num_canonical_nodes, 0, drop_last=False)
    values = evaluate(model, loader, max_batches or len(loader), torch.device("cpu"))
    step = checkpoint_step(folder)
    record = {"kind": "eval", "step": step, "time": time.time(), "checkpoint": str(folder), **values}
    metrics = Path(cfg.train.run_dir) / "metrics.jsonl"
    if metrics.parent.is_dir():
        with open(metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record


def generate_text(folder: str | Path, prompt: str, max_words: int, temperature: float = 0.0,
                  top_k: int | None = None, seed: int = 0, on_word=None,
                  loaded: tuple[WordPooledLM, WordpoolConfig] | None = None) -> str:
    """The prompt's continuation; `on_word(text)` is called as each word is produced."""
    from data_pipeline.segment import split_words

    model, cfg = loaded or load_model(folder)
    generator = torch.Generator().manual_seed(seed)
    context = split_words(prompt, cfg.model.max_word_bytes, cfg.data.split_digits) if prompt else []
    produced: list[bytes] = []
    for _ in range(max_words):
        [word] = model.generate(context + produced, 1, temperature=temperature, top_k=top_k, generator=generator)
        produced.append(word)
        if on_word:
            on_word(word.decode("utf-8", errors="replace"))
    return b"".join(produced).decode("utf-8", errors="replace")
