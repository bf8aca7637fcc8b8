"""Commands that start `wordpool launch` on many nodes: one ssh command per hostfile line, or an sbatch
script whose srun starts it once on every node of the allocation. Either way each node then runs its own
supervisor in rendezvous mode (launcher/supervisor.py), rendezvousing on the first node.

Pure text generation, standard library only: what is printed by --dry-run is exactly what runs."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RDZV_PORT = 29400  # torchrun's own default for the c10d store


@dataclass(frozen=True)
class Host:
    name: str  # as ssh is given it: HOST or USER@HOST
    slots: int | None  # processes on it; None: its own default (one per GPU, 1 without)
    line: int

    @property
    def address(self) -> str:
        return self.name.rsplit("@", 1)[-1]


def read_hostfile(path: str | Path) -> list[Host]:
    """Lines `HOST slots=N` (slots optional); `#` starts a comment; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hostfile not found: {path}")
    hosts: list[Host] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        words = text.split()
        slots = None
        bad = len(words) > 2 or not re.fullmatch(r"[\w.@:\[\]-]+", words[0])
        if len(words) == 2:
            match = re.fullmatch(r"slots=(\d+)", words[1])
            bad = bad or match is None or int(match.group(1)) < 1
            slots = int(match.group(1)) if match else None
        if bad:
            raise ValueError(f"{path}:{number}: expected 'HOST slots=N' (N >= 1), got {raw.strip()!r}")
        if any(h.address == Host(words[0], slots, number).address for h in hosts):
            raise ValueError(f"{path}:{number}: host {words[0]!r} listed twice")
        hosts.append(Host(words[0], slots, number))
    if not hosts:
        raise ValueError(f"{path}: no hosts (expected lines 'HOST slots=N')")
    return hosts


class ShellWord(str):
    """A word the shell must expand where it runs (e.g. "$HEAD:29400"); written as is, not quoted."""


def shell_join(words: list[str]) -> str:
    return " ".join(w if isinstance(w, ShellWord) else shlex.quote(w) for w in words)


def resolve_env(items: list[str]) -> dict[str, str]:
    """--env NAME=VALUE, or NAME to pass this machine's value on."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"--env {item!r}: expected NAME or NAME=VALUE")
        if not sep:
            if name not in os.environ:
                raise ValueError(f"--env {name}: not set here (give NAME=VALUE)")
            value = os.environ[name]
        env[name] = value
    return env


def node_command(python: str, endpoint: str, nnodes: str, nproc: int | None, rdzv_id: str,
                 config: str | None, overrides: list[str]) -> list[str]:
    """`wordpool launch` in rendezvous mode, as each node runs it."""
    cmd = [python, "-m", "launcher.cli", "launch", "--rdzv-endpoint", endpoint, "--nnodes", nnodes,
           "--rdzv-id", rdzv_id]
    if nproc is not None:
        cmd += ["--nproc", str(nproc)]
    if config:
        cmd += ["--config", config]
    return cmd + list(overrides)


def ssh_commands(hosts: list[Host], ssh: list[str], workdir: str, python: str, port: int, rdzv_id: str,
                 nproc: int | None, config: str | None, overrides: list[str],
                 env: dict[str, str]) -> list[list[str]]:
    """One ssh command per host; the first host is the rendezvous host."""
    endpoint = f"{hosts[0].address}:{port}"
    assignments = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    commands = []
    for host in hosts:
        launch = node_command(python, endpoint, str(len(hosts)), host.slots if host.slots else nproc, rdzv_id,
                              config, overrides)
        commands.append([*ssh, host.name, f"cd {shlex.quote(workdir)} && {shell_join(assignments + launch)}"])
    return commands


@dataclass
class SlurmOptions:
    nodes: int = 1
    job_name: str = "wordpool"
    signal_seconds: int = 300
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    extra: list[str] = field(default_factory=list)  # whole #SBATCH options, e.g. "--qos=high"

    def directives(self, log_dir: str, workdir: str) -> list[str]:
        lines = [f"--job-name={self.job_name}", f"--nodes={self.nodes}", "--ntasks-per-node=1", "--requeue",
                 # B: only the batch shell gets it; its trap passes it on through srun
                 f"--signal=B:USR1@{self.signal_seconds}",
                 f"--output={log_dir}/%x-%j.out", "--open-mode=append", f"--chdir={workdir}"]
        optional = {"time": self.time, "partition": self.partition, "account": self.account,
                    "gpus-per-node": self.gpus_per_node, "cpus-per-task": self.cpus_per_task}
        lines += [f"--{k}={v}" for k, v in optional.items() if v is not None]
        for extra in self.extra:
            if "\n" in extra or not extra.startswith("-"):
                raise ValueError(f"--slurm-extra {extra!r}: expected one sbatch option, e.g. --qos=high")
            lines.append(extra)
        return [f"#SBATCH {line}" for line in lines]


def sbatch_script(options: SlurmOptions, workdir: str, log_dir: str, python: str, port: int, rdzv_id: str,
                  nproc: int | None, config: str | None, overrides: list[str], env: dict[str, str],
                  command_line: str) -> str:
    launch = node_command(python, ShellWord(f'"$HEAD:{port}"'), ShellWord('"$SLURM_NNODES"'), nproc, rdzv_id,
                          config, overrides)
    srun = ["srun", "--nodes", ShellWord('"$SLURM_NNODES"'), "--ntasks-per-node=1", "--kill-on-bad-exit=0"]
    if options.cpus_per_task:  # srun no longer inherits sbatch's --cpus-per-task
        srun.append(f"--cpus-per-task={options.cpus_per_task}")
    exports = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    return "\n".join([
        "#!/bin/bash",
        f"# written by: {command_line}",
        *options.directives(log_dir, workdir),
        "",
        "set -u",
        f"cd {shlex.quote(workdir)} || exit 1",
        *exports,
        'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)  # rendezvous on the first node',
        'echo "wordpool: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_NNODES node(s),'
        f' rendezvous $HEAD:{port}"',
        "",
        "# One supervisor per node. It turns USR1/TERM into a checkpoint-and-exit and then exits 75.",
        "# bash runs traps only between commands, so srun runs in the background and the script waits.",
        shell_join(srun + launch) + " &",
        "SRUN_PID=$!",
        'forward() { echo "wordpool: SIG$1: asking the job to checkpoint and stop" >&2; '
        'kill -s "$1" "$SRUN_PID" 2>/dev/null || true; }',
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM",
        "rc=0",
        'while kill -0 "$SRUN_PID" 2>/dev/null; do',
        '    wait "$SRUN_PID"; rc=$?  # returns early (> 128) when a trapped signal arrives',
        "done",
        'wait "$SRUN_PID" 2>/dev/null; last=$?  # srun may have ended during a trap: collect its status',
        'if [ "$last" -ne 127 ]; then rc=$last; fi',
        'if [ "$rc" -eq 75 ]; then',
        '    echo "wordpool: preempted after a checkpoint: requeueing job $SLURM_JOB_ID" >&2',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$rc"',
        "",
    ])
