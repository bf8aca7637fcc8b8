"""`wordpool compare` config errors name the key (launcher/compare/config.py)."""
import pytest
import yaml

from compare_config import tiny_config
from launcher.compare.config import load_compare_config
from schema import ConfigError


def test_compare_config_errors_name_the_key(tmp_path):
    raw = tiny_config(tmp_path / "t.txt", tmp_path / "out")
    raw["train"]["steps"] = 10
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="train.steps is set by compare"):
        load_compare_config(path)
    raw["train"] = {}
    raw["models"]["bpe"]["lrz"] = [1.0]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"models.bpe.lrz: unknown key"):
        load_compare_config(path)
