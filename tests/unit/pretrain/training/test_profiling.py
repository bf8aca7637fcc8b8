"""train.profile (pretrain/training/profiling.py): the wait/warmup/active schedule over training steps, a
Chrome trace per rank and recorded window in <run_dir>/profiler/, the top operators logged by rank 0."""
import json

import pytest
import torch

from schema import TrainConfig, UserError, validate
from pretrain.run_dir import RunDir
from pretrain.training.metrics import MetricsLogger
from pretrain.training.profiling import StepProfiler


class Recorder:
    def __init__(self):
        self.records = []

    def log(self, kind, step, values):
        self.records.append((kind, step, values))


def run_steps(profiler, n):
    a = torch.randn(64, 64)
    for _ in range(n):
        (a @ a).relu().sum()
        profiler.step()


def test_the_window_is_traced_per_rank_and_the_top_operators_logged(tmp_path):
    cfg = TrainConfig(profile={"enabled": True, "wait": 1, "warmup": 1, "active": 2, "repeat": 2, "top_ops": 3})
    profiler = StepProfiler(cfg.profile, tmp_path, rank=1, first_step=10, on_gpu=False)
    run_steps(profiler, 9)  # cycles: steps 11-14 (wait, warmup, 2 recorded) and 15-18; step 19 waits
    logger = Recorder()
    profiler.finish(logger, 19)
    run = RunDir(tmp_path)
    assert sorted(p.name for p in run.profiler.iterdir()) == [run.profiler_trace(1, 14).name,
                                                             run.profiler_trace(1, 18).name]
    trace = json.loads(run.profiler_trace(1, 14).read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"ProfilerStep#2", "ProfilerStep#3", "aten::mm"} <= names and "ProfilerStep#1" not in names  # warmup: out
    (kind, step, summary), = logger.records
    assert kind == "profile" and step == 19 and summary["rank"] == 1 and summary["profiled_steps"] == 4
    top = summary["top_ops"]
    assert len(top) == 3 and "aten::mm" in [o["name"] for o in top]
    assert [o["self_ms"] for o in top] == sorted((o["self_ms"] for o in top), reverse=True)
    assert next(o for o in top if o["name"] == "aten::mm")["calls"] == 4  # one matmul per recorded step
    assert 0 < sum(o["share"] for o in top) <= 1


def test_a_window_cut_short_by_the_end_is_saved_and_off_means_nothing(tmp_path):
    cfg = TrainConfig(profile={"enabled": True, "wait": 0, "warmup": 0, "active": 5})
    profiler = StepProfiler(cfg.profile, tmp_path / "on", rank=0, first_step=0, on_gpu=False)
    run_steps(profiler, 2)
    logger = Recorder()
    profiler.finish(None, 2)  # another rank: no logger, its trace all the same
    assert [p.name for p in RunDir(tmp_path / "on").profiler.iterdir()] == [RunDir("x").profiler_trace(0, 2).name]
    off = StepProfiler(TrainConfig().profile, tmp_path / "off", rank=0, first_step=0, on_gpu=False)
    run_steps(off, 3)
    off.finish(logger, 3)
    assert not (tmp_path / "off").exists() and logger.records == []


def test_the_console_shows_one_progress_line_per_operator(tmp_path, capsys):
    from launcher.console import is_progress
    from schema import WandbConfig

    logger = MetricsLogger(tmp_path, WandbConfig(mode="disabled"), {}, total_steps=20)
    logger.log("profile", 20, {"rank": 0, "profiled_steps": 3, "clock": "cpu", "traces": [str(tmp_path / "t.json")],
                               "top_ops": [{"name": "aten::mm", "self_ms": 12.5, "share": 0.4, "calls": 30},
                                           {"name": "aten::add", "self_ms": 1.25, "share": 0.04, "calls": 9}]})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(is_progress(line) for line in lines)
    assert "3 steps profiled" in lines[0] and "aten::mm" in lines[1] and "40.0%" in lines[1]
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["top_ops"][1]["calls"] == 9


def test_profile_keys_are_validated_with_their_dotted_name():
    with pytest.raises(UserError, match=r"train\.profile\.active"):
        validate({"train": {"profile": {"enabled": True, "active": 0}}}, "test")
    with pytest.raises(UserError, match=r"train\.profile\.wiat"):
        validate({"train": {"profile": {"wiat": 1}}}, "test")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA: ranking by device time needs a CUDA device")
def test_on_cuda_operators_are_ranked_by_device_time(tmp_path):
    cfg = TrainConfig(profile={"enabled": True, "wait": 0, "warmup": 1, "active": 2})
    profiler = StepProfiler(cfg.profile, tmp_path, rank=0, first_step=0, on_gpu=True)
    a = torch.randn(512, 512, device="cuda")
    for _ in range(3):
        (a @ a).relu().sum()
        profiler.step()
    torch.cuda.synchronize()
    logger = Recorder()
    profiler.finish(logger, 3)
    summary = logger.records[0][2]
    assert summary["clock"] == "cuda" and summary["profiled_steps"] == 2
    assert summary["top_ops"][0]["self_ms"] > 0
