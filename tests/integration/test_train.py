"""End-to-end training under torchrun with DeepSpeed on CPU (2 ranks, gloo): the
quickstart, ranks dying with their launcher. Exact resume after SIGKILLs is in test_fault.py; checkpoint
selection on hand-made folders and the Ray-free training path in tests/unit."""
import json
import re
import os
import subprocess
import sys

from cli_helpers import TINY, wordpool


def test_resume_from_a_missing_checkpoint_fails_before_launch(tmp_path):
    proc = wordpool("train", "--nproc", "2", f"train.run_dir={tmp_path}", "--resume", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr


def test_quickstart_end_to_end_short(tmp_path):
    """The README's main job, shortened: built-in corpus -> Ray prepare -> 2-rank ZeRO-2 -> eval -> sample."""
    out = tmp_path / "qs"
    proc = wordpool("quickstart", "--out", str(out), "train.steps=12", "train.checkpoint_every=6",
                    "train.eval_every=6", "train.eval_batches=2", "wandb.mode=offline", timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    corpus_bytes = sum(p.stat().st_size for p in (out / "corpus").iterdir())
    assert corpus_bytes >= 500_000
    assert (out / "shards" / "train" / "index.json").is_file()
    assert (out / "run" / "checkpoints" / "step_00000012" / "COMPLETE").is_file()
    assert list((out / "run" / "wandb").glob("offline-run-*"))
    assert "validation bits/byte" in proc.stdout and "sample (" in proc.stdout
    assert "over words with a letter or digit (whitespace-only words" in proc.stdout
    assert f"Outputs in {out}" in proc.stdout
    # a quiet console: wordpool's own lines only; Ray, streaming, DeepSpeed and warnings are in the logs
    library = re.compile(r"\bINFO\b|WARNING|\[W\d|^W\d{4}|DeepSpeed|deepspeed|streaming|Warning|raylet|"
                         r"Started a local Ray|Ray cluster|No handlers|torch\.distributed|Traceback")
    noisy = [line for line in (proc.stdout + proc.stderr).splitlines()
             if library.search(line) and not line.startswith("== ")]  # its own "== 3/4 train: … DeepSpeed ZeRO-2"
    assert not noisy, "\n".join(noisy[:20])
    assert list((out / "logs").glob("quickstart-*.log")) and list((out / "run" / "logs").glob("train-*.log"))
    evals = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    bpb = [r["val_bpb"] for r in evals if r["kind"] == "eval"]
    assert bpb[-1] < bpb[0]


def test_ranks_die_with_a_sigkilled_launcher(shards, tmp_path):
    """torchrun puts ranks in their own session; killing the job must not leave them training."""
    import signal
    import time

    run = tmp_path / "orphan"
    cmd = [sys.executable, "-m", "launcher.cli", "train", "--nproc", "2", f"data.output={shards}",
           f"train.run_dir={run}", *TINY, "train.steps=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (run / "metrics.jsonl").is_file() or '"kind": "train"' not in (run / "metrics.jsonl").read_text():
            assert time.time() < deadline and proc.poll() is None, "training did not start"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)

    def ranks_alive():
        out = subprocess.run(["pgrep", "-f", f"train.run_dir={run}"], capture_output=True, text=True).stdout
        return out.split()

    deadline = time.time() + 20
    while ranks_alive() and time.time() < deadline:
        time.sleep(0.5)
    assert not ranks_alive()


def test_jobs_starting_together_claim_distinct_streaming_prefixes(shards, tmp_path):
    """Streaming picks its shared-memory prefix by scanning then creating; concurrent jobs on one machine
    used to collide (FileExistsError '/000123_locals'). Four evaluations start at once: all must work."""
    script = ("import sys; from pretrain.training.loader import make_loader, sample_encoder; "
              "ds, loader = make_loader(sys.argv[1] + '/val', sample_encoder(sys.argv[1]), 2, False, 0, 1, 0, False); "
              "print(sum(1 for _ in loader))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(shards)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert int(out.strip().splitlines()[-1]) > 0
