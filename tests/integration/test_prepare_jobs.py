"""The prepare job at corpus scale: three tokenizations, resumable units, change detection,
dataset decomposition, word frequencies and plots."""
import hashlib
import os
import subprocess
import sys

import pytest

from schema import DataConfig
from data_pipeline.job import run_prepare
from data_pipeline.reader import dataset_dirs, document_splits, iter_samples, rebuild_sources
from data_pipeline.segment import split_words
from data_pipeline.shard_format import decomposition
from data_pipeline.stats import read_word_freq
from texts import FOREIGN, GERMAN, write_text


@pytest.fixture(scope="module")
def english_three_ways(ray_cluster, english, tmp_path_factory):
    src = str(english.write_prose(tmp_path_factory.mktemp("src") / "english.txt", 300_000))
    out = {}
    for tok in ("words", "bytes", "bpe"):
        folder = tmp_path_factory.mktemp(tok)
        stats = run_prepare(DataConfig(inputs=[src], output=str(folder), tokenizer=tok, bpe_vocab_size=2000,
                                       tokens_per_sample=512, words_per_sample=128, val_fraction=0.1))
        out[tok] = (folder, stats)
    return src, out


def test_three_tokenizations_share_documents_and_split(english_three_ways):
    src, runs = english_three_ways
    splits = {tok: document_splits(folder) for tok, (folder, _) in runs.items()}
    assert splits["words"] == splits["bytes"] == splits["bpe"]
    assert set(splits["words"].values()) == {"train", "val"}
    original = open(src, "rb").read()
    for tok, (folder, stats) in runs.items():
        assert rebuild_sources(folder)[src] == original, tok
        assert stats["bytes"] == len(original) and stats["words"] == runs["words"][1]["words"]
    assert runs["bytes"][1]["bytes_per_token"] == 1.0
    assert 2.0 < runs["bpe"][1]["bytes_per_token"] < 6.0
    assert 3.5 < runs["words"][1]["bytes_per_word"] < 6.5
    assert (runs["bpe"][0] / "tokenizer.json").is_file()


def test_word_frequencies_and_histograms(english_three_ways):
    folder, stats = english_three_ways[1]["words"]
    freq = read_word_freq(folder)
    assert sum(freq.values()) == stats["splits"]["train"]["words"]
    top = max(freq, key=freq.get)
    assert top in {b" the", b",", b" I", b" and", b"\n"} or freq[top] > 1000
    assert sum(stats["word_bytes_hist"]) == stats["words"]
    assert (folder / "histograms.png").stat().st_size > 5000


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _content(folder):
    """Hash of every shard and index file of the prepared splits, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for split in ("train", "val") for p in sorted((folder / split).rglob("*")) if p.is_file()}


def test_killed_driver_rerun_gives_identical_shards(ray_cluster, english, tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    inputs = [str(english.write_lines(sources / "en.txt", 1000))] + [  # 4 files, 4 units
        str(write_text(sources / f"{lang}.txt", text)) for lang, text in sorted(FOREIGN.items())]
    address = ray_cluster.get_runtime_context().gcs_address

    def cfg(out, **kw):
        return DataConfig(inputs=inputs, output=str(out), doc_split="line", words_per_sample=64, **kw)

    run_prepare(cfg(tmp_path / "full"))
    cut = tmp_path / "cut"
    # a driver process on the same cluster, killed (with the task of unit 2) after unit 2 wrote its shards
    killed = _cli("prepare", "--input", *inputs, "--output", str(cut), "--ray-address", address,
                  "data.doc_split=line", "data.words_per_sample=64", env={"WORDPOOL_FAULT_KILL_DRIVER_AT_UNIT": "2"})
    assert killed.returncode != 0
    done = list((cut / "_units").glob("unit-*.json"))
    assert len(done) < len(inputs) and not (cut / "_units" / "unit-00002.json").exists()
    assert list((cut / "train").glob("unit-00002/shard.*"))  # its shards were written, never merged
    assert not (cut / "stats.json").exists()

    stats = run_prepare(cfg(cut))
    assert stats["units_skipped"] == len(done)
    assert _content(cut) == _content(tmp_path / "full")

    changed = _cli("prepare", "--input", *inputs, "--output", str(cut), "data.doc_split=line",
                   "data.words_per_sample=64", "data.max_word_bytes=16")
    assert changed.returncode == 2 and "data.max_word_bytes" in changed.stderr and "--force" in changed.stderr
    assert run_prepare(cfg(cut, max_word_bytes=16), force=True)["config"]["max_word_bytes"] == 16


def test_dataset_decomposition_buckets(ray_cluster, tmp_path):
    src = str(write_text(tmp_path.parent / f"{tmp_path.name}-de.txt", GERMAN.replace("\n\n", "\n")))  # one document
    words = len(split_words(open(src, encoding="utf-8").read(), 32)) + 1  # + its end marker
    stats = run_prepare(DataConfig(inputs=[src], output=str(tmp_path), doc_split="paragraph", packing="decompose",
                                   words_per_sample=256, val_fraction=0.0))
    buckets = dataset_dirs(tmp_path, "train")
    expected = [b - a for a, b in decomposition(words, 256)]
    assert len(expected) > 2 and len(buckets) == len(set(expected))
    counts = {}
    for bucket in buckets:
        length = int(bucket.name.removeprefix("len-"))
        assert length & (length - 1) == 0 and length <= 256
        for sample in iter_samples(bucket):
            assert len(sample["word_lens"]) == length and len(sample["docs"]) == 1  # one document, no mixing
            counts[length] = counts.get(length, 0) + 1
    assert sorted(counts.items()) == sorted((n, expected.count(n)) for n in set(expected))
    assert rebuild_sources(tmp_path)[src] == open(src, "rb").read()
    assert stats["splits"]["train"]["documents"] == 1
