"""`wordpool ladder`: several `wordpool compare` results on one corpus at budgets a decade apart, read
back from their results.json, as one table and two plots (val bits/byte and headline next-word accuracy
against training FLOPs, one line per model, mean ± sd over seeds)."""
from __future__ import annotations

import json
from pathlib import Path

from launcher.compare.report import _table, model_name

METRICS = (("val_bpb", "val bits/byte", "{:.3f}"), ("val_word_acc", "next-word acc (letter/digit words)", "{:.4f}"),
           ("val_word_acc_freq_0", "acc, unseen words", "{:.4f}"), ("val_word_acc_freq_1-10", "acc, seen 1-10x", "{:.4f}"))


def read_ladder(dirs: list[Path]) -> list[dict]:
    """The results of each compare folder, ordered by budget."""
    rungs = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    return sorted(rungs, key=lambda r: r["config"]["budget"]["train_flops"])


def _cell(stat: dict, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    n = stat.get("n", 1)
    return fmt.format(stat["mean"]) + (f" ± {fmt.format(stat['std'])}" if n > 1 else "") + f" (n={n})"


def ladder_table(rungs: list[dict]) -> list[str]:
    rows = []
    for rung in rungs:
        for name, m in rung["models"].items():
            s = m["summary"]
            rows.append([f"{rung['config']['budget']['train_flops']:.0e}", model_name(name), f"{m['steps']:,}",
                         f"{m['best_lr']:g}"] + [_cell(s.get(key), fmt) for key, _, fmt in METRICS])
    return _table(["budget (FLOPs)", "model", "steps", "best LR", *(label for _, label, _ in METRICS)], rows)


def plot_ladder(rungs: list[dict], key: str, label: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for r in rungs for n in r["models"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, name in enumerate(names):
        points = [(r["config"]["budget"]["train_flops"], r["models"][name]["summary"][key]) for r in rungs
                  if name in r["models"] and r["models"][name]["summary"].get(key, {}).get("mean") is not None]
        if points:
            ax.errorbar([x for x, _ in points], [s["mean"] for _, s in points], yerr=[s["std"] or 0 for _, s in points],
                        fmt="o-", capsize=3, color=f"C{i}", label=model_name(name))
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs per run (useful, forward + backward)")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ladder(dirs: list[Path], out_prefix: Path | None, title: str) -> str:
    """Print-ready markdown table; with out_prefix also PREFIX_bpb.png and PREFIX_acc.png."""
    rungs = read_ladder(dirs)
    if out_prefix is not None:
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
        plot_ladder(rungs, "val_bpb", "validation bits/byte", Path(f"{out_prefix}_bpb.png"), title)
        plot_ladder(rungs, "val_word_acc", "next-word accuracy (words with a letter/digit)",
                    Path(f"{out_prefix}_acc.png"), title)
    return "\n".join(ladder_table(rungs))
