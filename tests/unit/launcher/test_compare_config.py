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


def test_lr_grid_widens_until_the_best_is_interior(tmp_path, monkeypatch):
    """A best LR at the grid's edge adds the LR past it (x2 or /2), at most widen_lrs times; one LR stays."""
    import math

    from launcher.compare import run as compare_run

    raw = tiny_config(tmp_path / "t.txt", tmp_path / "out")
    raw["models"]["word_pooled"]["lrs"] = [1e-3, 2e-3]      # best 8e-3: two steps up
    raw["models"]["bytes"]["lrs"] = [4e-3, 8e-3, 1.6e-2]     # best 8e-3: interior already
    raw["models"]["bpe"]["lrs"] = [2e-3, 4e-3]               # best 2.5e-4: three steps down, one too many
    raw["widen_lrs"] = 2
    path = tmp_path / "widen.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_compare_config(path)
    optimum = {"word_pooled": 8e-3, "bytes": 8e-3, "bpe": 2.5e-4}
    executed = []

    def fake_execute_all(runs, cfg, say):  # val bits/byte: a parabola in log2(lr) around each model's optimum
        executed.append(sorted((r.name, r.lr) for r in runs))
        return [{"val_bpb": 2 + math.log2(r.lr / optimum[r.name]) ** 2} for r in runs]

    monkeypatch.setattr(compare_run, "execute_all", fake_execute_all)
    plan = {n: {"base": compare_run.base_config(cfg, n, tmp_path / "data", 64), "steps": 5} for n in optimum}
    sweep, finals = compare_run.sweep_lrs(cfg, plan, tmp_path / "runs", lambda text: None)
    grids = {n: [round(r.lr, 6) for r in runs] for n, runs in sweep.items()}
    assert grids == {"word_pooled": [1e-3, 2e-3, 4e-3, 8e-3], "bytes": [4e-3, 8e-3, 1.6e-2],
                     "bpe": [5e-4, 1e-3, 2e-3, 4e-3]}
    assert executed[1:] == [[("bpe", 1e-3), ("word_pooled", 4e-3)], [("bpe", 5e-4), ("word_pooled", 8e-3)]]
    assert len(finals) == sum(len(g) for g in grids.values())


def test_a_model_may_run_its_own_number_of_seeds(tmp_path):
    raw = tiny_config(tmp_path / "t.txt", tmp_path / "out")
    raw["seeds"] = 1
    raw["models"]["bpe"]["seeds"] = 3
    raw["models"]["word_pooled"]["seeds"] = 2
    raw["models"]["variants"] = {"one": {"hash_ngrams": [3], "seeds": 1}, "inherits": {"hash_ngrams": [4]}}
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(raw))
    models = load_compare_config(path).models
    assert {n: models.seeds(n, 1) for n in models.entries()} == {"word_pooled": 2, "one": 1, "inherits": 2,
                                                                 "bytes": 1, "bpe": 3}
    assert "seeds" not in models.spec("word_pooled").model_fields_for()  # not a model key
