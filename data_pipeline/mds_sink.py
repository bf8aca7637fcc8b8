"""Ray Data sink: each write task packs its documents into samples and writes its own MDS folders.

Layout under the output root:
  train/task-00003/{index.json, shard.*.mds.zstd}   (one folder per write task and split)
  train/index.json                                  (merged from the tasks that finished)
  _tasks/task-00003.json                            (that task's counts and rejected records)
A task folder without index.json is an unfinished write and is never merged.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink
from streaming import MDSWriter

from data_pipeline.shard_format import COLUMNS, SPLITS, SamplePacker

COUNTERS = ("documents", "words", "document_bytes", "markup_bytes", "rejected_bytes", "words_cut")


class MDSDatasink(Datasink):
    def __init__(self, output: str, words_per_sample: int, compression: str | None, size_limit: int):
        self.output = Path(output)
        self.words_per_sample = words_per_sample
        self.compression = compression
        self.size_limit = size_limit
        self.task_summaries: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Block], ctx) -> dict[str, Any]:
        name = f"task-{ctx.task_idx:05d}"
        counts = {split: dict.fromkeys(COUNTERS, 0) | {"samples": 0} for split in SPLITS}
        rejected: list[dict[str, Any]] = []
        for split in SPLITS:  # a retried task starts over: its half-written folder is never merged
            shutil.rmtree(self.output / split / name, ignore_errors=True)
        writers = {
            split: MDSWriter(out=str(self.output / split / name), columns=COLUMNS,
                             compression=self.compression, size_limit=self.size_limit)
            for split in SPLITS
        }
        packers = {split: SamplePacker(self.words_per_sample) for split in SPLITS}
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=False):
                split = row["split"]
                c = counts[split]
                if row["reason"]:
                    rejected.append({k: row[k] for k in ("source", "line", "offset", "reason")} | {"bytes": row["nbytes"]})
                    c["rejected_bytes"] += row["nbytes"]
                    continue
                lengths = np.frombuffer(row["lengths"], dtype=np.uint32)
                c["documents"] += 1
                c["words"] += len(lengths)
                c["document_bytes"] += len(row["data"])
                c["markup_bytes"] += row["markup_bytes"]
                c["words_cut"] += row["words_cut"]
                for sample in packers[split].add(row["source"], row["ordinal"], row["offset"], row["data"], lengths):
                    writers[split].write(sample)
                    c["samples"] += 1
        for split in SPLITS:
            for sample in packers[split].flush():
                writers[split].write(sample)
                counts[split]["samples"] += 1
            writers[split].finish()  # writes index.json: from here on the folder counts as finished
        summary = {"task": name, "counts": counts, "rejected": rejected}
        tasks_dir = self.output / "_tasks"
        tasks_dir.mkdir(parents=True, exist_ok=True)
        (tasks_dir / f"{name}.json").write_text(json.dumps(summary))
        return summary

    def on_write_complete(self, write_result) -> None:
        returns = getattr(write_result, "write_returns", None)
        if returns is None:
            returns = write_result.write_task_results
        self.task_summaries = list(returns)
