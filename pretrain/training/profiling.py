"""train.profile: torch.profiler over a window of training steps.

The schedule counts the training steps of this attempt (a resumed run profiles again): `wait` steps
skipped, `warmup` traced and discarded, `active` recorded; `repeat` cycles (0: until the run ends). Each
rank writes one Chrome trace per cycle into `<run_dir>/profiler/` (open in Perfetto or chrome://tracing).
At the end, rank 0 logs its top operators by self time, summed over its cycles, as a `profile` record
(console lines and metrics.jsonl). CPU activity always, CUDA activity on GPU (then ranked by device time).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity

from pretrain.run_dir import RunDir


class StepProfiler:
    """`step()` after every training step, `finish(logger, step)` once at the end; both do nothing when
    train.profile.enabled is false."""

    def __init__(self, cfg, run_dir: str | Path, rank: int, first_step: int, on_gpu: bool):
        self.cfg, self.rank, self.first_step, self.on_gpu = cfg, rank, first_step, on_gpu
        self.run = RunDir(run_dir)
        self.traces: list[Path] = []
        self.steps = 0  # steps recorded
        self.ops: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # name -> [self time in us, calls]
        self._prof = None
        if not cfg.enabled:
            return
        self.run.profiler.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        self._prof = torch.profiler.profile(
            activities=activities, on_trace_ready=self._save,
            schedule=torch.profiler.schedule(wait=cfg.wait, warmup=cfg.warmup, active=cfg.active, repeat=cfg.repeat))
        self._prof.start()

    def step(self) -> None:
        if self._prof is not None:
            self._prof.step()

    def finish(self, logger, step: int) -> None:
        """Stop (a cycle cut short by the end of the run is saved too); rank 0's `logger` logs the top operators."""
        if self._prof is None:
            return
        self._prof.stop()
        self._prof = None
        if logger is not None:
            logger.log("profile", step, self.summary())

    def summary(self) -> dict:
        """The top train.profile.top_ops operators by self time, with their share of all operators' self time."""
        total = sum(t for t, _ in self.ops.values()) or 1.0
        top = sorted(self.ops.items(), key=lambda kv: -kv[1][0])[: self.cfg.top_ops]
        return {"rank": self.rank, "profiled_steps": self.steps, "traces": [str(p) for p in self.traces],
                "clock": "cuda" if self.on_gpu else "cpu",
                "top_ops": [{"name": name, "self_ms": t / 1e3, "share": t / total, "calls": int(n)}
                            for name, (t, n) in top]}

    def _save(self, prof) -> None:
        """on_trace_ready, at the end of each recorded window: its trace, and its operators' totals."""
        step = self.first_step + prof.step_num  # steps done: the window ended with this training step
        path = self.run.profiler_trace(self.rank, step)
        prof.export_chrome_trace(str(path))
        self.traces.append(path)
        attr = "self_device_time_total" if self.on_gpu else "self_cpu_time_total"
        for event in prof.key_averages():
            if event.key.startswith("ProfilerStep"):  # the steps' own spans (Python between operators)
                self.steps += event.count
            else:
                self.ops[event.key][0] += getattr(event, attr)
                self.ops[event.key][1] += event.count
