"""`export --hf`: each model kind (the default word-pooled config, the byte and BPE baselines; untrained
weights: the equality is of the code path, not of what training made) is loaded by transformers with
trust_remote_code, offline, in a process that imports no wordpool package (tests/hf_helpers.py); its
logits equal `load_exported`'s bit for bit and its generations equal `wordpool generate`'s."""
import json

import pytest
import torch

from cli_helpers import ROOT, prepare_without_ray
from hf_helpers import PROMPT, TEXTS, load_with_transformers

TOKENS = ["data.max_word_bytes=16", "data.tokens_per_sample=64"]


@pytest.fixture(scope="module")
def hf_exports(english_lines_file, tmp_path_factory):
    """{kind: export folder} of untrained models, written with hf=True."""
    from data_pipeline.bpe import TOKENIZER_FILE, load_bpe
    from pretrain.inference.export import write_export
    from pretrain.models import build_model
    from schema import DataConfig, load_config

    root = tmp_path_factory.mktemp("hf_exports")
    # the default model options; digits split as the run said (TEXTS holds a digit run)
    overrides = {"word_pooled": (ROOT / "configs/tiny.yaml", ["data.split_digits=true"])}
    for tokenizer in ("bytes", "bpe"):
        data = root / f"data-{tokenizer}"
        prepare_without_ray(DataConfig(inputs=[str(english_lines_file)], output=str(data), doc_split="line",
                                       max_word_bytes=16, tokenizer=tokenizer, tokens_per_sample=64,
                                       bpe_vocab_size=300, val_fraction=0.1))
        vocab = 257 if tokenizer == "bytes" else \
            load_bpe((data / TOKENIZER_FILE).read_text()).get_vocab_size(with_added_tokens=True)
        overrides[tokenizer] = (ROOT / f"configs/tiny-{tokenizer}.yaml",
                                [f"data.output={data}", f"model.vocab_size={vocab}", *TOKENS])
    exports = {}
    for kind, (config, extra) in overrides.items():
        cfg = load_config(config, [f"train.run_dir={root / 'runs' / kind}", *extra])
        torch.manual_seed(0)
        exports[kind] = write_export(build_model(cfg.model), cfg, cfg.model_dump(mode="json"), root / kind,
                                     {"source_checkpoint": "untrained", "step": 0}, hf=True)
    return exports


def _inputs(model, cfg, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if cfg.model.kind != "word_pooled":
        return {"input_ids": torch.randint(0, cfg.model.vocab_size, (3, 20), generator=g)}
    B, W, L = 3, 8, cfg.model.max_word_bytes
    word_lens = torch.randint(1, L + 1, (B, W), generator=g)
    word_lens[0, -2:] = 0  # absent words at the end of a sample
    return {"words": torch.randint(0, 256, (B, W, L), generator=g), "word_lens": word_lens}


def _logits(model, kind, inputs):
    with torch.no_grad():
        if kind == "word_pooled":
            return model.decoder_logits(inputs["words"], inputs["word_lens"])
        return model.logits(inputs["input_ids"])


def _encoded(cfg, tokenizer_dir):
    """What encode(TEXTS) must give: wordpool's splitter (word-pooled) or tokenizer (baselines)."""
    from data_pipeline.segment import split_words

    if cfg.model.kind == "word_pooled":
        return [[w for w in split_words(t, cfg.model.max_word_bytes, cfg.data.split_digits)] for t in TEXTS]
    if cfg.model.kind == "bytes":
        return [list(t.encode()) for t in TEXTS]
    from data_pipeline.bpe import TOKENIZER_FILE, load_bpe

    tokenizer = load_bpe((tokenizer_dir / TOKENIZER_FILE).read_text())
    return [tokenizer.encode(t).ids for t in TEXTS]


def test_transformers_loads_each_kind_offline_without_wordpool(hf_exports, tmp_path):
    from pretrain.inference.export import load_exported, read_export_config
    from pretrain.inference.loading import generate_text

    loaded = {kind: load_exported(folder) for kind, folder in hf_exports.items()}
    inputs = {kind: _inputs(*loaded[kind]) for kind in hf_exports}
    results, hf = load_with_transformers(hf_exports, inputs, tmp_path / "hf_home")

    for kind, folder in hf_exports.items():
        model, cfg = loaded[kind]
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "wordpool" and config["architectures"] == ["WordpoolForCausalLM"]
        assert read_export_config(folder)[0] == cfg  # the HF keys are dropped again
        assert results[kind]["class"] == "WordpoolForCausalLM"
        assert torch.equal(hf[kind]["given"], _logits(model, kind, inputs[kind])), kind

        expected = _encoded(cfg, folder)
        if kind == "word_pooled":
            got = [[bytes(w[:n].tolist()) for w, n in zip(ws, ns) if n]
                   for ws, ns in zip(hf[kind]["encoded_words"], hf[kind]["encoded_word_lens"])]
            enc = {"words": hf[kind]["encoded_words"], "word_lens": hf[kind]["encoded_word_lens"]}
        else:
            got = [ids[:n].tolist() for ids, n in zip(hf[kind]["encoded_input_ids"], hf[kind]["encoded_lengths"])]
            enc = {"input_ids": hf[kind]["encoded_input_ids"]}
        assert got == expected, kind
        assert torch.equal(hf[kind]["encoded"], _logits(model, kind, enc)), kind

        loaded_pair = (model, cfg)
        assert results[kind]["greedy"] == generate_text(folder, PROMPT, 3, loaded=loaded_pair), kind
        assert results[kind]["sampled"] == generate_text(folder, PROMPT, 2, temperature=0.9, top_k=20, seed=3,
                                                         loaded=loaded_pair), kind


def test_bpe_export_needs_its_tokenizer(hf_exports, tmp_path):
    from pretrain.inference.export import read_export_config, write_export
    from pretrain.models import build_model

    cfg, _ = read_export_config(hf_exports["bpe"])
    cfg.data.output = str(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        write_export(build_model(cfg.model), cfg, cfg.model_dump(mode="json"), tmp_path / "out",
                     {"source_checkpoint": "untrained", "step": 0}, hf=True)
    assert not (tmp_path / "out").exists()
