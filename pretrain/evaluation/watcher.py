"""`wordpool eval --watch RUN_DIR`: evaluate each checkpoint of a run as it is published.

A separate single process beside the training job (no DeepSpeed launch): it polls RUN_DIR/checkpoints,
evaluates every complete checkpoint without an eval.json (oldest first) with `eval_checkpoint`, writes
the result to `checkpoints/step_N/eval.json` (atomically) and appends it to RUN_DIR/watch_evals.jsonl,
and logs it to the training's own wandb run under `watch/`, against its own step metric so it never
fights the trainer's step counter.

It stops once control/exit.json says the run finished and every checkpoint is evaluated, after one pass
with --once, at --timeout, or on Ctrl-C. A "preempted" exit keeps it waiting: the job comes back.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from schema import EvalHookConfig
from pretrain.run_dir import (COMPLETE, CONFIG, EVAL_FILE, LM_EVAL_PREFIX, RunDir, append_jsonl, check_run_dir,
                              complete_checkpoints, read_json, read_text, write_json_atomic)

WANDB_PREFIX = "watch/"
WANDB_STEP = "watch/train_step"
INTERRUPTED = 130  # the shell's code for Ctrl-C


@dataclass
class WatchSettings:
    run_dir: Path
    poll_seconds: float = 30.0
    max_batches: int | None = None
    timeout: float | None = None
    once: bool = False
    data_dir: str | None = None
    lm_eval: EvalHookConfig | None = None  # lm-eval tasks run on each checkpoint too


def note(message: str) -> None:
    print(f"wordpool eval --watch: {message}", file=sys.stderr, flush=True)


def pending(run_dir: Path) -> list[Path]:
    return [p for p in complete_checkpoints(run_dir) if not (p / EVAL_FILE).exists()]


def run_finished(run_dir: Path) -> bool:
    exit_record = read_json(RunDir(run_dir).exit_json)
    return exit_record is not None and exit_record.get("reason") != "preempted"


def _marker(folder: Path) -> str | None:
    """The COMPLETE marker's text: it changes if the checkpoint is deleted, or replaced after a rollback."""
    try:
        return (folder / COMPLETE).read_text()
    except OSError:
        return None


def evaluate_checkpoint(folder: Path, data_dir: str | None = None, max_batches: int | None = None,
                        lm_eval: EvalHookConfig | None = None) -> dict | None:
    """The watch record of `folder`, or None (with a note) if the checkpoint was deleted or replaced while
    it was being evaluated. An error on a checkpoint that is still there is raised: it is not transient."""
    from pretrain.evaluation.hooks import run_lm_eval_hook
    from pretrain.inference.loading import eval_checkpoint, load_model

    before = _marker(folder)
    start = time.perf_counter()
    try:
        if before is None:
            raise FileNotFoundError(folder / COMPLETE)
        loaded = load_model(folder)
        values = eval_checkpoint(folder, data_dir, max_batches, loaded=loaded, log_to_run=False)
        if lm_eval is not None:
            values.update(run_lm_eval_hook(*loaded, lm_eval))
    except Exception:
        if _marker(folder) == before and before is not None:
            raise
        note(f"{folder.name} was deleted while being evaluated (retention or rollback): skipped")
        return None
    if _marker(folder) != before:
        note(f"{folder.name} was deleted or replaced while being evaluated: result dropped")
        return None
    return {**values, "kind": "watch_eval", "checkpoint": str(folder), "eval_seconds": time.perf_counter() - start,
            "max_batches": max_batches}


class WandbSink:
    """The training's wandb run (RUN_DIR/wandb_id), opened at the first result; nothing if the run has no
    wandb (mode disabled, or no id written)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.run = None
        self.opened = False

    def _open(self, folder: Path) -> None:
        self.opened = True
        wandb_cfg = (read_json(folder / CONFIG) or {}).get("wandb") or {}
        mode = wandb_cfg.get("mode", "offline")
        if mode == "disabled":
            return
        id_file = RunDir(self.run_dir).wandb_id
        run_id = read_text(id_file)
        if run_id is None:
            note(f"no {id_file} (the trainer writes it when wandb is on): results are not sent to wandb")
            return
        import wandb

        try:
            self.run = wandb.init(id=run_id, resume="allow", dir=str(self.run_dir), mode=mode,
                                  project=wandb_cfg.get("project", "wordpool"), entity=wandb_cfg.get("entity"),
                                  settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # e.g. online without network: the files still get every result
            note(f"wandb.init failed ({exc}): results are not sent to wandb")
            return
        self.run.define_metric(WANDB_STEP)
        self.run.define_metric(WANDB_PREFIX + "*", step_metric=WANDB_STEP)

    def log(self, folder: Path, record: dict) -> None:
        if not self.opened:
            self._open(folder)
        if self.run is None:
            return
        values = {WANDB_PREFIX + k: v for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time")}
        self.run.log({WANDB_STEP: record["step"], **values})

    def close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish()
            except Exception as exc:  # Ctrl-C in a terminal also reaches wandb's service process
                note(f"wandb finish failed: {exc}")


def _publish(run_dir: Path, folder: Path, record: dict, sink: WandbSink) -> bool:
    try:
        write_json_atomic(folder / EVAL_FILE, record)
    except FileNotFoundError:  # the folder went away between the evaluation and now
        note(f"{folder.name} was deleted before its eval.json was written: skipped")
        return False
    append_jsonl(RunDir(run_dir).watch_log, record)
    sink.log(folder, record)
    acc = f", next-word accuracy {record['val_word_acc']:.4f}" if "val_word_acc" in record else ""
    acc += "".join(f", {k.removeprefix(LM_EVAL_PREFIX)} {v:.4f}" for k, v in record.items() if k.startswith(LM_EVAL_PREFIX))
    print(f"step {record['step']}: val bits/byte {record['val_bpb']:.4f}{acc} ({folder.name}, "
          f"{record['eval_seconds']:.1f} s)", flush=True)
    return True


def _one_pass(s: WatchSettings, sink: WandbSink, deadline: float) -> int:
    done = 0
    for folder in pending(s.run_dir):
        if time.monotonic() >= deadline:
            break
        record = evaluate_checkpoint(folder, s.data_dir, s.max_batches, s.lm_eval)
        if record is not None and _publish(s.run_dir, folder, record, sink):
            done += 1
    return done


def watch(s: WatchSettings) -> int:
    s.run_dir = check_run_dir(s.run_dir)
    deadline = time.monotonic() + s.timeout if s.timeout is not None else float("inf")
    sink = WandbSink(s.run_dir)
    evaluated = 0
    try:
        while True:
            evaluated += _one_pass(s, sink, deadline)
            if s.once:
                break
            if run_finished(s.run_dir) and not pending(s.run_dir):
                note("the run finished and every checkpoint is evaluated")
                break
            if time.monotonic() >= deadline:
                note(f"--timeout {s.timeout:g} s reached")
                break
            time.sleep(max(0.0, min(s.poll_seconds, deadline - time.monotonic())))
    except KeyboardInterrupt:
        note(f"interrupted after {evaluated} evaluation(s)")
        return INTERRUPTED
    finally:
        sink.close()
    note(f"{evaluated} checkpoint(s) evaluated; results in {RunDir(s.run_dir).watch_log}")
    return 0
