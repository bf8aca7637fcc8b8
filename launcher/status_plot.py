"""RUN_DIR/status.png for `wordpool status`: train loss, text bytes/s and evaluation curves against the
step, with restarts and rollbacks marked as vertical lines."""
from __future__ import annotations

from pathlib import Path

from pretrain.run_dir import RunDir, atomic_file, last_per_step, of_kind, read_jsonl


def plot_status(run_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    records = read_jsonl(run.metrics)
    train = last_per_step(of_kind(records, "train"))
    evals = last_per_step(of_kind(records, "eval"))
    watch = last_per_step(read_jsonl(run.watch_log))
    restarts = [r["step"] for r in of_kind(records, "attempt")[1:] if isinstance(r.get("step"), (int, float))]
    rollbacks = [r.get("from_step", r.get("step")) for r in of_kind(records, "rollback")]

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    _curve(axes[0], train, "loss", "train loss (nats/symbol)", "C0")
    _curve(axes[1], train, "bytes_per_s", "text bytes/s", "C1")
    _eval_panel(axes[2], evals, watch)
    for ax in axes:
        for i, step in enumerate(restarts):
            ax.axvline(step, color="grey", linestyle="--", linewidth=1, label="restart" if i == 0 else None)
        for i, step in enumerate(rollbacks):
            ax.axvline(step, color="red", linestyle=":", linewidth=1.2, label="rollback" if i == 0 else None)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{run_dir.name}: {len(train)} steps logged, {len(restarts)} restart(s), "
                      f"{len(rollbacks)} rollback(s)")
    fig.tight_layout()
    # written whole or not at all: a viewer (or a second `status`) never reads half a PNG
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        plt.close(fig)


def _points(records: list[dict], key: str) -> tuple[list, list]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _curve(ax, records: list[dict], key: str, label: str, color: str) -> None:
    xs, ys = _points(records, key)
    if xs:
        ax.plot(xs, ys, "-", color=color, linewidth=1.2, marker="." if len(xs) < 50 else None)
    else:
        ax.text(0.5, 0.5, "no train records yet", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_ylabel(label)


def _eval_panel(ax, evals: list[dict], watch: list[dict]) -> None:
    """val bits/byte on the left axis, next-word accuracy on the right; trainer and watcher evaluations
    with different markers (the watcher may use fewer or more val batches)."""
    acc_ax = ax.twinx()
    drawn = False
    for records, source, marker, colors in ((evals, "trainer", "o", ("C2", "C3")), (watch, "watch", "s", ("C9", "C6"))):
        xs, ys = _points(records, "val_bpb")
        if xs:
            ax.plot(xs, ys, marker=marker, linestyle="-", color=colors[0], markersize=4,
                    label=f"val bits/byte ({source})")
            drawn = True
        xs, ys = _points(records, "val_word_acc")
        if xs:
            acc_ax.plot(xs, ys, marker=marker, linestyle="--", color=colors[1], markersize=4,
                        label=f"next-word acc ({source})")
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no evaluations yet", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_ylabel("val bits/byte")
    acc_ax.set_ylabel("next-word accuracy")
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:
        acc_ax.legend(handles, labels, fontsize=8, loc="lower left")
