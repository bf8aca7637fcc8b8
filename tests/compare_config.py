"""A tiny `wordpool compare` config (tests/unit/launcher/test_compare_config.py, integration/test_compare.py)."""
from pathlib import Path


def tiny_config(text: Path, out: Path) -> dict:
    return {
        "name": "tiny-test",
        "out": str(out),
        "data": {"inputs": [str(text)], "doc_split": "line", "max_word_bytes": 16, "words_per_sample": 32,
                 "val_fraction": 0.1, "num_cpus": 1},
        "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2},
        "models": {"word_pooled": {"encoder": {"d_model": 32, "n_layers": 1, "n_heads": 2},
                                   "decoder": {"d_model": 32, "n_layers": 1, "n_heads": 2}, "lrs": [3e-3, 1e-2]},
                   "bytes": {"lrs": [1e-2]},
                   "bpe": {"lrs": [1e-2], "vocab_size": 300}},
        "train": {"micro_batch_size": 4},
        # ~4 word-pooled steps; the baselines get their own step counts from the same budget
        "budget": {"train_flops": 5.0e8, "evals": 2, "curve_eval_batches": 2, "final_eval_batches": None,
                   "flop_estimate_batches": 4},
        "seeds": 2,
        "widen_lrs": 0,  # the 2-LR sweep stays two runs (the widening has its own unit test)
        "nproc": 1,
        "parallel": 2,
    }
