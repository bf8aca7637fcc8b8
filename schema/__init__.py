"""The configuration schema of every command: YAML -> validated config objects.

It imports no other package of the project, so every layer (data_pipeline, pretrain, launcher) reads it.
"""
from schema.base import Strict, UserError
from schema.data import DataConfig
from schema.load import ConfigError, WordpoolConfig, apply_overrides, load_config, load_yaml, validate
from schema.model import TOKENIZER_OF, ModelConfig, StackConfig
from schema.train import EvalHookConfig, FaultConfig, TrainConfig, WandbConfig

__all__ = ["ConfigError", "DataConfig", "EvalHookConfig", "FaultConfig", "ModelConfig", "StackConfig", "Strict",
           "TOKENIZER_OF", "TrainConfig", "UserError", "WandbConfig", "WordpoolConfig", "apply_overrides",
           "load_config", "load_yaml", "validate"]
