"""Prepared shards read from a real S3-compatible server (moto on 127.0.0.1) through a node-local copy:
the same batches as from disk, a small cache evicting shards, and a 2-rank mixture of streams trained
from S3 that matches the same mixture from disk step for step and resumes exactly."""
import json
import os
import shutil

import pytest

from cli_helpers import TINY, prepare_without_ray, records, wordpool
from moto_s3 import s3_server, upload

SHARD_BYTES = 1 << 16  # the smallest shards prepare writes: several of them, so a small cache must evict


@pytest.fixture(scope="module")
def small_shards(english_lines_file, tmp_path_factory):
    from schema import DataConfig

    out = tmp_path_factory.mktemp("small_shards")
    prepare_without_ray(DataConfig(inputs=[str(english_lines_file)], output=str(out), doc_split="line",
                                   max_word_bytes=16, words_per_sample=32, val_fraction=0.1,
                                   shard_size_limit=SHARD_BYTES, compression="none"))
    return out


@pytest.fixture(scope="module")
def other_shards(small_shards, tmp_path_factory):
    """A second dataset for mixtures: a copy (the streams' samples are told apart by their stream)."""
    out = tmp_path_factory.mktemp("other") / "other"
    shutil.copytree(small_shards, out)
    return out


@pytest.fixture(scope="module")
def s3(small_shards, other_shards, tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("aws") / "none") as client:
        upload(client, small_shards, "s3://wordpool/small")
        upload(client, other_shards, "s3://wordpool/other")
        yield client


def _train_shards(split_dir):
    return [s["raw_data"]["basename"] for s in json.loads((split_dir / "index.json").read_text())["shards"]]


def test_s3_shards_read_like_local_ones_through_a_small_cache(s3, small_shards, tmp_path, monkeypatch):
    from data_pipeline.data_cache import COMPLETE, local_root, split_location
    from pretrain.training.loader import SplitSource, make_loader, sample_encoder

    monkeypatch.setenv("WORDPOOL_SHARD_CACHE", str(tmp_path / "cache"))
    url = "s3://wordpool/small"
    root = local_root(url, job="a")
    assert os.environ["S3_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]  # streaming's client follows prepare's
    for name in ("stats.json", "word_freq.parquet", "train/index.json", "val/index.json", COMPLETE):
        assert (root / name).is_file(), name
    assert (root / "stats.json").read_bytes() == (small_shards / "stats.json").read_bytes()
    assert local_root(url, job="a") == root and local_root(url, job="b") != root  # fetched once per node and job

    names = _train_shards(small_shards / "train")
    assert len(names) >= 6
    limit = 4 * max((small_shards / "train" / n).stat().st_size for n in names) + 1024  # streaming's minimum
    encode = sample_encoder(small_shards)

    def batches(source, **download):
        _, loader = make_loader([source], encode, 4, True, 7, 1, 0, drop_last=True, download=download)
        return [b["words"] for b in loader]

    local = batches(SplitSource(*split_location(small_shards, "train", "a")))
    remote = batches(SplitSource(*split_location(url, "train", "a")), cache_limit=limit, predownload=4)
    assert len(remote) == len(local) and all((a == b).all() for a, b in zip(remote, local))
    kept = [n for n in names if (root / "train" / n).is_file()]
    assert len(kept) < len(names), "the cache limit evicted no shard"


def _mixture(first, second, *extra):
    return [f"train.streams=[{{path: '{first}', name: lines, proportion: 2}}, "
            f"{{path: '{second}', name: small, proportion: 1}}]", "train.steps=6", "train.checkpoint_every=3",
            "train.eval_every=3", *extra]


def test_mixture_from_s3_trains_like_from_disk_and_resumes_exactly(s3, other_shards, small_shards, tmp_path):
    """One run from disk; the same mixture from S3 through a small cache (shards evicted), SIGKILLed after
    its step-3 checkpoint and resumed: every step reads the same samples and, after the resume, computes
    the same loss as the run from disk. Each stream's validation figures are reported."""
    disk = tmp_path / "disk"
    proc = wordpool("train", "--nproc", "2", f"train.run_dir={disk}", *TINY, *_mixture(other_shards, small_shards))
    assert proc.returncode == 0, proc.stderr[-4000:]
    reference = records(disk)

    limit = 8 * max(p.stat().st_size for p in (small_shards / "train").rglob("shard.*"))  # < all 12 shards
    remote = [f"train.run_dir={tmp_path / 'remote'}", *TINY,
              *_mixture("s3://wordpool/other", "s3://wordpool/small", f"train.cache_limit={limit}",
                        f"train.data_local={tmp_path / 'copy'}", "train.predownload=8")]
    cut = wordpool("train", "--nproc", "2", *remote, env={"WORDPOOL_FAULT_KILL_AT_STEP": "3"})
    assert cut.returncode != 0 and (tmp_path / "remote" / "checkpoints" / "step_00000003" / "COMPLETE").is_file()
    first = records(tmp_path / "remote")
    resumed = wordpool("train", "--nproc", "2", *remote, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    got = records(tmp_path / "remote")
    for step in range(1, 7):
        assert got[step]["data_digest"] == reference[step]["data_digest"], f"step {step}: other samples"
        assert first[min(step, 3)]["data_digest"] == reference[min(step, 3)]["data_digest"]
    for step in (4, 5, 6):
        assert got[step]["loss"] == reference[step]["loss"], f"step {step}: the resume is not exact"
    evals = records(tmp_path / "remote", "eval")
    assert {"val_bpb", "val_bpb/lines", "val_bpb/small"} <= set(evals[6]) and evals[6]["val_bpb"] > 0
    assert evals[6]["val_bpb/small"] == records(disk, "eval")[6]["val_bpb/small"]
    small_copy = tmp_path / "copy" / "small" / "train"
    assert len(list(small_copy.rglob("shard.*"))) < len(list((small_shards / "train").rglob("shard.*")))
