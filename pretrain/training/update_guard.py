"""Skipping bad updates: a step whose loss or gradient norm is non-finite, or a large outlier against the
recent steps, is not applied (as OLMo-core does); after K skips in a row the trainer rolls back.

The decision is taken inside DeepSpeed's optimizer step, where the global (all-ranks, pre-clipping)
gradient norm is known: DeepSpeed calls `GuardedAdamW.step`, which asks the gate. Every input to the
decision is global, so every rank decides the same.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable

import torch


class UpdateGuard:
    def __init__(self, skip_nonfinite: bool, outlier_sigma: float, window: int, min_history: int):
        self.skip_nonfinite, self.sigma, self.min_history = skip_nonfinite, outlier_sigma, min_history
        self.losses: deque[float] = deque(maxlen=window)
        self.norms: deque[float] = deque(maxlen=window)
        self.consecutive = self.total = 0

    def _outlier(self, value: float, history: deque[float]) -> bool:
        if not self.sigma or len(history) < self.min_history:
            return False
        mean = sum(history) / len(history)
        std = math.sqrt(sum((x - mean) ** 2 for x in history) / len(history))
        return value > mean + self.sigma * max(std, 1e-3 * abs(mean))

    def reason_to_skip(self, loss: float, grad_norm: float | None) -> str | None:
        if not math.isfinite(loss):
            return "nonfinite_loss" if self.skip_nonfinite else None
        if grad_norm is not None and not math.isfinite(grad_norm):
            return "nonfinite_grad_norm" if self.skip_nonfinite else None
        if self._outlier(loss, self.losses):
            return "outlier_loss"
        if grad_norm is not None and self._outlier(grad_norm, self.norms):
            return "outlier_grad_norm"
        return None

    def record(self, loss: float, grad_norm: float | None, skipped: bool) -> None:
        if skipped:
            self.consecutive += 1
            self.total += 1
            return
        self.consecutive = 0
        self.losses.append(loss)
        if grad_norm is not None:
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
        self.asked = False
        self.reason: str | None = None
        self.norm: float | None = None

    def arm(self, loss: float) -> None:
        """Before the step: the global loss of the batch about to be applied."""
        self.loss, self.asked, self.reason, self.norm = loss, False, None, None

    def allow(self) -> bool:
        if not self.asked:
            self.asked = True
            self.norm = self.grad_norm()
            self.reason = self.guard.reason_to_skip(self.loss, self.norm)
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
