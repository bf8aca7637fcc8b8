"""`wordpool export`: a real 2-rank ZeRO-3 checkpoint -> safetensors + config.json -> the same model,
loaded without DeepSpeed, usable by `wordpool eval` and `wordpool generate`."""
import json
import re
import subprocess
import sys

import pytest
import torch

from cli_helpers import train, wordpool

ZERO3_STEPS = ["train.zero_stage=3", "train.steps=2", "train.checkpoint_every=2", "train.eval_every=100"]


@pytest.fixture(scope="module")
def zero3_run(shards, tmp_path_factory):
    """One short ZeRO-3 training run on 2 ranks (the session's shards); returns its run dir."""
    run_dir = tmp_path_factory.mktemp("zero3")
    proc = train(shards, run_dir, *ZERO3_STEPS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run_dir / "checkpoints" / "step_00000002" / "COMPLETE").is_file()
    return run_dir


@pytest.fixture(scope="module")
def exported(zero3_run, tmp_path_factory):
    """Exported through the CLI, from the run dir (the newest complete checkpoint is picked)."""
    out = tmp_path_factory.mktemp("exports") / "tiny"
    proc = wordpool("export", "--checkpoint", str(zero3_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "exported step 2" in proc.stdout
    return out


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, W, L = 3, 8, cfg.model.max_word_bytes
    word_lens = torch.randint(1, L + 1, (B, W), generator=g)
    word_lens[0, -2:] = 0  # absent words at the end of a sample
    words = torch.randint(0, 256, (B, W, L), generator=g)
    return words, word_lens


def test_export_matches_the_deepspeed_checkpoint(zero3_run, exported):
    from pretrain.checkpoint import store as checkpoint
    from pretrain.checkpoint.manifest import sha256_of
    from pretrain.inference.export import load_exported
    from pretrain.models import build_model

    source = zero3_run / "checkpoints" / "step_00000002"
    config = json.loads((exported / "config.json").read_text())
    info = config.pop("export")
    assert config == checkpoint.load_config_dict(source)  # the run's full config, unchanged
    assert info["step"] == 2 and info["format_version"] == 1
    assert info["source_checkpoint"] == str(source.resolve())
    assert info["sha256"] == sha256_of(exported / "model.safetensors")

    model, cfg = load_exported(exported)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    reference = build_model(cfg.model)
    reference.load_state_dict(checkpoint.load_module_weights(source), strict=True)
    reference.eval()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    words, word_lens = _batch(cfg)
    with torch.no_grad():
        assert torch.equal(model.decoder_logits(words, word_lens), reference.decoder_logits(words, word_lens))
        ours, theirs = model(words, word_lens, word_lens), reference(words, word_lens, word_lens)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_loading_an_export_does_not_import_deepspeed(exported):
    code = (
        "import sys\n"
        "from pretrain.inference.export import load_exported\n"
        "from pretrain.inference.loading import load_model, checkpoint_step\n"
        f"model, cfg = load_exported({str(exported)!r})\n"
        f"model2, _ = load_model({str(exported)!r})\n"
        f"assert checkpoint_step({str(exported)!r}) == 2\n"
        "assert 'deepspeed' not in sys.modules, sorted(m for m in sys.modules if 'deepspeed' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overwrite_refused_unless_forced(zero3_run, exported, tmp_path):
    from pretrain.inference.export import export_checkpoint, load_exported

    before = (exported / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="not empty"):
        export_checkpoint(zero3_run / "checkpoints", exported)
    proc = wordpool("export", "--checkpoint", str(zero3_run), "--out", str(exported))
    assert proc.returncode == 2 and "not empty" in proc.stderr

    # --force replaces it atomically (same weights: same checkpoint), leaving no temporary folders
    copy = tmp_path / "copy"
    export_checkpoint(zero3_run / "checkpoints" / "step_00000002", copy)
    (copy / "stale.txt").write_text("from an earlier export")
    export_checkpoint(zero3_run / "checkpoints" / "step_00000002", copy, force=True)
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors"]
    assert (copy / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]

    # a corrupted weights file is caught by the checksum
    data = bytearray(before)
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_exported(copy)


def test_eval_and_generate_from_an_export(exported):
    ev = wordpool("eval", "--checkpoint", str(exported), "--max-batches", "2", "--mean-context-gap")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert ev.stdout.startswith("step 2: val bits/byte")
    assert "words with a letter or digit" in ev.stdout and "apart: whitespace-only" in ev.stdout
    gap = re.search(r"mean-context gap: ([-+][0-9.]+) bits/byte \(val bits/byte ([0-9.]+) with", ev.stdout)
    bpb = float(re.search(r"val bits/byte ([0-9.]+)", ev.stdout).group(1))
    assert gap and float(gap.group(1)) == pytest.approx(float(gap.group(2)) - bpb, abs=2e-4), ev.stdout
    gen = wordpool("generate", "--checkpoint", str(exported), "--prompt", "The service was", "--max-words", "4")
    assert gen.returncode == 0, gen.stderr[-3000:]
    # whitespace words are words too: the continuation is not stripped away
    assert gen.stdout.startswith("The service was") and len(gen.stdout.rstrip("\n")) > len("The service was")


def test_hf_export_of_a_trained_checkpoint(zero3_run, exported, tmp_path):
    """--hf: the same weights file and export block, plus what transformers loads (tests/hf_helpers.py);
    eval/generate still read the folder (tests/integration/test_hf_export.py covers every model kind)."""
    from hf_helpers import load_with_transformers
    from pretrain.inference.export import load_exported

    out = tmp_path / "tiny-hf"
    proc = wordpool("export", "--checkpoint", str(zero3_run), "--out", str(out), "--hf")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()
    assert {"modeling_wordpool.py", "configuration_wordpool.py", "word_pooled.py"} <= {p.name for p in out.iterdir()}
    model, cfg = load_exported(out)
    words, word_lens = _batch(cfg)
    _, hf = load_with_transformers({"tiny": out}, {"tiny": {"words": words, "word_lens": word_lens}},
                                   tmp_path / "hf_home")
    with torch.no_grad():
        assert torch.equal(hf["tiny"]["given"], model.decoder_logits(words, word_lens))
    gen = wordpool("generate", "--checkpoint", str(out), "--prompt", "The service was", "--max-words", "2")
    assert gen.returncode == 0 and gen.stdout.startswith("The service was"), gen.stderr[-3000:]
