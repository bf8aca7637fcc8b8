"""The run directory (docs/RUN_DIR.md): every path in it, how its files are written, and how they are read.

The one module of the contract between the training ranks, `wordpool launch`, `wordpool eval --watch` and
`wordpool status`: file names, the checkpoint folder names (`step_NNNNNNNN`, `.tmp-…`, `corrupt-…`) and their
parser, the heartbeat phases, ONE atomic write (tmp + fsync + rename) and ONE JSON-lines append for every
writer, and the tolerant readers.

Every reader here tolerates what a live or crashed run leaves behind: missing files, a last line of a
JSONL file caught mid-write, a JSON file replaced while being read, and steps logged twice (a killed
attempt logs steps past its checkpoint; the resumed one logs them again, so the last record wins).
Standard library only: `wordpool status` imports it before anything heavy.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import IO, Any, Iterator

# --- names (the table of docs/RUN_DIR.md) -------------------------------------------------------------
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest"  # checkpoints/latest: tag of the newest published checkpoint
COMPLETE = "COMPLETE"  # in a checkpoint folder: {"step", "world_size", "time"}, written last
MANIFEST = "MANIFEST.json"  # in a checkpoint folder: size and sha256 of every file
CONFIG = "wordpool_config.json"  # in a checkpoint folder: the run's validated config
EVAL_FILE = "eval.json"  # in a checkpoint folder: the watcher's evaluation of it
WATCH_LOG = "watch_evals.jsonl"
LM_EVAL_PREFIX = "lm_eval/"  # eval and watch records: lm-eval metrics as lm_eval/<task>/<metric>
CONTROL = "control"
STOP = "stop"  # control/stop
EXIT = "exit.json"  # control/exit.json
HEARTBEATS = "heartbeat"
FAILURES = "failures"
LOGS = "logs"  # logs/<launcher>-<host>-<time>.log: everything the ranks and torchrun printed
LAUNCH_LOG = "launch.jsonl"
SLURM = "slurm"
SLURM_SCRIPT = "launch.sbatch"  # slurm/launch.sbatch
WANDB_ID = "wandb_id"
WANDB_DIR = "wandb"
STATUS_PLOT = "status.png"
PROFILER = "profiler"  # profiler/rank_RRRRR-step_NNNNNNNN.pt.trace.json: train.profile's Chrome traces
LOCK = ".lock"  # held (flock) by the live training job's rank 0
# what a run directory holds once anything ran in it; an empty or unrelated folder has none of these
RUN_MARKERS = (METRICS, CHECKPOINTS, WANDB_ID, LAUNCH_LOG, CONTROL, HEARTBEATS, FAILURES)

# --- checkpoint folder names -----------------------------------------------------------------------------
STEP_PREFIX = "step_"
TMP_PREFIX = ".tmp-"  # a checkpoint being written (.tmp-step_N) or deleted (.tmp-del-step_N-PID)
CORRUPT_PREFIX = "corrupt-"  # a checkpoint that failed verification, set aside
TAG = re.compile(rf"^{STEP_PREFIX}(\d+)$")


def tag_for(step: int) -> str:
    """`step_NNNNNNNN`: the folder name of the checkpoint of `step`."""
    return f"{STEP_PREFIX}{step:08d}"


def tmp_tag_for(step: int) -> str:
    """`.tmp-step_NNNNNNNN`: where the checkpoint of `step` is written before it is published."""
    return TMP_PREFIX + tag_for(step)


def step_of(folder: str | Path) -> int | None:
    """The step of a published checkpoint folder's name; None for anything else (`.tmp-…`, `corrupt-…`)."""
    match = TAG.match(Path(folder).name)
    return int(match.group(1)) if match else None


def corrupt_name(folder: str | Path) -> str:
    return CORRUPT_PREFIX + Path(folder).name


def rng_file(rank: int) -> str:
    """In a checkpoint folder: one rank's RNG state."""
    return f"rng_rank{rank:05d}.pt"


# --- heartbeat phases ------------------------------------------------------------------------------------
# where in a step a rank is, in order: a rank whose (step, phase) is before another's has not reached its
# collective (the hang watchdog's report); the phase also says which fault.*_timeout_s bounds it
PHASES = ("start", "load", "step", "sync", "eval", "checkpoint", "rollback")
PHASE_ORDER = {phase: i for i, phase in enumerate(PHASES)}
IO_PHASES = frozenset({"eval", "checkpoint", "load", "rollback"})


def timeout_field(phase: str | None, warming_up: bool) -> str:
    """The `fault.*` field that bounds `phase`: io_timeout_s for evaluation, checkpoints, loading and
    rollbacks; init_timeout_s during start-up and the first steps (`warming_up`); step_timeout_s otherwise."""
    if phase in IO_PHASES:
        return "io_timeout_s"
    return "init_timeout_s" if warming_up else "step_timeout_s"


class RunDir:
    """The paths of one run directory: `RunDir(cfg.train.run_dir).metrics`, `.control_stop`, …"""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    metrics = property(lambda self: self.root / METRICS)
    checkpoints = property(lambda self: self.root / CHECKPOINTS)
    latest = property(lambda self: self.root / CHECKPOINTS / LATEST)
    watch_log = property(lambda self: self.root / WATCH_LOG)
    control = property(lambda self: self.root / CONTROL)
    control_stop = property(lambda self: self.root / CONTROL / STOP)
    exit_json = property(lambda self: self.root / CONTROL / EXIT)
    heartbeats = property(lambda self: self.root / HEARTBEATS)
    failures = property(lambda self: self.root / FAILURES)
    logs = property(lambda self: self.root / LOGS)
    launch_log = property(lambda self: self.root / LAUNCH_LOG)
    slurm = property(lambda self: self.root / SLURM)
    slurm_script = property(lambda self: self.root / SLURM / SLURM_SCRIPT)
    wandb_id = property(lambda self: self.root / WANDB_ID)
    wandb_dir = property(lambda self: self.root / WANDB_DIR)
    status_png = property(lambda self: self.root / STATUS_PLOT)
    profiler = property(lambda self: self.root / PROFILER)
    lock = property(lambda self: self.root / LOCK)

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / tag_for(step)

    def heartbeat(self, rank: int) -> Path:
        return self.heartbeats / f"rank_{rank:05d}.json"

    def profiler_trace(self, rank: int, step: int) -> Path:
        """profiler/rank_RRRRR-step_NNNNNNNN.pt.trace.json: one rank's trace of the window ending at `step`."""
        return self.profiler / f"rank_{rank:05d}-{tag_for(step)}.pt.trace.json"

    def heartbeat_files(self) -> list[Path]:
        return sorted(self.heartbeats.glob("rank_*.json"))

    def failure(self, stem: str, suffix: str = ".json") -> Path:
        """failures/STEM.json (or STEM + another suffix, e.g. `.stacks.txt`)."""
        return self.failures / f"{stem}{suffix}"

    def log_file(self, stem: str) -> Path:
        """logs/STEM-<time>.log: a new log for each launch."""
        return self.logs / f"{stem}-{time.strftime('%Y%m%dT%H%M%S')}.log"

    def failure_reports(self) -> list[Path]:
        return list(self.failures.glob("*.json"))


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


# --- writing ---------------------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    # unique per node and process (several supervisors may write the same file at once on a shared
    # filesystem); hidden and ending in .tmp, so no reader's glob (`*.json`, `rank_*.json`) lists it
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", durable: bool = True, make_parents: bool = False) -> Iterator[IO]:
    """A file to write `path` through: readers see the old file or the whole new one, never a part (tmp
    in the same folder, flushed and fsynced unless not `durable`, then renamed over `path`). Nothing is
    replaced if the block raises."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes, durable: bool = True, make_parents: bool = False) -> None:
    """THE atomic write of the run directory (see atomic_file)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w", durable, make_parents) as f:
        f.write(data)


def write_json_atomic(path: str | Path, record: Any, indent: int | None = 1, durable: bool = True,
                      make_parents: bool = False) -> None:
    write_atomic(path, json.dumps(record, indent=indent) + "\n", durable, make_parents)


def append_jsonl(path: str | Path, record: dict, make_parents: bool = False) -> None:
    """THE JSON-lines append: one write per line (O_APPEND), so concurrent writers (several nodes, the
    trainer and an eval) never interleave within a line."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------------------------
def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object, or None if the file is absent, unreadable or caught mid-write."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
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


def read_text(path: str | Path) -> str | None:
    """A small text file's stripped content (e.g. wandb_id), or None if absent, unreadable or empty."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def of_kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("kind") == kind]


def last_per_step(records: list[dict]) -> list[dict]:
    """One record per step, the last one written, in step order."""
    by_step: dict[int, dict] = {}
    for r in records:
        if isinstance(r.get("step"), (int, float)):
            by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def published(root: str | Path) -> list[Path]:
    """Published checkpoints under a checkpoints folder (`step_N` with COMPLETE), oldest first; `.tmp-…`
    and `corrupt-…` folders are never listed."""
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return []
    found = [p for p in entries if step_of(p) is not None and (p / COMPLETE).is_file()]
    return sorted(found, key=step_of)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Published checkpoints of a run directory, oldest first."""
    return published(RunDir(run_dir).checkpoints)


def run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The config saved with the newest checkpoint that has one (the run's YAML is not in the run dir)."""
    for folder in reversed(complete_checkpoints(run_dir)):
        cfg = read_json(folder / CONFIG)
        if cfg is not None:
            return cfg
    return None
