"""The training loop: DeepSpeed ZeRO over StreamingDataLoader batches, one explicit loop.

Run under torchrun (`wordpool train` starts it): each process is one rank. On CPU, DeepSpeed runs
with DS_ACCELERATOR=cpu and gloo.
"""
from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import math
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

from launcher.config import WordpoolConfig
from pretrain import checkpoint
from pretrain.data import (LoaderPosition, clean_stale_streaming_state, endless_batches, make_loader, sample_encoder,
                           shard_meta, split_has_samples)
from pretrain.evaluate import WordScorer, evaluate, to_device
from pretrain.metrics import MetricsLogger, stack_sums, summarize
from pretrain.layers import set_activation_checkpointing
from pretrain.models import build_model

TOKENIZER_OF = {"word_pooled": "words", "bytes": "bytes", "bpe": "bpe"}  # model.kind -> data.tokenizer it reads


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier for optimizer step `step` (0-based): linear warmup, then cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def deepspeed_config(cfg: WordpoolConfig, world: int, bf16: bool) -> dict:
    t = cfg.train
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.micro_batch_size * t.grad_accum * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: WordpoolConfig, world: int, bf16: bool):
    """The model of cfg.model under DeepSpeed, with AdamW (no decay on norms) and warmup + cosine LR."""
    import deepspeed

    t = cfg.train
    model = build_model(cfg.model)
    set_activation_checkpointing(model, t.activation_checkpointing)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=t.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, t.warmup_steps, t.steps, t.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=deepspeed_config(cfg, world, bf16))
    return engine


def check_shards(cfg: WordpoolConfig) -> tuple[WordpoolConfig, dict]:
    """The shards' settings, checked against the model; a baseline's vocab_size is filled in from them."""
    meta = shard_meta(cfg.train.data_dir)
    kind, tokenizer = cfg.model.kind, meta.get("tokenizer", "words")
    if tokenizer != TOKENIZER_OF[kind] or meta.get("packing", "fixed") != "fixed":
        raise ValueError(f"shards in {cfg.train.data_dir} hold data.tokenizer={tokenizer} / data.packing="
                         f"{meta.get('packing')}; model.kind={kind} trains on data.tokenizer={TOKENIZER_OF[kind]}, "
                         f"data.packing=fixed")
    if kind != "word_pooled":
        from pretrain.word_scoring import token_byte_table

        vocab = len(token_byte_table(cfg.train.data_dir))
        if cfg.model.vocab_size not in (None, vocab):
            raise ValueError(f"model.vocab_size={cfg.model.vocab_size} but the shards' tokenizer has {vocab} ids")
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"vocab_size": vocab})}), meta
    if meta["max_word_bytes"] > cfg.model.max_word_bytes:
        raise ValueError(f"shards in {cfg.train.data_dir} have words up to {meta['max_word_bytes']} bytes but "
                         f"model.max_word_bytes={cfg.model.max_word_bytes}")
    if meta["words_per_sample"] > cfg.model.max_words:
        raise ValueError(f"shards hold {meta['words_per_sample']} words per sample but model.max_words="
                         f"{cfg.model.max_words}")
    return cfg, meta


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _digest(batch: dict[str, torch.Tensor]) -> int:
    """A fingerprint of the samples in a micro-batch, to prove resumed runs see the same data."""
    return zlib.crc32(batch["words" if "words" in batch else "tokens"].numpy().tobytes())


def _grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _die_with_parent() -> None:
    """torchrun starts workers in their own session: if the agent is SIGKILLed they would keep training
    (and writing checkpoints) beside the restarted job. Ask Linux to kill this rank with its parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _lock_run_dir(run_dir: Path):
    """One live training job per run folder; the lock dies with the process, so a crash never leaves it."""
    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"another training job is running in {run_dir} (it holds {run_dir / '.lock'})") from None
    return handle


def train(cfg: WordpoolConfig, resume: str | None = None) -> None:
    _die_with_parent()
    on_gpu = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    import deepspeed

    t = cfg.train
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and on_gpu)
    run_dir, ckpt_root = Path(t.run_dir), Path(t.run_dir) / "checkpoints"
    cfg, meta = check_shards(cfg)
    clean_stale_streaming_state()
    lock = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_run_dir(run_dir)

    _seed_everything(t.seed + rank)
    engine = build_engine(cfg, world, bf16)

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

    # flops / text_bytes: the run's totals so far (all ranks), so curves can be drawn against training compute
    state = {"step": 0, "samples": 0, "flops": 0.0, "text_bytes": 0.0,
             "position": {"epoch": 0, "samples_in_epoch": 0}}
    folder = checkpoint.resolve_resume(resume, ckpt_root)
    if folder is not None:
        state = checkpoint.load(engine, folder)
    position = LoaderPosition(**state["position"])
    micro_global = t.micro_batch_size * world
    batches = endless_batches(train_set, train_loader, position, micro_global)

    logger = MetricsLogger(run_dir, cfg.wandb, cfg.model_dump(), t.steps) if rank == 0 else None
    if logger and folder is not None:
        print(f"resumed from {folder} at step {state['step']} (epoch {position.epoch}, "
              f"{position.samples_in_epoch} samples into it)", flush=True)

    def all_reduce(x: torch.Tensor) -> None:
        y = x.to(device)
        dist.all_reduce(y)
        x.copy_(y.cpu())

    def run_eval(step: int) -> None:
        if val_loader is None:
            return
        engine.eval()
        n = min(t.eval_batches, len(val_loader))
        values = evaluate(engine, val_loader, n, device, all_reduce, scorer)
        engine.train()
        if logger:
            logger.log("eval", step, {**values, "train_flops": state.get("flops", 0.0),
                                      "train_text_bytes": state.get("text_bytes", 0.0)})

    stop = {"signal": None}
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption: checkpoint at the next step boundary
        signal.signal(sig, lambda s, _f: stop.update(signal=s))

    kill_at = int(os.environ.get("WORDPOOL_FAULT_KILL_AT_STEP", "0"))  # fault injection for tests
    if state["step"] == 0:
        run_eval(0)
    engine.train()
    step = state["step"]
    plain_grad_norm = float("nan")
    while step < t.steps:
        start = time.perf_counter()
        sums = torch.zeros(5, dtype=torch.float64)
        digest, step_flops = 0, 0.0
        for _ in range(t.grad_accum):
            batch = next(batches)
            digest = zlib.crc32(digest.to_bytes(4, "little"), _digest(batch))
            step_flops += engine.module.train_flops(**batch)
            out = engine(**to_device(batch, device))
            engine.backward(out["loss"])
            if t.zero_stage == 0 and engine.is_gradient_accumulation_boundary():
                plain_grad_norm = _grad_norm(engine.module)  # DeepSpeed reports none without ZeRO
            engine.step()
            sums += stack_sums(out).cpu()
        step += 1
        state.update(step=step, samples=state["samples"] + micro_global * t.grad_accum,
                     position=dataclasses.asdict(position))
        all_reduce(sums)
        # one collective for the data fingerprint, the FLOPs and "did any rank get a preemption signal"
        flags = torch.tensor([digest, stop["signal"] is not None, step_flops], dtype=torch.float64)
        all_reduce(flags)
        preempted = flags[1].item() > 0
        state.update(flops=state.get("flops", 0.0) + flags[2].item(),
                     text_bytes=state.get("text_bytes", 0.0) + sums[2].item())
        seconds = time.perf_counter() - start
        if logger and (step % t.log_every == 0 or step == t.steps):
            values = summarize(sums)
            grad_norm = engine.get_global_grad_norm() if t.zero_stage > 0 else plain_grad_norm
            values.update(lr=t.lr * warmup_cosine(step - 1, t.warmup_steps, t.steps, t.min_lr_ratio),
                          grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
                          bytes_per_s=values["text_bytes"] / seconds, symbols_per_s=values["symbols"] / seconds,
                          flops_per_s=flags[2].item() / seconds, flops_per_byte=flags[2].item() / values["text_bytes"],
                          step_seconds=seconds, samples=state["samples"], epoch=position.epoch,
                          train_flops=state["flops"], train_text_bytes=state["text_bytes"],
                          data_digest=int(flags[0].item()))
            if "words" in values:
                values["words_per_s"] = values["words"] / seconds
            if t.peak_flops:
                values["mfu"] = values["flops_per_s"] / (t.peak_flops * world)
            if on_gpu:
                values["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            logger.log("train", step, values)
        if step % t.eval_every == 0 or step == t.steps:
            run_eval(step)
        if step % t.checkpoint_every == 0 or step == t.steps or preempted:
            checkpoint.save(engine, ckpt_root, step, dict(state), cfg.model_dump())
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if preempted:
            if logger:
                print(f"preemption signal: checkpoint saved at step {step}, exiting", flush=True)
            break
    if logger:
        logger.close()
    if lock:
        lock.close()
    dist.barrier()
    dist.destroy_process_group()
