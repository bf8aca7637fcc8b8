"""`wordpool eval --watch` and `wordpool status` on a real short training run (1 rank, 6 steps, a checkpoint
every 2, wandb offline), and `status` on hand-written run directories (restarts, skips, rollbacks, a
failure, a half-written last line: records the trainer writes only when things go wrong)."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import TINY, wordpool

RUN = ["train.steps=6", "train.checkpoint_every=2", "wandb.mode=offline"]


def train_1rank(shards, run_dir, *extra):
    return wordpool("train", "--nproc", "1", f"data.output={shards}", f"train.run_dir={run_dir}", *TINY, *RUN,
                    *extra)


def steps_with_eval_json(run_dir: Path) -> list[int]:
    return sorted(json.loads((p / "eval.json").read_text())["step"]
                  for p in (run_dir / "checkpoints").glob("step_*") if (p / "eval.json").is_file())


def watch_log_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "watch_evals.jsonl").read_text().splitlines()]


def status_json(run_dir: Path, *extra) -> dict:
    proc = wordpool("status", str(run_dir), "--json", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("watched") / "run"
    proc = train_1rank(shards, run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p.name for p in sorted((run / "checkpoints").glob("step_*"))] == [
        "step_00000002", "step_00000004", "step_00000006"]
    return run


@pytest.fixture(scope="module")
def watched(trained):
    """The run after one `eval --watch --once` pass."""
    proc = wordpool("eval", "--watch", str(trained), "--once", "--max-batches", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return trained, proc


def test_watch_once_evaluates_every_checkpoint(watched):
    run, proc = watched
    assert steps_with_eval_json(run) == [2, 4, 6]
    assert watch_log_steps(run) == [2, 4, 6]
    for step in (2, 4, 6):
        assert f"step {step}: val bits/byte" in proc.stdout
        record = json.loads((run / "checkpoints" / f"step_{step:08d}" / "eval.json").read_text())
        assert record["kind"] == "watch_eval" and record["val_bpb"] > 0 and record["max_batches"] == 2
    # the trainer's metrics.jsonl gets none of the watcher's records (they would replace its evals per step)
    assert "watch_eval" not in (run / "metrics.jsonl").read_text()
    assert all(json.loads(line).get("checkpoint") is None for line in (run / "metrics.jsonl").read_text().splitlines()
               if '"kind": "eval"' in line)
    # the same wandb run as the trainer's: one more offline run folder with its id, holding watch/ metrics
    run_id = (run / "wandb_id").read_text().strip()
    folders = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 2, folders  # the trainer's and the watcher's
    logged = b"".join(p.read_bytes() for p in folders[-1].glob("*.wandb"))
    assert b"watch/val_bpb" in logged and b"watch/train_step" in logged
    # a second pass finds nothing new
    again = wordpool("eval", "--watch", str(run), "--once")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 checkpoint(s) evaluated" in again.stderr and watch_log_steps(run) == [2, 4, 6]


def test_watcher_picks_up_checkpoints_of_a_running_training(watched, shards, tmp_path):
    """A watcher started before a second training segment (resume with more steps) evaluates the new
    checkpoint when it is published, then stops on its own once the run finished."""
    run = tmp_path / "run"
    shutil.copytree(watched[0], run, ignore=shutil.ignore_patterns("wandb", "heartbeat", "status.png"))
    (run / "control" / "exit.json").unlink(missing_ok=True)  # the first segment's end, as `wordpool launch` clears it
    watcher = subprocess.Popen([sys.executable, "-m", "launcher.cli", "eval", "--watch", str(run), "--poll-seconds",
                                "1", "--max-batches", "2", "--timeout", "500"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        segment = train_1rank(shards, run, "train.steps=8", "--resume", "auto")
        assert segment.returncode == 0, segment.stderr[-4000:]
        new_eval = run / "checkpoints" / "step_00000008" / "eval.json"
        deadline = time.time() + 180
        while not new_eval.is_file() and time.time() < deadline and watcher.poll() is None:
            time.sleep(0.5)
        assert new_eval.is_file(), "the watcher did not evaluate step 8"
        try:  # with control/exit.json written by the trainer, the watcher ends by itself
            watcher.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a trainer writing no exit record: Ctrl-C must end it cleanly
            watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode in (0, 130), err[-3000:]
    assert "Traceback" not in err
    assert "step 8: val bits/byte" in out
    assert json.loads(new_eval.read_text())["step"] == 8
    assert watch_log_steps(run)[-1] == 8 and watch_log_steps(run).count(8) == 1


def test_checkpoint_deleted_before_or_during_evaluation_is_skipped(tmp_path, capsys):
    from pretrain.evaluation.watcher import evaluate_checkpoint

    assert evaluate_checkpoint(tmp_path / "checkpoints" / "step_00000002") is None
    assert "deleted while being evaluated" in capsys.readouterr().err
    broken = tmp_path / "checkpoints" / "step_00000004"  # still there: its error is real and surfaces
    broken.mkdir(parents=True)
    (broken / "COMPLETE").write_text('{"step": 4}')
    with pytest.raises(FileNotFoundError, match="wordpool_config.json"):
        evaluate_checkpoint(broken)


def test_eval_arguments():
    neither = wordpool("eval")
    assert neither.returncode == 2 and "--checkpoint PATH" in neither.stderr and "--watch RUN_DIR" in neither.stderr
    missing = wordpool("eval", "--watch", "/nonexistent/run")
    assert missing.returncode == 2 and "run directory not found: /nonexistent/run" in missing.stderr
    assert "Traceback" not in missing.stderr
    stray = wordpool("eval", "--checkpoint", "/x", "--once")
    assert stray.returncode == 2 and "go with --watch" in stray.stderr


def test_status_of_a_real_run(watched):
    run, _ = watched
    proc = wordpool("status", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "6 / 6 (100.0%)" in out
    assert f"{run}/checkpoints/step_00000006 (step 6" in out
    assert "bytes/s" in out and "tokens/s" in out
    assert "finished" in out
    assert "step 6: bpb" in next(line for line in out.splitlines() if "eval (watch)" in line)
    png = run / "status.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    s = status_json(run, "--no-plot")
    assert (s["step"], s["total_steps"], s["state"]["state"]) == (6, 6, "finished")
    assert s["last_checkpoint"]["step"] == 6 and s["last_checkpoint"]["evaluated"] and s["checkpoints"] == 3
    assert s["restarts"] == 0 and s["skips"]["count"] == 0 and s["rollbacks"]["count"] == 0
    assert s["eval"]["step"] == 6 and s["watch_eval"]["step"] == 6 and s["watch_eval"]["val_bpb"] > 0
    assert s["throughput"]["bytes_per_s"] > 0 and s["throughput"]["words_per_s"] > 0
    assert s["wandb_id"] == (run / "wandb_id").read_text().strip()


def _write_lines(path: Path, records: list, tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _train(step: int, t: float, loss: float) -> dict:
    return {"kind": "train", "step": step, "time": t, "loss": loss, "bpb": loss * 1.5, "text_bytes": 1000.0,
            "symbols": 1200.0, "words": 200.0, "step_seconds": 0.5, "bytes_per_s": 2000.0}


@pytest.fixture
def troubled_run(tmp_path):
    """Two attempts (one restart), two skipped updates and a rollback, re-logged steps, a hang report,
    a stale heartbeat and a last line cut mid-write."""
    run, now = tmp_path / "troubled", time.time()
    t0 = now - 20_000
    records = [{"kind": "attempt", "step": 0, "time": t0, "restart": 0, "resumed_from": None, "world_size": 2}]
    records += [_train(s, t0 + s, 5.0 - 0.1 * s) for s in range(1, 7)]
    records += [{"kind": "eval", "step": 4, "time": t0 + 4.5, "val_bpb": 3.0, "val_loss": 2.0, "val_word_acc": 0.1},
                {"kind": "skip", "step": 7, "time": t0 + 7, "reason": "nonfinite_loss", "consecutive": 1},
                {"kind": "skip", "step": 8, "time": t0 + 8, "reason": "outlier_loss", "consecutive": 2},
                {"kind": "rollback", "step": 4, "time": t0 + 9, "from_step": 8, "to_step": 4,
                 "checkpoint": str(run / "checkpoints" / "step_00000004")}]
    records += [_train(5, t0 + 10, 9.5), _train(6, t0 + 11, 9.6),
                {"kind": "eval", "step": 6, "time": t0 + 12, "val_bpb": 2.5, "val_loss": 1.8, "val_word_acc": 0.2}]
    t1 = now - 12_000  # the restart after a crash past step 6
    records += [{"kind": "attempt", "step": 6, "time": t1, "restart": 1, "resumed_from": "…/step_00000006"},
                _train(7, t1 + 10, 4.2), _train(8, t1 + 12, 4.1)]
    _write_lines(run / "metrics.jsonl", records, tail='{"kind": "train", "step": 9, "time": 1.0, "lo')
    for step in (4, 6):
        folder = run / "checkpoints" / f"step_{step:08d}"
        folder.mkdir(parents=True)
        (folder / "COMPLETE").write_text(json.dumps({"step": step, "world_size": 2, "time": t0 + step}))
        (folder / "wordpool_config.json").write_text(json.dumps({"train": {"steps": 20}}))
    (run / "checkpoints" / ".tmp-step_00000008").mkdir()  # a save in progress: not a checkpoint
    (run / "checkpoints" / "step_00000010").mkdir()  # no COMPLETE: not a checkpoint
    _write_lines(run / "watch_evals.jsonl", [{"kind": "watch_eval", "step": s, "time": t0 + s, "val_bpb": 3.0 - s / 10,
                                              "val_word_acc": s / 100} for s in (4, 6)])
    _write_lines(run / "launch.jsonl", [{"event": "start", "time": t0}, {"event": "end", "time": t1 - 1, "rc": 1},
                                        {"event": "start", "time": t1}])
    _write_lines(run / "heartbeat" / "rank_00000.json", [{"rank": 0, "step": 8, "phase": "step", "time": t1 + 13}])
    _write_lines(run / "failures" / "hang-old.json", [{"kind": "hang", "rank": 1, "step": 6, "time": t0 + 13}])
    _write_lines(run / "failures" / "hang-new.json", [{"kind": "hang", "rank": 1, "step": 8, "phase": "step",
                                                       "time": t1 + 20}])
    return run


def test_status_of_a_run_with_restarts_skips_and_rollbacks(troubled_run):
    from pretrain.run_dir import last_per_step, of_kind, read_jsonl

    s = status_json(troubled_run)
    assert (s["step"], s["total_steps"]) == (8, 20)
    assert (s["attempts"], s["restarts"], s["launch_starts"]) == (2, 1, 2)
    assert s["skips"]["count"] == 2 and s["skips"]["by_reason"] == {"nonfinite_loss": 1, "outlier_loss": 1}
    assert s["rollbacks"]["count"] == 1 and s["rollbacks"]["last"]["from_step"] == 8
    assert s["last_checkpoint"]["step"] == 6 and s["checkpoints"] == 2
    assert s["eval"]["step"] == 6 and s["eval"]["val_bpb"] == 2.5 and s["watch_eval"]["step"] == 6
    assert s["state"]["state"] == "failed" and "hang-new.json" in s["state"]["detail"]
    # throughput of the current attempt only: 2 steps of 1000 bytes in 2 x 0.5 s
    assert s["throughput"]["records"] == 2 and s["throughput"]["bytes_per_s"] == pytest.approx(2000.0)
    assert s["eta_s"] is None  # not running
    assert (troubled_run / "status.png").stat().st_size > 10_000
    # steps logged again after the rollback replace the first records; the cut last line is ignored
    train = last_per_step(of_kind(read_jsonl(troubled_run / "metrics.jsonl"), "train"))
    assert [r["step"] for r in train] == list(range(1, 9)) and train[4]["loss"] == 9.5

    table = wordpool("status", str(troubled_run), "--no-plot")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "1 (2 attempt(s) logged, 2 launch start(s))" in table.stdout
    assert "2 (nonfinite_loss: 1, outlier_loss: 1)" in table.stdout
    assert "1 (last: step 8 -> 4)" in table.stdout
    assert "failed: hang (rank 1, step 8, phase step)" in table.stdout


def test_status_job_state_from_exit_record_and_heartbeats(troubled_run):
    from launcher.status import collect

    now = time.time()
    beat = troubled_run / "heartbeat" / "rank_00000.json"
    beat.write_text(json.dumps({"rank": 0, "step": 8, "phase": "step", "time": now - 5}))
    running = collect(troubled_run, now=now)
    assert running["state"]["state"] == "running" and running["eta_s"] == pytest.approx(12 * 2.0)  # 2 s/step wall
    exit_file = troubled_run / "control" / "exit.json"
    exit_file.parent.mkdir()
    exit_file.write_text(json.dumps({"reason": "preempted", "step": 8, "time": now - 1}))
    assert collect(troubled_run, now=now)["state"]["state"] == "preempted"


def test_status_of_a_missing_or_foreign_directory(tmp_path):
    missing = wordpool("status", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"wordpool status: error: run directory not found: " \
                                                                  f"{tmp_path / 'nope'}"
    foreign = wordpool("status", str(tmp_path))
    assert foreign.returncode == 2 and "is not a run directory" in foreign.stderr and "Traceback" not in foreign.stderr
