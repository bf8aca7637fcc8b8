"""`wordpool ladder`: several `wordpool compare` results on one corpus at budgets a decade apart, read
back from their results.json, as one table and two plots (val bits/byte and headline next-word accuracy
against training FLOPs, mean ± sd over seeds).

A rung may use a bigger backbone than the one below it (on a small corpus a fixed model would read the text
many times over at the top budget, and memorisation would decide): every line of the plots is one model at
one backbone size, and the table says how many times each run read the training text (epochs)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from launcher.compare.report import _table, model_name

METRICS = (("val_bpb", "val bits/byte", "{:.3f}"), ("val_word_acc", "next-word acc (letter/digit words)", "{:.4f}"),
           ("val_word_acc_freq_0", "acc, unseen words", "{:.4f}"), ("val_word_acc_freq_1-10", "acc, seen 1-10x", "{:.4f}"),
           ("mean_context_gap", "mean-context gap", "{:.3f}"))
LINESTYLES = ("-", "--", ":", "-.")


def read_ladder(dirs: list[Path]) -> list[dict]:
    """The results of each compare folder, ordered by budget then backbone size."""
    rungs = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    return sorted(rungs, key=lambda r: (r["config"]["budget"]["train_flops"], _width(r)))


def _width(rung: dict) -> tuple[int, int]:
    b = rung["config"].get("backbone", {})
    return b.get("d_model", 0), b.get("n_layers", 0)


def size_label(size: tuple[int, int]) -> str:
    return f"d{size[0]}×{size[1]}" if size[0] else "-"


def epochs(rung: dict, model: dict) -> str:
    """Mean times the model's runs read the training text ("-" for results without the split's size)."""
    train_bytes = rung.get("data", {}).get("words", {}).get("train_bytes")
    read = [r["train_text_bytes"] for r in model.get("runs", []) if r.get("train_text_bytes")]
    return f"{statistics.fmean(read) / train_bytes:.1f}" if read and train_bytes else "-"


def _cell(stat: dict | None, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    n = stat.get("n", 1)
    return fmt.format(stat["mean"]) + (f" ± {fmt.format(stat['std'])}" if n > 1 else "") + f" (n={n})"


def ladder_table(rungs: list[dict]) -> list[str]:
    rows = []
    for rung in rungs:
        for name, m in rung["models"].items():
            s = m["summary"]
            rows.append([f"{rung['config']['budget']['train_flops']:.0e}", size_label(_width(rung)), model_name(name),
                         f"{m['steps']:,}", epochs(rung, m), f"{m['best_lr']:g}"]
                        + [_cell(s.get(key), fmt) for key, _, fmt in METRICS])
    return _table(["budget (FLOPs)", "backbone", "model", "steps", "epochs", "best LR",
                   *(label for _, label, _ in METRICS)], rows)


def envelope_table(rungs: list[dict]) -> list[str]:
    """Each model's best backbone at each budget (lowest mean val bits/byte over the sizes run there): the
    fair comparison when a size that suits one model reads the corpus too often for another."""
    order = list(dict.fromkeys(n for r in rungs for n in r["models"]))
    best: dict[tuple[float, str], tuple[float, dict, dict]] = {}
    for rung in rungs:
        for name, m in rung["models"].items():
            mean = (m["summary"].get("val_bpb") or {}).get("mean")
            key = (rung["config"]["budget"]["train_flops"], name)
            if mean is not None and (key not in best or mean < best[key][0]):
                best[key] = (mean, rung, m)
    keys = sorted(best, key=lambda key: (key[0], order.index(key[1])))
    rows = [[f"{budget:.0e}", model_name(name), size_label(_width(rung)), epochs(rung, m),
             _cell(m["summary"].get("val_bpb"), "{:.3f}"), _cell(m["summary"].get("val_word_acc"), "{:.4f}")]
            for budget, name in keys for _, rung, m in [best[(budget, name)]]]
    return _table(["budget (FLOPs)", "model", "best backbone", "epochs", "val bits/byte",
                   "next-word acc (letter/digit words)"], rows)


def plot_ladder(rungs: list[dict], key: str, label: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for r in rungs for n in r["models"]))
    sizes = sorted({_width(r) for r in rungs})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, name in enumerate(names):
        for j, size in enumerate(sizes):
            points = [(r["config"]["budget"]["train_flops"], r["models"][name]["summary"][key]) for r in rungs
                      if _width(r) == size and name in r["models"]
                      and r["models"][name]["summary"].get(key, {}).get("mean") is not None]
            if not points:
                continue
            tag = f" ({size_label(size)})" if len(sizes) > 1 else ""
            ax.errorbar([x for x, _ in points], [s["mean"] for _, s in points], yerr=[s["std"] or 0 for _, s in points],
                        fmt="o", linestyle=LINESTYLES[j % len(LINESTYLES)], capsize=3, color=f"C{i}",
                        label=model_name(name) + tag)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs per run (useful, forward + backward)")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
    table = ladder_table(rungs)
    if len({_width(r) for r in rungs}) > 1:
        table += ["", "Each model at its best backbone per budget:", ""] + envelope_table(rungs)
    return "\n".join(table)
