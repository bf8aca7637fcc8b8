"""Resuming on a different number of processes.

DeepSpeed's ZeRO checkpoints hold one optimizer partition per data-parallel rank and refuse to load at
another world size. DeepSpeed's answer is the *universal* checkpoint: parameters and optimizer state
per parameter, independent of the partitioning. When the world size changed, rank 0 converts the
checkpoint once (kept in `step_N/universal/`, outside the manifest) and every rank loads that form.

The data side needs nothing special: the data position is a count of global samples and the sample
order depends only on `train.num_canonical_nodes` (fixed), so the resumed run sees the same samples
in the same global batches, provided the global batch size is kept (`train.global_batch_size`).
"""
from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

UNIVERSAL = "universal"


def needs_universal(folder: Path, saved_world: int, world: int, zero_stage: int) -> bool:
    return folder is not None and zero_stage > 0 and saved_world != world


def prepare_universal(folder: Path) -> str:
    """Collective: the universal form of `folder` exists on return; returns its tag (sub-folder name)."""
    target = folder / UNIVERSAL
    error = None
    if dist.get_rank() == 0 and not (target / "zero").is_dir():
        tmp = folder / f".{UNIVERSAL}-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # its own process: the converter spawns worker pools and prints a lot
        proc = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                               str(folder), "--output_folder", str(tmp), "--inject_missing_state"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            error = f"converting {folder} to a universal checkpoint failed:\n{proc.stderr[-3000:]}"
        else:
            for states in folder.glob("mp_rank_*_model_states.pt"):  # module weights and our client state
                shutil.copy2(states, tmp / states.name)
            tmp.rename(target)
    box = [error]
    dist.broadcast_object_list(box, src=0)  # every rank fails with rank 0, none waits for it forever
    if box[0]:
        raise RuntimeError(box[0])
    return UNIVERSAL


def set_universal_loading(engine, universal: bool) -> None:
    """DeepSpeed reads the checkpoint layout from its config at each load; a rollback after an elastic
    resume loads a checkpoint of the other layout than the one the run started from."""
    engine._config.load_universal_checkpoint = universal


def quiet():
    """DeepSpeed narrates universal loading per parameter."""
    return contextlib.redirect_stdout(io.StringIO())
