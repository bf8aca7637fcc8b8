"""Summed model statistics -> reported metrics, and the logger that writes them everywhere.

Sums (not means) travel between micro-batches and ranks so every figure is exact over the batch:
bits per byte = total NLL in bits / UTF-8 text bytes predicted; next-word accuracy = greedy exact
matches / words predicted.
"""
from __future__ import annotations

import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pretrain.run_dir import LM_EVAL_PREFIX, RunDir, append_jsonl, read_text, write_atomic

SUM_KEYS = ("nll_sum", "n_symbols", "n_text_bytes", "n_words", "n_correct")


def stack_sums(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([out[k].detach().double() for k in SUM_KEYS])


def summarize(sums: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Loss, bits/byte and words predicted. Next-word accuracy is not among them: it needs the word classes
    of the evaluation's scorer (pretrain.evaluation.word_scoring), which the in-model counts do not have."""
    nll, symbols, text_bytes, words, _ = sums.tolist()
    out = {
        f"{prefix}loss": nll / max(symbols, 1),  # nats per predicted symbol (word model: bytes + EOW)
        f"{prefix}bpb": nll / math.log(2) / max(text_bytes, 1),
        f"{prefix}text_bytes": text_bytes,
        f"{prefix}symbols": symbols,
    }
    if words:  # words predicted (throughput: words/s); token models count words only in evaluation
        out[f"{prefix}words"] = words
    return out


class MetricsLogger:
    """Rank 0 only: console lines, `metrics.jsonl` in the run folder, and wandb (offline by default)."""

    def __init__(self, run_dir: Path, wandb_cfg, config: dict[str, Any], total_steps: int):
        run = RunDir(run_dir)
        self.path = run.metrics
        self.total_steps = total_steps
        self.wandb = None
        if wandb_cfg.mode != "disabled":
            import wandb

            run_id = read_text(run.wandb_id) or secrets.token_hex(4)
            write_atomic(run.wandb_id, run_id)
            self.wandb = wandb.init(mode=wandb_cfg.mode, project=wandb_cfg.project, entity=wandb_cfg.entity,
                                    name=wandb_cfg.name, dir=str(run.root), id=run_id, resume="allow",
                                    config=config, settings=wandb.Settings(console="off", silent=True))

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        record = {"kind": kind, "step": step, "time": time.time(), **values}
        try:
            append_jsonl(self.path, record)
        except OSError as exc:  # a full disk must not kill training; the console line still goes out
            print(f"warning: cannot append to {self.path}: {exc}", file=sys.stderr, flush=True)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=step)
        print(self._line(kind, step, values), file=sys.stdout, flush=True)

    def _line(self, kind: str, step: int, v: dict[str, Any]) -> str:
        width = len(str(self.total_steps))
        head = f"[{kind:5}] step {step:>{width}}/{self.total_steps}"
        if kind == "train":
            mfu = f" MFU {v['mfu']:.1%}" if "mfu" in v else ""
            return (f"{head} {self._bar(step)} loss {v['loss']:.4f} bpb {v['bpb']:.3f} lr {v['lr']:.2e} "
                    f"gnorm {v['grad_norm']:.3f} {v['bytes_per_s']:,.0f} B/s {v['symbols_per_s']:,.0f} tok/s "
                    f"{v['flops_per_s'] / 1e9:,.2f} GFLOP/s{mfu}")
        if kind == "samples":
            return "\n".join(f"{head} {s['prompt']!r} -> {s['text']!r}" for s in v["samples"])
        if kind == "profile":  # train.profile (pretrain/training/profiling.py): one line per operator
            where = str(Path(v["traces"][-1]).parent) if v["traces"] else "none written"
            return "\n".join([f"{head} rank {v['rank']}: {v['profiled_steps']} steps profiled (traces: {where}); "
                              f"top operators by self {v['clock'].upper()} time:"] +
                             [f"{head} {o['share']:6.1%} {o['self_ms']:10.2f} ms {o['calls']:>7} calls  {o['name']}"
                              for o in v["top_ops"]])
        if kind in ("attempt", "skip", "rollback", "rollback_unavailable", "checkpoint", "checkpoint_failed"):
            return f"{head} " + " ".join(f"{k}={v[k]:.4g}" if isinstance(v[k], float) else f"{k}={v[k]}"
                                         for k in v if k not in ("train_flops", "train_text_bytes"))
        keys = [k for k in ("val_loss", "val_bpb", "val_word_acc") if k in v]
        downstream = [f"{k.removeprefix(LM_EVAL_PREFIX)} {v[k]:.4f}" for k in v if k.startswith(LM_EVAL_PREFIX)]
        buckets = [k for k in v if k.startswith("val_word_acc_freq_")]
        line = " ".join([head] + [f"{k.removeprefix('val_')} {v[k]:.4f}" for k in keys] + downstream)
        if "val_word_acc_space" in v:
            line += f" (whitespace {v['val_word_acc_space']:.3f}, punct {v['val_word_acc_punct']:.3f} apart)"
        if buckets:
            line += " | acc by train freq " + " ".join(f"{k.removeprefix('val_word_acc_freq_')}:{v[k]:.3f}"
                                                       for k in buckets)
        return line

    def _bar(self, step: int, width: int = 20) -> str:
        done = round(width * step / max(self.total_steps, 1))
        return "[" + "#" * done + "." * (width - done) + "]"

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
