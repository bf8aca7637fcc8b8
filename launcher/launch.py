"""`wordpool launch`: supervised training on this machine, on the nodes of a hostfile (ssh), under Slurm, or
as one node of a rendezvous. Every target ends in the same place: on each node a supervisor
(launcher/supervisor.py) runs torchrun, whose ranks run `wordpool train --resume auto`.

Only the standard library is imported here: cli.py builds this parser for every command."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pretrain.run_dir import RunDir, write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where (default: --nproc processes on this machine)")
    target = where.add_mutually_exclusive_group()
    target.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                        help="be one node of a multi-node job rendezvousing at HOST:PORT (the node whose address "
                             "is HOST hosts it); needs --nnodes")
    target.add_argument("--hostfile", metavar="FILE",
                        help="start one node per line 'HOST slots=N' over ssh; the first host is the rendezvous host")
    target.add_argument("--slurm", action="store_true",
                        help="write RUN_DIR/slurm/launch.sbatch and submit it with sbatch")
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="processes per node (default: one per GPU, 1 without; hostfile: its slots)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands (or the sbatch script) instead of running or submitting them")

    rdzv = parser.add_argument_group("rendezvous (--rdzv-endpoint)")
    rdzv.add_argument("--nnodes", type=int, metavar="N", help="nodes in the job")
    rdzv.add_argument("--rdzv-id", metavar="ID", help="job id shared by all nodes (default: derived from "
                                                        "train.run_dir, so every node agrees)")
    rdzv.add_argument("--local-addr", metavar="ADDR",
                      help="this node's address, where its hostname does not resolve to it (network namespaces, "
                           "several NICs); also decides whether this node hosts the rendezvous")

    many = parser.add_argument_group("hostfile and Slurm")
    many.add_argument("--rdzv-port", type=int, default=29400, metavar="PORT",
                      help="rendezvous port on the first node (default 29400)")
    many.add_argument("--workdir", metavar="DIR",
                      help="working directory on the nodes (default: this one; must hold the same checkout)")
    many.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                      help="environment variable for the nodes (NAME alone: this machine's value); repeatable")
    many.add_argument("--ssh", default="ssh -o BatchMode=yes", metavar="CMD",
                      help="ssh command and options (default: %(default)s)")

    slurm = parser.add_argument_group("Slurm (--slurm)")
    slurm.add_argument("--slurm-nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    slurm.add_argument("--slurm-time", metavar="TIME", help="time limit, e.g. 24:00:00")
    slurm.add_argument("--slurm-partition", metavar="NAME")
    slurm.add_argument("--slurm-account", metavar="NAME")
    slurm.add_argument("--slurm-gpus-per-node", type=int, metavar="N", help="also the default --nproc")
    slurm.add_argument("--slurm-cpus-per-task", type=int, metavar="N", help="CPUs for each node's supervisor "
                                                                            "and its ranks")
    slurm.add_argument("--slurm-signal-seconds", type=int, default=300, metavar="S",
                       help="SIGUSR1 this long before the time limit: time to save a checkpoint (default 300)")
    slurm.add_argument("--slurm-job-name", metavar="NAME", help="default: wordpool-<run dir name>")
    slurm.add_argument("--slurm-extra", action="append", default=[], metavar="OPTION",
                       help="another #SBATCH line, e.g. --slurm-extra=--qos=high; repeatable")


def _check_flags(args: argparse.Namespace) -> None:
    """Contradictory flags fail before the config is even read."""
    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc {args.nproc}: expected a number >= 1")
    if args.rdzv_endpoint:
        if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d+", args.rdzv_endpoint):
            raise ValueError(f"--rdzv-endpoint {args.rdzv_endpoint!r}: expected HOST:PORT")
        if not args.nnodes or args.nnodes < 1:
            raise ValueError("--rdzv-endpoint needs --nnodes N (N >= 1)")
    else:
        for flag, value in (("--nnodes", args.nnodes), ("--rdzv-id", args.rdzv_id), ("--local-addr", args.local_addr)):
            if value is not None:
                raise ValueError(f"{flag} goes with --rdzv-endpoint")
    if args.slurm and (args.slurm_nodes < 1 or args.slurm_signal_seconds < 0):
        raise ValueError("--slurm-nodes must be >= 1 and --slurm-signal-seconds >= 0")


def run_launch(args: argparse.Namespace) -> int:
    _check_flags(args)
    from schema import load_config

    cfg = load_config(args.config, args.overrides)  # a bad config fails here, before anything starts
    if not args.dry_run and not args.hostfile and not args.slurm:  # (those check on each node)
        from pretrain.training.preflight import preflight

        # one node of a rendezvous must not test the lock: another node's rank 0 may hold it already
        preflight(cfg, "auto", check_lock=not args.rdzv_endpoint)
    if args.hostfile:
        return _launch_hostfile(args, cfg)
    if args.slurm:
        return _launch_slurm(args, cfg)
    from launcher.local_launch import default_nproc
    from launcher.supervisor import Rendezvous, default_rdzv_id, rank_command, supervise

    rdzv = None
    if args.rdzv_endpoint:
        rdzv = Rendezvous(args.rdzv_endpoint, args.nnodes, args.rdzv_id or default_rdzv_id(cfg.train.run_dir),
                          args.local_addr)
    return supervise(cfg.train.run_dir, args.nproc or default_nproc(), cfg.fault.max_restarts, rdzv,
                     rank_command(args.config, args.overrides), "rendezvous" if rdzv else "local", args.dry_run)


def _launch_hostfile(args: argparse.Namespace, cfg) -> int:
    from launcher.cluster_scripts import read_hostfile, resolve_env, ssh_commands
    from launcher.supervisor import default_rdzv_id

    hosts = read_hostfile(args.hostfile)
    commands = ssh_commands(hosts, shlex.split(args.ssh), args.workdir or os.getcwd(), sys.executable,
                            args.rdzv_port, args.rdzv_id or default_rdzv_id(cfg.train.run_dir), args.nproc,
                            args.config, args.overrides, resolve_env(args.env))
    if args.dry_run:
        for cmd in commands:
            print(shlex.join(cmd))
        return 0
    return _run_on_hosts(commands, [h.name for h in hosts], cfg.train.run_dir)


def _copy_lines(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _run_on_hosts(commands: list[list[str]], names: list[str], run_dir: str) -> int:
    """Run the per-node ssh commands together, their output prefixed with the host, and combine exit codes.
    A signal here becomes a stop request in the (shared) run dir, which every node's ranks poll: ssh without
    a terminal would not carry the signal to the remote supervisors."""
    from launcher.run_control import EXIT_PREEMPTED, StopOnSignal

    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True) for cmd in commands]
    copiers = [threading.Thread(target=_copy_lines, args=(p.stdout, f"[{name}] "), daemon=True)
               for p, name in zip(procs, names)]
    for thread in copiers:
        thread.start()

    def escalate(n: int) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if n == 1 else signal.SIGKILL)

    stopper = StopOnSignal(run_dir, escalate)
    stopper.install()
    while running := [p for p in procs if p.poll() is None]:
        try:
            running[0].wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            stopper.reassert()
    for thread in copiers:
        thread.join(timeout=5)
    codes = {name: p.returncode for name, p in zip(names, procs)}
    failed = {name: code for name, code in codes.items() if code not in (0, EXIT_PREEMPTED)}
    if failed:
        print("wordpool launch: failed on " + ", ".join(f"{n} (exit {c})" for n, c in failed.items()) +
              f"; reports in {RunDir(run_dir).failures}", file=sys.stderr)
        first = next(iter(failed.values()))
        return first if first > 0 else 1
    return EXIT_PREEMPTED if EXIT_PREEMPTED in codes.values() else 0


def _launch_slurm(args: argparse.Namespace, cfg) -> int:
    from launcher.cluster_scripts import SlurmOptions, resolve_env, sbatch_script
    from launcher.supervisor import default_rdzv_id

    run_dir = Path(cfg.train.run_dir).resolve()
    name = args.slurm_job_name or f"wordpool-{run_dir.name}"
    options = SlurmOptions(nodes=args.slurm_nodes, job_name=re.sub(r"[^\w.-]", "_", name),
                           signal_seconds=args.slurm_signal_seconds, time=args.slurm_time,
                           partition=args.slurm_partition, account=args.slurm_account,
                           gpus_per_node=args.slurm_gpus_per_node, cpus_per_task=args.slurm_cpus_per_task,
                           extra=args.slurm_extra)
    command_line = "wordpool " + shlex.join(getattr(args, "argv", []) or ["launch", "--slurm"])
    run = RunDir(run_dir)
    script = sbatch_script(options, args.workdir or os.getcwd(), str(run.slurm), sys.executable,
                           args.rdzv_port, args.rdzv_id or default_rdzv_id(cfg.train.run_dir),
                           args.nproc or args.slurm_gpus_per_node, args.config, args.overrides,
                           resolve_env(args.env), command_line.replace("\n", "\\n"))
    path = run.slurm_script
    write_atomic(path, script, make_parents=True)
    if args.dry_run:
        print(script, end="")
        print(f"wordpool launch: wrote {path}; not submitted (dry run): sbatch {shlex.quote(str(path))}",
              file=sys.stderr)
        return 0
    if shutil.which("sbatch") is None:
        raise ValueError(f"sbatch not found on PATH; the script is written: {path}")
    proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"wordpool launch: sbatch failed (exit {proc.returncode}):\n{proc.stderr.strip()}", file=sys.stderr)
        return proc.returncode
    job = proc.stdout.strip().split(";")[0]
    print(f"submitted Slurm job {job}: {path}\n  log: {run_dir / 'slurm'}/{options.job_name}-{job}.out")
    return 0
