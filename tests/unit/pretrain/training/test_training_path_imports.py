"""The training path never imports Ray (training nodes need not have it): every module a rank runs, read
with `ast` including function bodies, and everything they import in turn. A rank's actual sys.modules is
checked too, in integration/test_fault.py (test_skipped_updates_roll_back_and_eval_hooks_run)."""
from pathlib import Path

from import_graph import closure

ROOT = Path(__file__).resolve().parents[4]
# what a rank runs: `python -m launcher.cli train` under torchrun -> cmd_train -> pretrain.training.trainer
# (argument parsing registers every command: their _register_* functions run too)
CLI_FUNCTIONS = {"main", "build_parser", "_add_verbose", "_config", "_speaker", "cmd_train", "_exit_fast"} | {
    f"_register_{c}" for c in ("prepare", "verify", "train", "launch", "status", "eval", "generate", "export",
                               "quickstart")}
BENCH_PARSERS = {"register_bench", "_register_bench_data", "_register_bench_train"}
COMPARE_PARSERS = {"register_compare", "register_ladder"}
# (the closure takes the last entries first: launcher.bench_cli and launcher.compare.commands are read with
# their parsers only, before launcher.cli's import of them would read all of them)
RANK_ENTRY = {"launcher.cli": CLI_FUNCTIONS, "pretrain.training.trainer": None, "launcher.bench_cli": BENCH_PARSERS,
              "launcher.compare.commands": COMPARE_PARSERS}


def test_no_module_on_the_training_path_imports_ray():
    chains, external = closure(ROOT, RANK_ENTRY)
    for module in ("pretrain.training.trainer", "pretrain.training.engine", "pretrain.training.loader",
                   "pretrain.checkpoint.store", "pretrain.models.word_pooled", "pretrain.evaluation.hooks"):
        assert module in chains, f"{module} not reached: the closure is incomplete"
    assert {"torch", "deepspeed", "streaming"} <= set(external)
    assert "ray" not in external, "ray imported on the training path: " + " -> ".join(external["ray"])
    assert "data_pipeline.job" not in chains, " -> ".join(chains["data_pipeline.job"])  # the Ray job


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / "pretrain" / "training").mkdir(parents=True)
    (tmp_path / "pretrain" / "__init__.py").write_text("")
    (tmp_path / "pretrain" / "training" / "__init__.py").write_text("")
    (tmp_path / "pretrain" / "training" / "trainer.py").write_text(
        "from pretrain.training import helper\n\n\ndef train(cfg):\n    return helper.go(cfg)\n")
    (tmp_path / "pretrain" / "training" / "helper.py").write_text("def go(cfg):\n    import ray.data\n")
    _, external = closure(tmp_path, {"pretrain.training.trainer": None}, packages=("pretrain",))
    assert "ray" in external and external["ray"][-1] == "helper.py:2 ray.data"
