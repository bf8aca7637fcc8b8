"""What the trainer carries from step to step, by name: the state a checkpoint restores, and the
per-step totals that are summed over micro-batches and ranks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pretrain.training.loader import LoaderPosition
from pretrain.training.metrics import SUM_KEYS, stack_sums


@dataclass
class TrainState:
    """The trainer's part of a checkpoint (DeepSpeed holds the module, optimizer and LR schedule)."""

    step: int = 0
    samples: int = 0  # global samples consumed
    flops: float = 0.0  # training FLOPs so far, all ranks: curves can be drawn against compute
    text_bytes: float = 0.0  # UTF-8 text bytes predicted so far, all ranks
    global_batch: int = 0  # samples per optimizer step; a resume must keep it
    position: LoaderPosition = field(default_factory=LoaderPosition)  # the loader advances it in place
    guard: dict[str, Any] = field(default_factory=dict)  # the update guard's history
    rollbacks: int = 0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(self)}
        for name, value in saved.items():
            if name == "position":  # updated in place: the batch iterator holds this object
                for key, v in value.items():
                    setattr(self.position, key, v)
            elif name in known:
                setattr(self, name, value)


class Totals:
    """Named float64 sums that travel as one tensor, so one all-reduce sums them all over the ranks."""

    def __init__(self, names: tuple[str, ...] | list[str]):
        self.names = tuple(names)
        self.values = torch.zeros(len(self.names), dtype=torch.float64)

    def set(self, name: str, value: float) -> None:
        self.values[self.names.index(name)] = value

    def __getitem__(self, name: str) -> float:
        return self.values[self.names.index(name)].item()

    def all_reduce(self, reduce: Callable[[torch.Tensor], None]) -> "Totals":
        reduce(self.values)
        return self


class ModelTotals(Totals):
    """What the model reports per micro-batch (NLL, symbols, text bytes, words, correct words)."""

    def __init__(self):
        super().__init__(SUM_KEYS)

    def add_output(self, out: dict[str, torch.Tensor]) -> None:
        self.values += stack_sums(out).cpu()

    @property
    def mean_loss(self) -> float:
        return self["nll_sum"] / max(self["n_symbols"], 1.0)
