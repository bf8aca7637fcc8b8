"""`wordpool launch`: the ssh commands of a hostfile, the Slurm script, and the local supervisor as real
processes (config errors fail before anything starts; SIGUSR1 becomes a checkpoint and exit 75; a failing
run leaves a report)."""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = [  # as in test_train.py
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.max_word_bytes=16", "data.words_per_sample=32",
    "model.encoder.d_model=16", "model.encoder.n_heads=2", "model.decoder.d_model=16", "model.decoder.n_heads=2",
    "train.micro_batch_size=4", "train.grad_accum=2", "train.warmup_steps=2", "train.log_every=1",
    "train.eval_batches=2", "wandb.mode=disabled",
]


def wordpool(*args, timeout=60, env=None):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def launch_events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "launch.jsonl").read_text().splitlines()]


def test_hostfile_dry_run_prints_one_ssh_command_per_node(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nnode-a slots=2\n\nalice@node-b slots=3   # the second\n")
    run_dir = tmp_path / "run"
    proc = wordpool("launch", "--hostfile", str(hostfile), "--dry-run", "--rdzv-port", "29555", "--env", "A=x y",
                    f"train.run_dir={run_dir}", "wandb.project=it's mine")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, host, slots in zip(lines, ["node-a", "alice@node-b"], [2, 3]):
        ssh = shlex.split(line)
        assert ssh[:3] == ["ssh", "-o", "BatchMode=yes"] and ssh[3] == host and len(ssh) == 5
        remote = shlex.split(ssh[4])  # what the remote shell will see, quoting undone once more
        assert remote[:3] == ["cd", str(ROOT), "&&"]
        assert remote[3:5] == ["env", "A=x y"]
        assert remote[5:9] == [sys.executable, "-m", "launcher.cli", "launch"]
        args = remote[9:]
        assert args[args.index("--rdzv-endpoint") + 1] == "node-a:29555"  # the first host, without user@
        assert args[args.index("--nnodes") + 1] == "2"
        assert args[args.index("--nproc") + 1] == str(slots)
        assert args[-2:] == [f"train.run_dir={run_dir}", "wandb.project=it's mine"]
    ids = {shlex.split(shlex.split(line)[4])[shlex.split(shlex.split(line)[4]).index("--rdzv-id") + 1]
           for line in lines}
    assert len(ids) == 1  # every node joins the same rendezvous
    assert not run_dir.exists()  # a dry run starts nothing and writes nothing


def test_each_node_runs_torchrun_with_resume_auto(tmp_path):
    """What one node of the hostfile runs (rendezvous mode), down to the ranks' command."""
    run_dir = tmp_path / "run"
    common = ["launch", "--dry-run", "--rdzv-endpoint", "10.9.0.1:29555", "--nnodes", "2", "--nproc", "3",
              f"train.run_dir={run_dir}", "fault.max_restarts=5"]
    host = shlex.split(wordpool(*common, "--local-addr", "10.9.0.1").stdout)
    other = shlex.split(wordpool(*common, "--local-addr", "10.9.0.2").stdout)
    assert host[1:3] == ["-m", "torch.distributed.run"]
    for flag, value in (("--rdzv-backend", "c10d"), ("--rdzv-endpoint", "10.9.0.1:29555"), ("--nnodes", "2"),
                        ("--nproc-per-node", "3"), ("--max-restarts", "5")):
        assert host[host.index(flag) + 1] == value
    assert host[host.index("--rdzv-conf") + 1] == "is_host=true"
    assert other[other.index("--rdzv-conf") + 1] == "is_host=false"
    assert other[other.index("--local-addr") + 1] == "10.9.0.2"
    assert host[-6:] == ["launcher.cli", "train", "--resume", "auto", f"train.run_dir={run_dir}",
                         "fault.max_restarts=5"]


def test_bad_hostfile_line_names_file_and_line(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node-a slots=2\n# fine\nnode-b slots=two\n")
    proc = wordpool("launch", "--hostfile", str(hostfile), "--dry-run", f"train.run_dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert f"{hostfile}:3:" in proc.stderr and "slots=two" in proc.stderr


def test_slurm_script_requeues_on_preemption(tmp_path):
    run_dir = tmp_path / "run"
    proc = wordpool("launch", "--slurm", "--dry-run", "--slurm-nodes", "3", "--slurm-time", "2:00:00",
                    "--slurm-partition", "gpu", "--slurm-gpus-per-node", "4", "--slurm-signal-seconds", "240",
                    "--slurm-extra=--qos=high", f"train.run_dir={run_dir}", "wandb.project=it's mine")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert (run_dir / "slurm" / "launch.sbatch").read_text() == script  # written, not submitted
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    for line in ["#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@240", "#SBATCH --time=2:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --qos=high", f"#SBATCH --job-name=wordpool-{run_dir.name}"]:
        assert line + "\n" in script, line
    assert 'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert srun.endswith(" &")  # in the background, so the trap runs while it works
    assert '--rdzv-endpoint "$HEAD:29400" --nnodes "$SLURM_NNODES"' in srun and "--nproc 4" in srun
    assert shlex.split(srun[:-2])[-2:] == [f"train.run_dir={run_dir}", "wandb.project=it's mine"]
    assert "trap 'forward USR1' USR1" in script and "trap 'forward TERM' TERM" in script
    assert 'if [ "$rc" -eq 75 ]; then' in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert script.index("srun ") < script.index("scontrol requeue")


def test_config_error_fails_before_anything_starts(tmp_path):
    run_dir = tmp_path / "run"
    start = time.time()
    proc = wordpool("launch", "--nproc", "2", f"train.run_dir={run_dir}", "model.d_model=-3")
    assert proc.returncode == 2
    assert "model.d_model" in proc.stderr
    assert time.time() - start < 15  # no torch, no torchrun
    assert not run_dir.exists()


def test_failed_run_reports_restarts_and_exits_nonzero(shards, tmp_path):
    """A rank that fails at its first step: torchrun restarts it once, then the supervisor reports."""
    run_dir = tmp_path / "run"
    proc = wordpool("launch", "--nproc", "1", f"train.run_dir={run_dir}", f"data.output={shards}", *TINY,
                    "fault.max_restarts=1", env={"WORDPOOL_FAULT_RAISE_AT": "1:0"}, timeout=180)
    assert proc.returncode not in (0, 75)
    assert "restarts used: 1 of 1" in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [f"wordpool launch: error: rank 0 on {socket.gethostname()} at step 1: RuntimeError: planted "
                      f"fault at step 1 on rank 0"]
    reports = list((run_dir / "failures").glob("launch-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["restarts_used"] == 1 and report["max_restarts"] == 1 and report["torchrun_rc"] != 0
    start, end = launch_events(run_dir)
    assert start["event"] == "start" and start["target"] == "local"
    assert end["event"] == "end" and end["reason"] == "failed" and end["rc"] == proc.returncode


def test_sigusr1_checkpoints_and_exits_75(shards, tmp_path):
    """The supervisor turns SIGUSR1 into control/stop; the ranks save a checkpoint, write exit.json and exit;
    the supervisor exits 75 (shards: the session's, from conftest.py)."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launcher.cli", "launch", "--nproc", "1", f"data.output={shards}",
           f"train.run_dir={run_dir}", *TINY, "train.steps=100000", "train.checkpoint_every=100000",
           "train.eval_every=100000"]
    with open(tmp_path / "launch.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 120
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and '"kind": "train"' in metrics.read_text()):
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.3)
        proc.send_signal(signal.SIGUSR1)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = (tmp_path / "launch.log").read_text()
    assert rc == 75, output[-3000:]
    stop = json.loads((run_dir / "control" / "stop").read_text())
    assert stop["signal"] == "SIGUSR1"
    exit_record = json.loads((run_dir / "control" / "exit.json").read_text())
    assert exit_record["reason"] == "preempted"
    tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert tag == f"step_{exit_record['step']:08d}" and (run_dir / "checkpoints" / tag / "COMPLETE").is_file()
    start, end = launch_events(run_dir)
    assert (start["event"], end["event"], end["rc"], end["reason"]) == ("start", "end", 75, "preempted")


def test_contradictory_flags_fail_fast(tmp_path):
    for args, message in ((["--nnodes", "2"], "--nnodes goes with --rdzv-endpoint"),
                          (["--rdzv-endpoint", "node-a"], "expected HOST:PORT"),
                          (["--rdzv-endpoint", "node-a:29400"], "needs --nnodes")):
        proc = wordpool("launch", "--dry-run", *args, f"train.run_dir={tmp_path / 'run'}")
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
