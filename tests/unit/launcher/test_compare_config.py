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


def test_compare_variants_and_optional_baselines(tmp_path):
    raw = tiny_config(tmp_path / "t.txt", tmp_path / "out")
    del raw["models"]["bytes"]
    raw["models"]["variants"] = {"stream": {"byte_encoder": "stream", "pooling": "latent", "lrs": [1e-2]},
                                 "hashed": {"hash_ngrams": [3, 4]}}
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(raw))
    models = load_compare_config(path).models
    assert models.entries() == {"word_pooled": "word_pooled", "stream": "word_pooled", "hashed": "word_pooled",
                                "bpe": "bpe"}
    assert models.spec("stream").byte_encoder == "stream" and models.lrs("stream") == [1e-2]
    assert models.spec("hashed").hash_ngrams == [3, 4] and models.lrs("hashed") == models.lrs("word_pooled")
    raw["models"]["variants"] = {"bad": {"decoder_context": "sideways"}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="models.variants.bad"):
        load_compare_config(path)
    raw["models"]["variants"] = {"bytes": {}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="not a model kind"):
        load_compare_config(path)


def test_compare_dropout_is_each_models_own(tmp_path):
    """models.<kind>.dropout (and a variant's) reaches that model's train config only."""
    from launcher.compare.run import base_config

    raw = tiny_config(tmp_path / "t.txt", tmp_path / "out")
    raw["models"]["bpe"]["dropout"] = 0.2
    raw["models"]["variants"] = {"drop": {"dropout": 0.1}}
    path = tmp_path / "dropout.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_compare_config(path)
    dropout = {name: base_config(cfg, name, tmp_path / "data", 64).model.dropout for name in cfg.models.entries()}
    assert dropout == {"word_pooled": 0.0, "drop": 0.1, "bytes": 0.0, "bpe": 0.2}
    raw["models"]["bytes"]["dropout"] = 1.0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="models.bytes.dropout"):
        load_compare_config(path)
