"""Checkpoints that resume exactly, and survive crashes, corruption and full disks.

DeepSpeed saves the module, optimizer and LR schedule; it saves neither the data position nor RNG
state, so both travel in `client_state` (global) and in one RNG file per rank.

Publishing: every rank writes into `checkpoints/.tmp-step_N/`; once all are done, the ranks checksum
the files (each a share) into MANIFEST.json, rank 0 writes COMPLETE and renames the folder to
`step_N` (atomic), then moves the `latest` pointer. A crash at any moment leaves either the previous
checkpoints only or the new one whole. On resume the newest checkpoint is checked against its
manifest; a truncated or corrupted one is reported and the previous one is used.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pretrain.checkpoint import manifest as files
from pretrain.run_dir import (COMPLETE, CONFIG, FAILURES, LATEST, corrupt_name, fsync_dir, published,
                              rng_file, step_of, tag_for, tmp_tag_for, write_atomic, write_json_atomic)
from schema import fault_plan


class CheckpointSaveError(RuntimeError):
    """A save failed on some rank (e.g. disk full); the previous checkpoints are untouched."""


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


def _device() -> torch.device:
    """Where collectives run: NCCL takes CUDA tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _any_rank(flag: bool) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t)
    return t.item() > 0


def _from_rank0(value_on_rank0):
    """Rank 0's value on every rank: listings of a shared filesystem may differ between nodes for a moment
    (NFS attribute caches), and they decide which collectives run."""
    box = [value_on_rank0 if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save(engine, root: Path, step: int, state: dict[str, Any], config: dict[str, Any],
         keep_last: int = 1 << 30, keep_every: int | None = None) -> Path:
    """Collective: every rank must call it. `state` is the trainer's (step, samples, data position).
    Raises CheckpointSaveError on every rank if any rank failed to write its part."""
    rank, world = dist.get_rank(), dist.get_world_size()
    tag, tmp_tag = tag_for(step), tmp_tag_for(step)
    tmp, final = root / tmp_tag, root / tag
    error: BaseException | None = None
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        files.remove_tree(tmp)
    dist.barrier()
    try:
        engine.save_checkpoint(str(root), tag=tmp_tag, client_state={"wordpool": state}, save_latest=False)
    except (OSError, RuntimeError) as exc:  # disk full, quota, I/O (torch.save raises RuntimeError for them)
        error = exc
        dist.barrier()  # the other ranks wait in DeepSpeed's last barrier
    if error is None:
        try:
            torch.save(rng_state(), tmp / rng_file(rank))
            if rank == 0:  # lets eval/generate/export rebuild the model without the run's YAML
                write_json_atomic(tmp / CONFIG, config)
            fault_plan.strike("checkpoint_write", step=step, rank=rank)  # tests: a crash mid-save
        except (OSError, RuntimeError) as exc:
            error = exc
    failed = _any_rank(error is not None)
    if not failed:  # every rank checksums a share of the files; rank 0 writes the manifest
        names = _from_rank0(files.payload_files(tmp) if rank == 0 else None)
        try:
            mine = files.describe_files(tmp, names[rank::world])
        except OSError as exc:
            error, mine = exc, {}
        shares: list[dict] = [{} for _ in range(world)]
        dist.all_gather_object(shares, mine)
        failed = _any_rank(error is not None)
    if not failed and rank == 0:
        try:
            manifest = {name: info for share in shares for name, info in share.items()}
            files.write_manifest(tmp, step, world, manifest)
            write_json_atomic(tmp / COMPLETE, {"step": step, "world_size": world, "time": time.time()}, indent=None)
            if final.exists():  # saved again after a rollback: the newer one replaces it
                files.remove_tree(final)
            os.replace(tmp, final)
        except OSError as exc:
            error = exc
        else:  # published: what follows is bookkeeping, and its failure must not disown the checkpoint
            try:
                fsync_dir(root)
                write_atomic(root / LATEST, tag)
            except OSError as exc:
                print(f"warning: checkpoint {final} is published but {root / LATEST} was not updated: {exc}",
                      file=sys.stderr, flush=True)
    failed = _any_rank(error is not None)
    if failed:
        if rank == 0:
            files.remove_tree(tmp)  # frees the space the partial save took
        reason = f"rank {rank}: {error}" if error else "another rank failed to write its part"
        free = shutil.disk_usage(root).free
        raise CheckpointSaveError(f"saving checkpoint step {step} failed ({reason}; {free:,} bytes free on the "
                                  f"checkpoint filesystem); the previous checkpoints are intact")
    if rank == 0:
        files.apply_retention(root, keep_last, keep_every)
    dist.barrier()
    return final


def is_complete(folder: Path) -> bool:
    return (Path(folder) / COMPLETE).is_file()


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root` (no verification; see select_for_resume)."""
    found = published(root)
    return found[-1] if found else None


def verify(folder: Path, mode: str = "sha256", share: tuple[int, int] = (0, 1)) -> list[str]:
    """Problems found checking `folder` against its manifest (this rank's `share` = (rank, world) of
    the files). A checkpoint from before manifests existed has none to check."""
    manifest = files.read_manifest(folder)
    if manifest is None:
        return []
    names = sorted(manifest["files"])
    return files.verify_files(folder, manifest, names[share[0]::share[1]], mode)


def select_for_resume(root: Path, mode: str = "sha256", report=print, max_step: int | None = None) -> Path | None:
    """Collective when torch.distributed is up: the newest checkpoint (at most `max_step`) that passes
    verification, the ranks sharing the checksum work. A bad one is reported (console and a failure
    report beside the run), renamed `corrupt-step_N` (so retention never counts it as a keeper) and the
    one before it is tried. Checkpoints exist but none verifies: an error, never a silent fresh start."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    candidates = [p for p in published(root) if max_step is None or step_of(p) <= max_step]
    if distributed:
        candidates = _from_rank0(candidates)
    rejected = []
    for folder in reversed(candidates):
        problems = verify(folder, mode, (rank, world))
        if distributed:
            gathered: list[list[str]] = [[] for _ in range(world)]
            dist.all_gather_object(gathered, problems)
            problems = [p for share in gathered for p in share]
        if not problems:
            return folder
        rejected.append(folder)
        if rank == 0:
            report(f"warning: checkpoint {folder} failed verification ({'; '.join(problems[:5])}): "
                   f"resuming from the one before it")
            write_failure(root.parent, "corrupt-checkpoint", {"checkpoint": str(folder), "problems": problems})
            os.replace(folder, folder.with_name(corrupt_name(folder)))
        if distributed:
            dist.barrier()
    if rejected:
        raise RuntimeError(f"every checkpoint under {root} failed verification ({', '.join(p.name for p in rejected)}, "
                           f"now renamed corrupt-*): refusing to start over from step 0; resume from a named one "
                           f"with --resume PATH or move them away")
    return None


def write_failure(run_dir: Path, kind: str, details: dict) -> None:
    """A report in RUN_DIR/failures/ (best effort: the disk may be the thing that failed)."""
    folder = Path(run_dir) / FAILURES
    try:
        write_json_atomic(folder / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json",
                          {"kind": kind, "time": time.time(), **details}, make_parents=True)
    except OSError as exc:
        print(f"warning: cannot write a {kind} report into {folder}: {exc}", file=sys.stderr, flush=True)


def resolve_resume(resume: str | None, root: Path, verify_mode: str = "sha256") -> Path | None:
    """`None`/"none" -> fresh start; "auto" -> newest complete one that verifies (or fresh); a path ->
    that checkpoint, which must be complete and verify."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return select_for_resume(root, verify_mode, report=lambda m: print(m, file=sys.stderr, flush=True))
    folder = Path(resume)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {folder}")
    if not is_complete(folder):
        raise ValueError(f"checkpoint {folder} is incomplete (no {COMPLETE} marker): a rank did not finish saving it")
    problems = verify(folder, verify_mode)
    if problems:
        raise ValueError(f"checkpoint {folder} failed verification: {'; '.join(problems[:5])}")
    return folder


def saved_world_size(folder: Path) -> int:
    return json.loads((Path(folder) / COMPLETE).read_text()).get("world_size", 1)


def load(engine, folder: Path, tag: str | None = None) -> dict[str, Any]:
    """Collective. Restores module, optimizer, scheduler and this rank's RNG; returns client state.
    `tag` names a sub-folder to load instead (the universal form of a checkpoint, see elastic.py)."""
    path, client_state = engine.load_checkpoint(str(folder.parent if tag is None else folder),
                                                tag=folder.name if tag is None else tag)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {folder}")
    rng_path = folder / rng_file(dist.get_rank())
    if rng_path.is_file() and saved_world_size(folder) == dist.get_world_size():
        set_rng_state(torch.load(rng_path, weights_only=False))
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
