"""YAML -> one validated config object shared by every command.

Errors name the file, the dotted key, the value given and what was expected, and are raised
before anything heavy (Ray, torch) is imported.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from schema.base import Strict, UserError
from schema.data import DataConfig
from schema.model import ModelConfig, derived_model_sizes
from schema.train import EvalHookConfig, FaultConfig, TrainConfig, WandbConfig


class WordpoolConfig(Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    fault: FaultConfig = Field(default_factory=FaultConfig)
    evals: list[EvalHookConfig] | None = Field(
        None, description="scheduled evaluations; default: val_bpb, word_acc and rare_word_acc every "
                          "train.eval_every steps and at the end")

    @model_validator(mode="after")
    def _derive_model_sizes(self):
        """model.max_word_bytes / model.max_words are the data section's facts, filled in from it; a value
        given for them that differs is an error naming the data key to set instead."""
        update = {}
        for field, (source, value) in derived_model_sizes(self.model.kind, self.data).items():
            given = getattr(self.model, field)
            if given == value:
                continue
            if field in self.model.model_fields_set:
                raise PydanticCustomError(
                    "derived_key", "{value}, derived from {source}={value}; set {source}",
                    {"key": f"model.{field}", "got": given, "value": value, "source": source})
            update[field] = value
        if update:
            self.model = self.model.model_copy(update=update)  # a copy: a caller's ModelConfig stays as it was
        return self


    @model_validator(mode="after")
    def _derive_data_output(self):
        """With train.streams, data.output is the first stream's path (its tokenizer, statistics and val split
        serve evaluation and export); another value given for it is an error. A finite train.cache_limit
        needs remote data: streaming evicts local-only shards for good."""
        streams, output = self.train.streams, self.data.output
        if streams and output != streams[0].path:
            if "output" in self.data.model_fields_set and output != DataConfig.model_fields["output"].default:
                raise PydanticCustomError(
                    "derived_key", "{value}, the first of train.streams; set train.streams",
                    {"key": "data.output", "got": output, "value": streams[0].path})
            self.data = self.data.model_copy(update={"output": streams[0].path})
        paths = [s.path for s in streams] or [self.data.output]
        local = [p for p in paths if not _is_remote(p)]
        if self.train.cache_limit is not None and local:
            raise PydanticCustomError(
                "derived_key", "{value}", {"key": "train.cache_limit", "got": self.train.cache_limit,
                                           "value": f"no limit: {local[0]} is local, and a finite cache evicts "
                                                    f"local-only shards for good (remote data: an s3:// URL)"})
        return self


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class ConfigError(UserError):
    """A config that cannot be used; the message is meant for the user as is."""


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {err['input']!r})"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    if err["type"] == "derived_key":  # WordpoolConfig._derive_model_sizes: the key is in ctx, not in loc
        return f"{err['ctx']['key']}: got {err['ctx']['got']!r} — expected {err['msg']}"
    return f"{key}: got {err['input']!r} — expected {err['msg'].removeprefix('Value error, ')}"


def validate(raw: dict[str, Any], source: str, schema: type[Strict] = WordpoolConfig, what: str = "config"):
    """raw -> a validated `schema` (a WordpoolConfig by default); a ConfigError naming every bad key."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid {what} {source}:"] + [f"  {_describe(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
    """A config saved in a checkpoint or an export by an older wordpool, in today's keys: train.data_dir
    becomes data.output, and the model's own word size and sequence length become the data keys they are
    derived from now, so the saved model is rebuilt exactly as it was trained. Today's configs pass unchanged."""
    raw = copy.deepcopy(raw)
    data, train, model = raw.setdefault("data", {}), raw.get("train", {}), raw.get("model", {})
    if "data_dir" in train:
        data["output"] = train.pop("data_dir")
    if "max_word_bytes" in model:
        data["max_word_bytes"] = model["max_word_bytes"]
    if "max_words" in model:
        data["words_per_sample" if model.get("kind", "word_pooled") == "word_pooled" else "tokens_per_sample"] = \
            model["max_words"]
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as YAML, so `3`, `true`, `[1,2]` are typed."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected the form key.subkey=value")
    return key.split("."), yaml.safe_load(value) if value != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_yaml(path: str | Path, overrides: list[str] | None = None, schema: type[Strict] = WordpoolConfig,
              what: str = "config"):
    """A YAML file plus `key.subkey=value` overrides -> a validated `schema`; `what` names it in errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} file {p}: top level must be a mapping, got {type(raw).__name__}")
    return _validate_with_overrides(raw, str(p), overrides, schema, what)


def _validate_with_overrides(raw: dict[str, Any], source: str, overrides: list[str] | None, schema, what: str):
    if overrides:
        source += " with overrides " + " ".join(overrides)
        raw = apply_overrides(raw, overrides)
    return validate(raw, source, schema, what)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> WordpoolConfig:
    if path is None:
        return _validate_with_overrides({}, "<defaults>", overrides, WordpoolConfig, "config")
    return load_yaml(path, overrides)
