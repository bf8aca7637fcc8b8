"""train.compile and train.profile.

The whole trainer (2 ranks, both on): every rank's Chrome trace in <run_dir>/profiler/ shows the compiled model,
and rank 0 prints its top operators. The trainer's DeepSpeed engine (engine.build_engine, ZeRO-2, one rank, in a
child process as `wordpool bench train` runs it), for the word-pooled model and both baselines: the compiled
engine's losses equal the eager engine's within tolerance, and a compiled run checkpointed at step 2 and resumed
into a fresh compiled engine continues with bit-identical losses (checkpoints hold the eager parameter names).

Backends: the bytes baseline is compiled with inductor (the default: C++ code generation on CPU); the word-pooled
model and BPE with "aot_eager" (real torch.compile: Dynamo's graph capture and AOTAutograd, without code
generation), because inductor compiles the word model for minutes on a 2-core CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import records, train

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"word_pooled": "aot_eager", "bytes": "inductor", "bpe": "aot_eager"}
STEPS, SAVED_AT = 4, 2


def test_trainer_compiles_and_profiles_every_rank(shards, tmp_path):
    run = tmp_path / "run"
    proc = train(shards, run, "train.steps=3", "train.checkpoint_every=3", "train.eval_every=3", "train.compile=true",
                 "train.compile_backend=aot_eager", "train.profile.enabled=true", "train.profile.wait=1",
                 "train.profile.warmup=0", "train.profile.active=2", "train.profile.top_ops=5")
    assert proc.returncode == 0, proc.stderr[-4000:]
    traces = sorted(p.name for p in (run / "profiler").iterdir())
    assert traces == ["rank_00000-step_00000003.pt.trace.json", "rank_00001-step_00000003.pt.trace.json"]
    for name in traces:
        events = {e.get("name", "") for e in json.loads((run / "profiler" / name).read_text())["traceEvents"]}
        assert {"ProfilerStep#1", "ProfilerStep#2"} <= events and "ProfilerStep#0" not in events  # step 1 waited
        assert any(e.startswith("Torch-Compiled Region") for e in events), name  # the compiled forward ran
    (profile,) = records(run, "profile").values()
    assert profile["step"] == 3 and profile["rank"] == 0 and profile["profiled_steps"] == 2
    assert len(profile["top_ops"]) == 5 and all(o["self_ms"] > 0 for o in profile["top_ops"])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[profile] step 3/3")]
    assert len(lines) == 6 and "2 steps profiled" in lines[0], proc.stdout[-3000:]
    losses = [r["loss"] for r in records(run).values()]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)


def test_compiled_engine_matches_eager_and_resumes_exactly(tmp_path):
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=400,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "OMP_NUM_THREADS": "1",
                                         "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == sorted(KINDS)
    for kind, r in results.items():
        assert r["compiled"] and r["param_names_unchanged"], kind
        assert len(r["eager"]) == len(r["compiled_run"]) == STEPS
        for eager, compiled in zip(r["eager"], r["compiled_run"]):
            assert abs(eager - compiled) <= 1e-4 * abs(eager), (kind, r)
        assert r["eager"][-1] < r["eager"][0]  # it trains
        assert r["resumed"] == r["compiled_run"][SAVED_AT:], (kind, r)  # bit for bit


# --- the child process ------------------------------------------------------------------------------------
def _config(kind: str, backend: str | None):
    from schema import validate

    model = {"d_model": 32, "n_layers": 1, "n_heads": 2, "encoder": {"d_model": 16, "n_heads": 2},
             "decoder": {"d_model": 16, "n_heads": 2}, "kind": kind, "max_word_bytes": 8, "max_words": 8}
    if kind != "word_pooled":
        model["vocab_size"] = 300
    train = {"micro_batch_size": 2, "warmup_steps": 1, "steps": STEPS, "zero_stage": 2, "lr": 1e-2,
             "compile": backend is not None, "compile_backend": backend or "inductor"}
    return validate({"model": model, "train": train, "data": {"max_word_bytes": 8, "words_per_sample": 8,
                                                              "tokens_per_sample": 8}}, "test")


def _batches(kind: str) -> list[dict]:
    import torch

    from pretrain.training.loader import collate

    g = torch.Generator().manual_seed(0)
    if kind != "word_pooled":
        tokens = torch.randint(0, 300, (STEPS, 2, 8), generator=g)
        return [collate([{"tokens": t, "token_bytes": torch.ones_like(t)} for t in step]) for step in tokens]
    batches = []
    for _ in range(STEPS):
        lens = torch.randint(1, 9, (2, 8), generator=g)
        words = torch.where(torch.arange(8) < lens.unsqueeze(-1), torch.randint(97, 123, (2, 8, 8), generator=g), 256)
        batches.append(collate([{"words": w, "word_lens": n, "text_bytes": n} for w, n in zip(words, lens)]))
    return batches


def _run(engine, batches) -> list[float]:
    losses = []
    for batch in batches:
        out = engine(**batch)
        engine.backward(out["loss"])
        engine.step()
        losses.append(out["loss"].item())
    return losses


def _child(out: Path) -> None:
    import torch

    from pretrain.checkpoint import store as checkpoint
    from pretrain.models import build_model
    from pretrain.training.distributed import init_single_rank
    from pretrain.training.engine import build_engine

    init_single_rank()
    results = {}
    for kind, backend in KINDS.items():
        batches = _batches(kind)
        torch.manual_seed(0)
        eager = _run(build_engine(_config(kind, None), 1, False), batches)
        torch.manual_seed(0)
        engine = build_engine(_config(kind, backend), 1, False)
        compiled_run = _run(engine, batches[:SAVED_AT])
        folder = checkpoint.save(engine, out / kind, SAVED_AT, {"step": SAVED_AT}, {})
        compiled_run += _run(engine, batches[SAVED_AT:])
        torch.manual_seed(1)  # other initial weights: the checkpoint must replace them all
        fresh = build_engine(_config(kind, backend), 1, False)
        assert checkpoint.load(fresh, folder) == {"step": SAVED_AT}
        names = set(torch.load(next(folder.glob("mp_rank_*_model_states.pt")), weights_only=False)["module"])
        results[kind] = {"eager": eager, "compiled_run": compiled_run, "resumed": _run(fresh, batches[SAVED_AT:]),
                         "compiled": engine.is_compiled and fresh.is_compiled,
                         "param_names_unchanged": names == set(build_model(_config(kind, None).model).state_dict())}
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
