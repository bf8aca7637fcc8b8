"""The trainer's side of the run directory (docs/RUN_DIR.md): the lock, control files and exit record."""
from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

from pretrain.checkpoint import manifest


class TrainerFiles:
    def __init__(self, root: Path, is_rank0: bool):
        self.root, self.is_rank0 = root, is_rank0
        self.checkpoints = root / "checkpoints"
        self._stop, self._exit = root / "control" / "stop", root / "control" / "exit.json"
        self._lock = None
        if is_rank0:
            root.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(root / ".lock")
            manifest.remove_stale_temporaries(self.checkpoints)
            # an earlier job's records; `wordpool launch` rewrites a stop request of its own within a second
            self._stop.unlink(missing_ok=True)
            self._exit.unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return self.is_rank0 and self._stop.exists()

    def record_exit(self, reason: str, step: int) -> None:
        if self.is_rank0:
            self._exit.parent.mkdir(parents=True, exist_ok=True)
            manifest.atomic_write(self._exit, json.dumps({"reason": reason, "step": step, "time": time.time()}))

    def release(self) -> None:
        if self._lock:
            self._lock.close()


def _lock(path: Path):
    """One live training job per run folder; the lock dies with the process, so a crash never leaves it."""
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"another training job is running in {path.parent} (it holds {path})") from None
    return handle
