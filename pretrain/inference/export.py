"""Export a training checkpoint to a portable folder: `model.safetensors` + `config.json`.

The weights are consolidated to fp32 from any ZeRO stage (DeepSpeed is needed for that step only);
`load_exported` rebuilds the model with `pretrain.models.build_model` and never imports DeepSpeed.
Works for any model `build_model` returns: only its state dict is touched.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from schema import WordpoolConfig, validate
from schema.load import upgrade_saved
from pretrain.checkpoint import store as checkpoint
from pretrain.checkpoint.manifest import sha256_of
from pretrain.run_dir import STEP_PREFIX, RunDir

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
EXPORT_KEY = "export"  # the block config.json adds to the run's wordpool config
FORMAT_VERSION = 1


def is_export(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as is (it must be complete); a run dir or a checkpoints root -> its newest
    complete checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if checkpoint.is_complete(path) or (path / checkpoint.CONFIG).is_file() or path.name.startswith(STEP_PREFIX):
        return checkpoint.resolve_resume(str(path), path.parent)  # refuses a half-written one
    for root in (RunDir(path).checkpoints, path):
        found = checkpoint.find_latest(root) if root.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(f"no complete checkpoint in {path} (looked in {path}/checkpoints and {path})")




def load_checkpoint(folder: str | Path) -> tuple[torch.nn.Module, WordpoolConfig, dict[str, Any]]:
    """A training checkpoint without DeepSpeed's engine: (its model with the weights loaded strictly, the
    validated config, the config as saved)."""
    from pretrain.models import build_model

    folder = Path(folder)
    raw_config = checkpoint.load_config_dict(folder)
    cfg = validate(upgrade_saved(raw_config), str(folder / checkpoint.CONFIG))
    # DeepSpeed's consolidation narrates every shard
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        weights = checkpoint.load_module_weights(folder)
    model = build_model(cfg.model)
    model.load_state_dict(weights, strict=True)
    return model, cfg, raw_config


def _standalone_fp32(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor in its own contiguous storage: safetensors refuses shared storage, and both tied
    parameters and ZeRO's consolidated views into one flat buffer share it."""
    out = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        out[name] = tensor.clone(memory_format=torch.contiguous_format)
    return out


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"{out_dir} is not empty; pass --force (force=True) to replace it")


def export_checkpoint(checkpoint_folder: str | Path, out_dir: str | Path, force: bool = False,
                      hf: bool = False) -> Path:
    """Write `out_dir/model.safetensors` and `out_dir/config.json` (hf: and what Hugging Face
    transformers loads, pretrain/inference/hf_export.py); returns `out_dir`.

    Atomic: everything is written to a temporary folder beside `out_dir` and renamed into place, so
    `out_dir` never holds a partial export.
    """
    folder = resolve_checkpoint(checkpoint_folder)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)  # before the (possibly long) consolidation
    step = json.loads((folder / checkpoint.COMPLETE).read_text())["step"]
    model, cfg, raw_config = load_checkpoint(folder)  # a strict load: fails here, not when someone loads the export
    return write_export(model, cfg, raw_config, out_dir, {"source_checkpoint": str(folder.resolve()), "step": step},
                        force, hf)


def write_export(model: torch.nn.Module, cfg: WordpoolConfig, raw_config: dict[str, Any], out_dir: str | Path,
                 source: dict[str, Any], force: bool = False, hf: bool = False) -> Path:
    """export_checkpoint's writing half, for any model of `cfg`; `source` (source_checkpoint, step)
    goes into the export block."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    weights = _standalone_fp32(model.state_dict())
    n_params = sum(p.numel() for p in model.parameters())  # parameters() counts a tied tensor once
    del model

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # "pt": what transformers requires of a safetensors file (export --hf). One key only: safetensors
        # writes the metadata in hash order, so a second key would make the file differ between runs
        save_file(weights, tmp / WEIGHTS, metadata={"format": "pt"})
        export_block = {
            "format_version": FORMAT_VERSION,
            **source,
            "parameters": n_params,
            "weights_file": WEIGHTS,
            "sha256": sha256_of(tmp / WEIGHTS),
        }
        (tmp / CONFIG).write_text(json.dumps({**raw_config, EXPORT_KEY: export_block}, indent=1) + "\n")
        if hf:
            from pretrain.inference.hf_export import add_hf_files

            add_hf_files(tmp, cfg)
        _replace_dir(tmp, out_dir, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _replace_dir(new: Path, target: Path, force: bool) -> None:
    _check_out_dir(target, force)  # again: someone may have written there meanwhile
    if not target.exists():
        os.rename(new, target)
        return
    # Move the old folder aside first, so `target` is either the old export or the new one.
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_export_config(out_dir: str | Path) -> tuple[WordpoolConfig, dict[str, Any]]:
    """(the run's validated config, the export block) of an export folder."""
    path = Path(out_dir) / CONFIG
    raw = json.loads(path.read_text())
    export_block = raw.pop(EXPORT_KEY, None)
    if not isinstance(export_block, dict):
        raise ValueError(f"{path} has no '{EXPORT_KEY}' block: not written by `wordpool export`")
    if export_block.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: export format_version {export_block.get('format_version')!r}, "
                         f"this wordpool reads {FORMAT_VERSION}")
    for key in export_block.get("hf_keys", ()):  # what `export --hf` adds for transformers
        raw.pop(key, None)
    return validate(upgrade_saved(raw), str(path)), export_block


def load_exported(out_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, WordpoolConfig]:
    """The exported model (eval mode, on `device`) and its config; checksum verified, strict load."""
    from safetensors.torch import load_file

    from pretrain.models import build_model

    out_dir = Path(out_dir)
    if not is_export(out_dir):
        raise FileNotFoundError(f"{out_dir} is not a wordpool export (needs {WEIGHTS} and {CONFIG})")
    cfg, export_block = read_export_config(out_dir)
    actual = sha256_of(out_dir / WEIGHTS)
    if actual != export_block.get("sha256"):
        raise ValueError(f"{out_dir / WEIGHTS}: sha256 {actual} does not match config.json's "
                         f"{export_block.get('sha256')} (corrupt or replaced weights)")
    model = build_model(cfg.model)
    model.load_state_dict(load_file(out_dir / WEIGHTS), strict=True)
    return model.to(device).eval(), cfg
