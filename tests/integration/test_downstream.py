"""Downstream evaluation and warm start on a real 2-rank training run: the `lm_eval` hook's records, status,
`wordpool lm-eval` on an export (offline, the shipped tasks and a local-file task), `eval --watch --tasks`,
and `train.init_from` starting from an export's exact weights."""
import json
import os

import pytest
import torch

from cli_helpers import TINY, records, wordpool

STEPS = 4
HOOKS = """evals:
  - {kind: val_bpb, every_steps: 4}
  - {kind: lm_eval, every_steps: 4, tasks: [wordpool_cloze, wordpool_bpb], limit: 3}
"""
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def hooked_run(shards, tmp_path_factory):
    """4 steps with an lm_eval hook at step 4; returns the run dir."""
    folder = tmp_path_factory.mktemp("downstream")
    config = folder / "hooks.yaml"
    config.write_text(HOOKS)
    run_dir = folder / "run"
    proc = wordpool("train", "--nproc", "2", "--config", str(config), f"data.output={shards}", f"train.run_dir={run_dir}",
                    *TINY, f"train.steps={STEPS}", f"train.checkpoint_every={STEPS}", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def exported(hooked_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("downstream_export") / "model"
    proc = wordpool("export", "--checkpoint", str(hooked_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_lm_eval_hook_writes_its_records_and_status_shows_them(hooked_run):
    [record] = [r for r in records(hooked_run, "eval").values() if r.get("hook") == "lm_eval"]
    assert record["step"] == STEPS
    assert 0.0 <= record["lm_eval/wordpool_cloze/acc"] <= 1.0
    assert record["lm_eval/wordpool_bpb/bits_per_byte"] > 0.5  # 4 steps: far from a good model
    status = wordpool("status", str(hooked_run), "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    summary = json.loads(status.stdout)
    assert summary["lm_eval"]["step"] == STEPS
    assert summary["lm_eval"]["lm_eval/wordpool_cloze/acc"] == record["lm_eval/wordpool_cloze/acc"]
    assert summary["eval"]["val_bpb"] > 0  # the validation record is still the one shown as "eval"


def test_lm_eval_command_on_an_export_offline(exported, tmp_path):
    out = tmp_path / "results.json"
    proc = wordpool("lm-eval", "--export", str(exported), "--tasks", "wordpool_cloze,wordpool_bpb,wordpool_next_word",
                    "--limit", "3", "--out", str(out), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in ("wordpool_cloze", "wordpool_bpb", "wordpool_next_word"):
        assert task in proc.stdout
    results = json.loads(out.read_text())
    assert set(results["results"]) == {"wordpool_cloze", "wordpool_bpb", "wordpool_next_word"}
    assert results["wordpool"]["step"] == STEPS
    assert 0.0 <= results["wordpool"]["metrics"]["lm_eval/wordpool_next_word/exact_match/first_word"] <= 1.0
    bad = wordpool("lm-eval", "--export", str(exported), "--tasks", "no_such_task", env=OFFLINE)
    assert bad.returncode == 2 and "unknown lm-eval task(s) no_such_task" in bad.stderr


def test_multiple_choice_from_local_files_is_the_adapters_argmax(exported, tmp_path):
    """A multiple-choice task read from a local JSON Lines file by lm-eval's own loader: its accuracy is
    what the adapter's log-likelihoods say, choice by choice (the answers are known from them)."""
    from pretrain.evaluation.lm_eval_adapter import WordpoolLM, run_lm_eval
    from pretrain.inference.loading import load_model

    docs = [{"question": "The function returns", "choices": ["the", "zebra", "a value", "qxqx"], "label": 0},
            {"question": "An object is", "choices": ["an", "called", "the", "xq"], "label": 1},
            {"question": "import", "choices": ["sys", "os", "the", "module"], "label": 3}]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_mc.yaml").write_text(f"""task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
""")
    for var, value in OFFLINE.items():
        os.environ.setdefault(var, value)
    model, cfg = load_model(exported)
    lm = WordpoolLM.from_model(model, cfg)
    acc = run_lm_eval(lm, ["local_mc"], [tasks])["results"]["local_mc"]["acc,none"]
    right = 0
    for d in docs:
        scores = lm.scorer.loglikelihood([(d["question"], " " + c) for c in d["choices"]])
        right += max(range(len(scores)), key=lambda i: scores[i].logprob) == d["label"]
    assert acc == pytest.approx(right / len(docs))


def test_watch_runs_lm_eval_tasks_on_each_checkpoint(hooked_run):
    proc = wordpool("eval", "--watch", str(hooked_run), "--once", "--max-batches", "1", "--tasks", "wordpool_cloze",
                    "--limit", "2", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = [json.loads(line) for line in (hooked_run / "watch_evals.jsonl").read_text().splitlines()]
    assert record["step"] == STEPS and 0.0 <= record["lm_eval/wordpool_cloze/acc"] <= 1.0
    assert "wordpool_cloze/acc" in proc.stdout


def test_warm_start_from_an_export_starts_from_its_weights(shards, exported, tmp_path):
    """The first step's loss (before its update) equals the export's own loss on the same batch: the
    weights, and only they, came over (a fresh data position: the loader's first batch)."""
    from pretrain.inference.export import load_exported
    from pretrain.training.loader import LoaderPosition, endless_batches, make_loader, sample_encoder

    run_dir = tmp_path / "warm"
    proc = wordpool("train", "--nproc", "1", f"data.output={shards}", f"train.run_dir={run_dir}", *TINY,
                    "train.grad_accum=1", "train.steps=1", f"train.init_from={exported}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = records(run_dir)[1]
    model, cfg = load_exported(exported)
    encode = sample_encoder(str(shards), cfg.model.max_word_bytes)
    dataset, loader = make_loader(str(shards / "train"), encode, 4, True, cfg.train.seed, 1, 0, drop_last=True,
                                  job=f"test:{tmp_path}")
    batch = next(endless_batches(dataset, loader, LoaderPosition(), 4))
    with torch.no_grad():
        expected = float(model(**batch)["loss"])
    assert first["loss"] == pytest.approx(expected, rel=1e-5)

    wrong = wordpool("train", "--nproc", "1", f"data.output={shards}", f"train.run_dir={tmp_path / 'wrong'}", *TINY,
                     "model.d_model=48", "train.steps=1", f"train.init_from={exported}")
    assert wrong.returncode == 2  # before torchrun started: one line, nothing launched
    [line] = [l for l in wrong.stderr.splitlines() if "error:" in l]
    assert "does not fit model.* of this run" in line and "shape: " in line
    assert not (tmp_path / "wrong" / "logs").exists()
