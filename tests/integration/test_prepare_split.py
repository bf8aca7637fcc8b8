"""A big input cut into several units (data.unit_bytes): the same documents, split and accounts as the
whole file, every byte back, and each part resumable on its own."""
import json

from schema import DataConfig
from data_pipeline.job import run_prepare
from data_pipeline.reader import rebuild_documents, rebuild_sources


def _splits_by_offset(root):
    return {(source, offset): split for split in ("train", "val")
            for (source, _), (offset, _) in rebuild_documents(root, (split,)).items()}


def test_file_cut_into_units_equals_the_whole(ray_cluster, english, tmp_path):
    src = english.write_prose(tmp_path / "big.txt", 120_000)
    bad = tmp_path / "bad.jsonl"  # a rejected record late in a cut file keeps its file line number
    bad.write_bytes(b"".join(b'{"text": "record %d"}\n' % i for i in range(2000)) + b'{"text": \n')
    inputs = [str(src), str(bad)]

    def cfg(out, **kw):
        return DataConfig(inputs=inputs, output=str(tmp_path / out), words_per_sample=64, val_fraction=0.2, **kw)

    whole = run_prepare(cfg("whole"))
    cut = run_prepare(cfg("cut", unit_bytes=20_000))
    assert whole["units"] == 2 and cut["units"] > 6
    assert cut["inputs"] == whole["inputs"] == {p: (tmp_path / p).stat().st_size for p in inputs}
    for key in ("documents", "words", "bytes", "markup_bytes", "rejected_bytes"):
        assert cut[key] == whole[key], key
    assert cut["input_bytes"] == cut["bytes"] + cut["markup_bytes"] + cut["rejected_bytes"]
    last_line = bad.stat().st_size - 10
    assert [(r["source"], r["line"], r["offset"]) for r in cut["rejected"]] == [(str(bad), 2001, last_line)]
    assert rebuild_sources(tmp_path / "cut")[str(src)] == src.read_bytes()
    splits = _splits_by_offset(tmp_path / "cut")  # ordinals differ (a part numbers from its start), offsets not
    assert splits == _splits_by_offset(tmp_path / "whole") and set(splits.values()) == {"train", "val"}

    # a part whose marker is gone is prepared again, alone, into the same shards
    markers = sorted((tmp_path / "cut" / "_units").glob("unit-*[0-9].json"))
    part = json.loads(markers[1].read_text())
    assert part["part"]["kind"] == "bytes" and part["part"]["start"] > 0
    shards = {p: p.read_bytes() for p in (tmp_path / "cut" / "train" / "unit-00001").iterdir()}
    markers[1].unlink()
    again = run_prepare(cfg("cut", unit_bytes=20_000))
    assert again["units_skipped"] == cut["units"] - 1
    assert {p: p.read_bytes() for p in (tmp_path / "cut" / "train" / "unit-00001").iterdir()} == shards
    assert again["documents"] == cut["documents"]
