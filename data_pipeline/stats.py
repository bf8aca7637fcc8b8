"""The job's accounts: stats.json, the training split's word frequency table, histogram PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schema import DataConfig
from data_pipeline.shard_format import SPLITS
from data_pipeline.unit import WORDS_PER_DOC_BINS, unit_name

WORD_FREQ_FILE = "word_freq.parquet"


def summarize(cfg: DataConfig, inputs: list[str], summaries: list[dict[str, Any]], seconds: float,
              skipped: int) -> dict[str, Any]:
    splits: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for summary in summaries:
        for split in SPLITS:
            for key, value in summary["counts"][split].items():
                splits[split][key] = splits[split].get(key, 0) + value
    total = {key: sum(splits[s].get(key, 0) for s in SPLITS) for key in splits["train"]}
    rejected = [r for s in summaries for r in s["rejected"]]
    input_bytes = dict.fromkeys(inputs, 0)
    for s in summaries:  # a big file's parts add up to it
        input_bytes[s["path"]] += s["input_bytes"]
    text_bytes = total.get("document_bytes", 0)
    return {
        "inputs": input_bytes,
        "input_bytes": sum(input_bytes.values()),
        "documents": total.get("documents", 0),
        "words": total.get("words", 0),
        "tokens": total.get("tokens", 0),
        "bytes": text_bytes,
        "bytes_per_word": text_bytes / max(total.get("words", 0), 1),
        "bytes_per_token": text_bytes / max(total.get("tokens", 0), 1),
        "markup_bytes": total.get("markup_bytes", 0),
        "rejected_bytes": total.get("rejected_bytes", 0),
        "words_cut": total.get("words_cut", 0),
        "splits": splits,
        "rejected_count": len(rejected),
        "rejected": rejected,
        "units": len(summaries),
        "units_skipped": skipped,
        "word_bytes_hist": np.sum([s["word_bytes_hist"] for s in summaries], axis=0).tolist(),
        "words_per_doc_hist_log2": np.sum([s["words_per_doc_hist"] for s in summaries], axis=0).tolist(),
        "config": cfg.model_dump(),
        "seconds": round(seconds, 3),
    }


def write_word_freq(out, n_units: int) -> None:
    """Sum the units' counts into one table (word bytes, count), most frequent first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(out.fetch(f"_units/{unit_name(u)}.freq.parquet")) for u in range(n_units)]
    merged = pa.concat_tables(tables).group_by("word").aggregate([("count", "sum")])
    merged = merged.rename_columns(["word", "count"]).sort_by([("count", "descending"), ("word", "ascending")])
    pq.write_table(merged, out.local / WORD_FREQ_FILE)
    out.publish(WORD_FREQ_FILE)


def read_word_freq(output: str | Path) -> dict[bytes, int]:
    import pyarrow.parquet as pq

    table = pq.read_table(Path(output) / WORD_FREQ_FILE)
    return dict(zip(table.column("word").to_pylist(), table.column("count").to_pylist()))


def write_plots(output: Path, stats: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    word_bytes = stats["word_bytes_hist"]
    left.bar(range(len(word_bytes)), word_bytes, color="tab:blue")
    left.set(title=f"bytes per word (mean {stats['bytes_per_word']:.2f})", xlabel="bytes", ylabel="words")
    per_doc = stats["words_per_doc_hist_log2"][:WORDS_PER_DOC_BINS]
    last = max([i for i, v in enumerate(per_doc) if v] or [0]) + 1
    right.bar([f"{1 << i}" for i in range(last)], per_doc[:last], color="tab:orange")
    right.set(title="words per document", xlabel="at least (log2 bins)", ylabel="documents")
    right.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    path = output / "histograms.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
