"""From the reports a failed training left in RUN_DIR/failures/ to the one line a user reads.

Ranks write `rank-*.json` (pretrain/training/rank_failure.py) and the other reports (`hang-*`,
`rollbacks-exhausted-*`, `corrupt-checkpoint-*`, …); a supervisor writes `launch-*.json`. The root cause
is the earliest first-hand report: a rank that failed because a peer died ("Connection closed by peer")
is never preferred over the peer's own report."""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from pretrain.run_dir import RunDir, write_json_atomic
from pretrain.training.rank_failure import PEER_ERRORS

LAUNCH_REPORT = "launch-"  # failures/launch-*.json: a supervisor's reports


def reports_since(run: Path, since: float) -> list[dict]:
    """Failure reports written since `since`, oldest first, each with its `file`; supervisors' own left out
    (they describe the same failure)."""
    found = []
    for path in RunDir(run).failure_reports():
        if path.name.startswith(LAUNCH_REPORT):
            continue
        try:
            if path.stat().st_mtime < since:
                continue
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # being written, or not ours to read
        if isinstance(record, dict):
            found.append({**record, "file": str(path)})
    return sorted(found, key=lambda r: r.get("time", 0.0))


def root_cause(reports: list[dict]) -> dict | None:
    first_hand = [r for r in reports if not r.get("secondary")]
    return (first_hand or reports or [None])[0]


def describe(report: dict) -> str:
    """`rank 1 on node-3 at step 40: <what failed>`."""
    who = f"rank {report['rank']}" if "rank" in report else report.get("kind", "a rank")
    node = report.get("node") or report.get("host")
    where = f" on {node}" if node else ""
    at = f" at step {report['step']}" if report.get("step") is not None else ""
    if report.get("kind") == "hang":
        what = (f"hung in {report.get('phase')} for {report.get('waited_s')} s (fault.*timeout_s "
                f"{report.get('timeout_s')} s)")
    else:
        what = report.get("error") or report.get("why") or report.get("kind", "failed")
    return f"{who}{where}{at}: {what}"


def same_failure_without_progress(reports: list[dict]) -> tuple[dict, dict] | None:
    """Two consecutive attempts (torchrun restarts) whose root causes are the same error at the same step:
    restarting again would fail the same way."""
    by_restart: dict[int, list[dict]] = {}
    for r in reports:
        by_restart.setdefault(int(r.get("restart", 0)), []).append(r)
    causes = [(n, root_cause(rs)) for n, rs in sorted(by_restart.items())]
    for (n1, a), (n2, b) in zip(causes, causes[1:]):
        # first-hand reports only: a rank killed from outside (SIGKILL, out of memory) leaves none, and its
        # peers' "connection reset" says nothing about whether the next attempt would fail too
        first_hand = a and b and not a.get("secondary") and not b.get("secondary")
        if n2 == n1 + 1 and first_hand and a.get("step") == b.get("step") and _signature(a) == _signature(b):
            return a, b
    return None


def _signature(report: dict) -> tuple:
    text = report.get("error") or report.get("why") or report.get("phase") or ""
    return report.get("kind"), report.get("rank"), re.sub(r"\d+", "#", text)


# an exception's last line in a traceback, or a rank's own error line; torchrun prefixes ranks' lines "[rankN]:"
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[\w.]+\.)?\w*(?:Error|Exception)|rank \d+: error): (.+)$")


def last_error_in_log(log: Path) -> str | None:
    """The last exception a rank printed, as `Type: message` (for a failure no report describes)."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        match = _ERROR_LINE.match(line.strip())
        if match and "ChildFailedError" not in match.group(1):
            kind, message = match.group(1).rsplit(".", 1)[-1], match.group(2).strip()
            found.append(message if kind.startswith("rank") else f"{kind}: {message}")
    first_hand = [f for f in found if not PEER_ERRORS.search(f)]  # a peer's "connection reset" is an effect
    return (first_hand or found or [None])[-1]


def write_launch_report(run: Path, record: dict) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
    path = RunDir(run).failure(f"{LAUNCH_REPORT}{stamp}-{socket.gethostname()}-{os.getpid()}")
    write_json_atomic(path, record, indent=None, make_parents=True)
    return path


def print_error(command: str, headline: str, details: list[str]) -> None:
    """The one `error:` line, then indented details (paths) that never say `error:` themselves."""
    lines = [f"wordpool {command}: error: {headline}", *(f"  {d}" for d in details)]
    print("\n".join(lines), file=sys.stderr, flush=True)


def explain_failure(command: str, run: Path, started: float, rc: int, log: Path | None,
                    extra: list[str] = ()) -> dict | None:
    """Prints the failure of a training that exited with `rc`; returns its root-cause report (None: no rank
    left one, e.g. one was killed by the kernel)."""
    cause = root_cause(reports_since(run, started))
    if cause is None:
        why = "killed by a signal" if rc < 0 else f"exit code {rc}"
        last = last_error_in_log(log) if log else None
        headline = (f"training failed ({why}); no rank could write a report (a full disk?): {last}" if last else
                    f"training failed ({why}) and no rank left a report: a rank was probably killed "
                    f"(out of memory?)")
    else:
        headline = describe(cause)
    details = [*extra, *([f"report: {cause['file']}"] if cause else []), *([f"log: {log}"] if log else [])]
    print_error(command, headline, details)
    return cause
