"""Scheduled evaluation during training: a list of hooks, each a kind and a schedule.

Kinds: val_bpb, word_acc, rare_word_acc (one validation pass serves all three when they fall due
together), samples (generated text), callable (a user function `fn(ctx) -> dict`, by import path),
lm_eval (lm-evaluation-harness tasks through lm_eval_adapter.py).
Schedules: every N steps, every T minutes, after each checkpoint; every hook also runs at the last
step. Hooks run on every rank (they may use collectives, and ZeRO-3 needs every rank for a forward);
rank 0 logs. Time-based schedules are decided by rank 0's clock and shared through the step's
all-reduce, so ranks never disagree about running a collective.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from schema import EvalHookConfig
from pretrain.evaluation.validation import evaluate, evaluate_streams

VAL_KINDS = ("val_bpb", "word_acc", "rare_word_acc")


def default_hooks(eval_every: int) -> list[EvalHookConfig]:
    return [EvalHookConfig(kind=kind, every_steps=eval_every) for kind in VAL_KINDS]


@dataclass
class EvalContext:
    """What a user callable gets."""
    step: int
    model: torch.nn.Module
    config: Any
    device: torch.device
    rank: int
    world_size: int
    val_loader: Any
    run_dir: Any
    all_reduce: Callable[[torch.Tensor], None]


def load_callable(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"evals: callable target {target!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ValueError(f"evals: target {target!r} is not callable")
    return fn


class EvalSchedule:
    def __init__(self, hooks: list[EvalHookConfig], total_steps: int):
        self.hooks, self.total_steps = hooks, total_steps
        self.callables = {i: load_callable(h.target) for i, h in enumerate(hooks) if h.kind == "callable"}
        self.timed = [i for i, h in enumerate(hooks) if h.every_minutes]
        self.last_run = {i: time.monotonic() for i in self.timed}

    def time_flags(self) -> list[float]:
        """Rank 0's view of which timed hooks are due (all-reduced with the step's other flags)."""
        now = time.monotonic()
        return [float(now - self.last_run[i] >= self.hooks[i].every_minutes * 60) for i in self.timed]

    def due(self, step: int, time_flags: list[float], after_checkpoint: bool) -> list[int]:
        due = set()
        for i, hook in enumerate(self.hooks):
            if step == self.total_steps or (hook.every_steps and step % hook.every_steps == 0) \
                    or (after_checkpoint and hook.on_checkpoint):
                due.add(i)
        due |= {i for i, flag in zip(self.timed, time_flags) if flag > 0}
        for i in due & set(self.timed):
            self.last_run[i] = time.monotonic()
        return sorted(due)


def run_lm_eval_hook(model: torch.nn.Module, cfg, hook: EvalHookConfig) -> dict[str, float]:
    """lm-eval's metrics of `model` on the hook's tasks, flat (`lm_eval/<task>/<metric>`). Every rank runs
    the same requests (ZeRO-3 needs every rank in a forward); the results are identical."""
    from pretrain.evaluation.lm_eval_adapter import WordpoolLM, metrics, run_lm_eval

    lm = WordpoolLM.from_model(model, cfg, batch_size=hook.batch_size)
    return metrics(run_lm_eval(lm, hook.tasks, hook.include_path, hook.limit, hook.num_fewshot, cfg.train.seed))


class EvalRunner:
    """Runs due hooks against the live model; returns the records for rank 0 to log."""

    def __init__(self, schedule: EvalSchedule, model: torch.nn.Module, cfg, device: torch.device, val_loader,
                 scorer, all_reduce: Callable[[torch.Tensor], None], rank: int, world: int, run_dir,
                 stream_loaders: dict | None = None):
        self.schedule, self.model, self.cfg, self.device = schedule, model, cfg, device
        self.val_loader, self.scorer, self.all_reduce = val_loader, scorer, all_reduce
        self.stream_loaders = stream_loaders or {}  # train.streams: each stream's val split, reported apart
        self.rank, self.world, self.run_dir = rank, world, run_dir

    def run(self, step: int, due: list[int]) -> list[tuple[str, dict]]:
        hooks = [(i, self.schedule.hooks[i]) for i in due]
        records: list[tuple[str, dict]] = []
        val_kinds = {h.kind for _, h in hooks if h.kind in VAL_KINDS}
        self.model.eval()
        try:
            if val_kinds and self.val_loader is not None:
                records.append(("eval", self._validation(val_kinds, [h for _, h in hooks if h.kind in VAL_KINDS])))
            for i, hook in hooks:
                if hook.kind == "samples":
                    records.append(("samples", {"hook": "samples", "samples": self._samples(hook)}))
                elif hook.kind == "callable":
                    values = self.schedule.callables[i](self._context(step)) or {}
                    records.append(("eval", {"hook": hook.target, **values}))
                elif hook.kind == "lm_eval":
                    records.append(("eval", {"hook": "lm_eval", **run_lm_eval_hook(self._module(), self.cfg, hook)}))
        finally:
            self.model.train()
        return records

    def _validation(self, kinds: set[str], hooks: list[EvalHookConfig]) -> dict:
        batches = max(h.max_batches or self.cfg.train.eval_batches for h in hooks)
        scorer = self.scorer if kinds & {"word_acc", "rare_word_acc"} else None  # the splitter costs CPU time
        if self.stream_loaders:
            values = evaluate_streams(self.model, self.stream_loaders, batches, self.device, self.all_reduce, scorer)
        else:
            values = evaluate(self.model, self.val_loader, min(batches, len(self.val_loader)), self.device,
                              self.all_reduce, scorer)
        if "rare_word_acc" not in kinds:
            values = {k: v for k, v in values.items() if "_freq_" not in k}
        if "word_acc" not in kinds and "rare_word_acc" not in kinds:
            values = {k: v for k, v in values.items() if not k.startswith(("val_word_acc", "val_words"))}
        return {"hook": ",".join(sorted(kinds)), **values}

    def _samples(self, hook: EvalHookConfig) -> list[dict]:
        from pretrain.inference.loading import generate_text

        return [{"prompt": prompt, "text": generate_text(None, prompt, hook.max_words, loaded=(self._module(), self.cfg))}
                for prompt in hook.prompts]

    def _module(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)  # the DeepSpeed engine wraps the model

    def _context(self, step: int) -> EvalContext:
        return EvalContext(step=step, model=self._module(), config=self.cfg, device=self.device, rank=self.rank,
                           world_size=self.world, val_loader=self.val_loader, run_dir=self.run_dir,
                           all_reduce=self.all_reduce)
