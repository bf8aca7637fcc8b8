"""`wordpool quickstart`: the whole main job on a built-in corpus, no arguments, no network.

built-in corpus -> Ray Data prepare -> 2-rank DeepSpeed ZeRO-2 training with checkpoints and
scheduled evaluation -> final evaluation -> a sample continuation."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from schema import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
PROMPT = "The built-in function"


def quickstart(out: str, overrides: list[str] | None = None, nproc: int = 2) -> int:
    start = time.perf_counter()
    out = Path(out).resolve()
    shutil.rmtree(out / "run", ignore_errors=True)  # a quickstart always starts from scratch
    cfg = load_config(CONFIG, [f"data.output={out / 'shards'}", f"train.run_dir={out / 'run'}", *(overrides or [])])

    from data_pipeline.builtin_corpus import write_builtin_corpus
    from data_pipeline.job import run_prepare
    from launcher.console import quiet_libraries
    from launcher.report import print_prepare_summary

    quiet_libraries(out / "logs" / f"quickstart-{time.strftime('%Y%m%dT%H%M%S')}.log")

    corpus = write_builtin_corpus(out / "corpus")
    print(f"== 1/4 built-in corpus: {sum(p.stat().st_size for p in corpus) / 1e6:.2f} MB of Python's own "
          f"documentation in {out / 'corpus'}", flush=True)
    cfg.data.inputs = [str(p) for p in corpus]
    print("== 2/4 prepare: Ray Data job -> MDS shards", flush=True)
    stats = run_prepare(cfg.data, force=True)  # the corpus was just rewritten: a new job
    import ray

    ray.shutdown()  # free the cores for training
    print_prepare_summary(stats, cfg.data.output)

    config_file = out / "quickstart.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    print(f"== 3/4 train: {nproc} ranks, DeepSpeed ZeRO-{cfg.train.zero_stage}, {cfg.train.steps} steps "
          f"(config {config_file})", flush=True)
    from launcher.local_launch import launch_local

    code = launch_local(["train", "--config", str(config_file)], nproc, cfg.train.run_dir)
    if code != 0:
        return code  # launch_local printed the error line

    from pretrain.checkpoint.store import find_latest
    from pretrain.inference.loading import eval_checkpoint, generate_text, load_model
    from pretrain.run_dir import RunDir, read_jsonl

    run = RunDir(out / "run")
    latest = find_latest(run.checkpoints)
    print(f"== 4/4 evaluate and generate from {latest}", flush=True)
    loaded = load_model(latest)
    final = eval_checkpoint(latest, loaded=loaded)
    evals = read_jsonl(run.metrics)
    first = next(r for r in evals if r["kind"] == "eval" and r["step"] == 0)
    drop = 1 - final["val_bpb"] / first["val_bpb"]
    print(f"validation bits/byte: {first['val_bpb']:.3f} at step 0 -> {final['val_bpb']:.3f} at step "
          f"{final['step']} ({drop:.0%} lower); next-word accuracy {final['val_word_acc']:.1%} over words with a "
          f"letter or digit (whitespace-only words {final['val_word_acc_space']:.1%}, punctuation-only "
          f"{final['val_word_acc_punct']:.1%}, apart)")
    print(f"sample (temperature 0.8, top-k 40): {PROMPT}", end="", flush=True)
    generate_text(latest, PROMPT, 40, temperature=0.8, top_k=40, on_word=lambda w: print(w, end="", flush=True),
                  loaded=loaded)
    print()
    print(f"done in {time.perf_counter() - start:.0f} s. Outputs in {out}:\n"
          f"  corpus/       the built-in text\n"
          f"  shards/       MDS train/val shards and stats.json\n"
          f"  run/          checkpoints/, metrics.jsonl, wandb/ (offline; `wandb sync` to upload), logs/ (the ranks')\n"
          f"  logs/         what the libraries printed; `wordpool -v quickstart` shows it on the console\n"
          f"  quickstart.yaml  the full config; rerun training with "
          f"`wordpool train --config {config_file} --nproc {nproc} --resume auto`")
    return 0
