"""What a training reads (pretrain/training/data_sources.py, loader.make_loader): streams mixed in the
proportions asked, each stream's split evaluated apart, and a mixture refused before launch when its
streams were prepared differently."""
import json
import shutil

import numpy as np
import pytest
import torch

from schema import UserError, validate


def _mixture(shards, tmp_path, **weights):
    from pretrain.training.loader import SplitSource, make_loader

    # one dataset twice (each stream its own local copy): which stream a sample came from is told by its id
    sources = [SplitSource(str(shards / "train"), str(tmp_path / name), name, **w) for name, w in weights.items()]
    dataset, _ = make_loader(sources, lambda sample: sample, 4, True, 3, 1, 0, drop_last=True)
    return dataset


def _samples_per_stream(dataset) -> np.ndarray:
    ids = []
    original = dataset.__getitem__
    dataset.__getitem__ = lambda idx: ids.append(idx) or original(idx)  # streaming iterates self.__getitem__
    for _ in dataset:
        pass
    streams = np.searchsorted(dataset.sample_offset_per_stream, np.array(ids), side="right") - 1
    return np.bincount(streams, minlength=dataset.num_streams)


def test_stream_proportions_are_honoured(shards, tmp_path):
    dataset = _mixture(shards, tmp_path, a={"proportion": 3.0}, b={"proportion": 1.0})
    counts = _samples_per_stream(dataset)
    assert counts.sum() >= 1000
    assert abs(counts[0] / counts.sum() - 0.75) < 0.02, counts


def test_stream_repeat_and_choose(shards, tmp_path):
    n = json.loads((shards / "train" / "index.json").read_text())["shards"][0]["samples"]
    dataset = _mixture(shards, tmp_path, a={"repeat": 2.0}, b={"choose": 100})
    assert list(_samples_per_stream(dataset)) == [2 * n, 100]


def _fake_dataset(folder, **config):
    base = {"tokenizer": "words", "packing": "fixed", "max_word_bytes": 16, "words_per_sample": 32,
            "tokens_per_sample": 1024, "split_digits": False, "bpe_vocab_size": 8192}
    folder.mkdir(parents=True)
    (folder / "stats.json").write_text(json.dumps({"config": {**base, **config}}))
    return str(folder)


def test_streams_prepared_differently_are_refused_naming_the_stream_and_key(tmp_path):
    from pretrain.training.data_sources import check_same_settings, training_data

    a, b = _fake_dataset(tmp_path / "a"), _fake_dataset(tmp_path / "b", max_word_bytes=24)
    cfg = validate({"train": {"streams": [{"path": a}, {"path": b, "name": "web"}]}}, "t")
    assert cfg.data.output == a  # the first stream is the reference dataset
    with pytest.raises(UserError, match=r"train.streams\[1\] \(web, .*\) was prepared with data.max_word_bytes=24 "
                                        r"but train.streams\[0\] \(a\) with data.max_word_bytes=16"):
        check_same_settings(training_data(cfg))
    shutil.rmtree(tmp_path / "b")
    same = validate({"train": {"streams": [{"path": a}, {"path": _fake_dataset(tmp_path / "b")}]}}, "t")
    check_same_settings(training_data(same))


def test_each_stream_is_evaluated_apart_and_together():
    from pretrain.evaluation.validation import evaluate, evaluate_streams

    def forward(x, details):  # metrics.SUM_KEYS
        return {"nll_sum": x.sum(), "n_symbols": torch.tensor(float(x.numel())),
                "n_text_bytes": torch.tensor(float(x.numel())), "n_words": torch.tensor(0.0),
                "n_correct": torch.tensor(0.0)}

    loaders = {"a": [{"x": torch.ones(2)}], "b": [{"x": torch.full((2,), 3.0)}, {"x": torch.full((2,), 3.0)}]}
    values = evaluate_streams(forward, loaders, 5, torch.device("cpu"))
    assert values["val_loss/a"] == 1.0 and values["val_loss/b"] == 3.0
    assert values["val_loss"] == pytest.approx((2 + 12) / 6)
    assert evaluate(forward, loaders["b"], 5, torch.device("cpu"))["val_loss"] == values["val_loss/b"]


def test_data_keys_are_checked_with_the_key_named():
    from schema import ConfigError

    cfg = validate({"data": {"output": "s3://b/p"}, "train": {"cache_limit": "1.5mb"}}, "t")
    assert cfg.train.cache_limit == 1536 * 1024
    for raw, message in [
        ({"train": {"cache_limit": "10gb"}}, "train.cache_limit: got 10737418240 — expected no limit: data/shards "
                                             "is local"),
        ({"data": {"output": "s3://b/p"}, "train": {"cache_limit": "lots"}}, "train.cache_limit: got 'lots'"),
        ({"data": {"output": "elsewhere"}, "train": {"streams": [{"path": "a/x"}]}},
         "data.output: got 'elsewhere' — expected a/x, the first of train.streams"),
        ({"train": {"streams": [{"path": "a/x"}, {"path": "b/x"}]}}, "train.streams: got ['x', 'x']"),
        ({"train": {"streams": [{"path": "a", "proportion": 1}, {"path": "b"}]}}, "proportion on every stream"),
        ({"train": {"streams": [{"path": "a", "repeat": 2, "choose": 3}]}}, "one of proportion, repeat, choose"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            validate(raw, "t")


def test_s3_endpoint_variables_follow_each_other():
    from data_pipeline.data_cache import align_s3_endpoint

    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert align_s3_endpoint(env) == "http://127.0.0.1:9000" and env["S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    env = {"S3_ENDPOINT_URL": "http://minio:9000"}
    align_s3_endpoint(env)
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    with pytest.raises(ValueError, match="different servers"):
        align_s3_endpoint({"AWS_ENDPOINT_URL_S3": "http://a", "S3_ENDPOINT_URL": "http://b"})
    assert align_s3_endpoint({}) is None
