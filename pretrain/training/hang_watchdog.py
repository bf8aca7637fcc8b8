"""Hang detection: a thread per rank that ends the attempt when the training loop stops making progress.

A collective whose peer died or hung never returns (gloo and NCCL timeouts are long and not always
honoured). Each rank marks progress at every phase change; the thread, seeing no progress within the
phase's timeout, writes a report naming this rank, its step and phase, which ranks are behind (from
their heartbeat files), and every thread's stack, then exits the process so the supervisor restarts
the job from the newest checkpoint. Timeouts are long during start-up and the first steps (compiling,
loading) and shorter afterwards, as torchtitan does.
"""
from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
import time
from pathlib import Path

from pretrain.run_dir import PHASE_ORDER, RunDir, read_json, timeout_field, write_json_atomic

EXIT_HANG = 86  # the rank's exit status after a detected hang


class Watchdog:
    def __init__(self, run_dir: Path, rank: int, world: int, init_timeout: float, step_timeout: float,
                 io_timeout: float, timeout_after_steps: int):
        self.run = RunDir(run_dir)
        self.heartbeats, self.failures = self.run.heartbeats, self.run.failures
        self.heartbeats.mkdir(parents=True, exist_ok=True)
        self.rank, self.world = rank, world
        self.init_timeout, self.step_timeout, self.io_timeout = init_timeout, step_timeout, io_timeout
        self.timeout_after_steps = timeout_after_steps
        self.restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        self.first_step: int | None = None
        self.step, self.phase, self.since = 0, "start", time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wordpool-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._write_heartbeat()
        self._thread.start()
        return self

    def beat(self, step: int, phase: str = "step") -> None:
        """Progress: the loop entered `phase` ("step", "eval", "checkpoint", ...) at `step`."""
        if self.first_step is None and phase == "step":
            self.first_step = step
        self.step, self.phase, self.since = step, phase, time.monotonic()
        self._write_heartbeat()

    def timeout(self) -> float:
        warming_up = self.first_step is None or self.step - self.first_step < self.timeout_after_steps
        return {"io_timeout_s": self.io_timeout, "init_timeout_s": self.init_timeout,
                "step_timeout_s": self.step_timeout}[timeout_field(self.phase, warming_up)]

    def stop(self) -> None:
        self._stop.set()

    def _write_heartbeat(self) -> None:
        record = {"rank": self.rank, "pid": os.getpid(), "host": socket.gethostname(), "step": self.step,
                  "phase": self.phase, "time": time.time(), "restart": self.restart}
        try:  # every step: whole (a reader never sees half of it), not fsynced (a crash loses nothing of value)
            write_json_atomic(self.run.heartbeat(self.rank), record, indent=None, durable=False)
        except OSError:
            pass  # a full disk must not stop training; the watchdog itself still works

    def _ranks_behind(self) -> list[dict]:
        behind = []
        for rank in range(self.world):
            hb = read_json(self.run.heartbeat(rank))
            if hb is None:
                behind.append({"rank": rank, "step": None, "note": "no heartbeat"})
                continue
            theirs = (hb["step"], PHASE_ORDER.get(hb["phase"], 0))
            if hb.get("restart") != self.restart or theirs < (self.step, PHASE_ORDER.get(self.phase, 0)):
                behind.append({"rank": rank, "step": hb["step"], "phase": hb["phase"], "pid": hb["pid"],
                               "host": hb["host"], "seconds_since": round(time.time() - hb["time"], 1)})
        return behind

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            waited = time.monotonic() - self.since
            limit = self.timeout()
            if waited > limit:
                self._report(waited, limit)

    def _report(self, waited: float, limit: float) -> None:
        self.failures.mkdir(parents=True, exist_ok=True)
        stem = f"hang-rank{self.rank:05d}-step{self.step:08d}-{int(time.time())}"
        behind = self._ranks_behind()
        stacks = self.run.failure(stem, ".stacks.txt")
        report = {"kind": "hang", "rank": self.rank, "step": self.step, "phase": self.phase,
                  "waited_s": round(waited, 1), "timeout_s": limit, "host": socket.gethostname(),
                  "pid": os.getpid(), "restart": self.restart, "ranks_behind": behind,
                  "stacks": str(stacks), "time": time.time()}
        with open(stacks, "w") as f:
            faulthandler.dump_traceback(file=f, all_threads=True)
        write_json_atomic(self.run.failure(stem), report)
        names = ", ".join(f"rank {b['rank']} (step {b['step']}, {b.get('phase', '?')})" for b in behind) or "none"
        print(f"wordpool: hang detected on rank {self.rank} at step {self.step} ({self.phase}): no progress for "
              f"{waited:.0f} s (limit {limit:.0f} s); ranks behind: {names}; report {self.failures / stem}.json",
              file=sys.stderr, flush=True)
        os._exit(EXIT_HANG)
