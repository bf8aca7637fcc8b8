"""`wordpool prepare`: the Ray Data job from raw files to MDS shards, resumable per input file.

The driver records the job (config + inputs) in `_job.json`, runs one Ray task per input file that
has no done-marker yet, then merges the finished units' indexes in input order and writes
stats.json, the training split's word frequencies and a histogram PNG. A rerun after a crash skips
finished units; a rerun with another config or other inputs is refused unless `force`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

from data_pipeline.config import DataConfig, UserError
from data_pipeline.documents import Document, read_file
from data_pipeline.shard_format import SPLITS
from data_pipeline.sources import expand_inputs, filesystem_for
from data_pipeline.split import assign_split
from data_pipeline.unit import marker_path, process_unit, remove_partial

JOB_FILE = "_job.json"
# settings that do not change what is written (where Ray runs, not what it computes)
_NOT_CONTENT = {"inputs", "output", "ray_address", "num_cpus", "object_store_mb"}


class JobMismatch(UserError):
    """The output folder holds a job with another config or other inputs."""


def input_identity(path: str) -> dict[str, Any]:
    """What must not change between a job and its resumption: size and mtime of the file (or of every
    file of a dataset folder)."""
    import pyarrow.fs as pafs

    fs, inner = filesystem_for(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.Directory:
        files = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        return {"path": path, "files": sorted([f.path, f.size, f.mtime_ns] for f in files if f.is_file)}
    return {"path": path, "size": info.size, "mtime_ns": info.mtime_ns}


def job_record(cfg: DataConfig, inputs: list[str]) -> dict[str, Any]:
    content = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_CONTENT}
    return {"config": content, "inputs": [input_identity(p) for p in inputs]}


def _start_or_resume(output: Path, record: dict[str, Any], force: bool) -> None:
    job_file = output / JOB_FILE
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous == record:
            return
        if not force:
            changed = [k for k in previous["config"] if previous["config"].get(k) != record["config"].get(k)]
            inputs_changed = previous["inputs"] != record["inputs"]
            what = ", ".join([f"data.{k}" for k in changed] + (["the input files"] if inputs_changed else []))
            raise JobMismatch(f"{output} holds a prepare job with different {what}: refusing to mix them. "
                              f"Use another --output, or --force to delete it and start over.")
    if output.exists() and any(output.iterdir()):
        if not force and not job_file.is_file():
            raise JobMismatch(f"{output} is not empty and holds no prepare job: use another --output, or --force "
                              f"to delete its contents")
        for child in output.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(job_file)


def _train_tokenizer(cfg: DataConfig, inputs: list[str], output: Path) -> str | None:
    if cfg.tokenizer != "bpe":
        return None
    from data_pipeline.bpe import TOKENIZER_FILE, train_bpe

    path = output / TOKENIZER_FILE
    if not path.is_file():  # a resumed job keeps the tokenizer its finished units used

        def train_texts():
            budget = cfg.bpe_train_bytes
            for p in inputs:
                for rec in read_file(p, cfg.input_format, cfg.doc_split, cfg.text_field):
                    if isinstance(rec, Document) and assign_split(cfg.seed, rec.source, rec.ordinal,
                                                                  cfg.val_fraction) == "train":
                        yield rec.text
                        budget -= len(rec.text)
                        if budget <= 0:
                            return

        train_bpe(train_texts(), cfg.bpe_vocab_size, path)
    return str(path)


def _init_ray(cfg: DataConfig):
    import ray

    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        else:
            mem = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
            ray.init(num_cpus=cfg.num_cpus, object_store_memory=mem, include_dashboard=False, log_to_driver=False)
    return ray


def _merge_indexes(output: Path, summaries: list[dict[str, Any]]) -> None:
    """One index.json per dataset folder (a split, or a split's length bucket), from finished units only."""
    from streaming.base.util import merge_index

    by_dataset: dict[Path, list[str]] = {}
    for summary in summaries:
        for folder in summary["folders"]:
            by_dataset.setdefault((output / folder).parent, []).append(str(output / folder / "index.json"))
    for dataset, indexes in sorted(by_dataset.items()):
        merge_index(indexes, str(dataset), keep_local=True, download_timeout=60)
    for split in SPLITS:  # a split no document drew still gets an (empty) index, so readers see it
        index = output / split / "index.json"
        if not index.exists() and not any((output / split).glob("len-*/index.json")):
            index.parent.mkdir(parents=True, exist_ok=True)
            index.write_text(json.dumps({"version": 2, "shards": []}))


def _unit_task(row: dict[str, Any], **kwargs) -> dict[str, Any]:
    # the summary travels as one JSON string: Arrow need not infer a schema for its nested lists
    return {"unit": row["unit"], "summary": json.dumps(process_unit(row, **kwargs))}


def run_prepare(cfg: DataConfig, force: bool = False,
                on_unit: Callable[[dict[str, Any], float], None] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the job; `on_unit(summary, elapsed_s)` is called as each unit finishes."""
    from data_pipeline.stats import summarize, write_plots, write_word_freq

    inputs = expand_inputs(cfg.inputs)
    output = Path(cfg.output)
    _start_or_resume(output, job_record(cfg, inputs), force)
    start = time.perf_counter()
    tokenizer_file = _train_tokenizer(cfg, inputs, output)
    todo = [u for u in range(len(inputs)) if not marker_path(output, u).is_file()]
    for unit in todo:
        remove_partial(output, unit)
    kill_after = int(os.environ.get("WORDPOOL_FAULT_KILL_AFTER_UNITS", "0"))  # crash injection for tests
    if todo:
        ray = _init_ray(cfg)
        ds = ray.data.from_items([{"unit": u, "path": inputs[u]} for u in todo], override_num_blocks=len(todo))
        ds = ds.map(_unit_task, fn_kwargs={"cfg": cfg, "output": str(output), "tokenizer_file": tokenizer_file})
        for done, row in enumerate(ds.iter_rows(), start=1):
            if on_unit:
                on_unit(json.loads(row["summary"]), time.perf_counter() - start)
            if kill_after and done >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    summaries = [json.loads(marker_path(output, u).read_text()) for u in range(len(inputs))]
    _merge_indexes(output, summaries)
    stats = summarize(cfg, inputs, summaries, time.perf_counter() - start, skipped=len(inputs) - len(todo))
    if tokenizer_file:
        stats["tokenizer_file"] = tokenizer_file
    write_word_freq(output, len(inputs))
    write_plots(output, stats)
    (output / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats
