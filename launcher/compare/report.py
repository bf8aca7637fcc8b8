"""The report of `wordpool compare`: results.json, report.md and two PNG plots, from the results dict that
launcher/compare/run.py builds. Every number in report.md comes from results.json."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

MODEL_NAMES = {"word_pooled": "word-pooled", "bpe": "BPE", "bytes": "bytes"}


def model_name(entry: str) -> str:
    """A model kind's display name, or a word-pooled variant's ("word-pooled: <variant>")."""
    return MODEL_NAMES.get(entry, f"word-pooled: {entry}")
BUCKETS = ("0", "1-10", "11-100", ">100")
CURVE_PLOT = "val_bpb_vs_flops.png"
BUCKET_PLOT = "accuracy_by_frequency.png"


_NONE = {"mean": None}  # a statistic a model does not have (older results, or the gap of a baseline)


def _pm(stat: dict, digits: int = 4, scale: float = 1.0) -> str:
    """mean ± sample standard deviation (n seeds)."""
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _words_in_bucket(model: dict, bucket: str) -> str:
    counts = {r.get(f"val_words_freq_{bucket}") for r in model["runs"]}
    return ", ".join(f"{c:,.0f}" for c in sorted(c for c in counts if c is not None)) or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its separator, one line per row."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def results_table(results: dict) -> list[str]:
    header = (["model", "params", "steps", "train FLOPs", "train text bytes", "best LR", "val bits/byte",
               "next-word acc"] + [f"acc, freq {b}" for b in BUCKETS]
              + ["acc, whitespace words", "acc, punctuation words", "mean-context gap (bits/byte)",
                 "train text bytes/s"])
    rows = []
    for kind, m in results["models"].items():
        s = m["summary"]
        if not m["runs"]:
            rows.append([model_name(kind), f"{m['params']:,}", f"{m['steps']:,}"] + ["every run failed"]
                        + ["-"] * (len(header) - 4))
            continue
        text_bytes = sum(r["train_text_bytes"] for r in m["runs"]) / len(m["runs"])
        rows.append([model_name(kind), f"{m['params']:,}", f"{m['steps']:,}", f"{s['train_flops']['mean']:.3g}",
                     f"{text_bytes:,.0f}", f"{m['best_lr']:g}", _pm(s["val_bpb"]), _pm(s["val_word_acc"])]
                    + [_pm(s[f"val_word_acc_freq_{b}"]) for b in BUCKETS]
                    + [_pm(s.get(k, _NONE)) for k in ("val_word_acc_space", "val_word_acc_punct", "mean_context_gap")]
                    + [_pm(s["bytes_per_s"], 0)])
    return _table(header, rows)


def _metric(row: dict, key: str) -> str:
    return f"{row[key]:.4f}" if row.get(key) is not None else "-"


def sweep_table(results: dict) -> list[str]:
    rows = [[model_name(kind), f"{row['lr']:g}", _metric(row, "val_bpb"), _metric(row, "val_word_acc"),
             f"{row.get('skipped_steps', 0)}", f"failed: {row['failed']}" if row.get("failed")
             else "yes" if row["lr"] == m["best_lr"] else ""]
            for kind, m in results["models"].items() for row in m["sweep"]]
    return _table(["model", "LR", "val bits/byte (seed 0)", "next-word acc (seed 0)", "skipped updates",
                   "chosen"], rows)


def data_table(results: dict) -> list[str]:
    tokenization = {"word_pooled": "words", "bytes": "bytes", "bpe": "bpe"}
    per_sample = {tokenization[m.get("kind", name)]: m["symbols_per_sample"] for name, m in results["models"].items()}
    rows = []
    for tok, d in results["data"].items():
        tokens = f"{d['tokens']:,}" if d.get("tokens") else "-"
        per_token = f"{d['bytes_per_token']:.3f}" if d.get("tokens") else "-"
        rows.append([tok, f"{d['train_documents']:,} / {d['val_documents']:,}", f"{d['words']:,}", tokens,
                     f"{d['bytes']:,}", f"{d['bytes_per_word']:.3f}", per_token, f"{per_sample[tok]}"])
    return _table(["tokenization", "documents (train / val)", "words", "tokens", "text bytes", "bytes/word",
                   "bytes/token", "symbols per sample"], rows)


def per_seed_table(results: dict) -> list[str]:
    rows = []
    for kind, m in results["models"].items():
        for r in m["runs"]:
            wall = f"{r['train_wall_seconds']:.0f}" if r.get("train_wall_seconds") else "-"
            rows.append([model_name(kind), f"{r['seed']}", f"{r['lr']:g}", f"{r['val_bpb']:.4f}",
                         f"{r['val_word_acc']:.4f}", f"{r['val_words']:,.0f}", f"{r['train_flops']:.3g}",
                         f"{r['bytes_per_s']:,.0f}", wall, f"{r.get('skipped_steps', 0)}"])
        for f in m.get("failed_runs", []):
            if f["seed"]:  # seed 0's failures are in the sweep table
                rows.append([model_name(kind), f"{f['seed']}", f"{f['lr']:g}", f"failed: {f['reason']}"]
                            + ["-"] * 5 + [f"{f['skipped_steps']}"])
    return _table(["model", "seed", "LR", "val bits/byte", "next-word acc", "val words", "train FLOPs",
                   "text bytes/s", "wall s", "skipped updates"], rows)


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (kind, m) in enumerate(results["models"].items()):
        color = f"C{i}"
        for j, r in enumerate(m["runs"]):
            points = [p for p in r["curve"] if p["train_flops"] > 0]
            ax.plot([p["train_flops"] for p in points], [p["val_bpb"] for p in points], "o-", color=color,
                    alpha=0.8, markersize=3, label=f"{model_name(kind)} (lr {m['best_lr']:g})" if j == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (useful, forward + backward)")
    ax.set_ylabel("validation bits/byte")
    ax.set_title(f"{results['name']}: val bits/byte vs training compute, one line per seed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_buckets(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ("all", *BUCKETS)
    keys = ("val_word_acc", *(f"val_word_acc_freq_{b}" for b in BUCKETS))
    width = 0.8 / len(results["models"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (kind, m) in enumerate(results["models"].items()):
        means = [m["summary"][k]["mean"] or 0.0 for k in keys]
        stds = [m["summary"][k]["std"] or 0.0 for k in keys]
        xs = [g + (i - (len(results["models"]) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model_name(kind), color=f"C{i}")
    ax.set_xticks(range(len(groups)), ["all (letter/digit)", *(f"seen {b}x" for b in BUCKETS)])
    ax.set_ylabel("next-word accuracy (exact whole word, greedy)")
    ax.set_title(f"{results['name']}: accuracy by training frequency (mean ± sd over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    out = Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot_curves(results, out / CURVE_PLOT)
    plot_buckets(results, out / BUCKET_PLOT)
    cfg = results["config"]
    per_model = sorted({len(m["runs"]) for m in results["models"].values()})  # models may set their own seeds
    seeds = "/".join(map(str, per_model)) or cfg["seeds"]
    lines = [
        f"# wordpool compare: {results['name']}",
        "",
        f"Word-pooled model vs byte and BPE baselines on the same documents and split, the same backbone "
        f"(d_model {cfg['backbone']['d_model']}, {cfg['backbone']['n_layers']} layers, "
        f"{cfg['backbone']['n_heads']} heads) and the same training budget of {cfg['budget']['train_flops']:.3g} "
        f"useful FLOPs per run (steps = budget / measured FLOPs per step). All models scored by the same scorer "
        f"(`wordpool eval`): bits per UTF-8 text byte, and exact next-word accuracy with greedy decoding up to "
        f"the model's own next word boundary, over the words that hold a letter or a digit (whitespace-only "
        f"and punctuation-only words are scored in columns of their own; frequency buckets hold the former "
        f"only). Mean-context gap: the val bits/byte a word-pooled model loses when every backbone context "
        f"is replaced by the batch mean (how much its decoder uses the backbone). Device: {results['device']}; {results['nproc']} rank(s) per run, "
        f"{results['parallel']} run(s) at a time.",
        "",
        f"## Results (mean ± sd over {seeds} seed(s), best LR of the sweep)",
        "",
        *results_table(results),
        "",
        "Accuracy by frequency: the target word's count in the training split (0 = never seen in training). "
        "Val words scored per bucket (" + ", ".join(BUCKETS) + "): "
        + "; ".join(f"{model_name(k)} " + " / ".join(_words_in_bucket(m, b) for b in BUCKETS)
                    for k, m in results["models"].items())
        + (". The final eval reads the first " f"{cfg['budget']['final_eval_batches']} val micro-batches of each "
           "tokenization (about the same text, not exactly the same words)." if cfg["budget"]["final_eval_batches"]
           else ". The final eval reads the whole val split."),
        "Throughput: median text bytes/s of the logged training steps (step 1 excluded), measured while "
        f"{results['parallel']} run(s) shared the machine; a comparison of speed, not a benchmark.",
        "",
        f"Curves: the trainer's evaluations during training ({cfg['budget']['curve_eval_batches']} val "
        "micro-batches each; the step-0 point, at 0 FLOPs, is left off the log axis); the table's numbers come "
        "from the final eval of each final checkpoint.",
        "",
        f"![val bits/byte vs training FLOPs]({CURVE_PLOT})",
        f"![accuracy by frequency bucket]({BUCKET_PLOT})",
        "",
        "## Learning-rate sweep (seed 0; best val bits/byte chosen)",
        "",
        *sweep_table(results),
        "",
        "## Data",
        "",
        *data_table(results),
        "",
        "## Runs",
        "",
        *per_seed_table(results),
        "",
        f"Wall time of the invocation that wrote this report: {results['wall_seconds']:.0f} s "
        "(runs finished by an earlier invocation are not re-run).",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
