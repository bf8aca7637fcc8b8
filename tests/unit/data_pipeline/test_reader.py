"""The node cache a dataset is read through (data_pipeline/reader.py)."""
from data_pipeline.reader import node_cache


def test_node_cache_is_per_dataset_content_and_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDPOOL_SHARD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "train"
    data.mkdir()
    (data / "index.json").write_text('{"shards": [], "version": 2}')
    first = node_cache(data, "/runs/a")
    assert first == node_cache(data, "/runs/a") and first.parent == tmp_path / "cache"
    assert first.name.startswith("train-")
    # two jobs reading the same shards on one node: mosaicml-streaming refuses a shared live local folder
    assert node_cache(data, "/runs/b") != first and node_cache(data) != first
    (data / "index.json").write_text('{"shards": [], "version": 2, "again": 1}')  # prepared again in place
    assert node_cache(data, "/runs/a") != first
