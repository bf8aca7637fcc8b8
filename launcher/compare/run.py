"""`wordpool compare`: the word-pooled model against its byte and BPE baselines at equal training compute.

1. Prepare the three tokenizations of the same documents and split (launcher/compare/tokenizations.py).
2. Measure each model's useful FLOPs per optimizer step on real training batches (`model.train_flops`,
   the trainer's own counter) and give it steps = budget / FLOPs per step: equal compute, not equal steps.
3. LR sweep on seed 0 for each model; the best LR by final val bits/byte then runs on the other seeds.
   Every run is the real `wordpool train` in a subprocess, then `wordpool eval` (the same scorer for all
   models) on its final checkpoint.
4. results.json, report.md and plots (launcher/compare/report.py).

Resumable: a run whose folder holds its final checkpoint and `final_eval.json` is not run again; a run
cut short resumes from its newest checkpoint (`--resume auto`).
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from launcher.compare.config import CompareConfig
from launcher.compare.tokenizations import bpe_vocab, prepare_data
from pretrain.run_dir import RunDir, read_jsonl, write_json_atomic
from schema import TOKENIZER_OF, WordpoolConfig, validate

FINAL_EVAL = "final_eval.json"
RUN_CONFIG = "run_config.yaml"


@dataclass
class Run:
    name: str  # the model's entry: a model kind, or a word-pooled variant's name
    lr: float
    seed: int
    steps: int
    run_dir: Path
    config: WordpoolConfig

    @property
    def label(self) -> str:
        return f"{self.name} lr={self.lr:g} seed={self.seed}"


# ---------------------------------------------------------------------------------------------- runs

def base_config(cfg: CompareConfig, name: str, data_dir: Path, per_sample: int) -> WordpoolConfig:
    """The `wordpool train` config of one model entry, before steps/lr/seed are known (the model's word
    size and sequence length follow from the data section)."""
    kind = cfg.models.entries()[name]
    spec = cfg.models.spec(name)
    model = {"kind": kind, **cfg.backbone.model_dump(), "dropout": spec.dropout}
    if kind == "word_pooled":
        model.update(spec.model_fields_for())
    data = cfg.data.model_copy(update={"output": str(data_dir), "tokenizer": TOKENIZER_OF[kind],
                                       "tokens_per_sample": per_sample, "bpe_vocab_size": bpe_vocab(cfg)})
    raw = {"data": data.model_dump(), "model": model, "train": cfg.train.model_dump(mode="json"),
           "wandb": {"mode": "disabled"}}
    return validate(raw, f"compare {cfg.name} / {name}")


def measure_flops_per_step(wcfg: WordpoolConfig, n_batches: int, nproc: int) -> tuple[float, int]:
    """Useful training FLOPs of one optimizer step (all ranks) on real training batches, and the parameter
    count, from the trainer's own counter (`model.train_flops`)."""
    import torch

    from pretrain.training.throughput_bench import read_batches
    from pretrain.models import build_model
    from pretrain.training.preflight import check_shards

    wcfg = check_shards(wcfg)[0]
    torch.manual_seed(0)
    model = build_model(wcfg.model)
    batches = read_batches(Path(wcfg.data.output), wcfg, n_batches)
    per_micro_batch = statistics.fmean(model.train_flops(**b) for b in batches)
    params = sum(p.numel() for p in model.parameters())
    return per_micro_batch * wcfg.train.grad_accum * nproc, params


def make_run(cfg: CompareConfig, base: WordpoolConfig, name: str, lr: float, seed: int, steps: int,
             runs_dir: Path) -> Run:
    run_dir = (runs_dir / name / f"lr{lr:g}-seed{seed}").resolve()
    b = cfg.budget
    every = max(1, steps // b.evals)
    train = base.train.model_copy(update={
        "run_dir": str(run_dir), "steps": steps, "lr": lr, "seed": seed,
        "warmup_steps": min(steps - 1, round(b.warmup_fraction * steps)), "eval_every": every,
        "checkpoint_every": steps, "eval_batches": b.curve_eval_batches, "log_every": max(1, steps // 50)})
    return Run(name, lr, seed, steps, run_dir, base.model_copy(update={"train": train}))


def _final_checkpoint(run: Run) -> Path:
    from pretrain.checkpoint.store import is_complete

    folder = RunDir(run.run_dir).checkpoint(run.steps)
    return folder if is_complete(folder) else None


def _subprocess_env(cfg: CompareConfig) -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("DS_ACCELERATOR", "cpu" if not _has_gpu() else "cuda")
    # concurrent runs share the cores: without this each would start one thread per core
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (cfg.parallel * cfg.nproc)))
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def _single_rank_env(env: dict[str, str]) -> dict[str, str]:
    """One rank needs no torchrun agent: `wordpool train` runs in place when it finds the rank variables
    torchrun would set (saves a Python + torch start per run, which dominates short CPU runs)."""
    from pretrain.training.distributed import single_rank_env

    return {**env, **single_rank_env()}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class RunFailed(RuntimeError):
    """A run's `wordpool train` failed: a result of the sweep (a diverging LR) as often as a bug."""


def _cli(args: list[str], log: Path, env: dict[str, str]) -> None:
    with open(log, "a") as f:
        f.write(f"$ wordpool {' '.join(args)}\n")
        f.flush()
        code = subprocess.call([sys.executable, "-m", "launcher.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                               env=env)
    if code != 0:
        raise RunFailed(_error_line(log) or f"`wordpool {' '.join(args)}` failed with exit code {code}")


def _error_line(log: Path) -> str | None:
    """The last `error:` line `wordpool train` printed (its one-line account of a failure), else the last
    exception in the log (a single rank runs in place, without a launcher to print that line)."""
    from launcher.failure_report import last_error_in_log

    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if " error: " in line]
    return lines[-1].split(" error: ", 1)[1] if lines else last_error_in_log(log)


def skipped_steps(run_dir: Path) -> int:
    """Updates the run's guard skipped (the last train record's running total; 0 if it logged none)."""
    train = [r for r in read_jsonl(RunDir(run_dir).metrics) if r["kind"] == "train"]
    return int(train[-1].get("skipped_steps", 0)) if train else 0


_EVAL_LOCK = threading.Lock()
def execute(run: Run, cfg: CompareConfig, env: dict[str, str], say) -> dict:
    """Train (or resume) and evaluate one run; returns its final eval record. Skips what is done."""
    done = run.run_dir / FINAL_EVAL
    config_text = yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False)
    saved = run.run_dir / RUN_CONFIG
    if saved.is_file() and saved.read_text() != config_text:
        raise ValueError(f"{run.run_dir} holds a run with another config ({saved}): remove it or use another --out")
    if done.is_file():
        say(f"done already: {run.label}")
        return json.loads(done.read_text())
    run.run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(config_text)
    log = run.run_dir / "compare.log"
    start = time.perf_counter()
    if _final_checkpoint(run) is None:
        say(f"train: {run.label}, {run.steps} steps")
        try:
            _cli(["train", "--config", str(saved), "--nproc", str(cfg.nproc), "--resume", "auto"], log,
                 _single_rank_env(env) if cfg.nproc == 1 else env)
        except RunFailed as exc:  # recorded, and the other runs go on; a rerun keeps the verdict
            failed = {"failed": str(exc), "skipped_steps": skipped_steps(run.run_dir), "log": str(log)}
            write_json_atomic(done, failed)
            say(f"failed: {run.label}: {exc} (see {log}; remove {run.run_dir} to run it again)")
            return failed
    train_seconds = time.perf_counter() - start
    checkpoint = _final_checkpoint(run)
    if checkpoint is None:
        raise RuntimeError(f"{run.label}: training ended without its final checkpoint; see {log}")
    # `wordpool eval`'s own function, in this process (one at a time): the same scorer for every model, and
    # no second Python + torch start per run; it appends its record to the run's metrics.jsonl as the CLI does
    from pretrain.inference.loading import eval_checkpoint

    with _EVAL_LOCK:
        final = eval_checkpoint(checkpoint, None, cfg.budget.final_eval_batches,
                                mean_context_gap=run.config.model.kind == "word_pooled")
    final["train_wall_seconds"] = train_seconds
    final["skipped_steps"] = skipped_steps(run.run_dir)
    write_json_atomic(done, final)  # whole or absent: it marks the run done
    say(f"finished: {run.label}: val bits/byte {final['val_bpb']:.4f}, next-word acc {final['val_word_acc']:.4f} "
        f"({time.perf_counter() - start:.0f} s)")
    return final


def execute_all(runs: list[Run], cfg: CompareConfig, say) -> list[dict]:
    env = _subprocess_env(cfg)
    with ThreadPoolExecutor(max_workers=cfg.parallel) as pool:
        return list(pool.map(lambda r: execute(r, cfg, env, say), runs))


# ---------------------------------------------------------------------------------------------- summary

def run_summary(run: Run, final: dict) -> dict:
    """Final metrics, the curve (val bits/byte vs training FLOPs) and throughput of one run."""
    records = read_jsonl(RunDir(run.run_dir).metrics)
    train = {r["step"]: r for r in records if r["kind"] == "train"}  # a resumed run logs a step twice: keep the last
    curve = {r["step"]: r for r in records if r["kind"] == "eval" and "checkpoint" not in r}
    timed = [r for step, r in sorted(train.items()) if step > 1] or list(train.values())  # step 1 pays warm-up
    last = train[max(train)] if train else {}
    metrics = {k: v for k, v in final.items() if k.startswith("val_") or k == "mean_context_gap"}
    return {
        "name": run.name, "kind": run.config.model.kind, "lr": run.lr, "seed": run.seed, "steps": run.steps,
        "run_dir": str(run.run_dir),
        **metrics, "skipped_steps": final.get("skipped_steps", 0),
        "train_flops": last.get("train_flops"), "train_text_bytes": last.get("train_text_bytes"),
        "bytes_per_s": statistics.median(r["bytes_per_s"] for r in timed) if timed else None,
        "flops_per_s": statistics.median(r["flops_per_s"] for r in timed) if timed else None,
        "train_wall_seconds": final.get("train_wall_seconds"),
        "curve": [{"step": s, "train_flops": r.get("train_flops", 0.0), "val_bpb": r["val_bpb"]}
                  for s, r in sorted(curve.items())],
    }


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


SUMMARY_KEYS = ("val_bpb", "val_word_acc", "val_word_acc_freq_0", "val_word_acc_freq_1-10",
                "val_word_acc_freq_11-100", "val_word_acc_freq_>100", "val_word_acc_space", "val_word_acc_punct",
                "mean_context_gap", "bytes_per_s", "flops_per_s", "train_flops")


def _bpb_or_inf(final: dict) -> float:
    value = final.get("val_bpb")
    return value if value is not None and math.isfinite(value) else math.inf


def sweep_lrs(cfg: CompareConfig, plan: dict, runs_dir: Path, say) -> tuple[dict[str, list[Run]], dict[int, dict]]:
    """Seed 0 at every model's LRs; then, while a model's best LR is at the edge of its grid (2+ LRs), the
    next LR past that edge (x2 or /2), at most cfg.widen_lrs times per model: each best is then interior or
    the report shows the edge. Returns each model's runs sorted by LR and every run's final eval."""
    sweep = {n: [make_run(cfg, p["base"], n, lr, 0, p["steps"], runs_dir) for lr in cfg.models.lrs(n)]
             for n, p in plan.items()}
    todo = [r for n in plan for r in sweep[n]]
    say(f"LR sweep: {len(todo)} runs on seed 0")
    finals: dict[int, dict] = {}
    for widening in range(cfg.widen_lrs + 1):
        finals.update(zip([id(r) for r in todo], execute_all(todo, cfg, say)))
        if widening == cfg.widen_lrs:
            break
        todo = []
        for name, runs in sweep.items():
            if len(runs) < 2:
                continue  # one LR: chosen by hand (e.g. the decade below's best at a ladder's top rung)
            best = min(runs, key=lambda r: _bpb_or_inf(finals[id(r)]))
            lowest, highest = min(r.lr for r in runs), max(r.lr for r in runs)
            if best.lr in (lowest, highest):
                lr = best.lr / 2 if best.lr == lowest else best.lr * 2
                say(f"{name}: best lr {best.lr:g} is at the edge of its grid; adding {lr:g}")
                todo.append(make_run(cfg, plan[name]["base"], name, lr, 0, plan[name]["steps"], runs_dir))
                runs.append(todo[-1])
        if not todo:
            break
    for runs in sweep.values():
        runs.sort(key=lambda r: r.lr)
    return sweep, finals


# ---------------------------------------------------------------------------------------------- command

def compare(cfg: CompareConfig, out: Path | None = None, log=print) -> dict:
    out = Path(out or cfg.out_dir())
    out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            log(f"[compare {time.strftime('%H:%M:%S')}] {text}")

    wall = time.perf_counter()
    say(f"preparing the three tokenizations under {out / 'data'}")
    folders, stats, per_sample = prepare_data(cfg, out)
    _stop_ray()  # the local Ray cluster of the prepare jobs would hold memory and cores during training
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.parallel))  # final evals run beside trainings
    entries = cfg.models.entries()
    plan = {}
    for name, kind in entries.items():
        base = base_config(cfg, name, folders[TOKENIZER_OF[kind]], per_sample[kind])
        flops_per_step, params = measure_flops_per_step(base, cfg.budget.flop_estimate_batches, cfg.nproc)
        steps = max(1, int(cfg.budget.train_flops // flops_per_step))
        plan[name] = {"base": base, "flops_per_step": flops_per_step, "params": params, "steps": steps}
        say(f"{name}: {params:,} parameters, {flops_per_step:.3e} FLOPs/step -> {steps} steps")

    runs_dir = out / "runs"
    sweep, sweep_finals = sweep_lrs(cfg, plan, runs_dir, say)
    best = {}
    for name in entries:
        best[name] = min(sweep[name], key=lambda r: _bpb_or_inf(sweep_finals[id(r)]))
        say(f"{name}: best lr {best[name].lr:g}")
    # a model whose every LR failed has no best LR to repeat
    seed_runs = [make_run(cfg, plan[n]["base"], n, best[n].lr, seed, plan[n]["steps"], runs_dir)
                 for n in entries for seed in range(1, cfg.models.seeds(n, cfg.seeds)) if "failed" not in sweep_finals[id(best[n])]]
    if seed_runs:
        say(f"seeds: {len(seed_runs)} runs with the best LRs")
    seed_finals = execute_all(seed_runs, cfg, say)

    models = {}
    for name, kind in entries.items():
        chosen = [best[name]] + [r for r in seed_runs if r.name == name]
        finals = [sweep_finals[id(best[name])]] + [f for r, f in zip(seed_runs, seed_finals) if r.name == name]
        runs = [run_summary(r, f) for r, f in zip(chosen, finals) if "failed" not in f]
        failed = [{"lr": r.lr, "seed": r.seed, "reason": f["failed"], "skipped_steps": f.get("skipped_steps", 0)}
                  for r, f in [*zip(sweep[name], [sweep_finals[id(r)] for r in sweep[name]]),
                               *zip(chosen[1:], finals[1:])] if "failed" in f]
        models[name] = {
            "kind": kind, "params": plan[name]["params"], "flops_per_step": plan[name]["flops_per_step"],
            "steps": plan[name]["steps"], "symbols_per_sample": per_sample[kind], "best_lr": best[name].lr,
            "sweep": [{"lr": r.lr, "val_bpb": sweep_finals[id(r)].get("val_bpb"),
                       "val_word_acc": sweep_finals[id(r)].get("val_word_acc"),
                       "skipped_steps": sweep_finals[id(r)].get("skipped_steps", 0),
                       "failed": sweep_finals[id(r)].get("failed")} for r in sweep[name]],
            "runs": runs, "failed_runs": failed,
            "summary": {key: spread([r.get(key) for r in runs]) for key in SUMMARY_KEYS},
        }
    stat_keys = ("documents", "words", "tokens", "bytes", "bytes_per_word", "bytes_per_token")
    results = {
        "name": cfg.name, "out": str(out), "config": cfg.model_dump(mode="json"),
        "device": _device(), "nproc": cfg.nproc, "parallel": cfg.parallel,
        "data": {tok: {k: s.get(k) for k in stat_keys} | {"train_documents": s["splits"]["train"]["documents"],
                                                          "val_documents": s["splits"]["val"]["documents"],
                                                          "train_bytes": s["splits"]["train"]["document_bytes"]}
                 for tok, s in stats.items()},
        "models": models, "wall_seconds": time.perf_counter() - wall,
    }
    from launcher.compare.report import write_report

    write_report(results, out)
    say(f"report: {out / 'report.md'} ({results['wall_seconds']:.0f} s in this invocation)")
    return results


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"
