"""Human-facing progress and summaries of commands."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class PrepareProgress:
    """Input files done, documents, MB and MB/s, updated as each unit of the Ray job finishes."""

    def __init__(self, n_inputs: int):
        self.progress = Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                                 TextColumn("{task.fields[docs]:,} docs {task.fields[mb]:.1f} MB {task.fields[rate]:.2f} MB/s"),
                                 TimeElapsedColumn())
        self.task = self.progress.add_task("prepare", total=n_inputs, docs=0, mb=0.0, rate=0.0)
        self.docs, self.bytes = 0, 0

    def __enter__(self) -> "PrepareProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, summary: dict[str, Any], elapsed: float) -> None:
        for counts in summary["counts"].values():
            self.docs += counts["documents"]
            self.bytes += counts["document_bytes"] + counts["markup_bytes"] + counts["rejected_bytes"]
        mb = self.bytes / 1e6
        self.progress.update(self.task, advance=summary.get("share", 1),  # a part of a big file: its share
                             docs=self.docs, mb=mb, rate=mb / max(elapsed, 1e-9))


def print_prepare_summary(stats: dict[str, Any], output: str) -> None:
    console = Console()
    tokenizer = stats["config"]["tokenizer"]
    table = Table(title=f"wordpool prepare ({tokenizer}, {stats['config']['packing']} packing)")
    columns = ["split", "docs", "words"] + (["tokens"] if tokenizer != "words" else []) + \
        ["MB", "samples", "cut", "rejected MB"]
    for column in columns:
        table.add_column(column, justify="right")
    for split, c in stats["splits"].items():
        tokens = [f"{c.get('tokens', 0):,}"] if tokenizer != "words" else []
        table.add_row(split, f"{c.get('documents', 0):,}", f"{c.get('words', 0):,}", *tokens,
                      f"{c.get('document_bytes', 0) / 1e6:.2f}", f"{c.get('samples', 0):,}",
                      f"{c.get('words_cut', 0):,}", f"{c.get('rejected_bytes', 0) / 1e6:.3f}")
    console.print(table)
    mb_s = stats["input_bytes"] / 1e6 / max(stats["seconds"], 1e-9)
    console.print(f"{len(stats['inputs'])} input file(s) ({stats['units_skipped']} already done), "
                  f"{stats['input_bytes'] / 1e6:.2f} MB in {stats['seconds']:.1f} s ({mb_s:.2f} MB/s); "
                  f"{stats['bytes_per_word']:.2f} bytes/word, {stats['bytes_per_token']:.2f} bytes/token; "
                  f"{stats['rejected_count']} record(s) rejected ({stats['rejected_bytes']:,} bytes)")
    for split, c in stats["splits"].items():
        if not c.get("documents"):
            console.print(f"[yellow]no document went to {split}[/] ({stats['documents']} document(s) in all): "
                          f"a finer data.doc_split (paragraph, line) or another data.val_fraction gives it some")
    for r in stats["rejected"][:20]:
        console.print(f"  rejected {r['source']}:{r['line']}: {r['reason']}", markup=False)
    if stats["rejected_count"] > 20:
        console.print(f"  … {stats['rejected_count'] - 20} more in stats.json")
    console.print(f"shards, stats.json, word_freq.parquet and histograms.png in {output}")
