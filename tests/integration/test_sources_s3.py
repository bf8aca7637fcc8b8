"""The inputs of every kind read back from a real S3-compatible server (moto, on 127.0.0.1), and the
whole Ray prepare job with object storage on both sides."""
import os

import boto3
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from data_pipeline.sources import detect_format, expand_inputs, filesystem_for, input_size
from input_kinds import TEXT, _accounted, _read, _without_source, write_input_kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_input_kinds(tmp_path_factory.mktemp("corpus"))


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
