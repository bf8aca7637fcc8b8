import pytest

from schema import ConfigError, load_config


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, "train:\n  steps: 7\n"), ["model.encoder.d_model=32", "data.inputs=[a.txt]"])
    assert cfg.train.steps == 7 and cfg.model.encoder.d_model == 32 and cfg.data.inputs == ["a.txt"]


def test_unknown_key_names_dotted_path(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.encoder\.width: unknown key"):
        load_config(_write(tmp_path, "model:\n  encoder:\n    width: 3\n"))


def test_wrong_type_names_value_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "train:\n  steps: many\n"))
    assert "train.steps: got 'many'" in str(err.value) and "integer" in str(err.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key.subkey=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(None, ["train.stepz=3"])


def test_every_shipped_config_validates_and_the_1b_config_is_1b():
    from pathlib import Path

    import torch

    from pretrain.models import build_model

    root = Path(__file__).resolve().parents[3] / "configs"
    shipped = [p for p in sorted(root.rglob("*.yaml")) if "compare" not in p.parts]  # compare: own schema
    assert len(shipped) >= 6
    for path in shipped:
        load_config(path)
    cfg = load_config(root / "bench" / "1b.yaml")
    assert cfg.train.zero_stage == 3 and cfg.train.activation_checkpointing
    with torch.device("meta"):  # no memory: only shapes
        params = build_model(cfg.model).num_params()
    assert 0.95e9 < params < 1.2e9, params


def test_configs_saved_by_older_checkpoints_still_load():
    """Checkpoints and exports written before the data section held the one copy of each fact kept
    train.data_dir and the model's own sizes; they load as trained, and today's dumps pass unchanged."""
    from schema import validate
    from schema.load import upgrade_saved

    old = {"data": {"max_word_bytes": 32, "words_per_sample": 256}, "train": {"data_dir": "data/x"},
           "model": {"kind": "word_pooled", "max_word_bytes": 16, "max_words": 64}}
    with pytest.raises(ConfigError, match="train.data_dir: unknown key"):
        validate(old, "old")
    cfg = validate(upgrade_saved(old), "old")
    assert (cfg.data.output, cfg.model.max_word_bytes, cfg.model.max_words) == ("data/x", 16, 64)
    old_bpe = {"train": {"data_dir": "d"}, "model": {"kind": "bpe", "max_words": 256}}
    assert validate(upgrade_saved(old_bpe), "old").model.max_words == 256
    today = load_config(None, ["data.max_word_bytes=24"]).model_dump()
    assert upgrade_saved(today) == today
