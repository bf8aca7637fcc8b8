"""The supervisor's side of the run-directory contract (docs/RUN_DIR.md): `control/stop`, `control/exit.json`
and `launch.jsonl`, and the signal handling that turns SIGTERM/SIGUSR1 into a stop request.

Other nodes read these files over a shared filesystem, so each is written whole or appended with a single
write (pretrain/run_dir.py's write_json_atomic and append_jsonl). Standard library only: it is imported
before anything heavy."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from pretrain.run_dir import RunDir, append_jsonl, read_json, write_json_atomic

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was saved, run the same command again (the generated Slurm script requeues on it)


def clear_stale_control(run_dir: str | Path) -> None:
    """A stop request or exit record left by an earlier launch must not end this one."""
    run = RunDir(run_dir)
    run.control.mkdir(parents=True, exist_ok=True)
    for path in (run.control_stop, run.exit_json):
        path.unlink(missing_ok=True)


def request_stop(run_dir: str | Path, signal_name: str) -> Path:
    path = RunDir(run_dir).control_stop
    write_json_atomic(path, {"signal": signal_name, "time": time.time(), "host": socket.gethostname(),
                             "pid": os.getpid()}, indent=None, make_parents=True)
    return path


def stop_requested(run_dir: str | Path) -> bool:
    return RunDir(run_dir).control_stop.exists()


def read_exit_reason(run_dir: str | Path, wait_s: float = 0.0) -> str | None:
    """`reason` of control/exit.json, or None if there is none. Waits up to `wait_s`: on another node than
    rank 0 the file may show up a moment after this node's ranks exited."""
    path = RunDir(run_dir).exit_json
    deadline = time.monotonic() + wait_s
    while True:
        record = read_json(path)  # None: absent, or caught mid-write on a non-POSIX FS
        if record is not None:
            return record.get("reason")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def append_launch_event(run_dir: str | Path, record: dict) -> None:
    # one write per line: lines of several nodes never interleave
    append_jsonl(RunDir(run_dir).launch_log, {**record, "time": time.time(), "host": socket.gethostname(),
                                              "pid": os.getpid()}, make_parents=True)


class StopOnSignal:
    """The first SIGTERM, SIGUSR1 or SIGINT writes control/stop: the ranks save a checkpoint at the next step
    boundary and exit (nothing is killed). Each further SIGTERM or SIGINT calls `escalate(n)` (n = 1, 2, …),
    for when the stop takes too long or a person insists."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, run_dir: str | Path, escalate: Callable[[int], None], who: str = "wordpool launch"):
        self.run_dir = Path(run_dir)
        self.escalate = escalate
        self.who = who
        self.signal_name: str | None = None
        self.escalations = 0

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            path = request_stop(self.run_dir, name)
            print(f"{self.who}: {name}: asked the ranks to save a checkpoint and exit ({path}); "
                  f"send SIGTERM again to stop without waiting", file=sys.stderr, flush=True)
        elif signum != signal.SIGUSR1:
            self.escalations += 1
            print(f"{self.who}: {name} again: stopping without waiting for a checkpoint", file=sys.stderr,
                  flush=True)
            self.escalate(self.escalations)

    def reassert(self) -> None:
        """Rewrite a stop request that disappeared: another node's supervisor clears stale control files
        when it starts, and may do so after this node was already signalled."""
        if self.signal_name is not None and not stop_requested(self.run_dir):
            request_stop(self.run_dir, self.signal_name)
