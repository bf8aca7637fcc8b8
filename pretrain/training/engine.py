"""Building the DeepSpeed engine: model, optimizer, LR schedule."""
from __future__ import annotations

import math

import torch

from schema import WordpoolConfig
from pretrain.training.compilation import compile_engine
from pretrain.training.update_guard import GuardedAdamW
from pretrain.models.layers import set_activation_checkpointing
from pretrain.models import build_model
from pretrain.checkpoint.warm_start import load_into


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier for optimizer step `step` (0-based): linear warmup, then cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def grad_accum_for(t, world: int) -> int:
    """Micro-steps per optimizer step: train.grad_accum, or derived from train.global_batch_size so the
    global batch stays the same at any world size."""
    if t.global_batch_size is None:
        return t.grad_accum
    per_micro = t.micro_batch_size * world
    if t.global_batch_size % per_micro:
        raise ValueError(f"train.global_batch_size={t.global_batch_size} is not a multiple of micro_batch_size "
                         f"({t.micro_batch_size}) x processes ({world})")
    return t.global_batch_size // per_micro


def deepspeed_config(cfg: WordpoolConfig, world: int, bf16: bool, grad_accum: int | None = None,
                     load_universal: bool = False) -> dict:
    t = cfg.train
    grad_accum = grad_accum or grad_accum_for(t, world)
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": t.micro_batch_size * grad_accum * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": load_universal},
    }


def build_engine(cfg: WordpoolConfig, world: int, bf16: bool, grad_accum: int | None = None,
                 load_universal: bool = False, init_weights: dict[str, torch.Tensor] | None = None):
    """The model of cfg.model under DeepSpeed, with AdamW (no decay on norms; its updates gated by
    pretrain.training.update_guard) and warmup + cosine LR. init_weights: a warm start's weights, loaded
    before DeepSpeed partitions the model."""
    import deepspeed

    t = cfg.train
    model = build_model(cfg.model)
    if init_weights is not None:
        load_into(model, init_weights, t.init_from)
    set_activation_checkpointing(model, t.activation_checkpointing)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = GuardedAdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=t.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, t.warmup_steps, t.steps, t.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=deepspeed_config(cfg, world, bf16, grad_accum, load_universal))
    engine.guarded_optimizer = optimizer  # DeepSpeed wraps it; the trainer sets its gate
    compile_engine(engine, t)  # train.compile (pretrain/training/compilation.py: why through the engine)
    return engine
