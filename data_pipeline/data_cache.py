"""A prepared dataset at an object-store URL (s3://bucket/prefix, as `wordpool prepare --output` writes it),
read through a folder on this node: the dataset's own small files (stats.json, word_freq.parquet,
tokenizer.json, each split's index.json) are fetched once into it, so everything that reads a data folder
reads that one; mosaicml-streaming downloads the shards into its split folders as training asks for them.

Two S3 clients read the bucket: pyarrow's (prepare, and the files fetched here) reads AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL, mosaicml-streaming's boto3 reads S3_ENDPOINT_URL; align_s3_endpoint sets the one missing
from the other, so an S3-compatible server (MinIO, moto) is named once.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from data_pipeline.shard_format import STATS_FILE, SPLITS
from data_pipeline.sources import filesystem_for, is_url

DATASET_FILES = (STATS_FILE, "word_freq.parquet", "tokenizer.json", *(f"{s}/index.json" for s in SPLITS))
AWS_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # pyarrow (sources.filesystem_for), the AWS SDKs
STREAMING_ENDPOINT = "S3_ENDPOINT_URL"  # mosaicml-streaming's S3 downloader
COMPLETE = ".fetched"  # written after the dataset's files: a folder without it is fetched again


def align_s3_endpoint(environ=os.environ) -> str | None:
    """The S3 endpoint every client of this process (and its children) uses; an error when the two
    families of variables name different servers."""
    aws = next((environ[k] for k in AWS_ENDPOINTS if environ.get(k)), None)
    streaming = environ.get(STREAMING_ENDPOINT) or None
    if aws and streaming and aws.rstrip("/") != streaming.rstrip("/"):
        raise ValueError(f"{STREAMING_ENDPOINT}={streaming} but AWS_ENDPOINT_URL(_S3)={aws}: the shards and the "
                         f"dataset's files would come from different servers; set one of them")
    if aws and not streaming:
        environ[STREAMING_ENDPOINT] = aws
    elif streaming and not aws:
        environ["AWS_ENDPOINT_URL_S3"] = streaming
    return aws or streaming


def is_remote(path: str | Path) -> bool:
    return isinstance(path, str) and is_url(path) and not path.startswith("file://")


def cache_root() -> Path:
    """WORDPOOL_SHARD_CACHE, default TMPDIR/wordpool-shards: where nodes keep their copies of datasets."""
    return Path(os.environ.get("WORDPOOL_SHARD_CACHE") or Path(tempfile.gettempdir()) / "wordpool-shards")


def _read_remote(url: str) -> bytes | None:
    import pyarrow.fs as pafs

    fs, path = filesystem_for(url)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def local_root(root: str | Path, job: str | None = None, data_local: str | None = None) -> Path:
    """The folder on this node holding `root`'s own files: `root` itself when it is local, else its fetched
    copy (`data_local`, default a cache folder per URL, dataset content and job). Fetched once per node: the
    first process takes a file lock and fetches, the others find the folder complete."""
    if not is_remote(root):
        return Path(root)
    url = str(root).rstrip("/")
    align_s3_endpoint()
    index = _read_remote(f"{url}/train/index.json")
    if index is None:
        raise FileNotFoundError(f"no shards at {url}/train (index.json missing): run `wordpool prepare --output {url}`")
    if data_local:
        folder = Path(data_local)
    else:  # the train index in the key: shards prepared again under the same URL never meet an old copy
        key = url.encode() + b"\0" + index + b"\0" + (job or "").encode()
        folder = cache_root() / f"{url.rsplit('/', 1)[-1]}-{hashlib.sha256(key).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = folder / "train" / "index.json"
        if (folder / COMPLETE).is_file() and cached.is_file() and cached.read_bytes() == index:
            return folder
        if cached.is_file() and cached.read_bytes() != index:
            raise ValueError(f"{folder} (train.data_local) holds a copy of other shards than {url}: empty it "
                             f"or choose another folder")
        for name in DATASET_FILES:
            data = index if name == "train/index.json" else _read_remote(f"{url}/{name}")
            if data is not None:
                _write_atomic(folder / name, data)
        (folder / COMPLETE).write_text(url)
    return folder


def split_location(root: str | Path, split: str, job: str | None = None,
                   data_local: str | None = None) -> tuple[str, str]:
    """(remote, local) of one split for StreamingDataset: for a URL, the split's URL and its folder in the
    dataset's local copy (local_root); for a local data folder, the folder and this node's cache of it."""
    if is_remote(root):
        return f"{str(root).rstrip('/')}/{split}", str(local_root(root, job, data_local) / split)
    from data_pipeline.reader import node_cache

    split_dir = Path(root) / split
    local = Path(data_local) / split if data_local else node_cache(split_dir, job)
    return str(split_dir.resolve()), str(local)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
