"""The training loop: DeepSpeed ZeRO over StreamingDataLoader batches, one explicit loop.

Run under torchrun (`wordpool train` / `wordpool launch` start it): each process is one rank. On CPU,
DeepSpeed runs with DS_ACCELERATOR=cpu and gloo. Around the loop: resume from the newest checkpoint
that verifies (on any world size), bad updates skipped and rolled back (pretrain/training/update_guard.py), hang
detection (pretrain/training/hang_watchdog.py), scheduled evaluations (pretrain/evaluation/hooks.py), and a checkpoint
then a clean exit on SIGTERM/SIGUSR1 or a stop request. docs/RUN_DIR.md lists what it writes.
"""
from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import random
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from schema import WordpoolConfig
from pretrain.checkpoint import reshard as elastic
from pretrain.checkpoint import store as checkpoint
from pretrain.training.loader import (LoaderPosition, clean_stale_streaming_state, endless_batches, make_loader, sample_encoder,
                           split_has_samples)
from pretrain.training.engine import build_engine, check_shards, grad_accum_for, warmup_cosine
from pretrain.evaluation.hooks import VAL_KINDS, EvalRunner, EvalSchedule, default_hooks
from pretrain.evaluation.validation import WordScorer, to_device
from pretrain.training.update_guard import StepGate, UpdateGuard
from pretrain.training.metrics import MetricsLogger, stack_sums, summarize
from pretrain.training.hang_watchdog import Watchdog

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _digest(batch: dict[str, torch.Tensor]) -> int:
    """A fingerprint of the samples in a micro-batch: a sum over samples, so the global batch's value is
    the same however its samples are spread over ranks (the elastic-resume test relies on it)."""
    rows = batch["words" if "words" in batch else "tokens"].numpy()
    return sum(zlib.crc32(row.tobytes()) for row in rows)


def _fault_steps(name: str) -> set[int]:
    """Test hooks: steps listed in an environment variable ("3,4,5")."""
    return {int(s) for s in os.environ.get(name, "").split(",") if s}


def _grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _die_with_parent() -> None:
    """torchrun starts workers in their own session: if the agent is SIGKILLed they would keep training
    (and writing checkpoints) beside the restarted job. Ask Linux to kill this rank with its parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _init_process_group(backend: str) -> None:
    """Under torchrun the ranks meet in the agent's store, which outlives a restart of the worker group, and
    torch.distributed's env:// set-up puts no per-restart prefix on its keys: a restarted rank could read a
    dead predecessor's gloo address (the chaos test saw "Connection refused" loops). So rank 0 hosts a fresh
    store for the process group and publishes its port in the agent's store; the others connect, and a
    port that refuses them was a dead attempt's: they read the key again. (torchrun's restart count cannot
    name the attempt: each node counts its own restarts.)"""
    if dist.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from datetime import timedelta

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host = os.environ["MASTER_ADDR"]  # the node of global rank 0
    agent = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), world, is_master=False)
    if rank == 0:
        store = dist.TCPStore(host, 0, world, is_master=True, wait_for_workers=False)
        agent.set("wordpool/pg_store_port", str(store.port))
    else:
        while True:
            port = int(agent.get("wordpool/pg_store_port"))  # waits until some attempt's rank 0 wrote it
            try:
                store = dist.TCPStore(host, port, world, is_master=False, timeout=timedelta(seconds=2))
                break
            except (RuntimeError, OSError):
                time.sleep(0.5)  # a dead attempt's port: the new rank 0 has not published yet
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)


def _lock_run_dir(run_dir: Path):
    """One live training job per run folder; the lock dies with the process, so a crash never leaves it."""
    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"another training job is running in {run_dir} (it holds {run_dir / '.lock'})") from None
    return handle


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(path, json.dumps(record))


def _restore(engine, folder: Path, world: int, zero_stage: int) -> dict:
    """Collective: load `folder`, through its universal form when the world size changed."""
    universal = elastic.needs_universal(folder, checkpoint.saved_world_size(folder), world, zero_stage)
    elastic.set_universal_loading(engine, universal)
    if universal:
        tag = elastic.prepare_universal(folder)
        with elastic.quiet():
            return checkpoint.load(engine, folder, tag=tag)
    return checkpoint.load(engine, folder)


def train(cfg: WordpoolConfig, resume: str | None = None) -> None:
    _die_with_parent()
    on_gpu = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    import deepspeed

    t, f = cfg.train, cfg.fault
    _init_process_group("nccl" if on_gpu else "gloo")
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")  # adopts the group made above
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and on_gpu)
    run_dir, ckpt_root = Path(t.run_dir), Path(t.run_dir) / "checkpoints"
    cfg, meta = check_shards(cfg)
    grad_accum = grad_accum_for(t, world)
    clean_stale_streaming_state()
    lock = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_run_dir(run_dir)
        checkpoint.files.remove_stale_temporaries(ckpt_root)
        # an earlier job's records; `wordpool launch` rewrites a stop request of its own within a second
        for stale in ("stop", "exit.json"):
            (run_dir / "control" / stale).unlink(missing_ok=True)
    dist.barrier()
    watchdog = Watchdog(run_dir, rank, world, f.init_timeout_s, f.step_timeout_s, f.io_timeout_s,
                        f.timeout_after_steps).start()

    _seed_everything(t.seed + rank)
    folder = checkpoint.resolve_resume(resume, ckpt_root, t.verify_checkpoints)
    universal = folder is not None and elastic.needs_universal(folder, checkpoint.saved_world_size(folder), world,
                                                               t.zero_stage)
    engine = build_engine(cfg, world, bf16, grad_accum, load_universal=universal)
    guard = UpdateGuard(f.skip_nonfinite, f.outlier_sigma, f.outlier_window, f.outlier_min_history)
    norm_seen = {"plain": float("nan")}
    if t.zero_stage > 0 or bf16:  # DeepSpeed's optimizer wrapper knows the global pre-clipping norm
        gate = StepGate(guard, lambda: _as_float(getattr(engine.optimizer, "_global_grad_norm", None)))
    else:
        gate = StepGate(guard, lambda: norm_seen["plain"])
    engine.guarded_optimizer.gate = gate

    encode = sample_encoder(t.data_dir, cfg.model.max_word_bytes)
    train_set, train_loader = make_loader(str(Path(t.data_dir) / "train"), encode, t.micro_batch_size,
                                          t.shuffle, t.seed, t.num_canonical_nodes, t.num_workers, drop_last=True)
    val_dir = Path(t.data_dir) / "val"
    val_loader = scorer = None
    if split_has_samples(val_dir):
        _, val_loader = make_loader(str(val_dir), encode, t.micro_batch_size,
                                    False, t.seed, t.num_canonical_nodes, 0, drop_last=False)
        scorer = WordScorer(cfg.model.kind, t.data_dir, meta["max_word_bytes"], meta.get("split_digits", False))
    elif rank == 0:
        print(f"warning: {val_dir} holds no samples: evaluation is skipped", flush=True)

    global_batch = t.micro_batch_size * grad_accum * world
    # flops / text_bytes: the run's totals so far (all ranks), so curves can be drawn against training compute
    state = {"step": 0, "samples": 0, "flops": 0.0, "text_bytes": 0.0, "global_batch": global_batch,
             "position": {"epoch": 0, "samples_in_epoch": 0}}
    if folder is not None:
        watchdog.beat(0, "load")
        state = _restore(engine, folder, world, t.zero_stage)
        if state.get("global_batch", global_batch) != global_batch:
            raise ValueError(f"{folder} was trained with a global batch of {state['global_batch']} samples; this run "
                             f"has {global_batch} ({world} processes): set train.global_batch_size="
                             f"{state['global_batch']}")
    guard.load_state_dict(state.get("guard", {}))
    position = LoaderPosition(**state["position"])
    micro_global = t.micro_batch_size * world
    batches = endless_batches(train_set, train_loader, position, micro_global)

    logger = MetricsLogger(run_dir, cfg.wandb, cfg.model_dump(), t.steps) if rank == 0 else None
    if logger:
        if folder is not None:
            print(f"resumed from {folder} at step {state['step']} (epoch {position.epoch}, "
                  f"{position.samples_in_epoch} samples into it)", flush=True)
        logger.log("attempt", state["step"], {"restart": watchdog.restart, "resumed_from": str(folder) if folder else None,
                                               "world_size": world, "grad_accum": grad_accum})

    def all_reduce(x: torch.Tensor) -> None:
        y = x.to(device)
        dist.all_reduce(y)
        x.copy_(y.cpu())

    schedule = EvalSchedule(cfg.evals or default_hooks(t.eval_every), t.steps)
    runner = EvalRunner(schedule, engine, cfg, device, val_loader, scorer, all_reduce, rank, world, run_dir)

    def run_evals(step: int, due: list[int]) -> None:
        if not due:
            return
        watchdog.beat(step, "eval")
        for kind, values in runner.run(step, due):
            if logger:
                logger.log(kind, step, {**values, "train_flops": state["flops"], "train_text_bytes": state["text_bytes"]})

    stop = {"signal": None}
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption: checkpoint at the next step boundary
        signal.signal(sig, lambda s, _f: stop.update(signal=s))
    stop_file = run_dir / "control" / "stop"

    kill_at = int(os.environ.get("WORDPOOL_FAULT_KILL_AT_STEP", "0"))  # fault injection for tests
    nan_at = _fault_steps("WORDPOOL_FAULT_NAN_AT_STEPS")
    hang = os.environ.get("WORDPOOL_FAULT_HANG_AT", "")  # "STEP:RANK"
    if state["step"] == 0:
        run_evals(0, [i for i, h in enumerate(schedule.hooks) if h.kind in VAL_KINDS])
    engine.train()
    step = state["step"]
    preempted = False
    while step < t.steps:
        watchdog.beat(step + 1, "step")
        if hang and hang == f"{step + 1}:{rank}":
            time.sleep(1e6)
        start = time.perf_counter()
        sums = torch.zeros(5, dtype=torch.float64)
        digest, step_flops = 0, 0.0
        poison = step + 1 in nan_at
        nan_at.discard(step + 1)  # once: after a rollback the step is trained again on new data
        for micro in range(grad_accum):
            batch = next(batches)
            digest += _digest(batch)
            step_flops += engine.module.train_flops(**batch)
            out = engine(**to_device(batch, device))
            loss = out["loss"] * float("nan") if poison else out["loss"]
            engine.backward(loss)
            sums += stack_sums(out).cpu()
            if micro == grad_accum - 1:  # the boundary: decide on the global loss before the update
                if t.zero_stage == 0 and not bf16:
                    norm_seen["plain"] = _grad_norm(engine.module)  # DeepSpeed reports none without ZeRO
                if poison:
                    sums[0] = float("nan")
                watchdog.beat(step + 1, "sync")
                all_reduce(sums)
                gate.arm(sums[0].item() / max(sums[1].item(), 1.0))
            engine.step()
        skip_reason, grad_norm = gate.verdict()
        guard.record(gate.loss, grad_norm, skipped=skip_reason is not None)
        step += 1
        state.update(step=step, samples=state["samples"] + micro_global * grad_accum,
                     position=dataclasses.asdict(position), guard=guard.state_dict())
        # one collective for the data fingerprint, "stop now?", the FLOPs and the timed evaluations
        wants_stop = stop["signal"] is not None or (rank == 0 and stop_file.exists())
        time_flags = schedule.time_flags() if rank == 0 else [0.0] * len(schedule.timed)
        flags = torch.tensor([digest, wants_stop, step_flops, *time_flags], dtype=torch.float64)
        all_reduce(flags)
        preempted = flags[1].item() > 0
        state.update(flops=state["flops"] + flags[2].item(), text_bytes=state["text_bytes"] + sums[2].item())
        seconds = time.perf_counter() - start
        if logger and skip_reason:
            logger.log("skip", step, {"reason": skip_reason, "loss": gate.loss, "grad_norm": grad_norm,
                                      "consecutive": guard.consecutive, "skipped_steps": guard.total})
        if logger and (step % t.log_every == 0 or step == t.steps):
            values = summarize(sums)
            values.update(lr=t.lr * warmup_cosine(step - 1, t.warmup_steps, t.steps, t.min_lr_ratio),
                          grad_norm=grad_norm if grad_norm is not None else float("nan"),
                          bytes_per_s=values["text_bytes"] / seconds, symbols_per_s=values["symbols"] / seconds,
                          flops_per_s=flags[2].item() / seconds, flops_per_byte=flags[2].item() / values["text_bytes"],
                          step_seconds=seconds, samples=state["samples"], epoch=position.epoch,
                          train_flops=state["flops"], train_text_bytes=state["text_bytes"],
                          data_digest=int(flags[0].item()), skipped_steps=guard.total)
            if "words" in values:
                values["words_per_s"] = values["words"] / seconds
            if t.peak_flops:
                values["mfu"] = values["flops_per_s"] / (t.peak_flops * world)
            if on_gpu:
                values["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            logger.log("train", step, values)
        if guard.consecutive >= f.max_consecutive_skips:
            step = _roll_back(engine, state, guard, ckpt_root, t, world, watchdog, logger, step, f.max_rollbacks)
            continue
        saved = False
        if step % t.checkpoint_every == 0 or step == t.steps or preempted:
            watchdog.beat(step, "checkpoint")
            saved = _save(engine, ckpt_root, step, state, cfg, logger, must=step == t.steps or preempted)
        if not preempted or step == t.steps:  # a preemption's grace period is for the checkpoint
            run_evals(step, schedule.due(step, flags[3:].tolist(), saved))
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if preempted:
            if logger:
                print(f"stop requested: checkpoint saved at step {step}, exiting", flush=True)
            break
    watchdog.beat(step, "checkpoint")
    if logger:
        logger.close()
    dist.barrier()
    watchdog.stop()
    if rank == 0:  # after every rank's last heartbeat: `wordpool status` reads this as the end
        _write_json(run_dir / "control" / "exit.json", {"reason": "finished" if step >= t.steps else "preempted",
                                                        "step": step, "time": time.time()})
    if lock:
        lock.close()
    dist.destroy_process_group()


def _as_float(value) -> float | None:
    return None if value is None else float(value)


def _save(engine, root: Path, step: int, state: dict, cfg: WordpoolConfig, logger, must: bool) -> bool:
    """A checkpoint; a failed save (disk full) is logged and training goes on, unless this save was the
    last one (end of run or preemption): then the error ends the job, the previous checkpoint intact."""
    start = time.perf_counter()
    try:
        folder = checkpoint.save(engine, root, step, dict(state), cfg.model_dump(), cfg.train.keep_last,
                                 cfg.train.keep_every)
    except checkpoint.CheckpointSaveError as exc:
        if logger:
            logger.log("checkpoint_failed", step, {"error": str(exc)})
            checkpoint.write_failure(root.parent, "checkpoint-save", {"step": step, "error": str(exc)})
        if must:
            raise
        return False
    if logger:
        logger.log("checkpoint", step, {"path": str(folder), "seconds": time.perf_counter() - start})
    return True


def _roll_back(engine, state: dict, guard: UpdateGuard, root: Path, t, world: int, watchdog, logger,
               step: int, max_rollbacks: int) -> int:
    """After too many skipped updates in a row: back to the newest good checkpoint. The data position
    keeps going forward, so the batches that caused the trouble are not replayed."""
    watchdog.beat(step, "rollback")
    rollbacks = state.get("rollbacks", 0) + 1
    # skipped updates leave the weights alone: a checkpoint saved during the streak holds the same weights
    folder = checkpoint.select_for_resume(root, t.verify_checkpoints, max_step=step - guard.consecutive)
    if folder is None or rollbacks > max_rollbacks:
        why = (f"rollback {rollbacks} exceeds fault.max_rollbacks={max_rollbacks}" if folder is not None
               else "there is no checkpoint from before them to roll back to")
        if logger:
            checkpoint.write_failure(root.parent, "rollbacks-exhausted", {"step": step, "why": why})
        raise RuntimeError(f"{guard.consecutive} updates in a row were skipped at step {step} and {why}")
    restored = _restore(engine, folder, world, t.zero_stage)
    state.update(step=restored["step"], flops=restored["flops"], text_bytes=restored["text_bytes"],
                 rollbacks=rollbacks)
    guard.consecutive = 0
    if logger:
        logger.log("rollback", restored["step"], {"from_step": step, "to_step": restored["step"],
                                                  "checkpoint": str(folder), "rollbacks": rollbacks})
    return restored["step"]
