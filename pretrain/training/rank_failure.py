"""A rank's own account of why it failed: failures/rank-*.json, read by `wordpool train` / `wordpool launch`
to print one line (what failed, on which rank and node, at which step), and by the supervisor to tell a
permanent fault (the same failure at the same step, attempt after attempt) from a transient one."""
from __future__ import annotations

import os
import re
import socket
import sys
import time
import traceback
from pathlib import Path

from pretrain.run_dir import RunDir, write_json_atomic

REPORT_PREFIX = "rank-"
# errors a rank sees because *another* rank died: never the root cause when a first-hand report exists
PEER_ERRORS = re.compile(r"Connection closed by peer|Connection reset by peer|Broken pipe|peer.*(closed|died)"
                         r"|NCCL communicator was aborted|Timed out waiting|wait timeout|Background thread failed",
                         re.IGNORECASE)


def describe(exc: BaseException) -> str:
    """`Type: message` on one line; a UserError's message alone (it was written to be read as is)."""
    from schema import UserError

    message = " ".join(str(exc).split()) or "(no message)"
    return message if isinstance(exc, UserError) else f"{type(exc).__name__}: {message}"


def record(run_dir: str | Path, exc: BaseException, step: int | None, phase: str | None = None) -> Path | None:
    """Writes this rank's report (best effort: the disk may be what failed)."""
    rank = int(os.environ.get("RANK", 0))
    report = {
        "kind": "rank", "rank": rank, "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
        "node": socket.gethostname(), "pid": os.getpid(), "step": step, "phase": phase,
        "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)), "time": time.time(),
        "error": describe(exc), "error_type": type(exc).__name__, "secondary": bool(PEER_ERRORS.search(str(exc))),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RunDir(run_dir).failure(f"{REPORT_PREFIX}{rank:05d}-{stamp}-{os.getpid()}")
    try:
        write_json_atomic(path, report, make_parents=True)
    except OSError as err:
        print(f"warning: cannot write the failure report {path}: {err}", file=sys.stderr, flush=True)
        return None
    return path
