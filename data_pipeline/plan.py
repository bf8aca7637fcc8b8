"""The prepare job's units: each input file whole, or a big one cut into parts of about `data.unit_bytes`.

A part is a byte range of a text or JSON Lines file cut at a record boundary (after a "\\n", before a
line that starts a new document under `data.doc_split`), or a run of row groups of a Parquet file.
The cuts depend only on the file's bytes and the config, so a resumed job plans the very same units.
Kept whole: compressed files (.gz/.zst cannot be read from the middle), saved Hugging Face datasets,
files that look binary (the whole file is rejected), and plain text with doc_split=file (one document).

Documents read from a part keep file-absolute byte offsets (so rebuild_sources gives the file back) and
an ordinal of `part start + position in the part`: unique and in file order, without reading what
comes before the part. Line numbers are counted within the part; `absolute_lines` fixes the rejected
records' lines afterwards, reading a file's earlier bytes only when one of its later parts rejected one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from data_pipeline.sources import CHUNK_BYTES, compression_of, detect_format, filesystem_for

BINARY_SNIFF_BYTES = 8192  # documents.read_file rejects a file with a NUL byte this early


@dataclass(frozen=True)
class Part:
    """What of a file a unit reads: bytes [start, stop), or row groups [start, stop) whose first row is
    `base` (for a byte range, base == start)."""
    kind: str  # "bytes" | "row_groups"
    start: int
    stop: int
    base: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> "Part | None":
        return cls(row["kind"], row["start"], row["stop"], row["base"]) if row.get("kind") else None


def plan_units(inputs: list[str], cfg) -> list[dict[str, Any]]:
    """One row per unit, in input order: {"unit", "path", "kind" ("" = the whole file), "start", "stop",
    "base", "share" (of its file: progress counts files)}."""
    rows: list[dict[str, Any]] = []
    for path in inputs:
        parts = _parts(path, cfg)
        whole = parts[-1].stop - parts[0].start if parts[0] else 1
        for part in parts:
            fields = asdict(part) if part else {"kind": "", "start": 0, "stop": 0, "base": 0}
            share = (part.stop - part.start) / whole if part else 1.0
            rows.append({"unit": len(rows), "path": path, **fields, "share": share})
    return rows


def _parts(path: str, cfg) -> list[Part | None]:
    fmt = detect_format(path, cfg.input_format)
    if fmt == "hf" or compression_of(path) or (fmt == "text" and cfg.doc_split == "file"):
        return [None]
    if fmt == "parquet":
        return _row_group_parts(path, cfg.unit_bytes)
    fs, inner = filesystem_for(path)
    size = fs.get_file_info(inner).size
    if size <= cfg.unit_bytes:
        return [None]
    with fs.open_input_file(inner) as f:
        def read(a: int, b: int) -> bytes:
            return f.read_at(b - a, a)

        if b"\x00" in read(0, min(size, BINARY_SNIFF_BYTES)):
            return [None]
        rule = "jsonl" if fmt == "jsonl" else cfg.doc_split
        cuts = [0]
        while cuts[-1] + cfg.unit_bytes < size:
            cut = find_cut(read, size, cuts[-1] + cfg.unit_bytes, rule)
            if cut >= size:
                break
            cuts.append(cut)
    if len(cuts) == 1:
        return [None]
    bounds = [*cuts, size]
    return [Part("bytes", a, b, a) for a, b in zip(bounds[:-1], bounds[1:])]


def find_cut(read: Callable[[int, int], bytes], size: int, target: int, rule: str) -> int:
    """The first record boundary at or after `target` (`size` if none): a position right after a "\\n"
    where the next line starts a record — any line (jsonl), a non-blank line (line), a non-blank line
    after a blank one (paragraph) — so that documents.read_text/read_jsonl of the two sides give
    exactly the records of the whole. Lines and blankness as bytes.splitlines / bytes.strip see them."""
    start, first_complete, window = target, False, 1 << 16
    while start < size:
        chunk = read(start, min(size, start + window))
        eof = start + len(chunk) >= size
        lines = chunk.splitlines(keepends=True)
        starts = [start]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line))
        # lines[0] may begin mid-line (unless first_complete); lines[-1] may end mid-line (unless eof)
        for i in range(1, len(lines) - (0 if eof else 1)):
            if starts[i] < target or not lines[i - 1].endswith(b"\n"):
                continue
            if rule == "jsonl":
                return starts[i]
            if not lines[i].strip():
                continue
            if rule == "line" or ((i >= 2 or first_complete) and not lines[i - 1].strip()):
                return starts[i]
        if eof:
            return size
        if len(lines) >= 3:  # go on from the last complete line, whose start is a true line start
            start, first_complete = starts[-2], True
        else:
            window *= 2
    return size


def _row_group_parts(path: str, unit_bytes: int) -> list[Part | None]:
    import pyarrow.parquet as pq

    fs, inner = filesystem_for(path)
    try:
        with fs.open_input_file(inner) as f:
            meta = pq.ParquetFile(f).metadata
    except (OSError, ValueError):  # unreadable: the reader rejects it whole
        return [None]
    parts, first, row, first_row, size = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        row += meta.row_group(g).num_rows
        if size >= unit_bytes and g + 1 < meta.num_row_groups:
            parts.append(Part("row_groups", first, g + 1, first_row))
            first, first_row, size = g + 1, row, 0
    if not parts:
        return [None]
    return [*parts, Part("row_groups", first, meta.num_row_groups, first_row)]


def absolute_lines(summaries: list[dict[str, Any]], input_format: str) -> None:
    """Rejected records of a file's later byte-range parts: line numbers within the part -> in the file."""
    for summary in summaries:
        part = Part.of(summary.get("part") or {})
        if part is None or part.kind != "bytes" or part.start == 0 or not summary["rejected"]:
            continue
        before = _lines_before(summary["path"], part.start, detect_format(summary["path"], input_format))
        for record in summary["rejected"]:
            record["line"] += before


def _lines_before(path: str, stop: int, fmt: str) -> int:
    """Lines in the file's bytes [0, stop), counted as documents.read_text ("\\n") or read_jsonl
    (bytes.splitlines: "\\n", "\\r\\n" and a lone "\\r") count them; `stop` follows a "\\n"."""
    fs, inner = filesystem_for(path)
    lines, position, previous = 0, 0, b""
    with fs.open_input_file(inner) as f:
        while position < stop:
            chunk = f.read_at(min(CHUNK_BYTES, stop - position), position)
            position += len(chunk)
            lines += chunk.count(b"\n")
            if fmt == "jsonl":  # a lone \r ends a line too
                lines += chunk.count(b"\r") - chunk.count(b"\r\n") - (previous == b"\r" and chunk[:1] == b"\n")
            previous = chunk[-1:]
    return lines
