"""Schema of a `wordpool compare` config (configs/compare/*.yaml): one file describing the text, the
shared backbone, each model's extras and LR sweep, the training-FLOP budget, the seeds and the ranks.

Validated like the other configs (pydantic `Strict`: unknown keys are errors; messages name the key),
before anything heavy is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from schema import DataConfig, StackConfig, Strict, TrainConfig, load_yaml

MODEL_KINDS = ("word_pooled", "bytes", "bpe")  # each reads data.tokenizer TOKENIZER_OF[kind]

# keys compare sets itself, per model or per run: a config setting them would be silently ignored
DATA_KEYS_SET_BY_COMPARE = ("output", "tokenizer", "tokens_per_sample", "bpe_vocab_size")
TRAIN_KEYS_SET_BY_COMPARE = ("run_dir", "steps", "lr", "seed", "warmup_steps", "eval_every",
                             "checkpoint_every", "eval_batches", "log_every")


class Backbone(Strict):
    """The causal transformer all three models share (only input/output layers differ)."""

    d_model: int = Field(128, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(8 / 3, gt=0)


class RunSpec(Strict):
    """What every model entry sets for its runs."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="in every stack; a small corpus read many times needs it")
    lrs: list[float] = Field(min_length=1, description="learning rates tried on the first seed")
    seeds: int | None = Field(None, ge=1, description="this model's seeds; None: the compare's seeds")


class WordPooledSpec(RunSpec):
    """The word-pooled model's own stacks and options (see schema.model.ModelConfig for each)."""

    encoder: StackConfig = Field(default_factory=StackConfig)
    decoder: StackConfig = Field(default_factory=StackConfig)
    pooling: Literal["cls", "latent"] = "cls"
    pool_tokens: int = Field(1, ge=1, le=4)
    byte_encoder: Literal["word", "stream"] = "word"
    encoder_window: int = Field(64, ge=1)
    decoder_context: Literal["prefix", "every_layer"] = "prefix"
    hash_ngrams: list[int] = Field(default_factory=list)
    hash_buckets: int = Field(4096, ge=1)

    def model_fields_for(self) -> dict:
        """The ModelConfig fields this spec sets."""
        return self.model_dump(exclude={"lrs", "seeds"})


class TokenSpec(RunSpec):
    tokens_per_sample: int | None = Field(
        None, ge=2, description="None: matched to the word model's text bytes per sample "
                                "(words_per_sample x bytes/word / bytes/token)")


class BpeSpec(TokenSpec):
    vocab_size: int = Field(4096, ge=300, description="byte-level BPE vocabulary, trained on the train split")


class Models(Strict):
    word_pooled: WordPooledSpec
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="more word-pooled models, each its name -> the word_pooled keys it "
                                          "changes (an ablation: every one runs like a model of its own)")
    bytes: TokenSpec | None = Field(None, description="the byte baseline; absent: not run")
    bpe: BpeSpec | None = Field(None, description="the BPE baseline; absent: not run")

    @model_validator(mode="after")
    def _check_variants(self):
        for name, changes in self.variants.items():
            if name in MODEL_KINDS or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"models.variants.{name}: a name of letters, digits, - and _, not a model kind")
            try:
                self.spec(name)
            except ValueError as exc:
                raise ValueError(f"models.variants.{name}: {exc}") from None
        return self

    def entries(self) -> dict[str, str]:
        """Every model to run, name -> its model kind, in the report's order."""
        names = {"word_pooled": "word_pooled", **{name: "word_pooled" for name in self.variants}}
        return names | {kind: kind for kind in ("bytes", "bpe") if getattr(self, kind) is not None}

    def spec(self, name: str):
        """The spec of a model kind or a variant (the word_pooled spec with the variant's changes)."""
        if name in MODEL_KINDS:
            return getattr(self, name)
        return WordPooledSpec(**{**self.word_pooled.model_dump(), **self.variants[name]})

    def lrs(self, name: str) -> list[float]:
        return self.spec(name).lrs

    def seeds(self, name: str, default: int) -> int:
        """The model's seeds (a variant inherits word_pooled's unless it sets its own)."""
        return self.spec(name).seeds or default


class Budget(Strict):
    train_flops: float = Field(gt=0, description="useful training FLOPs per run, the same for every model")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="LR warmup as a share of the run's steps")
    evals: int = Field(4, ge=1, description="validation points during training (plus step 0), for the curves")
    curve_eval_batches: int = Field(8, ge=1, description="val micro-batches per evaluation during training")
    final_eval_batches: int | None = Field(None, ge=1, description="final eval micro-batches; None: all of val")
    flop_estimate_batches: int = Field(16, ge=1, description="training batches read to measure FLOPs per step")


class CompareConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    out: str | None = Field(None, description="run directory (default runs/compare/<name>)")
    data: DataConfig
    backbone: Backbone = Field(default_factory=Backbone)
    models: Models
    train: TrainConfig = Field(default_factory=TrainConfig)
    budget: Budget
    seeds: int = Field(3, ge=1, description="seeds per model: the LR sweep runs on seed 0, the best LR on all")
    widen_lrs: int = Field(2, ge=0, description="a grid of 2+ LRs whose best is at its edge gains the LR past "
                                                "that edge (x2 or /2), up to this many times per model")
    nproc: int = Field(1, ge=1, description="ranks per training run (torchrun)")
    parallel: int = Field(1, ge=1, description="training runs at the same time")

    @model_validator(mode="after")
    def _check(self):
        if not self.data.inputs:
            raise ValueError("data.inputs must name at least one text")
        for key in DATA_KEYS_SET_BY_COMPARE:
            if key in self.data.model_fields_set:
                raise ValueError(f"data.{key} is set by compare for each tokenization: remove it "
                                 f"(BPE vocabulary: models.bpe.vocab_size; tokens per sample: "
                                 f"models.<kind>.tokens_per_sample)")
        for key in TRAIN_KEYS_SET_BY_COMPARE:
            if key in self.train.model_fields_set:
                raise ValueError(f"train.{key} is set by compare for each run (steps from budget.train_flops, "
                                 f"lr from the sweep, seed from seeds, warmup from budget.warmup_fraction)")
        if self.backbone.d_model % self.backbone.n_heads:
            raise ValueError(f"backbone.d_model={self.backbone.d_model} is not divisible by "
                             f"n_heads={self.backbone.n_heads}")
        return self

    def out_dir(self) -> Path:
        return Path(self.out or f"runs/compare/{self.name}")


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    return load_yaml(path, overrides, CompareConfig, "compare config")
