"""`wordpool ladder`: compare results at several budgets -> one table and two plots (launcher/compare/ladder.py)."""
import json

from launcher.compare.ladder import ladder


def _results(budget, bpb):
    stat = lambda mean, n=3: {"mean": mean, "std": 0.01, "n": n}  # noqa: E731
    models = {name: {"steps": int(budget // 1e9), "best_lr": 3e-3,
                     "summary": {"val_bpb": stat(b), "val_word_acc": stat(0.1 / b), "val_word_acc_freq_0": stat(0.0),
                                 "val_word_acc_freq_1-10": stat(0.01, 1)}}
              for name, b in bpb.items()}
    return {"config": {"budget": {"train_flops": budget}}, "models": models}


def test_ladder_table_and_plots(tmp_path):
    for name, budget, bpb in (("big", 2e12, {"word_pooled": 2.5, "bpe": 2.4}), ("small", 2e11, {"word_pooled": 3.0,
                                                                                                "bpe": 2.9})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_results(budget, bpb)))
    table = ladder([tmp_path / "big", tmp_path / "small"], tmp_path / "plots" / "de", "de")
    lines = table.splitlines()
    assert lines[0].startswith("| budget (FLOPs) | model |") and len(lines) == 2 + 4
    assert lines[2].startswith("| 2e+11 | word-pooled | 200 |") and "3.000 ± 0.010 (n=3)" in lines[2]
    assert lines[-1].startswith("| 2e+12 | BPE |") and "0.0100 (n=1)" in lines[-1]  # one seed: no spread
    for suffix in ("bpb", "acc"):
        assert (tmp_path / "plots" / f"de_{suffix}.png").read_bytes()[:4] == b"\x89PNG"
