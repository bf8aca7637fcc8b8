"""What a user reads when training fails: one `error:` line naming the culprit (the details in the run's
failures/ and logs/), checks before torchrun starts, corrupt shards named by file, split and unit, a
permanent fault that stops the supervisor before it spends fault.max_restarts, and `wordpool verify
--repair` restoring a corrupted dataset to its original shards."""
import fcntl
import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import TINY, prepare_without_ray, wordpool

NOISE = ("Traceback", "ChildFailedError", "[rank", "DeepSpeed", "deepspeed", "streaming", "torch.distributed",
         "Warning", "INFO")


@pytest.fixture(scope="module")
def two_unit_shards(english, tmp_path_factory):
    """Shards of two input files (two prepare units), prepared without Ray."""
    from schema import DataConfig

    root = tmp_path_factory.mktemp("two_units")
    lines = english.text.splitlines()
    inputs = []
    for i, part in enumerate((lines[: len(lines) // 2], lines[len(lines) // 2:])):
        path = root / f"part{i}.txt"
        path.write_text("\n".join(part) + "\n")
        inputs.append(str(path))
    out = root / "shards"
    prepare_without_ray(DataConfig(inputs=inputs, output=str(out), doc_split="line", max_word_bytes=16,
                                   words_per_sample=32, val_fraction=0.1))
    return out


def _copy(shards: Path, dest: Path) -> Path:
    shutil.copytree(shards, dest)
    return dest


def _train_shard(data: Path, unit: int = 0) -> Path:
    return sorted((data / "train" / f"unit-{unit:05d}").glob("*.mds.zstd"))[0]


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]


def _assert_quiet(proc) -> None:
    console = proc.stdout + proc.stderr
    noisy = [line for line in console.splitlines() if any(n in line for n in NOISE) and "error:" not in line]
    assert not noisy, console[-3000:]


def _train(data: Path, run: Path, *extra, nproc: int = 1, env=None):
    return wordpool("train", "--nproc", str(nproc), f"data.output={data}", f"train.run_dir={run}", *TINY,
                    "train.steps=4", *extra, env=env)


@pytest.mark.parametrize("hashes", [True, False], ids=["with-hashes", "without-hashes"])
def test_a_corrupt_shard_is_named_with_its_unit_and_the_repair_command(two_unit_shards, tmp_path, hashes):
    data = _copy(two_unit_shards, tmp_path / "data")
    if not hashes:  # data prepared before index.json carried hashes: the decompression error names it
        index = data / "train" / "index.json"
        obj = json.loads(index.read_text())
        for shard in obj["shards"]:
            for key in ("raw_data", "zip_data"):
                shard[key]["hashes"] = {}
        index.write_text(json.dumps(obj))
    shard = _train_shard(data, 0)  # unshuffled, the first shard training reads
    _corrupt(shard)
    proc = _train(data, tmp_path / "run", "train.shuffle=false")
    assert proc.returncode != 0
    lines = _error_lines(proc)
    assert len(lines) == 1, proc.stdout + proc.stderr
    line = lines[0]
    assert line.startswith("wordpool train: error: rank 0")
    assert str(shard.resolve()) in line and "split train, unit 0" in line and "part0.txt" in line
    assert f"wordpool verify {data.resolve()} --repair" in line
    assert ("hash differs" in line) == hashes
    _assert_quiet(proc)
    report = json.loads(Path(next(l for l in proc.stderr.splitlines() if "report: " in l).split("report: ")[1]).read_text())
    assert report["kind"] == "rank" and "Traceback" in report["traceback"]  # the details are in the run's records
    assert list((tmp_path / "run" / "logs").glob("train-*.log"))


def test_verify_repair_restores_the_original_shards(two_unit_shards, tmp_path):
    data = _copy(two_unit_shards, tmp_path / "data")
    originals = {p.relative_to(data): p.read_bytes() for p in data.rglob("*.mds.zstd")}
    assert wordpool("verify", str(data)).returncode == 0
    shard = _train_shard(data, 1)
    _corrupt(shard)
    untouched = _train_shard(data, 0)
    before = untouched.stat().st_mtime_ns

    check = wordpool("verify", str(data))
    assert check.returncode == 2
    assert f"bad shard: {shard.resolve()} (split train, unit 1" in check.stdout
    assert len(_error_lines(check)) == 1 and "--repair" in _error_lines(check)[0]

    repaired = wordpool("verify", str(data), "--repair", timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "preparing unit(s) 1 again" in repaired.stdout
    assert {p.relative_to(data): p.read_bytes() for p in data.rglob("*.mds.zstd")} == originals
    assert untouched.stat().st_mtime_ns == before  # only the bad unit was prepared again


def test_checks_before_torchrun_fail_in_one_line(shards, tmp_path):
    missing = _train(tmp_path / "nowhere", tmp_path / "run")
    assert missing.returncode == 2
    assert _error_lines(missing) == [f"wordpool train: error: {tmp_path / 'nowhere' / 'stats.json'} not found: run "
                                     f"`wordpool prepare` to create {tmp_path / 'nowhere'}"]
    assert "ChildFailedError" not in missing.stderr and not (tmp_path / "run").exists()

    run = tmp_path / "locked"
    run.mkdir()
    with open(run / ".lock", "w") as held:  # as a live training job's rank 0 holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = _train(shards, run)
        launched = wordpool("launch", "--nproc", "1", f"data.output={shards}", f"train.run_dir={run}", *TINY)
    for proc, command in ((locked, "train"), (launched, "launch")):
        assert proc.returncode == 2
        lines = _error_lines(proc)
        assert len(lines) == 1 and lines[0].startswith(f"wordpool {command}: error: another training job is "
                                                       f"running in {run}"), proc.stderr


def test_a_rank_raising_is_one_line_naming_the_rank(shards, tmp_path):
    proc = _train(shards, tmp_path / "run", nproc=2, env={"WORDPOOL_FAULT_RAISE_AT": "2:1"})
    assert proc.returncode != 0
    lines = _error_lines(proc)
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "rank 1 on " in lines[0] and "at step 2: RuntimeError: planted fault at step 2 on rank 1" in lines[0]
    _assert_quiet(proc)
    assert "[train] step 1/4" in proc.stdout  # progress lines still reach the console
    log = next((tmp_path / "run" / "logs").glob("train-*.log")).read_text()
    assert "ChildFailedError" in log and "Traceback" in log  # the torchrun dump is in the log

    verbose = _train(shards, tmp_path / "run2", "-v", nproc=2, env={"WORDPOOL_FAULT_RAISE_AT": "2:1"})
    assert "Traceback" in verbose.stderr and len(_error_lines(verbose)) == 1


def test_a_permanent_fault_stops_before_the_restarts_are_spent(shards, tmp_path):
    """Rank 0 raises at step 3 of every attempt; each restart resumes from the step-2 checkpoint and fails
    the same way: the supervisor stops after the second such attempt, not after fault.max_restarts=5."""
    run = tmp_path / "run"
    proc = wordpool("launch", "--nproc", "2", f"data.output={shards}", f"train.run_dir={run}", *TINY,
                    "train.steps=6", "train.checkpoint_every=2", "fault.max_restarts=5",
                    env={"WORDPOOL_FAULT_RAISE_AT": "3:0"}, timeout=600)
    assert proc.returncode != 0
    lines = _error_lines(proc)
    assert len(lines) == 1 and "planted fault at step 3 on rank 0" in lines[0], proc.stdout + proc.stderr
    assert "failed the same way at the same step" in proc.stderr
    launch = json.loads(sorted((run / "failures").glob("launch-*.json"))[-1].read_text())
    assert launch["reason"] == "permanent" and launch["restarts_used"] < 5
