"""Human-facing summaries printed at the end of commands."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_prepare_summary(stats: dict[str, Any], output: str) -> None:
    console = Console()
    table = Table(title="wordpool prepare")
    for column in ("split", "documents", "words", "MB", "samples", "words cut"):
        table.add_column(column, justify="right")
    for split, c in stats["splits"].items():
        table.add_row(split, f"{c.get('documents', 0):,}", f"{c.get('words', 0):,}",
                      f"{c.get('document_bytes', 0) / 1e6:.2f}", f"{c.get('samples', 0):,}", f"{c.get('words_cut', 0):,}")
    console.print(table)
    mb_s = stats["input_bytes"] / 1e6 / max(stats["seconds"], 1e-9)
    console.print(f"{len(stats['inputs'])} input file(s), {stats['input_bytes'] / 1e6:.2f} MB in {stats['seconds']:.1f} s "
                  f"({mb_s:.2f} MB/s); {stats['rejected_count']} record(s) rejected ({stats['rejected_bytes']:,} bytes)")
    for r in stats["rejected"][:20]:
        console.print(f"  rejected {r['source']}:{r['line']}: {r['reason']}", markup=False)
    if stats["rejected_count"] > 20:
        console.print(f"  … {stats['rejected_count'] - 20} more in stats.json")
    console.print(f"shards and stats.json in {output}")
