"""The training loop: DeepSpeed ZeRO over StreamingDataLoader batches, one explicit loop.

Run under torchrun (`wordpool train` / `wordpool launch` start it): each process is one rank. On CPU,
DeepSpeed runs with DS_ACCELERATOR=cpu and gloo. `Trainer.fit` reads top to bottom: a train step,
a rollback after too many skipped updates, a checkpoint if due, evaluations if due, and a stop on
preemption. Around it: resume from the newest checkpoint that verifies (on any world size,
pretrain/checkpoint/), bad updates skipped (update_guard.py), hang detection (hang_watchdog.py),
scheduled evaluations (pretrain/evaluation/hooks.py). docs/RUN_DIR.md lists what it writes.
"""
from __future__ import annotations

import os
import random
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pretrain.checkpoint import reshard
from pretrain.checkpoint import store as checkpoint
from pretrain.checkpoint import warm_start
from pretrain.evaluation.hooks import VAL_KINDS, EvalRunner, EvalSchedule, default_hooks
from pretrain.evaluation.validation import WordScorer, to_device
from pretrain.training import distributed, rank_failure
from pretrain.training.engine import build_engine, grad_accum_for, warmup_cosine
from pretrain.training.preflight import check_shards
from pretrain.training.data_sources import build_loaders, training_data
from pretrain.training.hang_watchdog import Watchdog
from pretrain.training.length_buckets import decomposed_loaders, is_decomposed
from pretrain.training.loader import clean_stale_streaming_state, sample_encoder
from pretrain.training.metrics import MetricsLogger, summarize
from pretrain.training.profiling import StepProfiler
from pretrain.training.run_files import TrainerFiles
from pretrain.training.state import ModelTotals, Totals, TrainState
from pretrain.training.update_guard import StepGate, UpdateGuard
from schema import WordpoolConfig, fault_plan


@dataclass
class StepResult:
    """One optimizer step, summed over its micro-batches and all ranks."""

    model: ModelTotals
    flops: float
    data_digest: int
    seconds: float
    skip_reason: str | None
    grad_norm: float | None
    stop_requested: bool
    timed_evals_due: list[float]


class Trainer:
    def __init__(self, cfg: WordpoolConfig, resume: str | None = None):
        self._join_process_group()
        self.cfg, self.meta = check_shards(cfg)
        self.t, self.fault = self.cfg.train, self.cfg.fault
        self.bf16 = distributed.uses_bf16(self.t.precision, self.on_gpu)
        self.grad_accum = grad_accum_for(self.t, self.world)
        self.files = TrainerFiles(Path(self.t.run_dir), is_rank0=self.rank == 0)
        clean_stale_streaming_state()
        dist.barrier()  # rank 0 holds the run directory's lock before anyone trains
        f = self.fault
        self.watchdog = Watchdog(self.files.root, self.rank, self.world, f.init_timeout_s, f.step_timeout_s,
                                 f.io_timeout_s, f.timeout_after_steps).start()
        _seed_everything(self.t.seed + self.rank)
        self.resumed_from = checkpoint.resolve_resume(resume, self.files.checkpoints, self.t.verify_checkpoints)
        self.state = TrainState(global_batch=self.t.micro_batch_size * self.grad_accum * self.world)
        self._build_engine()
        self._build_loaders()
        if self.resumed_from is not None:
            self._load(self.resumed_from)
        self.logger = MetricsLogger(self.files.root, self.cfg.wandb, self.cfg.model_dump(), self.t.steps) \
            if self.rank == 0 else None
        self.schedule = EvalSchedule(self.cfg.evals or default_hooks(self.t.eval_every), self.t.steps)
        self.evals = EvalRunner(self.schedule, self.engine, self.cfg, self.device, self.val_loader, self.scorer,
                                self._all_reduce, self.rank, self.world, self.files.root, self.stream_val)
        self._signal = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption: checkpoint at the next step boundary
            signal.signal(sig, lambda s, _frame: setattr(self, "_signal", s))

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> None:
        self._log_attempt()
        if self.state.step == 0:
            self.evaluate(0, [i for i, h in enumerate(self.schedule.hooks) if h.kind in VAL_KINDS])
        self.engine.train()
        self.profiler = StepProfiler(self.t.profile, self.files.root, self.rank, self.state.step, self.on_gpu)
        preempted = False
        while self.state.step < self.t.steps:
            result = self.train_step()
            self.profiler.step()  # train.profile: its schedule counts training steps
            self.log_step(result)
            if self.guard.consecutive >= self.fault.max_consecutive_skips:
                self.roll_back()
                continue
            step, preempted = self.state.step, result.stop_requested
            saved = self.checkpoint_if_due(preempted)
            if not preempted or step == self.t.steps:  # a preemption's grace period is for the checkpoint
                self.evaluate(step, self.schedule.due(step, result.timed_evals_due, saved))
            fault_plan.strike("step_end", step=step)
            if preempted:
                break
        self.finish(preempted)

    def train_step(self) -> StepResult:
        """One optimizer step over grad_accum micro-batches; the update is applied only if the guard allows it."""
        step = self.state.step + 1
        self.watchdog.beat(step, "step")
        fault_plan.strike("step_start", step=step, rank=self.rank)
        fault_plan.strike("step_raise", step=step, rank=self.rank)
        start = time.perf_counter()
        model, flops, digest = ModelTotals(), 0.0, 0
        poison = fault_plan.strike("nan_loss", step=step)
        for micro in range(self.grad_accum):
            batch = next(self.batches)
            digest += _digest(batch)
            flops += self.engine.module.train_flops(**batch)
            out = self.engine(**to_device(batch, self.device))
            self.engine.backward(out["loss"] * float("nan") if poison else out["loss"])
            model.add_output(out)
            if micro == self.grad_accum - 1:  # the boundary: decide on the global loss before the update
                self._arm_gate(model, poison, step)
            self.engine.step()
        skip_reason, grad_norm = self.gate.verdict()
        self.guard.record(self.gate.loss, grad_norm, skipped=skip_reason is not None)
        s = self.state
        s.step, s.samples, s.guard = step, s.samples + self.t.micro_batch_size * self.world * self.grad_accum, \
            self.guard.state_dict()
        # one collective for the data fingerprint, "stop now?", the FLOPs and the timed evaluations
        timed = [f"timed_{i}" for i in self.schedule.timed]
        step_totals = Totals(("data_digest", "stop_requested", "flops", *timed))
        step_totals.set("data_digest", digest)
        step_totals.set("stop_requested", float(self._signal is not None or self.files.stop_requested()))
        step_totals.set("flops", flops)
        for name, due in zip(timed, self.schedule.time_flags() if self.rank == 0 else [0.0] * len(timed)):
            step_totals.set(name, due)
        step_totals.all_reduce(self._all_reduce)
        s.flops += step_totals["flops"]
        s.text_bytes += model["n_text_bytes"]
        return StepResult(model=model, flops=step_totals["flops"], data_digest=int(step_totals["data_digest"]),
                          seconds=time.perf_counter() - start, skip_reason=skip_reason, grad_norm=grad_norm,
                          stop_requested=step_totals["stop_requested"] > 0,
                          timed_evals_due=[step_totals[n] for n in timed])

    def checkpoint_if_due(self, preempted: bool) -> bool:
        """A checkpoint every train.checkpoint_every steps, at the end and on preemption. A failed save (disk
        full) is logged and training goes on, unless it was the last one: then the error ends the job."""
        step = self.state.step
        if not (step % self.t.checkpoint_every == 0 or step == self.t.steps or preempted):
            return False
        self.watchdog.beat(step, "checkpoint")
        start = time.perf_counter()
        try:
            folder = checkpoint.save(self.engine, self.files.checkpoints, step, self.state.state_dict(),
                                     self.cfg.model_dump(), self.t.keep_last, self.t.keep_every)
        except checkpoint.CheckpointSaveError as exc:
            if self.logger:
                self.logger.log("checkpoint_failed", step, {"error": str(exc)})
                checkpoint.write_failure(self.files.root, "checkpoint-save", {"step": step, "error": str(exc)})
            if step == self.t.steps or preempted:
                raise
            return False
        if self.logger:
            self.logger.log("checkpoint", step, {"path": str(folder), "seconds": time.perf_counter() - start})
        return True

    def evaluate(self, step: int, due: list[int]) -> None:
        if not due:
            return
        self.watchdog.beat(step, "eval")
        for kind, values in self.evals.run(step, due):
            if self.logger:
                self.logger.log(kind, step, {**values, "train_flops": self.state.flops,
                                             "train_text_bytes": self.state.text_bytes})

    def roll_back(self) -> None:
        """After too many skipped updates in a row: back to the newest good checkpoint. The data position
        keeps going forward, so the batches that caused the trouble are not replayed. With no checkpoint
        from before the streak, a warning is logged and training goes on."""
        step, streak = self.state.step, self.guard.consecutive
        self.watchdog.beat(step, "rollback")
        rollbacks = self.state.rollbacks + 1
        # skipped updates leave the weights alone: a checkpoint saved during the streak holds the same weights
        folder = checkpoint.select_for_resume(self.files.checkpoints, self.t.verify_checkpoints,
                                              max_step=step - streak)
        if folder is None:  # skipped updates left the weights as they were: going on is safe
            self.guard.consecutive = 0
            if self.logger:
                self.logger.log("rollback_unavailable", step, {"skipped_in_a_row": streak,
                                                               "why": "no checkpoint from before the skips"})
            return
        if rollbacks > self.fault.max_rollbacks:
            why = f"rollback {rollbacks} exceeds fault.max_rollbacks={self.fault.max_rollbacks}"
            if self.logger:
                checkpoint.write_failure(self.files.root, "rollbacks-exhausted", {"step": step, "why": why})
            raise RuntimeError(f"the run diverged: {streak} updates in a row were skipped at step {step} and {why}")
        restored = self._restore(folder)
        s = self.state
        s.step, s.flops, s.text_bytes, s.rollbacks = restored["step"], restored["flops"], restored["text_bytes"], \
            rollbacks
        self.guard.consecutive = 0
        if self.logger:
            self.logger.log("rollback", s.step, {"from_step": step, "to_step": s.step, "checkpoint": str(folder),
                                                 "rollbacks": rollbacks})

    def finish(self, preempted: bool) -> None:
        step = self.state.step
        if preempted and self.logger:
            print(f"stop requested: checkpoint saved at step {step}, exiting", flush=True)
        self.watchdog.beat(step, "checkpoint")
        self.profiler.finish(self.logger, step)  # rank 0 logs the top operators
        if self.logger:
            self.logger.close()
        dist.barrier()
        self.watchdog.stop()
        # after every rank's last heartbeat: `wordpool status` reads this as the end
        self.files.record_exit("finished" if step >= self.t.steps else "preempted", step)
        self.files.release()
        dist.destroy_process_group()

    # -- the pieces ------------------------------------------------------------------------------------------
    def log_step(self, r: StepResult) -> None:
        if not self.logger:
            return
        step, s = self.state.step, self.state
        if r.skip_reason:
            self.logger.log("skip", step, {"reason": r.skip_reason, "loss": self.gate.loss, "grad_norm": r.grad_norm,
                                           "consecutive": self.guard.consecutive, "skipped_steps": self.guard.total})
        if step % self.t.log_every and step != self.t.steps:
            return
        values = summarize(r.model.values)
        values.update(lr=self.t.lr * warmup_cosine(step - 1, self.t.warmup_steps, self.t.steps, self.t.min_lr_ratio),
                      grad_norm=r.grad_norm if r.grad_norm is not None else float("nan"),
                      bytes_per_s=values["text_bytes"] / r.seconds, symbols_per_s=values["symbols"] / r.seconds,
                      flops_per_s=r.flops / r.seconds, flops_per_byte=r.flops / values["text_bytes"],
                      step_seconds=r.seconds, samples=s.samples, epoch=s.position.epoch, train_flops=s.flops,
                      train_text_bytes=s.text_bytes, data_digest=r.data_digest, skipped_steps=self.guard.total)
        if "words" in values:
            values["words_per_s"] = values["words"] / r.seconds
        if self.t.peak_flops:
            values["mfu"] = values["flops_per_s"] / (self.t.peak_flops * self.world)
        if self.on_gpu:
            values["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.logger.log("train", step, values)

    def _log_attempt(self) -> None:
        if not self.logger:
            return
        if self.resumed_from is not None:
            p = self.state.position
            print(f"resumed from {self.resumed_from} at step {self.state.step} (epoch {p.epoch}, "
                  f"{p.samples_in_epoch} samples into it)", flush=True)
        self.logger.log("attempt", self.state.step, {
            "restart": self.watchdog.restart, "world_size": self.world, "grad_accum": self.grad_accum,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None})

    def _join_process_group(self) -> None:
        distributed.die_with_parent()
        self.on_gpu = torch.cuda.is_available()
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.on_gpu else "cpu")
        import deepspeed

        distributed.init_process_group(distributed.backend(self.on_gpu))
        deepspeed.init_distributed(dist_backend=distributed.backend(self.on_gpu))  # adopts the group made above
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if self.on_gpu \
            else torch.device("cpu")
        if self.on_gpu:
            torch.cuda.set_device(self.device)

    def _build_engine(self) -> None:
        """DeepSpeed's engine (through the universal checkpoint loader when the world size changed), with
        the update guard's gate inside its optimizer step."""
        f = self.fault
        universal = self.resumed_from is not None and reshard.needs_universal(
            self.resumed_from, checkpoint.saved_world_size(self.resumed_from), self.world, self.t.zero_stage)
        warm = None
        if self.t.init_from and self.resumed_from is None:  # a run's own checkpoints win over a warm start
            warm = warm_start.init_weights(self.t.init_from)
        self.engine = build_engine(self.cfg, self.world, self.bf16, self.grad_accum, load_universal=universal,
                                   init_weights=warm)
        self.guard = UpdateGuard(f.skip_nonfinite, f.outlier_sigma, f.outlier_window, f.outlier_min_history,
                                 f.outlier_rule, judge_after_step=self.t.warmup_steps)
        self._plain_grad_norm = float("nan")  # without ZeRO or bf16, DeepSpeed reports no norm: measured here
        deepspeed_knows_norm = self.t.zero_stage > 0 or self.bf16
        self.gate = StepGate(self.guard, self._deepspeed_grad_norm if deepspeed_knows_norm
                             else lambda: self._plain_grad_norm)
        self.engine.guarded_optimizer.gate = self.gate

    def _build_loaders(self) -> None:
        t, datasets = self.t, training_data(self.cfg)
        data_dir, self.stream_val = datasets[0].root, {}  # the first dataset's files on this node
        encode = sample_encoder(str(data_dir), self.cfg.model.max_word_bytes)
        job = str(Path(t.run_dir).resolve())
        self.scorer = None
        if is_decomposed(data_dir):  # one dataset per length bucket, each step from one (length_buckets.py)
            self.batches, self.val_loader = decomposed_loaders(data_dir, encode, t, self.world, self.grad_accum,
                                                               self.state.position, job)
        else:  # data.output or train.streams, local or remote (data_sources.py)
            self.batches, self.val_loader, self.stream_val = build_loaders(self.cfg, datasets, encode,
                                                                           self.state.position, self.world)
        if self.val_loader is not None:
            self.scorer = WordScorer(self.cfg.model.kind, str(data_dir), self.meta["max_word_bytes"],
                                     self.meta.get("split_digits", False))
        elif self.rank == 0:
            print(f"warning: {data_dir / 'val'} holds no samples: evaluation is skipped", flush=True)

    def _load(self, folder: Path) -> None:
        """Resume: weights, optimizer, RNG and the trainer's state; the batch iterator seeks lazily to the
        restored data position (it has not been started yet)."""
        self.watchdog.beat(0, "load")
        global_batch = self.state.global_batch
        self.state.load_state_dict(self._restore(folder))
        if self.state.global_batch != global_batch:
            raise ValueError(f"{folder} was trained with a global batch of {self.state.global_batch} samples; this "
                             f"run has {global_batch} ({self.world} processes): set train.global_batch_size="
                             f"{self.state.global_batch}")
        self.guard.load_state_dict(self.state.guard)

    def _restore(self, folder: Path) -> dict:
        """Collective: load `folder`, through its universal form when the world size changed."""
        universal = reshard.needs_universal(folder, checkpoint.saved_world_size(folder), self.world,
                                            self.t.zero_stage)
        reshard.set_universal_loading(self.engine, universal)
        if universal:
            tag = reshard.prepare_universal(folder)
            with reshard.quiet():
                return checkpoint.load(self.engine, folder, tag=tag)
        return checkpoint.load(self.engine, folder)

    def _arm_gate(self, model: ModelTotals, poison: bool, step: int) -> None:
        if self.t.zero_stage == 0 and not self.bf16:
            self._plain_grad_norm = _grad_norm(self.engine.module)
        if poison:
            model.set("nll_sum", float("nan"))
        self.watchdog.beat(step, "sync")
        model.all_reduce(self._all_reduce)
        self.gate.arm(model.mean_loss, step)

    def _deepspeed_grad_norm(self) -> float | None:
        value = getattr(self.engine.optimizer, "_global_grad_norm", None)  # the global pre-clipping norm
        return None if value is None else float(value)

    def _all_reduce(self, x: torch.Tensor) -> None:
        y = x.to(self.device)
        dist.all_reduce(y)
        x.copy_(y.cpu())


def train(cfg: WordpoolConfig, resume: str | None = None) -> None:
    """One rank's training. A failure leaves this rank's report in failures/ (rank_failure.py) before it
    propagates: the launcher turns the reports into one line."""
    trainer = Trainer.__new__(Trainer)  # so that a failure inside __init__ still finds what was set up
    try:
        trainer.__init__(cfg, resume)
        trainer.fit()
    except Exception as exc:
        watchdog = getattr(trainer, "watchdog", None)  # its last beat: the step and phase in progress
        rank_failure.record(cfg.train.run_dir, exc, watchdog.step if watchdog else None,
                            watchdog.phase if watchdog else "start-up")
        raise


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _digest(batch: dict[str, torch.Tensor]) -> int:
    """A fingerprint of the samples in a micro-batch: a sum over samples, so the global batch's value is
    the same however its samples are spread over ranks (the elastic-resume test relies on it)."""
    rows = batch["words" if "words" in batch else "tokens"].numpy()
    return sum(zlib.crc32(row.tobytes()) for row in rows)


def _grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
