"""One unit of work of the prepare job: an input file, or a part of a big one (data_pipeline/plan.py)
-> its own shard folders, then a done marker.

A unit's output depends only on its file and the config, so a rerun after a crash redoes exactly
the units without a marker and produces the same shards. Layout under the output root:
  {split}/unit-00003/                 fixed packing (one MDS folder per unit and split)
  {split}/len-00064/unit-00003/       dataset decomposition (one bucket per power-of-two length)
  _units/unit-00003.json              the marker: counts, rejections, histograms (written last)
  _units/unit-00003.freq.parquet      word counts of the unit's training documents
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from itertools import compress
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from schema import DataConfig, fault_plan
from data_pipeline.documents import Document, Rejected, read_file
from data_pipeline.output import OutputRoot
from data_pipeline.plan import Part
from data_pipeline.segment import SegmentedBatch, segment_batch
from data_pipeline.shard_format import (BYTE_EOD, COLUMNS, EOD_LEN, SHARD_HASH, SPLITS, UNITS_DIR, DocItems,
                                       SamplePacker, decomposition)
from data_pipeline.sources import input_size
from data_pipeline.split import assign_split

COUNTERS = ("documents", "words", "tokens", "document_bytes", "markup_bytes", "rejected_bytes", "words_cut",
            "samples")
WORDS_PER_DOC_BINS = 24  # log2 buckets: 1, 2-3, 4-7, ...
BATCH_CHARS = 1 << 20  # document text segmented per batch: few splitter calls, bounded memory


def unit_name(unit: int) -> str:
    return f"unit-{unit:05d}"


def marker_rel(unit: int) -> str:
    return f"{UNITS_DIR}/{unit_name(unit)}.json"


def remove_partial(output: Path, unit: int) -> None:
    """A unit without its marker may have half-written folders: they are never merged, and go."""
    name = unit_name(unit)
    for split in SPLITS:
        for folder in [output / split / name, *(output / split).glob(f"len-*/{name}")]:
            shutil.rmtree(folder, ignore_errors=True)
    (output / UNITS_DIR / f"{name}.freq.parquet").unlink(missing_ok=True)


class _Writers:
    """MDS writers opened on first use, one per (split, bucket)."""

    def __init__(self, output: Path, name: str, columns: dict, compression: str | None, size_limit: int):
        self.output, self.name, self.columns = output, name, columns
        self.compression, self.size_limit = compression, size_limit
        self.open: dict[tuple[str, int | None], Any] = {}

    def write(self, split: str, bucket: int | None, sample: dict) -> None:
        key = (split, bucket)
        if key not in self.open:
            from data_pipeline.mds import MDSWriter  # streaming's bytes, without importing torch

            folder = self.output / split / (f"len-{bucket:05d}" if bucket else "") / self.name
            self.open[key] = MDSWriter(out=str(folder), columns=self.columns, compression=self.compression,
                                       size_limit=self.size_limit, hashes=[SHARD_HASH])
        self.open[key].write(sample)

    def finish(self) -> list[str]:
        for writer in self.open.values():
            writer.finish()
        return sorted(f"{split}/" + (f"len-{b:05d}/" if b else "") + self.name for split, b in self.open)


def _bpe_encoder(cfg: DataConfig, tokenizer_json: str | None):
    if cfg.tokenizer != "bpe":
        return None
    from data_pipeline.bpe import eod_id, load_bpe

    tokenizer, eod = load_bpe(tokenizer_json), eod_id(tokenizer_json)
    return lambda text: DocItems.from_tokens(np.asarray(tokenizer.encode(text).ids, dtype=np.uint32), eod)


def _record_batches(records: Iterable[Document | Rejected]) -> Iterator[list[Document | Rejected]]:
    """Records in order, in batches of about BATCH_CHARS characters of document text."""
    batch: list[Document | Rejected] = []
    size = 0
    for rec in records:
        batch.append(rec)
        size += len(rec.text) if isinstance(rec, Document) else 0
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _batch_items(tokenizer: str, docs: list[Document], seg: SegmentedBatch, doc_bytes: np.ndarray,
                 bpe_encode) -> list[DocItems]:
    """Each document's items, as windows into arrays shared by the batch (words and bytes)."""
    n_docs = np.arange(len(docs))
    if tokenizer == "words":
        word_ends = seg.word_ends()
        word_lens = np.insert(seg.lengths, word_ends, np.uint32(EOD_LEN))  # a 0 after each document
        bounds = np.concatenate([[0], np.cumsum(word_lens, dtype=np.int64)])
        firsts, sizes = (word_ends - seg.word_counts + n_docs).tolist(), (seg.word_counts + 1).tolist()
        return [DocItems(data=seg.data, word_lens=word_lens, bounds=bounds, first=f, n=n) for f, n in zip(firsts, sizes)]
    if tokenizer == "bytes":
        byte_ends = np.cumsum(doc_bytes)
        tokens = np.insert(np.frombuffer(seg.data, dtype=np.uint8).astype(np.uint16), byte_ends, np.uint16(BYTE_EOD))
        firsts, sizes = (byte_ends - doc_bytes + n_docs).tolist(), (doc_bytes + 1).tolist()
        return [DocItems(tokens=tokens, first=f, n=n) for f, n in zip(firsts, sizes)]
    return [bpe_encode(d.text) for d in docs]


def process_unit(row: dict[str, Any], cfg: DataConfig, output: str, tokenizer_json: str | None,
                 driver_pid: int | None = None) -> dict[str, Any]:
    root, unit, path = OutputRoot(output), int(row["unit"]), row["path"]
    span = Part.of(row)  # None: the whole file
    out, name = root.local, unit_name(unit)
    remove_partial(out, unit)
    items_per_sample = cfg.words_per_sample if cfg.tokenizer == "words" else cfg.tokens_per_sample
    decompose = cfg.packing == "decompose"
    writers = _Writers(out, name, COLUMNS[cfg.tokenizer], None if cfg.compression == "none" else cfg.compression,
                       cfg.shard_size_limit)
    packers: dict[tuple[str, int | None], SamplePacker] = {}
    counts = {split: dict.fromkeys(COUNTERS, 0) for split in SPLITS}
    rejected: list[dict[str, Any]] = []
    word_bytes_hist = np.zeros(cfg.max_word_bytes + 1, dtype=np.int64)
    words_per_doc_hist = np.zeros(WORDS_PER_DOC_BINS, dtype=np.int64)
    freq: Counter[bytes] = Counter()
    bpe_encode = _bpe_encoder(cfg, tokenizer_json)

    def emit(split: str, bucket: int | None, samples) -> None:
        for sample in samples:
            writers.write(split, bucket, sample)
            counts[split]["samples"] += 1

    # Documents go through segmentation, counting and histograms a batch at a time (vectorized), and
    # through the packers one by one, in file order, exactly as before.
    for batch in _record_batches(read_file(path, cfg.input_format, cfg.doc_split, cfg.text_field, span)):
        docs = [rec for rec in batch if isinstance(rec, Document)]
        seg = segment_batch([d.text for d in docs], cfg.max_word_bytes, split_digits=cfg.split_digits)
        byte_ends = np.concatenate([[0], np.cumsum(seg.lengths, dtype=np.int64)])[seg.word_ends()]
        doc_bytes = np.diff(byte_ends, prepend=0)
        items = _batch_items(cfg.tokenizer, docs, seg, doc_bytes, bpe_encode)
        is_train: list[bool] = []
        for rec in batch:
            split = assign_split(cfg.seed, rec.source, rec.offset, cfg.val_fraction)
            c = counts[split]
            if not isinstance(rec, Document):
                rejected.append({"source": rec.source, "line": rec.line, "offset": rec.offset, "reason": rec.reason,
                                 "bytes": rec.nbytes})
                c["rejected_bytes"] += rec.nbytes
                continue
            doc = items[len(is_train)]
            is_train.append(split == "train")
            c["documents"] += 1
            c["markup_bytes"] += rec.markup_bytes
            if not decompose:
                packer = packers.setdefault((split, None), SamplePacker(items_per_sample))
                emit(split, None, packer.add(rec.source, rec.ordinal, rec.offset, doc))
                continue
            for part, (start, stop) in enumerate(decomposition(doc.n, items_per_sample)):
                bucket = stop - start
                packer = packers.setdefault((split, bucket), SamplePacker(bucket, one_doc_per_sample=True))
                emit(split, bucket, packer.add(rec.source, rec.ordinal, rec.offset, doc, part, start, stop))
        if not docs:
            continue
        train = np.array(is_train, dtype=bool)
        tokens = np.array([d.n - 1 for d in items], dtype=np.int64)
        for split, mask in (("train", train), ("val", ~train)):
            c = counts[split]
            for key, values in (("words", seg.word_counts), ("tokens", tokens), ("document_bytes", doc_bytes),
                                ("words_cut", seg.words_cut)):
                c[key] += int(values[mask].sum())
        word_bytes_hist += np.bincount(seg.lengths, minlength=cfg.max_word_bytes + 1)[: cfg.max_word_bytes + 1]
        bins = np.minimum(WORDS_PER_DOC_BINS - 1, np.frexp(np.maximum(seg.word_counts, 1))[1] - 1)  # bit_length - 1
        words_per_doc_hist += np.bincount(bins, minlength=WORDS_PER_DOC_BINS)
        freq.update(seg.words if train.all() else compress(seg.words, np.repeat(train, seg.word_counts).tolist()))
    for (split, bucket), packer in packers.items():
        emit(split, bucket, packer.flush())
    folders = writers.finish()
    _write_freq(out / UNITS_DIR / f"{name}.freq.parquet", freq)
    summary = {"unit": unit, "path": path, "part": span and {k: row[k] for k in ("kind", "start", "stop", "base")},
               "share": row.get("share", 1.0), "input_bytes": input_size(path, cfg.input_format, cfg.text_field, span),
               "counts": counts, "rejected": rejected, "folders": folders,
               "word_bytes_hist": word_bytes_hist.tolist(), "words_per_doc_hist": words_per_doc_hist.tolist()}
    for rel in [*folders, f"{UNITS_DIR}/{name}.freq.parquet"]:
        root.publish(rel)
    fault_plan.strike("unit_written", unit=unit, driver_pid=driver_pid)  # tests: a crash before the marker
    marker = out / marker_rel(unit)
    tmp = marker.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(summary))
    tmp.replace(marker)
    root.publish(marker_rel(unit))  # the unit counts as done only from here on
    if root.remote:  # staged copies are no longer needed on this node
        remove_partial(out, unit)
    return summary


def _write_freq(path: Path, freq: Counter) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"word": pa.array(list(freq.keys()), pa.binary()),
                      "count": pa.array(list(freq.values()), pa.int64())})
    pq.write_table(table, path)
