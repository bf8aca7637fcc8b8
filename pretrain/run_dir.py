"""Reading a run directory (docs/RUN_DIR.md) while other processes write it.

Every reader here tolerates what a live or crashed run leaves behind: missing files, a last line of a
JSONL file caught mid-write, a JSON file replaced while being read, and steps logged twice (a killed
attempt logs steps past its checkpoint; the resumed one logs them again, so the last record wins).
Standard library only: `wordpool status` imports it before anything heavy.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
CONFIG = "wordpool_config.json"
EVAL_FILE = "eval.json"
WATCH_LOG = "watch_evals.jsonl"
TAG = re.compile(r"^step_(\d+)$")
# what a run directory holds once anything ran in it; an empty or unrelated folder has none of these
RUN_MARKERS = ("metrics.jsonl", CHECKPOINTS, "wandb_id", "launch.jsonl", "control", "heartbeat", "failures")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def check_run_dir(path: str | Path) -> Path:
    """`path` as a Path; FileNotFoundError / ValueError (one-line CLI errors) if it is no run directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run directory not found: {path}")
    if not is_run_dir(path):
        raise ValueError(f"{path} is not a run directory (none of {', '.join(RUN_MARKERS)} in it)")
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None if the file is absent, unreadable or caught mid-write."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON object line; a partially written (or garbled) line is skipped."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def of_kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("kind") == kind]


def last_per_step(records: list[dict]) -> list[dict]:
    """One record per step, the last one written, in step order."""
    by_step: dict[int, dict] = {}
    for r in records:
        if isinstance(r.get("step"), (int, float)):
            by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def append_jsonl(path: Path, record: dict) -> None:
    """One write per line (O_APPEND): concurrent writers never interleave within a line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def write_json_atomic(path: Path, record: dict) -> None:
    """Readers see the old file or the whole new one (tmp + rename in the same folder)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def step_of(folder: Path) -> int | None:
    match = TAG.match(Path(folder).name)
    return int(match.group(1)) if match else None


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Published checkpoints (`step_N` with COMPLETE), oldest first; `.tmp-…` folders are never listed."""
    root = Path(run_dir) / CHECKPOINTS
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    found = [p for p in entries if step_of(p) is not None and (p / COMPLETE).is_file()]
    return sorted(found, key=step_of)


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """The config saved with the newest checkpoint that has one (the run's YAML is not in the run dir)."""
    for folder in reversed(complete_checkpoints(run_dir)):
        cfg = read_json(folder / CONFIG)
        if cfg is not None:
            return cfg
    return None
