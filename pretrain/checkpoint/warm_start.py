"""Warm start (`train.init_from`): a new run's weights from a checkpoint or an export, nothing else.

The optimizer, the LR schedule and the data position start fresh: continued pretraining on another
corpus or language (HAT's adaptation experiment). A run that has checkpoints of its own resumes from
them instead (`--resume` wins). The load is strict: every parameter of the model must be there with
its shape, and nothing else, or the run stops at once with the differences named.
"""
from __future__ import annotations

from pathlib import Path

import torch

from schema import UserError

MAX_LISTED = 5


class WarmStartError(UserError):
    """train.init_from does not fit the model this run builds."""


def init_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The fp32 weights of an export folder or of a checkpoint (a step folder, or a run dir / checkpoints
    root: its newest complete checkpoint)."""
    from pretrain.checkpoint.store import load_module_weights
    from pretrain.inference.export import WEIGHTS, is_export, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        raise WarmStartError(f"train.init_from {path}: no such checkpoint or export")
    if is_export(path):
        from safetensors.torch import load_file

        return load_file(path / WEIGHTS)
    return load_module_weights(resolve_checkpoint(path))


def load_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy `weights` into `model`, strictly; a mismatch names the keys and shapes that differ."""
    _check_fit({k: tuple(v.shape) for k, v in model.state_dict().items()},
               {k: tuple(v.shape) for k, v in weights.items()}, source)
    model.load_state_dict(weights, strict=True)


def check_before_launch(cfg) -> None:
    """What can be checked before any rank starts: the path exists; an export's tensor names and shapes
    (read from the safetensors header) fit the model, built on the meta device (no memory)."""
    from pretrain.inference.export import WEIGHTS, is_export
    from pretrain.models import build_model

    path = Path(cfg.train.init_from)
    if not path.exists():
        raise WarmStartError(f"train.init_from {path}: no such checkpoint or export")
    if not is_export(path):
        return  # a DeepSpeed checkpoint's shapes are known only after consolidation: the ranks check it
    from safetensors import safe_open

    with safe_open(str(path / WEIGHTS), framework="pt") as f:
        given = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    with torch.device("meta"):
        model = build_model(cfg.model)
    _check_fit({k: tuple(v.shape) for k, v in model.state_dict().items()}, given, path)


def _check_fit(expected: dict[str, tuple], given: dict[str, tuple], source: str | Path) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {given[k]} vs the model's {shape}" for k, shape in expected.items()
              if k in given and given[k] != shape]
    problems = [f"{label}: {', '.join(items[:MAX_LISTED])}" + (f" (+{len(items) - MAX_LISTED} more)"
                                                               if len(items) > MAX_LISTED else "")
                for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
    if problems:
        raise WarmStartError(f"train.init_from {source} does not fit model.* of this run ({'; '.join(problems)}): "
                             f"use the model settings it was trained with")
