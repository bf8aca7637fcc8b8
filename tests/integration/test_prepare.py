import json
import os
import subprocess
import sys
import time

import numpy as np

from schema import DataConfig
from data_pipeline.job import run_prepare
from data_pipeline.reader import iter_samples, rebuild_sources
from texts import CHINESE, GERMAN, write_text


def _prepare(tmp_path, inputs, **kw):
    cfg = DataConfig(inputs=[str(p) for p in inputs], output=str(tmp_path / "out"), **kw)
    return run_prepare(cfg), tmp_path / "out"


def test_prepare_and_rebuild_byte_for_byte(ray_cluster, english, tmp_path):
    (tmp_path / "src").mkdir()
    inputs = [english.write_prose(tmp_path / "src" / "english.txt", 200_000),
              write_text(tmp_path / "src" / "chinese.txt", CHINESE)]
    stats, out = _prepare(tmp_path, inputs, words_per_sample=128, val_fraction=0.1)
    for split in ("train", "val"):
        assert (out / split / "index.json").is_file()
        assert stats["splits"][split]["samples"] > 0
    assert list((out / "train").glob("unit-*/shard.*.mds.zstd"))
    assert stats["rejected_count"] == 0
    assert stats["bytes"] == stats["input_bytes"] == sum(p.stat().st_size for p in inputs)
    rebuilt = rebuild_sources(out)
    for p in inputs:
        assert rebuilt[str(p)] == p.read_bytes()
    # every sample is full except the last of each write task, and word counts add up
    words = 0
    for split in ("train", "val"):
        for sample in iter_samples(out / split):
            lens = np.asarray(sample["word_lens"])
            assert len(lens) <= 128 and int(lens.sum()) == len(sample["bytes"])
            words += int((lens > 0).sum())
    assert words == stats["words"]


def test_bad_input_corpus_keeps_every_valid_document(ray_cluster, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text("A good paragraph.\n\nAnother good one.\n")
    (src / "mixed.jsonl").write_bytes(b"\n".join([
        b'{"text": "valid json doc"}', b'{"text": ', b'{"body": "x"}', b'{"text": "  "}',
        b'{"text": "\xff\xfe"}', b'{"text": "second valid"}']) + b"\n")
    (src / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (src / "empty.txt").write_bytes(b"")
    # a 10 MB line without spaces is valid text: kept, its long word cut by the cap
    (src / "longline.txt").write_bytes(b"x" * 10_000_000 + b"\n")
    stats, out = _prepare(tmp_path, sorted(src.iterdir()), max_word_bytes=16, words_per_sample=512)

    by_file = {}
    for r in stats["rejected"]:
        by_file.setdefault(os.path.basename(r["source"]), []).append((r["line"], r["reason"]))
    assert [line for line, _ in by_file["mixed.jsonl"]] == [2, 3, 4, 5]
    assert by_file["binary.txt"][0][1].startswith("binary file")
    assert by_file["empty.txt"] == [(1, "empty document")]
    assert stats["rejected_count"] == 6
    assert stats["words_cut"] == 1
    # bytes in = bytes in shards + JSON envelopes + bytes rejected
    assert stats["input_bytes"] == stats["bytes"] + stats["markup_bytes"] + stats["rejected_bytes"]
    saved = json.loads((out / "stats.json").read_text())
    assert saved["rejected_count"] == 6

    rebuilt = rebuild_sources(out)
    assert rebuilt[str(src / "good.txt")] == (src / "good.txt").read_bytes()
    assert rebuilt[str(src / "longline.txt")] == (src / "longline.txt").read_bytes()
    assert rebuilt[str(src / "mixed.jsonl")] == b"valid json docsecond valid"


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_misspelled_config_key_fails_fast(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  max_word_byte: 12\n")
    start = time.perf_counter()
    proc = _cli("prepare", "--config", str(cfg), "--input", "x.txt")
    assert time.perf_counter() - start < 5
    assert proc.returncode == 2
    assert "data.max_word_byte" in proc.stderr and "unknown key" in proc.stderr


def test_cli_prepare_end_to_end(ray_cluster, english, tmp_path):
    # the CLI process joins the test session's Ray cluster, as a user joins a running cluster
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "cli"
    src = write_text(tmp_path / "mixed.txt", "".join(english.lines(600)) + GERMAN.replace("\n\n", "\n"))
    lines = src.read_text(encoding="utf-8").splitlines()
    proc = _cli("prepare", "--input", str(src), "--output", str(out),
                "--ray-address", address, "data.doc_split=line", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rejected" in proc.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents"] == len(lines) > 600 and stats["rejected_count"] == 0
    assert stats["bytes"] == src.stat().st_size
