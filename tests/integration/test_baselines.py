"""The byte and BPE baselines through the same commands as the word-pooled model: `wordpool train`
(DeepSpeed, the trainer's evaluation with the shared word scorer), `wordpool eval`, `wordpool generate`,
and `wordpool bench train` over all three models."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schema import DataConfig
from data_pipeline.job import run_prepare

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.max_word_bytes=16",
            "train.micro_batch_size=4", "train.warmup_steps=1", "train.log_every=1", "train.steps=3",
            "train.eval_every=3", "train.eval_batches=2", "train.checkpoint_every=3", "wandb.mode=disabled"]


def wordpool(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "RAY_DEDUP_LOGS": "0"})


@pytest.fixture(scope="module")
def token_shards(ray_cluster, english_lines_file, tmp_path_factory):
    out = {}
    for tokenizer in ("bytes", "bpe"):
        folder = tmp_path_factory.mktemp(tokenizer)
        run_prepare(DataConfig(inputs=[str(english_lines_file)], output=str(folder), doc_split="line",
                               max_word_bytes=16, tokenizer=tokenizer, tokens_per_sample=64, bpe_vocab_size=300,
                               val_fraction=0.1))
        out[tokenizer] = folder
    return out


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_baseline_trains_evaluates_and_generates(token_shards, tmp_path, kind):
    run = tmp_path / "run"
    proc = wordpool("train", "--nproc", "1", f"model.kind={kind}", f"data.output={token_shards[kind]}",
                    f"train.run_dir={run}", *BACKBONE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    final = evals[-1]
    assert final["step"] == 3 and 0 < final["val_bpb"] < evals[0]["val_bpb"]
    assert final["val_words"] > 0 and 0 <= final["val_word_acc"] <= 1
    names = ["0", "1-10", "11-100", ">100"]
    assert sum(final[f"val_words_freq_{n}"] for n in names) == final["val_words"]
    # the saved config carries the vocabulary the trainer read from the shards
    ckpt = run / "checkpoints" / "step_00000003"
    saved = json.loads((ckpt / "wordpool_config.json").read_text())["model"]
    assert saved["kind"] == kind and saved["vocab_size"] == (257 if kind == "bytes" else 300)

    ev = wordpool("eval", "--checkpoint", str(ckpt), "--max-batches", "2")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "val bits/byte" in ev.stdout and "by training frequency: 0:" in ev.stdout
    gap = wordpool("eval", "--checkpoint", str(ckpt), "--max-batches", "1", "--mean-context-gap")
    assert gap.returncode != 0 and "measures a word-pooled model's decoder" in gap.stdout + gap.stderr
    gen = wordpool("generate", "--checkpoint", str(ckpt), "--prompt", "The food was", "--max-words", "4")
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert gen.stdout.startswith("The food was") and len(gen.stdout.rstrip("\n")) > len("The food was")


def test_baseline_refuses_shards_of_another_tokenizer(token_shards, tmp_path):
    proc = wordpool("train", "--nproc", "1", "model.kind=bpe", f"data.output={token_shards['bytes']}",
                    f"train.run_dir={tmp_path}", *BACKBONE)
    assert proc.returncode != 0
    assert "model.kind=bpe trains on data.tokenizer=bpe" in proc.stderr


def test_bench_train_reports_three_models(ray_cluster, english, tmp_path):
    from schema import load_config
    from pretrain.training.throughput_bench import prepare_data

    slice_file = tmp_path / "slice.txt"
    english.write_prose(slice_file, 60_000)
    settings = ["data.words_per_sample=32", "data.bpe_vocab_size=300", "data.max_word_bytes=16",
                *BACKBONE[:3], "model.encoder.d_model=16", "model.decoder.d_model=16",
                "train.micro_batch_size=2"]
    # prepared here on the session's Ray cluster: the command then finds every unit done and starts no Ray
    prepare_data(load_config(None, settings), [str(slice_file)], tmp_path / "work")
    out = tmp_path / "bench.json"
    proc = wordpool("bench", "train", "--input", str(slice_file), "--work-dir", str(tmp_path / "work"),
                    "--steps", "1", "--warmup", "1", "--json", str(out), "--peak-flops", "1e12", *settings,
                    timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"word_pooled", "word_pooled_packed", "word_pooled_padded", "bpe", "bytes"}
    for r in rows.values():
        assert r["text_bytes_per_s"] > 0 and r["tokens_per_s"] > 0 and r["flops_per_s"] > 0 and 0 < r["mfu"] < 1
    assert rows["word_pooled"]["params"] == rows["word_pooled_padded"]["params"]
    assert set(result["ratios"]) == {"word_pooled/bpe", "word_pooled/bytes", "packed/padded"}
    assert "word_pooled/bpe text bytes/s" in proc.stdout
