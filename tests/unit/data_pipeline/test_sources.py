"""Input kinds (text, JSON Lines plain/.gz/.zst, Parquet, saved HF datasets) and listing, on local and
in-memory filesystems. The same inputs from a real S3-compatible server: integration/test_sources_s3.py."""
import gzip
import os

import datasets
import fsspec
import pyarrow as pa
import pyarrow.feather
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from data_pipeline.documents import Document, Rejected
from data_pipeline.sources import detect_format, expand_inputs, filesystem_for, input_size, read_bytes
from input_kinds import BODIES, JSONL, _accounted, _read, _without_source, write_input_kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One of each input kind, in one folder."""
    return write_input_kinds(tmp_path_factory.mktemp("corpus"))


# ---------------------------------------------------------------------------- formats, locally

def test_detect_format(corpus):
    assert detect_format("x/a.txt") == detect_format("x/README") == detect_format("x.text.gz") == "text"
    assert detect_format("a.jsonl") == detect_format("a.ndjson.zst") == detect_format("A.JSON.GZ") == "jsonl"
    assert detect_format("s3://b/k/part-0.parquet") == "parquet"
    assert detect_format(str(corpus / "f_hf")) == detect_format(str(corpus / "f_hf") + "/") == "hf"
    assert detect_format(str(corpus / "f_hf"), "text") == "hf"  # a dataset folder cannot be text
    assert detect_format("a.jsonl", "text") == "text"
    with pytest.raises(ValueError, match="unknown input format"):
        detect_format("a.txt", "csv")


def test_text_and_compressed_jsonl_read_alike(corpus):
    text = _read(corpus / "a.txt")
    assert [r.text for r in text] == ["First paragraph.\n\n", "Second one, with ünïcode.\n"]
    plain = _read(corpus / "b.jsonl")
    assert [r.text for r in plain if isinstance(r, Document)] == ["doc one", "doc ü two"]
    assert [(r.line, r.reason[:14]) for r in plain if isinstance(r, Rejected)] == [(2, "malformed JSON")]
    for name in ("b.jsonl", "c.jsonl.gz", "d.jsonl.zst"):
        path = str(corpus / name)
        assert read_bytes(path) == JSONL
        assert input_size(path) == len(JSONL)  # decompressed bytes
        assert _without_source(_read(path)) == _without_source(plain)
    for name in ("a.txt", "b.jsonl", "c.jsonl.gz", "d.jsonl.zst"):
        assert _accounted(_read(corpus / name)) == input_size(str(corpus / name))


@pytest.mark.parametrize("name", ["e.parquet", "f_hf"])
def test_table_rows_become_documents(corpus, name):
    path = str(corpus / name)
    records = _read(path, field="body")
    assert [r.line for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.offset for r in records] == [r.ordinal for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r.text for r in records if isinstance(r, Document)] == ["alpha beta", "gamma ü", "delta"]
    assert all(r.markup_bytes == 0 for r in records if isinstance(r, Document))
    rejected = {r.line: (r.reason, r.nbytes) for r in records if isinstance(r, Rejected)}
    assert rejected == {2: ("null in text column 'body'", 0), 3: ("empty document", 0), 4: ("empty document", 3)}
    assert input_size(path, field="body") == _accounted(records) == sum(len(b.encode()) for b in BODIES if b)


def test_non_string_and_missing_column_rejected(tmp_path):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, None, 3], "other": ["a", "b", "c"]}), path)
    records = _read(path)
    assert all(isinstance(r, Rejected) and r.nbytes == 0 for r in records)
    assert [r.line for r in records] == [1, 2, 3]
    assert records[0].reason == "column 'text' is int64, not a string"
    assert input_size(str(path)) == 0

    [missing] = _read(path, field="body")
    assert isinstance(missing, Rejected) and "no text column 'body' (columns: text, other)" in missing.reason
    assert input_size(str(path), field="body") == 0


def test_invalid_utf8_row_rejected(tmp_path):
    raw = pa.array([b"ok", b"\xff\xfe"], pa.binary())
    unchecked = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # writers need not validate
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": unchecked}), path)
    good, bad = _read(path)
    assert good.text == "ok" and bad.line == 2 and bad.nbytes == 2 and "invalid UTF-8 at byte 0" in bad.reason
    assert input_size(str(path)) == _accounted([good, bad]) == 4


def test_large_string_and_dictionary_columns(tmp_path):
    path = tmp_path / "typed.parquet"
    table = pa.table({"text": pa.array(["x y", None, "z"], pa.large_string())})
    pq.write_table(table, path)
    assert [r.text for r in _read(path) if isinstance(r, Document)] == ["x y", "z"]
    dictionary = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"text": pa.array(["p", "q", "p"]).dictionary_encode()}), dictionary)
    assert [r.text for r in _read(dictionary)] == ["p", "q", "p"]


def test_corrupt_inputs_rejected_and_accounted(tmp_path):
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(JSONL * 50)[:40])
    [rec] = _read(truncated)
    assert isinstance(rec, Rejected) and "corrupt gzip" in rec.reason and rec.nbytes == 40
    assert input_size(str(truncated)) == 40

    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"not parquet at all")
    [rec] = _read(fake)
    assert isinstance(rec, Rejected) and rec.reason.startswith("cannot read parquet") and rec.nbytes == 0
    assert input_size(str(fake)) == 0

    with pytest.raises(FileNotFoundError):
        _read(tmp_path / "missing.jsonl.gz")


def test_empty_table_and_arrow_files(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    assert [(r.line, r.reason, r.nbytes) for r in _read(empty)] == [(1, "no rows", 0)]
    feather = tmp_path / "shard.arrow"  # IPC file format, not the stream format datasets writes
    pa.feather.write_feather(pa.table({"text": ["one", "two"]}), str(feather))
    assert [r.text for r in _read(feather)] == ["one", "two"]
    text = tmp_path / "plain.txt"
    text.write_text("not arrow")
    [rec] = _read(text, fmt="hf")
    assert rec.reason.startswith("cannot read hf") and input_size(str(text), "hf") == 0


def test_declared_format_and_text_field(tmp_path):
    path = tmp_path / "records.log"
    path.write_bytes(b'{"body": "kept"}\n')
    assert [r.text for r in _read(path, fmt="jsonl", field="body")] == ["kept"]
    assert [r.text for r in _read(path)] == ['{"body": "kept"}\n']


# ---------------------------------------------------------------------------- listing

def test_expand_inputs_globs_folders_and_datasets(corpus, tmp_path):
    everything = expand_inputs([str(corpus / "**")])
    names = [os.path.relpath(p, corpus) for p in everything]
    assert names == ["a.txt", "b.jsonl", "c.jsonl.gz", "d.jsonl.zst", "e.parquet", "f_hf"]  # no files of f_hf/
    assert expand_inputs([str(corpus)]) == everything  # a folder named without a glob: all below it
    assert expand_inputs([str(corpus / "*.jsonl*"), str(corpus / "b.jsonl")]) == [
        str(corpus / n) for n in ("b.jsonl", "c.jsonl.gz", "d.jsonl.zst")]  # sorted, duplicates dropped
    assert expand_inputs([str(corpus / "f_hf")]) == [str(corpus / "f_hf")]

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["t"]}),
                                   "test": datasets.Dataset.from_dict({"text": ["u"]})})
    splits.save_to_disk(str(tmp_path / "dd"))
    assert expand_inputs([str(tmp_path / "dd")]) == [str(tmp_path / "dd" / "test"), str(tmp_path / "dd" / "train")]
    assert expand_inputs([str(tmp_path / "*")]) == expand_inputs([str(tmp_path / "**")]) == expand_inputs(
        [str(tmp_path / "dd")])  # a DatasetDict is one input per split, found by globs too
    assert [r.text for r in _read(tmp_path / "dd" / "test")] == ["u"]


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found: .*nothing-\\*.txt"):
        expand_inputs([str(tmp_path / "nothing-*.txt")])
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([str(tmp_path / "absent.txt")])
    with pytest.raises(ValueError, match="data.inputs is empty"):
        expand_inputs([])


def test_filesystem_for_local_paths(tmp_path):
    fs, path = filesystem_for(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    fs, path = filesystem_for(f"file://{tmp_path}")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)


def test_fsspec_only_schemes(tmp_path):
    memory = fsspec.filesystem("memory")
    memory.pipe("/wp-test/a.txt", b"hello there\n")
    memory.pipe("/wp-test/sub/b.jsonl.gz", gzip.compress(b'{"text": "x"}\n'))
    try:
        urls = expand_inputs(["memory://wp-test"])
        assert urls == ["memory://wp-test/a.txt", "memory://wp-test/sub/b.jsonl.gz"]
        assert [[r.text for r in _read(u)] for u in urls] == [["hello there\n"], ["x"]]
        assert input_size(urls[1]) == 14
    finally:
        memory.rm("/wp-test", recursive=True)
