"""`wordpool prepare`: the Ray Data job from raw files to word-segmented MDS shards."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from data_pipeline.config import DataConfig
from data_pipeline.documents import Document, read_file
from data_pipeline.segment import segment
from data_pipeline.shard_format import SPLITS


def expand_inputs(patterns: list[str]) -> list[str]:
    if not patterns:
        raise ValueError("data.inputs is empty: give at least one file or glob (--input PATH ...)")
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if not os.path.isdir(m)]
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise FileNotFoundError(f"input not found: {pattern}")
        files.extend(matches)
    return list(dict.fromkeys(files))  # a file named twice is read once


def assign_split(seed: int, source: str, ordinal: int, val_fraction: float) -> str:
    """Deterministic per document: the same seed sends the same document to the same split."""
    digest = hashlib.blake2b(f"{seed}\0{source}\0{ordinal}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2**64 < val_fraction else "train"


def file_to_rows(item: dict[str, Any], cfg: DataConfig) -> list[dict[str, Any]]:
    """One input file -> one row per document (segmented) or per rejected record."""
    rows = []
    for rec in read_file(item["path"], cfg.input_format, cfg.doc_split, cfg.text_field):
        row = {"source": rec.source, "ordinal": rec.ordinal, "offset": rec.offset, "line": rec.line,
               "split": assign_split(cfg.seed, rec.source, rec.ordinal, cfg.val_fraction),
               "data": b"", "lengths": b"", "words_cut": 0, "markup_bytes": 0, "nbytes": 0, "reason": ""}
        if isinstance(rec, Document):
            seg = segment(rec.text, cfg.max_word_bytes)
            row.update(data=seg.data, lengths=seg.lengths.tobytes(), words_cut=seg.words_cut,
                       markup_bytes=rec.markup_bytes, nbytes=len(seg.data))
        else:
            row.update(nbytes=rec.nbytes, reason=rec.reason)
        rows.append(row)
    return rows


def _init_ray(cfg: DataConfig):
    import ray

    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        else:
            mem = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
            ray.init(num_cpus=cfg.num_cpus, object_store_memory=mem, include_dashboard=False, log_to_driver=False)
    return ray


def _merge_split(output: Path, split: str, task_names: list[str]) -> None:
    from streaming.base.util import merge_index

    finished = [str(output / split / t / "index.json") for t in task_names
                if (output / split / t / "index.json").is_file()]
    merge_index(finished, str(output / split), keep_local=True, download_timeout=60)


def summarize(cfg: DataConfig, inputs: list[str], summaries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    splits = {s: {} for s in SPLITS}
    for summary in summaries:
        for split in SPLITS:
            for key, value in summary["counts"][split].items():
                splits[split][key] = splits[split].get(key, 0) + value
    rejected = sorted((r for s in summaries for r in s["rejected"]), key=lambda r: (r["source"], r["offset"]))
    total = {key: sum(splits[s].get(key, 0) for s in SPLITS) for key in splits["train"]}
    input_bytes = {p: os.path.getsize(p) for p in inputs}
    return {
        "inputs": input_bytes,
        "input_bytes": sum(input_bytes.values()),
        "documents": total.get("documents", 0),
        "words": total.get("words", 0),
        "bytes": total.get("document_bytes", 0),
        "markup_bytes": total.get("markup_bytes", 0),
        "rejected_bytes": total.get("rejected_bytes", 0),
        "words_cut": total.get("words_cut", 0),
        "splits": splits,
        "rejected_count": len(rejected),
        "rejected": rejected,
        "config": cfg.model_dump(),
        "seconds": round(seconds, 3),
    }


def run_prepare(cfg: DataConfig) -> dict[str, Any]:
    from data_pipeline.mds_sink import MDSDatasink

    inputs = expand_inputs(cfg.inputs)
    output = Path(cfg.output)
    for stale in [*(output / s for s in SPLITS), output / "_tasks", output / "stats.json"]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ray = _init_ray(cfg)
    ds = ray.data.from_items([{"path": p} for p in inputs], override_num_blocks=len(inputs))
    ds = ds.flat_map(file_to_rows, fn_kwargs={"cfg": cfg})
    sink = MDSDatasink(str(output), cfg.words_per_sample,
                       None if cfg.compression == "none" else cfg.compression, cfg.shard_size_limit)
    ds.write_datasink(sink)
    task_names = [s["task"] for s in sink.task_summaries]
    for split in SPLITS:
        _merge_split(output, split, task_names)
    stats = summarize(cfg, inputs, sink.task_summaries, time.perf_counter() - start)
    (output / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats
