"""Where inputs live and how their bytes come out.

Local paths, globs (recursive `**`) and object-store URLs (`s3://bucket/key`, other schemes through
pyarrow or fsspec) are listed, typed ("text", "jsonl", "parquet", "hf") and read here; .gz/.zst
files are decompressed on the fly. Nothing here holds an open filesystem between calls, so every
function can run inside a Ray task.

Byte accounting (`input_size`): text and JSON Lines count their (decompressed) file bytes; Parquet
and saved Hugging Face datasets count the UTF-8 bytes of the text column's string values (0 for a
null or non-string value), since the rest of such a file is encoding, not text.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

FORMATS = ("text", "jsonl", "parquet", "hf")
COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".text")
HF_STATE = "state.json"  # written by datasets.Dataset.save_to_disk next to dataset_info.json
HF_DICT = "dataset_dict.json"  # written by datasets.DatasetDict.save_to_disk: one folder per split
CHUNK_BYTES = 1 << 20
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CorruptInput(ValueError):
    """The file exists but cannot be decoded (e.g. a truncated .gz): the reader rejects it whole."""

    def __init__(self, message: str, nbytes: int):
        super().__init__(message)
        self.nbytes = nbytes  # what input_size counts for it: the raw file size


# ---------------------------------------------------------------------------- filesystems

def is_url(path: str) -> bool:
    return _URL.match(path) is not None


def filesystem_for(url: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or URL.

    s3:// uses the standard AWS environment: credentials, profile and region through the AWS SDK's
    default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE,
    ~/.aws, instance roles), AWS_REGION or AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 or
    AWS_ENDPOINT_URL for S3-compatible servers (MinIO, moto, ...)."""
    match = _URL.match(url)
    if match is None:
        return pafs.LocalFileSystem(), url
    scheme = match.group(1).lower()
    if scheme == "file":
        return pafs.LocalFileSystem(), url[len("file://"):]
    if scheme in ("s3", "s3a"):
        return _s3_filesystem(), url[match.end():]
    try:
        return pafs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a scheme pyarrow lacks: let fsspec try
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _s3_filesystem() -> pafs.S3FileSystem:
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        options["region"] = region
    return pafs.S3FileSystem(**options)


def _info(path: str) -> pafs.FileInfo:
    fs, fs_path = filesystem_for(path)
    return fs.get_file_info(fs_path)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


# ---------------------------------------------------------------------------- listing

def expand_inputs(patterns: list[str]) -> list[str]:
    """Input files (and saved-dataset folders) named by paths, globs and URLs.

    Each pattern's matches are sorted; a path named twice is kept once, at its first place. A folder
    holding a saved Hugging Face dataset is one input (a saved DatasetDict: one per split) and the
    files inside it are never inputs of their own; a plain folder named without a glob stands for
    every file below it; folders matched by a glob are skipped."""
    if not patterns:
        raise ValueError("data.inputs is empty: give at least one file or glob (--input PATH ...)")
    inputs: list[str] = []
    for pattern in patterns:
        matches = _expand_one(pattern)
        if not matches:
            raise FileNotFoundError(f"input not found: {pattern}")
        inputs.extend(matches)
    return list(dict.fromkeys(inputs))


def _expand_one(pattern: str) -> list[str]:
    if not glob.has_magic(pattern):
        info = _info(pattern.rstrip("/") or pattern)
        if info.type == pafs.FileType.File:
            return [pattern]
        if info.type != pafs.FileType.Directory:
            return []
        folder = pattern.rstrip("/")
        if layout := _hf_layout(folder):
            return sorted(_hf_datasets(folder, layout))
        return _expand_one(_join(folder if is_url(folder) else glob.escape(folder), "**"))
    candidates = _glob_url(pattern) if is_url(pattern) else _glob_local(pattern)
    layouts = {path: _hf_layout(path) for path, is_dir in candidates if is_dir}
    roots = {path: layout for path, layout in layouts.items() if layout}
    inputs = [p for root, layout in roots.items() for p in _hf_datasets(root, layout)]
    inputs += [path for path, is_dir in candidates
               if not is_dir and not any(path.startswith(root + "/") for root in roots)]
    return sorted(set(inputs))


def _glob_local(pattern: str) -> list[tuple[str, bool]]:
    paths = {p.rstrip("/") or p for p in glob.glob(pattern, recursive=True)}
    return [(p, os.path.isdir(p)) for p in sorted(paths)]


def _glob_url(pattern: str) -> list[tuple[str, bool]]:
    """Glob over an object store: list below the last folder before the first wildcard, then match
    `*` / `?` / `[...]` within one path segment and `**` across segments."""
    scheme_end = _URL.match(pattern).end()
    magic = min(i for i in (pattern.find(c, scheme_end) for c in "*?[") if i >= 0)
    cut = pattern.rfind("/", scheme_end, magic)
    if cut < 0:
        raise ValueError(f"wildcards in the bucket name are not supported: {pattern}")
    base, rest = pattern[:cut], pattern[cut + 1:]
    fs, fs_base = filesystem_for(base)
    selector = pafs.FileSelector(fs_base, recursive="/" in rest or "**" in rest, allow_not_found=True)
    regex = _glob_regex(rest)
    found = []
    for info in fs.get_file_info(selector):
        relative = info.path[len(fs_base.rstrip("/")):].lstrip("/")
        if regex.match(relative):
            found.append((_join(base, relative), info.type == pafs.FileType.Directory))
    return sorted(found)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _hf_layout(folder: str) -> str | None:
    """"dataset", "dict" or None: what `save_to_disk` left in this folder, if anything."""
    if _info(_join(folder, HF_STATE)).type == pafs.FileType.File:
        return "dataset"
    if _info(_join(folder, HF_DICT)).type == pafs.FileType.File:
        return "dict"
    return None


def _hf_datasets(folder: str, layout: str) -> list[str]:
    if layout == "dataset":
        return [folder]
    splits = json.loads(_read_raw(_join(folder, HF_DICT)))["splits"]
    return [_join(folder, split) for split in splits]


# ---------------------------------------------------------------------------- formats

def compression_of(path: str) -> str | None:
    """pyarrow codec name for a compressed file, by its suffix."""
    return next((codec for suffix, codec in COMPRESSION.items() if path.lower().endswith(suffix)), None)


def detect_format(path: str, declared: str = "auto") -> str:
    """One of FORMATS. A declared format wins for files; "auto" goes by suffix (after .gz/.zst):
    .jsonl/.ndjson/.json -> jsonl, .parquet -> parquet, .arrow (a datasets shard) -> hf, anything
    else -> text. A folder holding a saved Hugging Face dataset is "hf" whatever was declared."""
    if declared != "auto" and declared not in FORMATS:
        raise ValueError(f"unknown input format {declared!r}: expected auto or one of {', '.join(FORMATS)}")
    name = path.rstrip("/").lower()
    codec_suffix = next((s for s in COMPRESSION if name.endswith(s)), "")
    name = name[: len(name) - len(codec_suffix)]
    by_suffix = ("jsonl" if name.endswith(JSONL_SUFFIXES) else "parquet" if name.endswith(".parquet")
                 else "hf" if name.endswith(".arrow") else "text" if name.endswith(TEXT_SUFFIXES) else None)
    # only a name without a file suffix may be a dataset folder: spare object stores a request per file
    if by_suffix is None and not codec_suffix and _info(path).type == pafs.FileType.Directory \
            and _hf_layout(path.rstrip("/")):
        return "hf"
    if declared != "auto":
        return declared
    return by_suffix or "text"


# ---------------------------------------------------------------------------- bytes

def _read_raw(path: str) -> bytes:
    fs, fs_path = filesystem_for(path)
    with fs.open_input_stream(fs_path, compression=None) as stream:
        return stream.read()


def read_bytes(path: str, span: tuple[int, int] | None = None) -> bytes:
    """The file's bytes, decompressed when it ends in .gz or .zst; `span` = bytes [start, stop) of an
    uncompressed file (data_pipeline/plan.py). Raises CorruptInput when the compressed stream is broken
    (a missing file still raises FileNotFoundError)."""
    if span is not None:
        fs, fs_path = filesystem_for(path)
        with fs.open_input_file(fs_path) as f:
            return f.read_at(span[1] - span[0], span[0])
    raw = _read_raw(path)
    codec = compression_of(path)
    if codec is None:
        return raw
    try:
        with pa.CompressedInputStream(pa.BufferReader(raw), codec) as stream:
            return stream.read()
    except OSError as exc:
        raise CorruptInput(f"corrupt {codec} stream: {exc}", len(raw)) from exc


def input_size(path: str, input_format: str = "auto", field: str = "text", part=None) -> int:
    """Bytes that read_file(path, input_format, ..., field, part) accounts for, record by record (of a
    plan.Part: its byte range, or the text values of its row groups):
    text / jsonl: file bytes after decompression (raw size if the stream is corrupt: the reader then
    rejects the file whole); parquet / hf: sum of the UTF-8 byte lengths of the text column's string
    values, null and non-string values counting 0 (up to the first unreadable batch, where the
    reader stops too)."""
    fmt = detect_format(path, input_format)
    if fmt in ("parquet", "hf"):
        total = 0
        try:
            for array in text_column(path, fmt, field, part and range(part.start, part.stop)):
                if is_text_type(array.type):
                    total += pc.sum(pc.binary_length(array)).as_py() or 0
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            # read_table rejects the unreadable rest of the table with its row and reason; the bytes
            # counted up to that row are exactly the ones its accepted/rejected records account for
            pass
        return total
    if part is not None:
        return part.stop - part.start
    fs, fs_path = filesystem_for(path)
    if (codec := compression_of(path)) is None:
        return fs.get_file_info(fs_path).size
    total = 0
    with fs.open_input_stream(fs_path, compression=None) as raw:
        try:  # count in chunks: a decompressed corpus need not fit in memory here
            with pa.CompressedInputStream(raw, codec) as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    total += len(chunk)
        except OSError:
            return fs.get_file_info(fs_path).size
    return total


# ---------------------------------------------------------------------------- tables

def is_text_type(arrow_type: pa.DataType) -> bool:
    return any(is_(arrow_type) for is_ in (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view))


def text_column(path: str, fmt: str, field: str, row_groups: range | None = None) -> Iterator[pa.Array]:
    """The `field` column of a Parquet file (of its `row_groups` only, if given) or saved HF dataset,
    batch by batch, in row order. Raises ValueError when the column is missing."""
    if fmt == "parquet":
        fs, fs_path = filesystem_for(path)
        with fs.open_input_file(fs_path) as f:
            parquet = pq.ParquetFile(f)
            _check_column(parquet.schema_arrow, field)
            groups = None if row_groups is None else list(row_groups)
            for batch in parquet.iter_batches(columns=[field], row_groups=groups):
                yield _plain(batch.column(0))
        return
    for shard in _hf_shards(path):
        fs, fs_path = filesystem_for(shard)
        with fs.open_input_file(fs_path) as f:
            try:  # datasets writes the IPC stream format; read the IPC file format (Feather v2) too
                reader = pa.ipc.open_stream(f)
                batches = iter(reader)
            except pa.ArrowInvalid:
                f.seek(0)
                reader = pa.ipc.open_file(f)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            _check_column(reader.schema, field)
            for batch in batches:
                yield _plain(batch.column(field))


def _check_column(schema: pa.Schema, field: str) -> None:
    if field not in schema.names:
        raise ValueError(f"no text column {field!r} (columns: {', '.join(schema.names)})")


def _plain(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _hf_shards(path: str) -> list[str]:
    """The arrow files of a saved dataset in row order (as state.json lists them), or the file itself."""
    if _info(path).type != pafs.FileType.Directory:
        return [path]
    state = json.loads(_read_raw(_join(path, HF_STATE)))
    return [_join(path, entry["filename"]) for entry in state["_data_files"]]
