"""Helpers of the integration tests: the `wordpool` command as a subprocess, the tiny model settings, the
records of metrics.jsonl, and preparing shards without Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TINY = [
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.max_word_bytes=16", "data.words_per_sample=32",
    "model.encoder.d_model=16", "model.encoder.n_heads=2", "model.decoder.d_model=16", "model.decoder.n_heads=2",
    "train.micro_batch_size=4", "train.grad_accum=2", "train.warmup_steps=2", "train.log_every=1",
    "train.eval_every=4", "train.eval_batches=2", "wandb.mode=disabled",
]


def wordpool(*args, env=None, timeout=300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


def train(shards, run_dir, *extra, env=None):
    return wordpool("train", "--nproc", "2", f"data.output={shards}", f"train.run_dir={run_dir}", *TINY, *extra,
                    env=env)


def records(run_dir, kind="train"):
    """Last record per step (a killed run may have logged steps past its checkpoint)."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == kind:
            out[r["step"]] = r
    return out


def prepare_without_ray(cfg) -> dict:
    """run_prepare with every unit done in this process first, so it resumes and starts no Ray cluster
    (starting Ray costs tens of seconds on a loaded 2-core machine). Returns prepare's stats."""
    from data_pipeline.job import _start_or_resume, _train_tokenizer, job_record, run_prepare
    from data_pipeline.output import OutputRoot
    from data_pipeline.plan import plan_units
    from data_pipeline.unit import process_unit

    out = OutputRoot(cfg.output)
    _start_or_resume(out, job_record(cfg, cfg.inputs), force=False)
    tokenizer_json = _train_tokenizer(cfg, cfg.inputs, out)
    units = plan_units(cfg.inputs, cfg)
    for row in units:
        process_unit(row, cfg, cfg.output, tokenizer_json)
    stats = run_prepare(cfg)
    assert stats["units_skipped"] == len(units)  # Ray never started
    return stats
