"""Raw input files -> documents and rejected records.

Every byte of an input (as `sources.input_size` counts it) ends up either in an accepted document's
text, in the JSON envelope of an accepted JSON Lines record (`markup_bytes`), or in a rejected record
with file, line (row, for tables) and reason.

A part of a file (data_pipeline/plan.py) reads the same way: offsets stay file-absolute, ordinals are
`part.base + position in the part`, lines count from the part's start (plan.absolute_lines fixes them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from data_pipeline.sources import CorruptInput, detect_format, is_text_type, read_bytes, text_column

BINARY_SNIFF_BYTES = 8192


@dataclass
class Document:
    source: str
    ordinal: int  # position among the file's accepted-or-rejected records
    offset: int  # byte offset in the source file
    line: int  # 1-based line where it starts
    text: str
    markup_bytes: int = 0  # JSON envelope bytes around the text (0 for plain text)


@dataclass
class Rejected:
    source: str
    ordinal: int
    offset: int
    line: int
    nbytes: int
    reason: str


def _paragraphs(data: bytes) -> list[bytes]:
    """Split before a non-blank line that follows a blank one: each paragraph keeps its blank lines."""
    pieces: list[bytes] = []
    current: list[bytes] = []
    previous_blank = False
    for line in data.splitlines(keepends=True):
        blank = not line.strip()
        if current and previous_blank and not blank:
            pieces.append(b"".join(current))
            current = []
        current.append(line)
        previous_blank = blank
    if current:
        pieces.append(b"".join(current))
    return pieces


def _chunks(data: bytes, rule: str) -> Iterator[tuple[int, bytes]]:
    """(offset, chunk) pieces covering `data` exactly. A whitespace-only piece is a delimiter, not a
    document: it joins the previous document (or the next one, at the start of the file)."""
    pieces = {"file": lambda d: [d], "line": lambda d: d.splitlines(keepends=True), "paragraph": _paragraphs}[rule](data)
    merged: list[bytes] = []
    leading = b""
    for piece in pieces:
        if not piece.strip():
            if merged:
                merged[-1] += piece
            else:
                leading += piece
        else:
            merged.append(leading + piece)
            leading = b""
    if leading:  # the whole file is whitespace
        merged.append(leading)
    offset = 0
    for piece in merged:
        yield offset, piece
        offset += len(piece)


def _decode(raw: bytes, source: str, ordinal: int, offset: int, line: int) -> str | Rejected:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = line + raw.count(b"\n", 0, exc.start)
        return Rejected(source, ordinal, offset, bad_line, len(raw),
                        f"invalid UTF-8 at byte {offset + exc.start} ({exc.reason})")


def read_text(path: str, data: bytes, rule: str, base: int = 0) -> Iterator[Document | Rejected]:
    line = 1
    for position, (offset, raw) in enumerate(_chunks(data, rule)):
        ordinal, offset = base + position, base + offset
        if not raw.strip():
            yield Rejected(path, ordinal, offset, line, len(raw), "empty document")
        else:
            text = _decode(raw, path, ordinal, offset, line)
            yield text if isinstance(text, Rejected) else Document(path, ordinal, offset, line, text)
        line += raw.count(b"\n")


def read_jsonl(path: str, data: bytes, field: str, base: int = 0) -> Iterator[Document | Rejected]:
    offset = base
    for position, raw in enumerate(data.splitlines(keepends=True)):
        ordinal, line, start = base + position, position + 1, offset
        offset += len(raw)

        def reject(reason: str) -> Rejected:
            return Rejected(path, ordinal, start, line, len(raw), reason)

        if not raw.strip():
            yield reject("empty line")
            continue
        text = _decode(raw, path, ordinal, start, line)
        if isinstance(text, Rejected):
            yield text
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield reject(f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(record, dict) or field not in record:
            yield reject(f"missing text field {field!r}")
        elif not isinstance(record[field], str):
            yield reject(f"field {field!r} is {type(record[field]).__name__}, not a string")
        elif not record[field].strip():
            yield reject("empty document")
        else:
            body = record[field]
            try:
                nbytes = len(body.encode("utf-8"))
            except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
                yield reject(f"field {field!r} holds unpaired surrogates (not encodable as UTF-8)")
                continue
            yield Document(path, ordinal, start, line, body, markup_bytes=len(raw) - nbytes)


def read_table(path: str, fmt: str, field: str, part=None) -> Iterator[Document | Rejected]:
    """Parquet file or saved HF dataset: one document per row of the text column `field`; row r
    (0-based) has ordinal = offset = r and line = r + 1. A row accounts for the UTF-8 bytes of its
    text value (0 for null or non-string), matching sources.input_size. `part`: some row groups only."""
    row = part.base if part else 0
    try:
        for array in text_column(path, fmt, field, part and range(part.start, part.stop)):
            if not is_text_type(array.type):
                for _ in range(len(array)):
                    yield Rejected(path, row, row, row + 1, 0, f"column {field!r} is {array.type}, not a string")
                    row += 1
                continue
            for raw in array.cast(pa.large_binary()).to_pylist():
                yield _table_row(path, row, field, raw)
                row += 1
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # unreadable file or batch: the rows before it stand
        yield Rejected(path, row, row, row + 1, 0, f"cannot read {fmt} from row {row + 1} on: {exc}")
        return
    if row == 0 and part is None:
        yield Rejected(path, 0, 0, 1, 0, "no rows")


def _table_row(path: str, row: int, field: str, raw: bytes | None) -> Document | Rejected:
    def reject(nbytes: int, reason: str) -> Rejected:
        return Rejected(path, row, row, row + 1, nbytes, reason)

    if raw is None:
        return reject(0, f"null in text column {field!r}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # arrow strings are not always validated
        return reject(len(raw), f"invalid UTF-8 at byte {exc.start} of the text ({exc.reason})")
    if not text.strip():
        return reject(len(raw), "empty document")
    return Document(path, row, row, row + 1, text)


def read_file(path: str, input_format: str, rule: str, field: str, part=None) -> Iterator[Document | Rejected]:
    """Documents and rejected records of one input (local path or URL, see sources.expand_inputs), or of
    one part of it (a plan.Part)."""
    fmt = detect_format(path, input_format)
    if fmt in ("parquet", "hf"):
        yield from read_table(path, fmt, field, part)
        return
    if part is not None:  # a byte range: plan.py never cuts a binary-looking or empty file
        data = read_bytes(path, (part.start, part.stop))
        if fmt == "jsonl":
            yield from read_jsonl(path, data, field, part.start)
        else:
            yield from read_text(path, data, rule, part.start)
        return
    try:
        data = read_bytes(path)
    except CorruptInput as exc:
        yield Rejected(path, 0, 0, 1, exc.nbytes, str(exc))
        return
    nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        yield Rejected(path, 0, 0, 1, len(data), f"binary file (NUL byte at offset {nul})")
        return
    if not data:
        yield Rejected(path, 0, 0, 1, 0, "empty document")
        return
    if fmt == "jsonl":
        yield from read_jsonl(path, data, field)
    else:
        yield from read_text(path, data, rule)
