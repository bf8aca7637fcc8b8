"""`wordpool compare` end to end on a tiny slice of text: three tokenizations, FLOP-matched step counts,
an LR sweep, a second seed, the shared scorer, report.md / results.json / plots, and a rerun that skips
the finished runs. Lean on purpose (one rank, a few steps, a 2-LR sweep for the word-pooled model only): 7 trainings."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from compare_config import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def test_compare_end_to_end(english, tmp_path):
    lines = english.lines(400)
    text = tmp_path / "slice.txt"
    text.write_text("".join(lines))
    out = tmp_path / "compare"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(text, out)))
    cmd = [sys.executable, "-m", "launcher.cli", "compare", "--config", str(config)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert set(models) == {"word_pooled", "bytes", "bpe"}
    budget = 5.0e8
    for kind, m in models.items():
        assert [row["lr"] for row in m["sweep"]] == ([3e-3, 1e-2] if kind == "word_pooled" else [1e-2])
        assert m["best_lr"] == min(m["sweep"], key=lambda row: row["val_bpb"])["lr"]
        assert [r["seed"] for r in m["runs"]] == [0, 1] and {r["lr"] for r in m["runs"]} == {m["best_lr"]}
        # equal compute, not equal steps: each model stops just under the budget it was given
        assert m["steps"] == max(1, int(budget // m["flops_per_step"]))
        for r in m["runs"]:
            assert 0 < r["val_bpb"] < 20 and 0 <= r["val_word_acc"] <= 1
            assert r["curve"][0]["step"] == 0 and r["curve"][-1]["step"] == m["steps"]
            assert r["bytes_per_s"] > 0
            names = ("0", "1-10", "11-100", ">100")
            assert sum(r[f"val_words_freq_{n}"] for n in names) == r["val_words"]
        assert m["summary"]["val_bpb"]["n"] == 2
        # the word model's decoder is measured without its backbone context; the baselines have none
        assert m["summary"]["mean_context_gap"]["n"] == (2 if kind == "word_pooled" else 0)
        assert all(0 <= r["val_word_acc_space"] <= 1 and r["val_words_space"] > 0 for r in m["runs"])
    # the whole val split is scored for every model: the same text, so (almost) the same words
    val_words = [m["runs"][0]["val_words"] for m in models.values()]
    assert max(val_words) <= 1.05 * min(val_words), val_words
    assert results["data"]["words"]["bytes_per_word"] > 1 and results["data"]["bpe"]["bytes_per_token"] > 1

    report = (out / "report.md").read_text()
    for needle in ("| word-pooled |", "| BPE |", "| bytes |", "Learning-rate sweep", "bytes/word", "mean-context gap",
                   "acc, freq 0", "val_bpb_vs_flops.png", "accuracy_by_frequency.png", "name: tiny-test"):
        assert needle in report, needle
    for png in ("val_bpb_vs_flops.png", "accuracy_by_frequency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resumable: a rerun trains nothing and writes the same results
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train:" not in again.stdout and again.stdout.count("done already") == 7
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["models"]["bpe"]["summary"]["val_bpb"] == models["bpe"]["summary"]["val_bpb"]

    # a run that fails is recorded with its reason, and the others finish: a fault planted at the last step
    # of the model(s) with the most steps fails exactly those runs
    most = max(m["steps"] for m in models.values())
    failing = {kind for kind, m in models.items() if m["steps"] == most}
    (out / "runs").rename(out / "runs-first")
    faulty = subprocess.run([*cmd, "seeds=1"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**env, "WORDPOOL_FAULT_RAISE_AT": f"{most}:0"})
    assert faulty.returncode == 0, faulty.stdout[-3000:] + faulty.stderr[-3000:]
    recorded = json.loads((out / "results.json").read_text())["models"]
    for kind, m in recorded.items():
        if kind in failing:
            assert m["runs"] == [] and len(m["failed_runs"]) == len(m["sweep"])
            assert all(f"planted fault at step {most} on rank 0" in f["reason"] for f in m["failed_runs"])
        else:
            assert m["failed_runs"] == [] and len(m["runs"]) == 1 and m["runs"][0]["val_bpb"] < 20
    report = (out / "report.md").read_text()
    assert "failed: " in report and "every run failed" in report
