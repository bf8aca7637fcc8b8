"""Test-only fault injection: the one place where a fault can be planted.

The fault tests set WORDPOOL_FAULT_* variables; production code marks each moment where a fault may
strike with one call, `strike(point, ...)`, which does nothing unless its variable is set. It lives
in the lowest layer because both the prepare job and the trainer call it.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

VARIABLES = {
    "step_start": "WORDPOOL_FAULT_HANG_AT",                # "STEP:RANK": that rank hangs before the step
    "step_end": "WORDPOOL_FAULT_KILL_AT_STEP",             # "STEP": SIGKILL after that step
    "step_raise": "WORDPOOL_FAULT_RAISE_AT",               # "STEP:RANK": that rank raises before the step
    "nan_loss": "WORDPOOL_FAULT_NAN_AT_STEPS",             # "S1,S2,…": the loss of those steps is NaN
    "checkpoint_write": "WORDPOOL_FAULT_KILL_IN_SAVE",     # "STEP:RANK:MARKER": SIGKILL mid-save, once
    "unit_written": "WORDPOOL_FAULT_KILL_DRIVER_AT_UNIT",  # "UNIT": kill the prepare driver, then the task
}
_spent: set[tuple[str, int]] = set()  # NaN steps fire once: after a rollback the step trains on new data


def strike(point: str, *, step: int = -1, rank: int = -1, unit: int = -1, driver_pid: int | None = None) -> bool:
    """Acts on the fault planted at `point`, if any. Returns True for a fault the caller must apply
    itself (nan_loss); the others never return when they strike."""
    spec = os.environ.get(VARIABLES[point], "")
    if not spec:
        return False
    if point == "step_start" and spec == f"{step}:{rank}":
        time.sleep(1e6)
    elif point == "step_raise" and spec == f"{step}:{rank}":
        raise RuntimeError(f"planted fault at step {step} on rank {rank}")
    elif point == "step_end" and int(spec) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    elif point == "nan_loss" and str(step) in spec.split(",") and (point, step) not in _spent:
        _spent.add((point, step))
        return True
    elif point == "checkpoint_write":
        at, who, marker = spec.split(":", 2)
        if int(at) == step and int(who) == rank and not Path(marker).exists():
            Path(marker).write_text("fired")
            os.kill(os.getpid(), signal.SIGKILL)
    elif point == "unit_written" and int(spec) == unit:
        if driver_pid is not None:
            os.kill(driver_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return False


def forwarded() -> dict[str, str]:
    """The planted faults, for processes started elsewhere (Ray tasks)."""
    return {v: os.environ[v] for v in VARIABLES.values() if v in os.environ}
