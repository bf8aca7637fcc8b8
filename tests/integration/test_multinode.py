"""Multi-node training for real: two "nodes" on this machine, each a Linux network namespace, joined by a veth
pair. Each node runs `wordpool launch --rdzv-endpoint` (its supervisor, torchrun and one rank); the ranks talk
gloo over the veth addresses and rendezvous at node 0's address, as on two machines. The run directory and
the shards are shared (the multi-node assumption: a shared filesystem); /dev/shm and TMPDIR are per node,
as on separate machines (mosaicml-streaming keeps its per-node state there).

Needs root and `ip` (iproute2); skipped otherwise. Each node gets GLOO_SOCKET_IFNAME=<its veth>: the hostname
resolves to 127.0.0.1 here, and gloo would otherwise advertise that address to the other node."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli_helpers import prepare_without_ray

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.231.7"  # node i gets SUBNET.(i+1)/24 inside its own namespace: never visible on this machine
RDZV_PORT = 29611  # in node 0's namespace, so no clash with anything listening on this machine
TINY = [  # as in test_train.py
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.max_word_bytes=16", "data.words_per_sample=32",
    "model.encoder.d_model=16", "model.encoder.n_heads=2", "model.decoder.d_model=16", "model.decoder.n_heads=2",
    "train.micro_batch_size=4", "train.grad_accum=2", "train.warmup_steps=2", "train.log_every=1",
    "train.eval_every=4", "train.eval_batches=2", "wandb.mode=disabled",
]
LAUNCH_TIMEOUT_S = 300  # one launch takes ~30-60 s on a loaded 2-core machine
FAILED_PEER_GRACE_S = 30  # once one node failed, the other gets this long to notice before it is killed


@dataclass
class Node:
    index: int
    netns: str
    link: str  # this node's end of the veth pair
    addr: str
    tmp: Path  # TMPDIR: node-local, like /tmp on a real machine


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_everything_in(netns: str) -> None:
    """SIGKILL every process in the namespace: all of them were started by this test."""
    for _ in range(3):
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@pytest.fixture
def nodes(tmp_path):
    """Two network namespaces joined by a veth pair, loopback up in each; removed afterwards, even on failure."""
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux only")
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) not found: cannot create network namespaces")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = uuid.uuid4().hex[:6]
    names = [f"wordpool-mn-{tag}-{i}" for i in range(2)]
    links = [f"wpmn{tag}{i}" for i in range(2)]  # interface names: at most 15 characters
    created = []
    try:
        for name in names:
            proc = _ip("netns", "add", name, check=False)
            if proc.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {proc.stderr.strip()}")
            created.append(name)
        _ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        result = []
        for i, (name, link) in enumerate(zip(names, links)):
            _ip("link", "set", link, "netns", name)
            _ip("-n", name, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", link)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", link, "up")
            tmp = tmp_path / f"node{i}-tmp"
            tmp.mkdir()
            result.append(Node(i, name, link, f"{SUBNET}.{i + 1}", tmp))
        probe = subprocess.run(["ip", "netns", "exec", names[0], "mount", "-t", "tmpfs", "none", "/dev/shm"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            pytest.skip(f"cannot mount a private /dev/shm in a namespace: {probe.stderr.strip()}")
        yield result
    finally:
        for name in created:
            _kill_everything_in(name)
            _ip("netns", "del", name, check=False)  # takes its end of the veth pair, and so the pair, with it


@pytest.fixture(scope="module")
def node_shards(english_lines_file, tmp_path_factory):
    """The data of conftest's `shards`, prepared without Ray: run alone, this test would otherwise spend ~45 s
    starting a Ray cluster on a loaded 2-core machine."""
    from schema import DataConfig

    out = tmp_path_factory.mktemp("mn_shards")
    prepare_without_ray(DataConfig(inputs=[str(english_lines_file)], output=str(out),
                                    doc_split="line", max_word_bytes=16, words_per_sample=32, val_fraction=0.1))
    return out


def _node_command(node: Node, rdzv_id: str, overrides: list[str]) -> list[str]:
    # `ip netns exec` gives the command its own mount namespace: a tmpfs on /dev/shm there is this node's
    # alone and goes away with its last process
    script = 'mount -t tmpfs -o size=512m wordpool-node-shm /dev/shm && exec "$@"'
    return ["ip", "netns", "exec", node.netns, "sh", "-c", script, f"node{node.index}",
            sys.executable, "-m", "launcher.cli", "launch", "--rdzv-endpoint", f"{SUBNET}.1:{RDZV_PORT}",
            "--nnodes", "2", "--nproc", "1", "--local-addr", node.addr, "--rdzv-id", rdzv_id, *overrides]


def _node_env(node: Node) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
           and not k.startswith("TORCHELASTIC_")}
    env.update(GLOO_SOCKET_IFNAME=node.link,  # the hostname resolves to 127.0.0.1 here: gloo must use the veth
               TMPDIR=str(node.tmp), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _tail(path: Path, n: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-n:]


def launch_nodes(nodes: list[Node], logs: Path, label: str, overrides: list[str]) -> list[str]:
    """Starts both nodes, waits for both (LAUNCH_TIMEOUT_S), asserts both exit 0; returns their stdout."""
    logs.mkdir(exist_ok=True)
    rdzv_id = f"mn-{uuid.uuid4().hex[:8]}"
    procs, files = [], []
    for node in nodes:
        out, err = logs / f"{label}-node{node.index}.out", logs / f"{label}-node{node.index}.err"
        files.append((out, err))
        with open(out, "w") as fo, open(err, "w") as fe:
            procs.append(subprocess.Popen(_node_command(node, rdzv_id, overrides), cwd=ROOT, env=_node_env(node),
                                          stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, start_new_session=True))
    started = time.time()
    deadline, failed_at, problem = started + LAUNCH_TIMEOUT_S, None, None
    try:
        while any(proc.poll() is None for proc in procs):
            now = time.time()
            if failed_at is None and any(proc.poll() not in (None, 0) for proc in procs):
                failed_at = now  # the other node may wait for its peer until torchrun's own timeouts: don't
            if failed_at is not None and now - failed_at > FAILED_PEER_GRACE_S:
                problem = f"a node failed; the other was still running {FAILED_PEER_GRACE_S} s later"
                break
            if now > deadline:
                problem = f"the nodes ran past {LAUNCH_TIMEOUT_S} s"
                break
            time.sleep(0.5)
    finally:
        for node, proc in zip(nodes, procs):
            if proc.poll() is None:
                _kill_everything_in(node.netns)
                proc.wait(timeout=30)
    codes = [proc.returncode for proc in procs]
    report = "\n".join(f"--- node {i} ({label}) exit {code}: stdout tail\n{_tail(out, 1500)}\n"
                       f"--- node {i} ({label}) stderr tail\n{_tail(err)}"
                       for i, (code, (out, err)) in enumerate(zip(codes, files)))
    assert problem is None, f"{label}: {problem} (killed)\n{report}"
    assert codes == [0, 0], f"{label}: exit codes {codes}\n{report}"
    print(f"{label}: both nodes finished in {time.time() - started:.1f} s")
    return [out.read_text() for out, _ in files]


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def last_train_records(lines: list[dict]) -> dict[int, dict]:
    return {r["step"]: r for r in lines if r["kind"] == "train"}  # the last record per step


def check_checkpoint(folder: Path, step: int) -> None:
    assert (folder / "COMPLETE").is_file() and (folder / "MANIFEST.json").is_file(), f"{folder} is not published"
    assert json.loads((folder / "COMPLETE").read_text())["world_size"] == 2
    # each node's rank wrote its own part into the shared run dir
    assert (folder / "rng_rank00000.pt").is_file() and (folder / "rng_rank00001.pt").is_file()
    assert (folder / "wordpool_config.json").is_file()
    assert json.loads((folder / "COMPLETE").read_text()).get("step", step) == step


def test_two_nodes_train_checkpoint_and_resume_exactly(nodes, node_shards, tmp_path):
    """Launch 1: 6 steps across the two nodes, checkpoints at 2, 4, 6. Then the run is rolled back to step 4 (as
    if the job had died after that checkpoint) and both nodes are launched again: `--resume auto` must pick
    step 4 and train steps 5-6 with exactly the losses and data of the uninterrupted launch."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    overrides = [f"data.output={node_shards}", f"train.run_dir={run}", *TINY, "train.steps=6",
                 "train.checkpoint_every=2", "fault.max_restarts=0"]

    launch_nodes(nodes, tmp_path / "logs", "first", overrides)
    first = metric_lines(run)
    attempts = [r for r in first if r["kind"] == "attempt"]
    assert len(attempts) == 1 and attempts[0]["world_size"] == 2 and attempts[0]["resumed_from"] is None
    uninterrupted = last_train_records(first)
    assert sorted(uninterrupted) == list(range(1, 7))
    for step in (2, 4, 6):
        check_checkpoint(ckpts / f"step_{step:08d}", step)
    assert (ckpts / "latest").read_text().strip() == "step_00000006"
    assert sorted(p.name for p in (run / "heartbeat").glob("rank_*.json")) == ["rank_00000.json", "rank_00001.json"]
    events = [json.loads(line) for line in (run / "launch.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("end") == 2 and all(e["rc"] == 0 for e in events if e["event"] == "end")

    # roll back: the job died after publishing step 4
    shutil.rmtree(ckpts / "step_00000006")
    (ckpts / "latest").write_text("step_00000004")

    out0, _ = launch_nodes(nodes, tmp_path / "logs", "resumed", overrides)
    assert f"resumed from {ckpts / 'step_00000004'} at step 4" in out0
    lines = metric_lines(run)
    second = lines[len(first):]
    assert second[0]["kind"] == "attempt" and second[0]["step"] == 4 and second[0]["world_size"] == 2
    assert second[0]["resumed_from"] == str(ckpts / "step_00000004")
    resumed = last_train_records(second)
    assert sorted(resumed) == [5, 6]  # continued from step 4: nothing before it trained again
    for step in (5, 6):
        a, b = uninterrupted[step], resumed[step]
        assert b["loss"] == a["loss"], f"step {step}: resumed loss {b['loss']} != uninterrupted {a['loss']}"
        assert b["data_digest"] == a["data_digest"], f"step {step}: other samples than the uninterrupted run"
        assert b["samples"] == a["samples"] == step * 4 * 2 * 2
    assert sorted(last_train_records(lines)) == list(range(1, 7))
    for step in (2, 4, 6):
        check_checkpoint(ckpts / f"step_{step:08d}", step)
    assert (ckpts / "latest").read_text().strip() == "step_00000006"
