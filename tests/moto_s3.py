"""A real S3-compatible server for tests (moto, on 127.0.0.1) with the AWS environment pointing at it, and
folders uploaded to it. Only the AWS variables are set: S3_ENDPOINT_URL (mosaicml-streaming's) must follow
from them (data_pipeline.data_cache.align_s3_endpoint)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "S3_ENDPOINT_URL")


@contextlib.contextmanager
def s3_server(nowhere: Path, bucket: str = "wordpool"):
    """Yields a boto3 client of a fresh server holding an empty `bucket`; the environment is restored after."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(nowhere), "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
           "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            for key in ENDPOINT_VARIABLES:
                patch.delenv(key, raising=False)
            client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            client.create_bucket(Bucket=bucket)
            yield client
    finally:
        server.stop()


def upload(client, folder: Path, url: str) -> str:
    """Every file below `folder` to s3://bucket/prefix (`url`); returns the url."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")
    return url
