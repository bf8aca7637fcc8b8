"""One node's supervisor: `wordpool launch` in local or rendezvous mode.

It starts torchrun (which restarts the worker group itself, up to fault.max_restarts times; the ranks run
`train --resume auto`, so each restart resumes from the newest complete checkpoint), turns SIGTERM/SIGUSR1
into a checkpoint-and-exit request (control/stop) instead of killing anything, and maps the end of the run
to an exit code: 0 finished, 75 preempted after a checkpoint, anything else failed (with a report in
failures/). Standard library only at import; torch is imported by local_launch when a run starts."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import failure_report
from launcher.console import LoggedChild
from launcher.run_control import (EXIT_PREEMPTED, StopOnSignal, append_launch_event, clear_stale_control,
                                  read_exit_reason)
from pretrain.run_dir import RunDir

EXIT_WAIT_S = 10.0  # how long a node other than rank 0's waits for control/exit.json on a shared filesystem
PERMANENT_CHECK_S = 2.0  # how often the failure reports are read for a fault that repeats without progress


@dataclass(frozen=True)
class Rendezvous:
    endpoint: str  # HOST:PORT of the c10d store, hosted by the node whose address is HOST
    nnodes: int
    rdzv_id: str
    local_addr: str | None = None

    @property
    def host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0].strip("[]")


def default_rdzv_id(run_dir: str) -> str:
    """The same on every node without talking to each other: they all read the same config."""
    return "wordpool-" + hashlib.sha1(run_dir.encode()).hexdigest()[:16]


def same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(a, None)}
        return bool(addresses & {info[4][0] for info in socket.getaddrinfo(b, None)})
    except (socket.gaierror, UnicodeError):
        return False


def rank_command(config: str | None, overrides: list[str]) -> list[str]:
    """What every rank runs: the ordinary training entry point, resuming from the newest complete checkpoint."""
    return ["-m", "launcher.cli", "train", "--resume", "auto", *(["--config", config] if config else []),
            *overrides]


def torchrun_command(nproc: int, max_restarts: int, rdzv: Rendezvous | None, ranks: list[str],
                     log_dir: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if log_dir:
        cmd += ["--log-dir", log_dir]
    if rdzv is None:
        cmd += ["--standalone", "--nnodes", "1"]
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv.endpoint, "--rdzv-id", rdzv.rdzv_id,
                "--nnodes", str(rdzv.nnodes)]
        if rdzv.local_addr:
            # torchrun guesses whether it hosts the store by resolving its hostname; that guess is wrong
            # where the hostname does not resolve to the node's address (network namespaces, several NICs).
            # With the address given, decide it here: the node whose address is the endpoint's host hosts it.
            is_host = same_host(rdzv.local_addr, rdzv.host)
            cmd += ["--local-addr", rdzv.local_addr, "--rdzv-conf", f"is_host={str(is_host).lower()}"]
    return [*cmd, "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts), *ranks]


def interface_of(address: str) -> str | None:
    """The network interface that holds `address` on this machine (None if none does)."""
    import psutil  # a DeepSpeed dependency

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == address for a in addrs):
            return name
    return None


def _torchrun_preexec() -> None:
    """In the child, before exec. Ignore SIGUSR1: where Slurm signals every process of the job step, torchrun
    would otherwise die of it (the ranks install their own handler). And die with this supervisor: SIGTERM
    makes torchrun stop its workers, so a SIGKILLed supervisor leaves nothing training behind."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def supervise(run_dir: str, nproc: int, max_restarts: int, rdzv: Rendezvous | None, ranks: list[str],
              target: str, dry_run: bool = False) -> int:
    from launcher.local_launch import torchrun_env

    if dry_run:
        print(shlex.join(torchrun_command(nproc, max_restarts, rdzv, ranks)))
        return 0
    # torchrun makes one attempt_N folder here per (re)start of the worker group: the restart count
    log_dir = tempfile.mkdtemp(prefix="wordpool-torchrun-")
    cmd = torchrun_command(nproc, max_restarts, rdzv, ranks, log_dir)
    run = Path(run_dir)
    # Every node clears stale control files before its torchrun starts. That is race-free for exit.json: no
    # rank of this launch can exist before the rendezvous, which needs every node's torchrun. A stop request
    # this node receives before a slower node clears it is rewritten by StopOnSignal.reassert below.
    clear_stale_control(run)
    started = time.time()
    append_launch_event(run, {"event": "start", "target": target, "nproc": nproc, "max_restarts": max_restarts,
                              "nnodes": rdzv.nnodes if rdzv else 1, "rdzv_endpoint": rdzv.endpoint if rdzv else None,
                              "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "command": cmd})
    torchrun: dict[str, subprocess.Popen] = {}

    def escalate(n: int) -> None:
        if "proc" in torchrun:
            try:
                os.killpg(torchrun["proc"].pid, signal.SIGTERM if n == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    stopper = StopOnSignal(run, escalate)
    stopper.install()  # before torchrun starts: a signal from now on is a stop request, never a kill
    # its own session: a Ctrl-C or a signal meant for this supervisor never reaches torchrun directly
    env = torchrun_env(nproc)
    if rdzv is not None and rdzv.local_addr and "GLOO_SOCKET_IFNAME" not in env:
        # gloo advertises the address the hostname resolves to (often 127.0.1.1): bind it to the given one's NIC
        interface = interface_of(rdzv.local_addr)
        if interface:
            env["GLOO_SOCKET_IFNAME"] = interface
    log = RunDir(run).log_file(f"launch-{socket.gethostname()}")
    proc = torchrun["proc"] = LoggedChild(cmd, log, env=env, start_new_session=True, preexec_fn=_torchrun_preexec)
    repeated, checked = None, time.time()
    while True:
        try:
            rc = proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            stopper.reassert()
        if repeated is None and max_restarts and time.time() - checked > PERMANENT_CHECK_S:
            checked = time.time()
            repeated = failure_report.same_failure_without_progress(failure_report.reports_since(run, started))
            if repeated and int(repeated[1].get("restart", 0)) >= max_restarts:
                repeated = None  # no restart left to save: torchrun ends on its own, an ordinary failure
            if repeated:  # restarting again would fail the same way: stop the worker group now
                escalate(1)
    restarts = restarts_used(Path(log_dir))
    shutil.rmtree(log_dir, ignore_errors=True)
    return _finish(run, rc, started, restarts, max_restarts, target, stopper, log, repeated)


def restarts_used(torchrun_log_dir: Path) -> int | None:
    """Highest N of torchrun's attempt_N folders (None: the worker group never started)."""
    attempts = [int(p.name.removeprefix("attempt_")) for p in torchrun_log_dir.glob("*/attempt_*")
                if p.name.removeprefix("attempt_").isdigit()]
    return max(attempts) if attempts else None


def _finish(run: Path, rc: int, started: float, restarts: int | None, max_restarts: int, target: str,
            stopper: StopOnSignal, log: Path, repeated: tuple[dict, dict] | None) -> int:
    # Slurm's SIGTERM reaches torchrun too, which then exits non-zero although the ranks saved and wrote
    # "preempted" (the stale record of an earlier launch was cleared before this one started)
    recorded = read_exit_reason(run, EXIT_WAIT_S if rc == 0 else 0.0)
    if rc != 0 and recorded == "preempted":
        rc = 0
    if repeated:  # stopped by this supervisor: whatever the ranks did on the way out, the job failed
        rc = rc if rc not in (0, EXIT_PREEMPTED) else 1
    if rc == 0:
        reason = recorded
        if reason is None:
            # torchrun's 0 means every rank returned normally: finished, or stopped because we asked
            reason = "preempted" if stopper.signal_name else "finished"
            print(f"wordpool launch: warning: no {RunDir(run).exit_json}; assuming {reason}",
                  file=sys.stderr)
        code = EXIT_PREEMPTED if reason == "preempted" else 0
        if code == EXIT_PREEMPTED:
            print(f"wordpool launch: preempted after a checkpoint ({stopper.signal_name or 'control/stop'}); "
                  f"exit {EXIT_PREEMPTED}: run the same command again to resume", file=sys.stderr)
    else:
        reason = "permanent" if repeated else "killed" if stopper.escalations else "failed"
        code = rc if rc > 0 and rc != EXIT_PREEMPTED else (128 - rc if rc < 0 else 1)
        _report_failure(run, rc, started, restarts, max_restarts, target, reason, log, repeated)
    append_launch_event(run, {"event": "end", "target": target, "rc": code, "torchrun_rc": rc, "reason": reason,
                              "restarts": restarts})
    return code


def _report_failure(run: Path, rc: int, started: float, restarts: int | None, max_restarts: int, target: str,
                    reason: str, log: Path, repeated: tuple[dict, dict] | None) -> None:
    """One `error:` line (the root cause from the ranks' reports), the restarts used, the report and log paths;
    a failures/launch-*.json record of it."""
    used = "none (the worker group never started)" if restarts is None else f"{restarts} of {max_restarts}"
    if repeated:
        first, again = repeated
        restarts_line = (f"stopped: attempts {first.get('restart', 0)} and {again.get('restart', 0)} failed the same "
                         f"way at the same step (no progress), so the remaining fault.max_restarts would too")
    else:
        restarts_line = f"restarts used: {used} (fault.max_restarts)"
    reports = failure_report.reports_since(run, started)
    record = {"kind": "launch", "reason": reason, "torchrun_rc": rc, "restarts_used": restarts,
              "max_restarts": max_restarts, "target": target, "host": socket.gethostname(), "launch_started": started,
              "time": time.time(), "log": str(log), "cause": failure_report.root_cause(reports),
              "failures": [r["file"] for r in reports[-5:]]}
    path = failure_report.write_launch_report(run, record)
    failure_report.explain_failure("launch", run, started, rc, log, [restarts_line, f"launch report: {path}"])
