"""The trainer's side of the run directory (pretrain/run_dir.py, docs/RUN_DIR.md): rank 0 holds the
run's lock, reads stop requests and writes the exit record."""
from __future__ import annotations

import fcntl
import time
from pathlib import Path

from pretrain.checkpoint import manifest
from pretrain.run_dir import RunDir, write_json_atomic
from schema import UserError


class TrainerFiles:
    def __init__(self, root: Path, is_rank0: bool):
        self.run, self.is_rank0 = RunDir(root), is_rank0
        self.root, self.checkpoints = self.run.root, self.run.checkpoints
        self._lock = None
        if is_rank0:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run_dir(self.run.lock)
            manifest.remove_stale_temporaries(self.checkpoints)
            # an earlier job's records; `wordpool launch` rewrites a stop request of its own within a second
            self.run.control_stop.unlink(missing_ok=True)
            self.run.exit_json.unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return self.is_rank0 and self.run.control_stop.exists()

    def record_exit(self, reason: str, step: int) -> None:
        if self.is_rank0:
            write_json_atomic(self.run.exit_json, {"reason": reason, "step": step, "time": time.time()}, indent=None,
                              make_parents=True)

    def release(self) -> None:
        if self._lock:
            self._lock.close()


class RunDirLocked(UserError):
    """Another live training job holds the run directory."""


def lock_run_dir(path: Path):
    """One live training job per run folder; the lock dies with the process, so a crash never leaves it."""
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirLocked(f"another training job is running in {path.parent} (it holds {path}): stop it first, "
                           f"or use another train.run_dir") from None
    return handle
