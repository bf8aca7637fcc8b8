"""Checkpoint folders on disk: the manifest (size + sha256 of every file), its verification, and the
retention policy (keep the newest K, plus a permanent one every P steps).

Pure file work, no torch.distributed: the collective parts live in pretrain/checkpoint/store.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pretrain.run_dir import COMPLETE, MANIFEST, TMP_PREFIX, published, step_of, write_json_atomic


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def payload_files(folder: Path) -> list[str]:
    """Files the manifest covers: everything DeepSpeed and the trainer wrote, relative to the folder."""
    skip = {MANIFEST, COMPLETE}
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name not in skip and not p.name.startswith(".")
                  and "universal" not in p.relative_to(folder).parts)


def describe_files(folder: Path, names: list[str]) -> dict[str, dict]:
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)} for name in names}


def write_manifest(folder: Path, step: int, world_size: int, files: dict[str, dict]) -> None:
    write_json_atomic(folder / MANIFEST, {"step": step, "world_size": world_size, "files": files})


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def verify_files(folder: Path, manifest: dict, names: list[str], mode: str) -> list[str]:
    """Problems with `names` (a share of the manifest's files) under `mode` (sha256 | size | none)."""
    problems = []
    for name in names:
        expected, path = manifest["files"][name], Path(folder) / name
        if mode == "none":
            continue
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {expected['bytes']}")
        elif mode == "sha256" and "sha256" in expected and sha256_of(path) != expected["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def remove_tree(folder: Path) -> None:
    """Rename first, then delete: a half-deleted checkpoint never looks like a checkpoint."""
    if not folder.exists():
        return
    doomed = folder.with_name(f"{TMP_PREFIX}del-{folder.name}-{os.getpid()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_temporaries(root: Path) -> list[str]:
    """Temporary folders left by a save or delete that a crash interrupted."""
    if not Path(root).is_dir():
        return []
    stale = [p for p in Path(root).iterdir() if p.name.startswith(TMP_PREFIX) and p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in stale]


def apply_retention(root: Path, keep_last: int, keep_every: int | None) -> list[Path]:
    """Delete published checkpoints beyond the newest `keep_last`, except permanent ones
    (step a multiple of `keep_every`). Returns the deleted folders."""
    folders = published(root)
    keep = set(folders[-keep_last:])
    if keep_every:
        keep |= {p for p in folders if step_of(p) % keep_every == 0}
    doomed = [p for p in folders if p not in keep]
    for p in doomed:
        remove_tree(p)
    return doomed
