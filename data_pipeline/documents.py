"""Raw input files -> documents and rejected records.

Every byte of an input file ends up either in an accepted document's text, in the JSON envelope of
an accepted JSON Lines record (`markup_bytes`), or in a rejected record with file, line and reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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


def detect_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    return "jsonl" if path.endswith((".jsonl", ".ndjson", ".json")) else "text"


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


def read_text(path: str, data: bytes, rule: str) -> Iterator[Document | Rejected]:
    line = 1
    for ordinal, (offset, raw) in enumerate(_chunks(data, rule)):
        if not raw.strip():
            yield Rejected(path, ordinal, offset, line, len(raw), "empty document")
        else:
            text = _decode(raw, path, ordinal, offset, line)
            yield text if isinstance(text, Rejected) else Document(path, ordinal, offset, line, text)
        line += raw.count(b"\n")


def read_jsonl(path: str, data: bytes, field: str) -> Iterator[Document | Rejected]:
    offset = 0
    for ordinal, raw in enumerate(data.splitlines(keepends=True)):
        line, start = ordinal + 1, offset
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


def read_file(path: str, input_format: str, rule: str, field: str) -> Iterator[Document | Rejected]:
    data = Path(path).read_bytes()
    nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        yield Rejected(path, 0, 0, 1, len(data), f"binary file (NUL byte at offset {nul})")
        return
    if not data:
        yield Rejected(path, 0, 0, 1, 0, "empty document")
        return
    if detect_format(path, input_format) == "jsonl":
        yield from read_jsonl(path, data, field)
    else:
        yield from read_text(path, data, rule)
