"""Start `wordpool <command>` as N local ranks under torchrun (torch.distributed.run)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_nproc() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def torchrun_env(nproc: int) -> dict[str, str]:
    import torch

    env = os.environ.copy()
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    # one rank per core share; torchrun would otherwise force 1 thread and say so
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch_local(cli_args: list[str], nproc: int, run_dir: str) -> int:
    """Re-runs this CLI with `cli_args` in `nproc` processes; each sees RANK, WORLD_SIZE, LOCAL_RANK and
    LOCAL_WORLD_SIZE (which mosaicml-streaming needs) from torchrun. Their output goes to RUN_DIR/logs/
    (progress lines to the console too: launcher/console.py); a failure ends in one `error:` line."""
    # torchrun's own parser would read a --nproc meant for us: drop it, the ranks don't need it
    args, skip = [], False
    for a in cli_args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "launcher.cli", *args]
    from launcher.console import LoggedChild
    from launcher.failure_report import explain_failure
    from pretrain.run_dir import RunDir

    started = time.time()
    log = RunDir(run_dir).log_file("train")
    rc = LoggedChild(cmd, log, env=torchrun_env(nproc)).wait()
    if rc != 0:
        explain_failure("train", Path(run_dir), started, rc, log)
    return rc
