"""Checkpoints that resume exactly.

DeepSpeed saves the module, optimizer and LR schedule; it saves neither the data position nor RNG
state, so both travel in `client_state` (global) and in one RNG file per rank. A checkpoint is
*complete* only once every rank has written its part: rank 0 then writes `COMPLETE` in the tag
folder and swaps the `latest` pointer atomically. A half-written checkpoint is never chosen.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

COMPLETE = "COMPLETE"
LATEST = "latest"
CONFIG = "wordpool_config.json"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(engine, root: Path, step: int, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Collective: every rank must call it. `state` is the trainer's (step, samples, data position)."""
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag, client_state={"wordpool": state}, save_latest=False)
    folder = root / tag
    rank = dist.get_rank()
    torch.save(rng_state(), folder / f"rng_rank{rank:05d}.pt")
    if rank == 0:  # lets eval/generate/export rebuild the model without the run's YAML
        _atomic_write(folder / CONFIG, json.dumps(config, indent=1))
    dist.barrier()  # every rank's DeepSpeed files and RNG file are on disk
    if rank == 0:
        _atomic_write(folder / COMPLETE, json.dumps({"step": step, "world_size": dist.get_world_size()}))
        _atomic_write(root / LATEST, tag)
    dist.barrier()
    return folder


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`: the `latest` pointer if it names a complete one,
    else the highest complete step folder."""
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if is_complete(folder):
            return folder
    complete = sorted(p for p in root.glob("step_*") if is_complete(p))
    return complete[-1] if complete else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """`None`/"none" -> fresh start; "auto" -> newest complete (or fresh); a path -> that checkpoint."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return find_latest(root)
    folder = Path(resume)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {folder}")
    if not is_complete(folder):
        raise ValueError(f"checkpoint {folder} is incomplete (no {COMPLETE} marker): a rank did not finish saving it")
    return folder


def load(engine, folder: Path) -> dict[str, Any]:
    """Collective. Restores module, optimizer, scheduler and this rank's RNG; returns client state."""
    path, client_state = engine.load_checkpoint(str(folder.parent), tag=folder.name)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {folder}")
    rng_file = folder / f"rng_rank{dist.get_rank():05d}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return client_state["wordpool"]


def load_module_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a checkpoint of any ZeRO stage, without DeepSpeed's engine."""
    folder = Path(folder)
    if any(folder.glob("*zero_pp_rank_*optim_states.pt")) or any(folder.glob("zero_pp_rank_*model_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    states = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in states["module"].items()}


def load_config_dict(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a wordpool checkpoint")
    return json.loads(path.read_text())
