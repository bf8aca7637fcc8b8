"""Schema of the `train`, `wandb`, `fault` and `evals` sections."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schema.base import Strict


class ProfileConfig(Strict):
    """train.profile: torch.profiler over a window of training steps (pretrain/training/profiling.py)."""

    enabled: bool = Field(False, description="a Chrome trace per rank in <run_dir>/profiler/, top operators at the end")
    wait: int = Field(5, ge=0, description="steps skipped before each cycle (start-up, compilation)")
    warmup: int = Field(2, ge=0, description="steps traced but discarded before the recorded ones")
    active: int = Field(3, ge=1, description="steps recorded per cycle")
    repeat: int = Field(1, ge=0, description="cycles (each its own trace); 0: until the run ends")
    top_ops: int = Field(15, ge=1, description="operators (by self time, rank 0) printed at the end")


class StreamConfig(Strict):
    """train.streams: one prepared dataset of a training mixture (a mosaicml-streaming Stream)."""

    path: str = Field(description="the dataset's data folder or URL (what `wordpool prepare --output` wrote)")
    name: str | None = Field(None, description="names its validation figures (val_bpb/<name>); default: the "
                                               "path's last part")
    proportion: float | None = Field(None, gt=0, description="its share of each epoch's samples (relative)")
    repeat: float | None = Field(None, gt=0, description="how many times its samples are seen per epoch")
    choose: int | None = Field(None, ge=1, description="samples of it drawn per epoch")

    @model_validator(mode="after")
    def _check(self):
        given = [k for k in ("proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"one of proportion, repeat, choose (got {', '.join(given)})")
        if self.name is None:
            self.name = self.path.rstrip("/").rsplit("/", 1)[-1] or self.path
        return self


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b)?\s*$", re.IGNORECASE)


class TrainConfig(Strict):
    run_dir: str = Field("runs/default", description="checkpoints, metrics.jsonl, wandb")
    steps: int = Field(200, ge=1, description="optimizer steps")
    micro_batch_size: int = Field(8, ge=1, description="samples per rank per micro-step")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step (ignored if global_batch_size is set)")
    global_batch_size: int | None = Field(
        None, ge=1, description="samples per optimizer step over all ranks; grad_accum is derived from it and the "
                                "world size, so a run can resume on fewer or more processes with the same batch")
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)
    zero_stage: int = Field(2, ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    seed: int = 1234
    shuffle: bool = True
    num_canonical_nodes: int = Field(1, ge=1, description="fixed so data order is the same at any world size")
    checkpoint_every: int = Field(50, ge=1)
    keep_last: int = Field(3, ge=1, description="checkpoints kept; older ones are deleted unless permanent")
    keep_every: int | None = Field(None, ge=1, description="a checkpoint at every multiple of this step is permanent")
    verify_checkpoints: Literal["sha256", "size", "none"] = Field(
        "sha256", description="check a checkpoint's files against its manifest before resuming from it")
    eval_every: int = Field(100, ge=1)
    eval_batches: int = Field(20, ge=1, description="val micro-batches per evaluation")
    log_every: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader workers")
    data_local: str | None = Field(
        None, description="remote data (data.output or a stream an s3:// URL): the folder on each node holding its "
                          "copy (default: a cache folder per dataset and run under WORDPOOL_SHARD_CACHE or TMPDIR)")
    cache_limit: int | None = Field(
        None, description="remote data only: the most bytes of shards kept per node (e.g. 10gb); older shards "
                          "are evicted and fetched again when needed. None: no limit")
    predownload: int | None = Field(None, ge=1, description="samples per worker fetched ahead of training "
                                                            "(None: streaming's default, 8 batches)")
    download_timeout: float = Field(60.0, gt=0, description="seconds a shard download may take")
    streams: list[StreamConfig] = Field(
        default_factory=list, description="a mixture of prepared datasets (same tokenization and settings); "
                                          "data.output is then the first one's path")
    validate_hash: str | None = Field(
        "auto", description="check each shard file against this hash from index.json as a node first reads it; "
                            "auto: the one prepare recorded (none for data prepared without hashes); none: off")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in backward")
    compile: bool = Field(False, description="torch.compile the model's forward and backward (DeepSpeed's "
                                             "engine.compile); the first steps pay the compilation")
    compile_backend: str = Field("inductor", description="train.compile: the torch.compile backend (aot_eager: "
                                                         "no code generation, for debugging)")
    compile_dynamic: bool | None = Field(
        None, description="train.compile: dynamic shapes. None: a batch's word counts dynamic, other shapes once they "
                          "change; true: all dynamic; false: static (a recompile for every new shape)")
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    peak_flops: float | None = Field(None, gt=0, description="peak FLOP/s of one device: logs show MFU when set")
    bucket_order: Literal["random", "short_to_long"] = Field(
        "random", description="decomposed data (data.packing=decompose): each step's length bucket; random: "
                              "sampled by remaining batches; short_to_long: a curriculum, every epoch")
    @field_validator("cache_limit", mode="before")
    @classmethod
    def _bytes(cls, value):
        """"10gb" -> bytes (KiB-based units, as mosaicml-streaming reads them)."""
        match = _SIZE.match(value) if isinstance(value, str) else None
        if isinstance(value, str) and not match:
            raise ValueError("a byte count, or a size like 10gb / 500mb")
        size = int(float(match[1]) * 1024 ** "bkmgt".index((match[2] or "b")[0].lower())) if match else value
        if size is not None and size < 1:
            raise ValueError("a positive byte count")
        return size

    @model_validator(mode="after")
    def _check_streams(self):
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise PydanticCustomError("derived_key", "different names; set `name` on each",
                                      {"key": "train.streams", "got": names})
        mixed = [s.proportion is not None for s in self.streams]
        if any(mixed) and not all(mixed):
            raise PydanticCustomError("derived_key", "proportion on every stream or on none (mosaicml-streaming "
                                      "weighs relatively or absolutely)", {"key": "train.streams", "got": mixed})
        return self

    init_from: str | None = Field(
        None, description="warm start: weights of a checkpoint or export (strict), with a fresh optimizer, schedule "
                          "and data position; ignored when the run resumes from checkpoints of its own")


class WandbConfig(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "wordpool"
    entity: str | None = None
    name: str | None = None


class FaultConfig(Strict):
    """What the job does when something goes wrong (README, "Long runs")."""

    max_restarts: int = Field(3, ge=0, description="worker-group restarts from the newest checkpoint before the "
                                                   "job stops (`wordpool launch`)")
    skip_nonfinite: bool = Field(True, description="skip the update of a step whose loss or grad norm is inf/NaN")
    outlier_sigma: float = Field(6.0, ge=0, description="an outlier exceeds the recent mean by this many standard "
                                                       "deviations; 0 disables the outlier test")
    outlier_rule: Literal["loss_and_grad_norm", "loss_or_grad_norm"] = Field(
        "loss_and_grad_norm", description="skip a spike: loss and grad norm both outliers (default), or either one")
    outlier_window: int = Field(50, ge=5, description="recent steps the outlier test compares against")
    outlier_min_history: int = Field(20, ge=3, description="steps seen before the outlier test starts (and never "
                                                           "during train.warmup_steps)")
    max_consecutive_skips: int = Field(3, ge=1, description="then roll back to the newest checkpoint (none yet: "
                                                            "a logged warning, and training goes on)")
    max_rollbacks: int = Field(3, ge=0, description="rollbacks in one attempt before the job stops with a report")
    init_timeout_s: float = Field(900.0, gt=0, description="hang detection: the longest start-up or first steps")
    step_timeout_s: float = Field(300.0, gt=0, description="hang detection: the longest step after the first ones")
    timeout_after_steps: int = Field(2, ge=1, description="steps run under init_timeout_s before step_timeout_s")
    io_timeout_s: float = Field(1800.0, gt=0, description="hang detection: the longest evaluation or checkpoint")


class EvalHookConfig(Strict):
    """One scheduled evaluation: what to compute, and when."""

    kind: Literal["val_bpb", "word_acc", "rare_word_acc", "samples", "callable", "lm_eval"] = Field(
        description="val_bpb: validation loss and bits/byte; word_acc: next-word accuracy; rare_word_acc: accuracy "
                    "by training frequency; samples: generated text; callable: `target`, a user function; "
                    "lm_eval: lm-evaluation-harness `tasks` (offline)")
    every_steps: int | None = Field(None, ge=1)
    every_minutes: float | None = Field(None, gt=0)
    on_checkpoint: bool = Field(False, description="run right after each checkpoint is saved")
    target: str | None = Field(None, description="callable: 'package.module:function', called as fn(ctx) -> dict")
    prompts: list[str] = Field(default_factory=lambda: ["The "], description="samples: prompts to continue")
    max_words: int = Field(20, ge=1, description="samples: words generated per prompt")
    max_batches: int | None = Field(None, ge=1, description="val micro-batches (default train.eval_batches)")
    tasks: list[str] = Field(default_factory=list, description="lm_eval: task names (e.g. wordpool_cloze)")
    include_path: list[str] = Field(default_factory=list, description="lm_eval: folders of task YAML files")
    limit: float | None = Field(None, gt=0, description="lm_eval: documents per task (a fraction if < 1)")
    num_fewshot: int | None = Field(None, ge=0, description="lm_eval: examples in the prompt")
    batch_size: int = Field(8, ge=1, description="lm_eval: windows scored per forward")

    @model_validator(mode="after")
    def _check(self):
        if self.every_steps is None and self.every_minutes is None and not self.on_checkpoint:
            raise ValueError("a schedule: every_steps, every_minutes or on_checkpoint")
        if (self.kind == "lm_eval") != bool(self.tasks):
            raise ValueError("tasks (lm-eval task names) with kind lm_eval, and only then")
        if (self.kind == "callable") != (self.target is not None):
            raise ValueError("target ('package.module:function') with kind callable, and only then")
        if self.target is not None and (":" not in self.target or not all(self.target.split(":", 1))):
            raise ValueError(f"target {self.target!r} in the form 'package.module:function'")
        return self
