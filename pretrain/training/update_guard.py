"""Skipping bad updates: a step whose loss or gradient norm is non-finite is not applied; nor, by default,
a spike, whose loss *and* gradient norm are both far above the recent steps'. After K skips in a row the
trainer rolls back (or, with no checkpoint to go back to, warns and goes on).

What is not a fault: early training (no step is judged during LR warmup or before `min_history` steps),
and a gradient-norm rise with a normal loss (clipping already bounds that update; seen on healthy
high-LR runs). Every finite value enters the history, skipped or not, so a lasting shift in level
becomes the new normal within a window instead of an "outlier" forever.

The decision is taken inside DeepSpeed's optimizer step, where the global (all-ranks, pre-clipping)
gradient norm is known: DeepSpeed calls `GuardedAdamW.step`, which asks the gate. Every input to the
decision is global, so every rank decides the same.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable

import torch

RULES = ("loss_and_grad_norm", "loss_or_grad_norm")


class UpdateGuard:
    def __init__(self, skip_nonfinite: bool, outlier_sigma: float, window: int, min_history: int,
                 rule: str = "loss_and_grad_norm", judge_after_step: int = 0):
        if rule not in RULES:
            raise ValueError(f"outlier rule {rule!r}: expected one of {', '.join(RULES)}")
        self.skip_nonfinite, self.sigma, self.min_history = skip_nonfinite, outlier_sigma, min_history
        self.rule, self.judge_after_step = rule, judge_after_step
        self.losses: deque[float] = deque(maxlen=window)
        self.norms: deque[float] = deque(maxlen=window)
        self.consecutive = self.total = 0

    def _outlier(self, value: float, history: deque[float]) -> bool:
        if not self.sigma or len(history) < self.min_history:
            return False
        mean = sum(history) / len(history)
        std = math.sqrt(sum((x - mean) ** 2 for x in history) / len(history))
        return value > mean + self.sigma * max(std, 1e-3 * abs(mean))

    def reason_to_skip(self, loss: float, grad_norm: float | None, step: int | None = None) -> str | None:
        if not math.isfinite(loss):
            return "nonfinite_loss" if self.skip_nonfinite else None
        if grad_norm is not None and not math.isfinite(grad_norm):
            return "nonfinite_grad_norm" if self.skip_nonfinite else None
        if step is not None and step <= self.judge_after_step:
            return None
        loss_high = self._outlier(loss, self.losses)
        norm_high = grad_norm is not None and self._outlier(grad_norm, self.norms)
        if self.rule == "loss_or_grad_norm":
            return "outlier_loss" if loss_high else "outlier_grad_norm" if norm_high else None
        if loss_high and (norm_high or grad_norm is None):  # without a known norm, the loss decides alone
            return "spike"
        return None

    def record(self, loss: float, grad_norm: float | None, skipped: bool) -> None:
        if skipped:
            self.consecutive += 1
            self.total += 1
        else:
            self.consecutive = 0
        if math.isfinite(loss):
            self.losses.append(loss)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.norms.append(grad_norm)

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "norms": list(self.norms), "consecutive": self.consecutive,
                "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.losses.extend(state.get("losses", []))
        self.norms.extend(state.get("norms", []))
        self.consecutive, self.total = state.get("consecutive", 0), state.get("total", 0)


class StepGate:
    """One optimizer step's verdict, asked by GuardedAdamW (possibly once per parameter group)."""

    def __init__(self, guard: UpdateGuard, grad_norm: Callable[[], float | None]):
        self.guard, self.grad_norm = guard, grad_norm
        self.loss = 0.0
        self.step: int | None = None
        self.asked = False
        self.reason: str | None = None
        self.norm: float | None = None

    def arm(self, loss: float, step: int | None = None) -> None:
        """Before the step: the global loss of the batch about to be applied, and the step's number."""
        self.loss, self.step, self.asked, self.reason, self.norm = loss, step, False, None, None

    def allow(self) -> bool:
        if not self.asked:
            self.asked = True
            self.norm = self.grad_norm()
            self.reason = self.guard.reason_to_skip(self.loss, self.norm, self.step)
        return self.reason is None

    def verdict(self) -> tuple[str | None, float | None]:
        """After the step. DeepSpeed itself skips non-finite fp32 gradients without asking: that is a skip too."""
        if not self.asked:
            return self.guard.reason_to_skip(self.loss, float("nan")) or "nonfinite_grad_norm", float("nan")
        return self.reason, self.norm


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that applies an update only if its gate allows it."""

    gate: StepGate | None = None

    @torch.no_grad()
    def step(self, closure=None):
        if self.gate is not None and not self.gate.allow():
            return None
        return super().step(closure)
