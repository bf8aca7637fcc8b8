"""`wordpool ladder`: compare results at several budgets -> one table and two plots (launcher/compare/ladder.py)."""
import json

from launcher.compare.ladder import ladder


def _results(budget, bpb, d_model=128, text_read=1000):
    stat = lambda mean, n=3: {"mean": mean, "std": 0.01, "n": n}  # noqa: E731
    models = {name: {"steps": int(budget // 1e9), "best_lr": 3e-3,
                     "runs": [{"train_text_bytes": text_read}] * 3,
                     "summary": {"val_bpb": stat(b), "val_word_acc": stat(0.1 / b), "val_word_acc_freq_0": stat(0.0),
                                 "val_word_acc_freq_1-10": stat(0.01, 1)}
                     | ({"mean_context_gap": stat(0.25)} if name == "word_pooled" else {})}
              for name, b in bpb.items()}
    return {"config": {"budget": {"train_flops": budget}, "backbone": {"d_model": d_model, "n_layers": 2}},
            "models": models}


def _write(folder, results, train_bytes=None):
    folder.mkdir()
    if train_bytes:
        results["data"] = {"words": {"train_bytes": train_bytes}}
    (folder / "results.json").write_text(json.dumps(results))


def test_ladder_table_and_plots(tmp_path):
    _write(tmp_path / "big", _results(2e12, {"word_pooled": 2.5, "bpe": 2.4}, text_read=4000), train_bytes=1000)
    _write(tmp_path / "small", _results(2e11, {"word_pooled": 3.0, "bpe": 2.9}))
    table = ladder([tmp_path / "big", tmp_path / "small"], tmp_path / "plots" / "de", "de")
    lines = table.splitlines()
    assert lines[0].startswith("| budget (FLOPs) | backbone | model | steps | epochs |") and len(lines) == 2 + 4
    assert lines[2].startswith("| 2e+11 | d128×2 | word-pooled | 200 | - |") and "3.000 ± 0.010 (n=3)" in lines[2]
    assert lines[2].endswith("| 0.250 ± 0.010 (n=3) |")  # the mean-context gap; a baseline has none
    assert lines[-1].startswith("| 2e+12 | d128×2 | BPE | 2,000 | 4.0 |") and "0.0100 (n=1) | - |" in lines[-1]
    for suffix in ("bpb", "acc"):
        assert (tmp_path / "plots" / f"de_{suffix}.png").read_bytes()[:4] == b"\x89PNG"


def test_ladder_orders_a_grown_backbone_after_the_small_one_at_one_budget(tmp_path):
    _write(tmp_path / "m", _results(2e12, {"word_pooled": 2.2}, d_model=256))
    _write(tmp_path / "s", _results(2e12, {"word_pooled": 2.5}))
    lines = ladder([tmp_path / "m", tmp_path / "s"], tmp_path / "p" / "en", "en").splitlines()
    assert [line.split(" | ")[1] for line in lines[2:4]] == ["d128×2", "d256×2"] and lines[4] == ""
    assert (tmp_path / "p" / "en_bpb.png").is_file()


def test_ladder_envelope_keeps_each_models_best_size_per_budget(tmp_path):
    _write(tmp_path / "m", _results(2e12, {"word_pooled": 2.2, "bpe": 2.6}, d_model=256))
    _write(tmp_path / "s", _results(2e12, {"word_pooled": 2.5, "bpe": 2.4}))
    table = ladder([tmp_path / "m", tmp_path / "s"], None, "en")
    envelope = table.split("Each model at its best backbone per budget:")[1].strip().splitlines()
    assert envelope[2].startswith("| 2e+12 | word-pooled | d256×2 |") and "2.200" in envelope[2]
    assert envelope[3].startswith("| 2e+12 | BPE | d128×2 |") and "2.400" in envelope[3]
    assert "best backbone" not in ladder([tmp_path / "s"], None, "en")  # one size: no envelope
