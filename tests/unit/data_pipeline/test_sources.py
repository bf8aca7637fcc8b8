"""Input kinds (text, JSON Lines plain/.gz/.zst, Parquet, saved HF datasets), listing, and the same
inputs read back from a real S3-compatible server (moto, on 127.0.0.1)."""
import dataclasses
import gzip
import json
import os

import boto3
import datasets
import fsspec
import pyarrow as pa
import pyarrow.feather
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard
from moto.server import ThreadedMotoServer

from data_pipeline.documents import Document, Rejected, read_file
from data_pipeline.sources import detect_format, expand_inputs, filesystem_for, input_size, read_bytes

TEXT = "First paragraph.\n\nSecond one, with ünïcode.\n"
JSONL = b"\n".join([b'{"text": "doc one", "id": 1}', b'{"text": ', b'{"text": "doc \xc3\xbc two"}']) + b"\n"
# row 2: null, row 3: empty, row 4: whitespace only
BODIES = ["alpha beta", None, "", "  \n", "gamma ü", "delta"]


def _read(path, fmt="auto", field="text", rule="paragraph"):
    return list(read_file(str(path), fmt, rule, field))


def _accounted(records):
    return sum(len(r.text.encode()) + r.markup_bytes if isinstance(r, Document) else r.nbytes for r in records)


def _without_source(records):
    return [dataclasses.replace(r, source="") for r in records]


def _write_hf(folder, bodies, field="body", shards=2):
    datasets.Dataset.from_dict({field: bodies, "n": list(range(len(bodies)))}).save_to_disk(
        str(folder), num_shards=shards)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One of each input kind, in one folder."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text(TEXT)
    (root / "b.jsonl").write_bytes(JSONL)
    (root / "c.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (root / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(JSONL))
    table = pa.table({"id": list(range(len(BODIES))), "body": BODIES})
    pq.write_table(table, root / "e.parquet", row_group_size=2)  # rows numbered across row groups
    _write_hf(root / "f_hf", BODIES)
    return root


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


# ---------------------------------------------------------------------------- S3 (moto server)

@pytest.fixture(scope="module")
def s3(corpus, tmp_path_factory):
    """A real S3 server on 127.0.0.1, the AWS environment pointing at it, and the corpus uploaded
    to s3://wordpool/data/."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
           "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            patch.delenv(key, raising=False)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket="wordpool")
        for path in sorted(corpus.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), "wordpool", f"data/{path.relative_to(corpus)}")
        yield "s3://wordpool/data"
    server.stop()


def test_s3_inputs_read_like_local_files(s3, corpus):
    urls = expand_inputs([f"{s3}/*"])
    assert urls == [f"{s3}/{n}" for n in ("a.txt", "b.jsonl", "c.jsonl.gz", "d.jsonl.zst", "e.parquet", "f_hf")]
    for url in urls:
        local = str(corpus / url.rsplit("/", 1)[1])
        field = "body" if url.endswith(("parquet", "hf")) else "text"
        assert detect_format(url) == detect_format(local)
        remote_records, local_records = _read(url, field=field), _read(local, field=field)
        assert remote_records and all(r.source == url for r in remote_records)
        assert _without_source(remote_records) == _without_source(local_records)
        assert input_size(url, field=field) == input_size(local, field=field) == _accounted(remote_records)


def test_s3_globs_and_errors(s3):
    assert expand_inputs([f"{s3}/**/*.arrow"]) == [f"{s3}/f_hf/data-00000-of-00002.arrow",
                                                   f"{s3}/f_hf/data-00001-of-00002.arrow"]
    assert expand_inputs([f"{s3}/[ab].*", f"{s3}/a.txt"]) == [f"{s3}/a.txt", f"{s3}/b.jsonl"]
    assert expand_inputs([s3]) == expand_inputs([f"{s3}/**"])  # a prefix stands for every object below it
    assert expand_inputs([f"{s3}/f_hf"]) == [f"{s3}/f_hf"]
    with pytest.raises(FileNotFoundError, match="input not found: s3://wordpool/data/\\*.csv"):
        expand_inputs([f"{s3}/*.csv"])
    fs, path = filesystem_for(f"{s3}/a.txt")
    assert isinstance(fs, pafs.S3FileSystem) and path == "wordpool/data/a.txt"
    assert fs.get_file_info(path).size == len(TEXT.encode())


def test_prepare_from_s3_to_s3(s3, corpus, ray_cluster, tmp_path):
    """The whole Ray job with object storage on both sides; a rerun finds every unit done remotely."""
    from schema import DataConfig
    from data_pipeline.job import run_prepare
    from data_pipeline.reader import rebuild_sources

    out_url = "s3://wordpool/prepared"
    cfg = DataConfig(inputs=[f"{s3}/a.txt", f"{s3}/c.jsonl.gz"], output=out_url, val_fraction=0.5,
                     words_per_sample=16)
    os.environ["WORDPOOL_STAGING"] = str(tmp_path / "staging")
    try:
        stats = run_prepare(cfg)
        again = run_prepare(cfg)
    finally:
        del os.environ["WORDPOOL_STAGING"]
    assert stats["documents"] == 4 and stats["rejected_count"] == 1
    assert again["units_skipped"] == 2

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="wordpool", Prefix="prepared/")["Contents"]]
    assert "prepared/stats.json" in keys and "prepared/train/index.json" in keys
    local = tmp_path / "download"
    for key in keys:
        if key.endswith("/"):  # folder markers
            continue
        target = local / key.removeprefix("prepared/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file("wordpool", key, str(target))
    rebuilt = rebuild_sources(local)
    assert rebuilt[f"{s3}/a.txt"] == TEXT.encode()
    assert rebuilt[f"{s3}/c.jsonl.gz"] == "doc onedoc ü two".encode()
