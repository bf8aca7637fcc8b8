"""`wordpool status RUN_DIR`: where a run stands, read from its run directory alone (docs/RUN_DIR.md).

Step and progress, recent throughput and ETA, the newest complete checkpoint, restarts, skipped steps
and rollbacks, the latest evaluations (the trainer's and the watcher's) and the job state; as a table,
or as JSON with --json. Also draws RUN_DIR/status.png (launcher/status_plot.py).

Standard library only at import: the CLI parser imports this module to build its arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pretrain.run_dir import (COMPLETE, EVAL_FILE, LM_EVAL_PREFIX, RunDir, check_run_dir, complete_checkpoints,
                              last_per_step, of_kind, read_json, read_jsonl, read_text, run_config, step_of, timeout_field)

EVAL_KEYS = ("val_bpb", "val_loss", "val_word_acc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's train.run_dir")
    parser.add_argument("--json", action="store_true", help="print the status as JSON instead of a table")
    parser.add_argument("--window", type=int, default=20, metavar="N",
                        help="throughput and ETA: average over the last N train records (default 20)")
    parser.add_argument("--stale-seconds", type=float, metavar="S",
                        help="a heartbeat older than S means the job is not running (default: the run's "
                             "fault.step_timeout_s, or fault.io_timeout_s during evaluation and checkpoints)")
    parser.add_argument("--no-plot", action="store_true", help="do not write RUN_DIR/status.png")


def run_status(args: argparse.Namespace) -> int:
    run_dir = check_run_dir(args.run_dir)
    if args.window < 1:
        raise ValueError("--window must be at least 1")
    summary = collect(run_dir, args.window, args.stale_seconds)
    summary["plot"] = None if args.no_plot else _write_plot(run_dir)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary)
    return 0


def collect(run_dir: Path, window: int = 20, stale_seconds: float | None = None,
            now: float | None = None) -> dict[str, Any]:
    """The whole status as a JSON-ready dict."""
    now = time.time() if now is None else now
    run = RunDir(run_dir)
    records = read_jsonl(run.metrics)
    train = last_per_step(of_kind(records, "train"))
    attempts = of_kind(records, "attempt")
    cfg = run_config(run_dir) or {}
    step = train[-1]["step"] if train else None
    total = (cfg.get("train") or {}).get("steps") or (train[-1].get("total_steps") if train else None)
    checkpoint = last_checkpoint(run_dir, now)
    # without an exit record (a trainer that writes none, or a crash after the end), the last step and
    # its checkpoint on disk still say the run is done
    done = bool(total and step is not None and step >= total and checkpoint and checkpoint["step"] >= total)
    state = job_state(run_dir, records, cfg, stale_seconds, now, done)
    recent = _since_last_attempt(train, attempts)[-window:]
    rates = throughput(recent)
    eta = None
    if total and step is not None and rates.get("seconds_per_step") and state["state"] == "running":
        eta = max(total - step, 0) * rates["seconds_per_step"]
    launches = [r for r in read_jsonl(run.launch_log) if r.get("event") == "start"]
    skips = of_kind(records, "skip")
    rollbacks = of_kind(records, "rollback")
    evals = of_kind(records, "eval")
    watch = read_jsonl(run.watch_log)
    return {
        "run_dir": str(run_dir),
        "state": state,
        "step": step,
        "total_steps": total,
        "progress": step / total if total and step is not None else None,
        "loss": train[-1].get("loss") if train else None,
        "bpb": train[-1].get("bpb") if train else None,
        "throughput": rates,
        "eta_s": eta,
        "last_checkpoint": checkpoint,
        "checkpoints": len(complete_checkpoints(run_dir)),
        "attempts": len(attempts),
        "restarts": max(len(attempts) - 1, 0),
        "launch_starts": len(launches),
        "skips": {"count": len(skips), "by_reason": _count_by(skips, "reason"),
                  "last": _pick(skips[-1], "step", "reason", "loss", "grad_norm") if skips else None},
        "rollbacks": {"count": len(rollbacks),
                      "last": _pick(rollbacks[-1], "from_step", "to_step", "checkpoint") if rollbacks else None},
        "eval": _latest(evals, EVAL_KEYS, "hook"),
        "watch_eval": _latest(watch, EVAL_KEYS, "checkpoint"),
        "lm_eval": _latest(evals + watch, (), "kind", prefix=LM_EVAL_PREFIX),
        "wandb_id": read_text(run.wandb_id),
    }


def job_state(run_dir: Path, records: list[dict], cfg: dict, stale_seconds: float | None, now: float,
              done: bool = False) -> dict:
    """finished / preempted (control/exit.json), running (fresh heartbeats, or fresh metrics when a trainer
    writes none), failed (a failure report since the last attempt started), finished (`done`: the last step
    and its checkpoint exist), stopped, or not started."""
    run = RunDir(run_dir)
    exit_record = read_json(run.exit_json)
    beats = [b for b in (read_json(p) for p in run.heartbeat_files())
             if b and isinstance(b.get("time"), (int, float))]
    newest = max(beats, key=lambda b: b["time"]) if beats else None
    out: dict[str, Any] = {"exit": exit_record, "failure": None, "ranks_beating": len(beats),
                           "heartbeat_age_s": now - newest["time"] if newest else None}
    if exit_record and (newest is None or exit_record.get("time", now) >= newest["time"]):
        return {**out, "state": str(exit_record.get("reason", "exited")),
                "detail": f"at step {exit_record.get('step')}, {_ago(now - exit_record.get('time', now))}"}
    if newest is not None:
        limit = stale_seconds or _beat_limit(cfg, newest.get("phase"))
        if now - newest["time"] <= limit:
            return {**out, "state": "running",
                    "detail": f"{len(beats)} rank(s), newest heartbeat {_ago(now - newest['time'])}: step "
                              f"{newest.get('step')}, {newest.get('phase')}"}
    elif done:
        return {**out, "state": "finished", "detail": "no exit record; the last step and its checkpoint are done"}
    elif records and isinstance(records[-1].get("time"), (int, float)):
        limit = stale_seconds or _beat_limit(cfg, "step")
        if now - records[-1]["time"] <= limit:
            return {**out, "state": "running", "detail": f"no heartbeats; metrics.jsonl written "
                                                         f"{_ago(now - records[-1]['time'])}"}
    failure = newest_failure(run_dir, now)
    attempts = of_kind(records, "attempt")
    started = attempts[-1].get("time", 0) if attempts else 0
    if failure and (failure.get("time") or 0) >= started:
        return {**out, "failure": failure, "state": "failed", "detail": failure["summary"]}
    if done:
        return {**out, "failure": failure, "state": "finished",
                "detail": "no exit record; the last step and its checkpoint are done"}
    if not records and not beats:
        return {**out, "failure": failure, "state": "not started", "detail": "no metrics and no heartbeats yet"}
    last = newest["time"] if newest else records[-1].get("time") if records else None
    detail = f"no exit record, last sign of life {_ago(now - last)}" if isinstance(last, (int, float)) else \
        "no exit record"
    return {**out, "failure": failure, "state": "stopped", "detail": detail}


def _beat_limit(cfg: dict, phase: str | None) -> float:
    """The trainer's hang limit for `phase` (the run's saved fault.*_timeout_s, else FaultConfig's defaults): a
    rank silent for longer is dead or about to be killed by its watchdog, so its heartbeat no longer means
    "running". Status cannot tell the first steps from later ones: only "start" gets init_timeout_s."""
    field = timeout_field(phase, warming_up=phase == "start")
    saved = (cfg.get("fault") or {}).get(field)
    if saved is not None:
        return float(saved)
    from schema import FaultConfig  # pydantic: imported only when a run has no saved config

    return float(FaultConfig.model_fields[field].default)


def newest_failure(run_dir: Path, now: float) -> dict | None:
    reports = []
    for path in RunDir(run_dir).failure_reports():
        report = read_json(path)
        if report is not None:
            stamp = report.get("time") if isinstance(report.get("time"), (int, float)) else path.stat().st_mtime
            reports.append((stamp, path, report))
    if not reports:
        return None
    stamp, path, report = max(reports, key=lambda r: r[0])
    fields = ", ".join(f"{k} {str(report[k])[:120]}" for k in ("rank", "step", "phase", "checkpoint", "error",
                                                                "reason", "message") if report.get(k) is not None)
    summary = f"{report.get('kind', path.stem)}" + (f" ({fields})" if fields else "") + \
        f", {_ago(now - stamp)}, {path.parent.name}/{path.name}"
    return {"file": str(path), "kind": report.get("kind"), "time": stamp, "summary": summary}


def _since_last_attempt(train: list[dict], attempts: list[dict]) -> list[dict]:
    """Train records of the current attempt (earlier ones ran at another speed, or with gaps between)."""
    started = attempts[-1].get("time") if attempts else None
    if not isinstance(started, (int, float)):
        return train
    current = [r for r in train if r.get("time", 0) >= started]
    return current or train


def throughput(recent: list[dict]) -> dict[str, Any]:
    """Rates over `recent` train records: totals / total step time where the totals are logged, else the
    mean of the logged rates; seconds_per_step is wall time (evaluations and checkpoints included)."""
    if not recent:
        return {"records": 0}
    seconds = sum(r.get("step_seconds") or 0.0 for r in recent)
    out: dict[str, Any] = {"records": len(recent), "step_seconds": seconds / len(recent)}
    for name, amount, rate in (("bytes_per_s", "text_bytes", "bytes_per_s"), ("tokens_per_s", "symbols",
                                                                              "symbols_per_s"),
                               ("words_per_s", "words", "words_per_s")):
        if seconds > 0 and all(r.get(amount) is not None and r.get("step_seconds") for r in recent):
            out[name] = sum(r[amount] for r in recent) / seconds
        else:
            values = [r[rate] for r in recent if isinstance(r.get(rate), (int, float))]
            out[name] = sum(values) / len(values) if values else None
    first, last = recent[0], recent[-1]
    if len(recent) >= 2 and last["step"] > first["step"] and "time" in first and "time" in last:
        out["seconds_per_step"] = (last["time"] - first["time"]) / (last["step"] - first["step"])
    else:
        out["seconds_per_step"] = out["step_seconds"] or None
    return out


def last_checkpoint(run_dir: Path, now: float) -> dict | None:
    found = complete_checkpoints(run_dir)
    if not found:
        return None
    folder = found[-1]
    marker = read_json(folder / COMPLETE) or {}
    try:
        stamp = marker.get("time") or (folder / COMPLETE).stat().st_mtime
    except OSError:  # deleted by retention since it was listed
        stamp = None
    return {"path": str(folder), "step": step_of(folder), "age_s": now - stamp if stamp else None,
            "evaluated": (folder / EVAL_FILE).is_file()}


def _pick(record: dict, *keys: str) -> dict:
    return {k: record[k] for k in keys if k in record}


def _count_by(records: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.get(key))] = counts.get(str(r.get(key)), 0) + 1
    return counts


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _ago(seconds: float | None) -> str:
    return f"{duration(seconds)} ago"


def _latest(records: list[dict], keys: tuple[str, ...], *extra: str, prefix: str | None = None) -> dict | None:
    """The newest record holding one of `keys` (or a key starting with `prefix`), with those fields only."""
    for record in sorted(records, key=lambda r: r.get("time", 0.0), reverse=True):
        found = [k for k in record if k in keys or (prefix and k.startswith(prefix))]
        if found:
            return _pick(record, "step", "time", *found, *extra)
    return None


def _eval_line(record: dict | None) -> str:
    if not record:
        return "none"
    if any(k.startswith(LM_EVAL_PREFIX) for k in record):
        return f"step {record.get('step')}: " + ", ".join(
            f"{k.removeprefix(LM_EVAL_PREFIX)} {v:.4f}" for k, v in record.items() if k.startswith(LM_EVAL_PREFIX))
    parts = [f"{k.removeprefix('val_')} {record[k]:.4f}" for k in EVAL_KEYS if isinstance(record.get(k), (int, float))]
    return f"step {record.get('step')}: " + (", ".join(parts) or "no values")


def rows(s: dict) -> list[tuple[str, str]]:
    """The table's (field, value) rows."""
    t, ckpt, state = s["throughput"], s["last_checkpoint"], s["state"]
    step = "-" if s["step"] is None else f"{s['step']:,}"
    if s["total_steps"]:
        step += f" / {s['total_steps']:,} ({s['progress']:.1%})"
    rates = "no train records"
    if t.get("records"):
        rates = " · ".join(f"{t[k]:,.0f} {label}/s" for k, label in (("bytes_per_s", "bytes"), ("tokens_per_s",
                           "tokens"), ("words_per_s", "words")) if t.get(k) is not None)
        rates += f" · {t['step_seconds']:.3f} s/step (mean of the last {t['records']} steps)"
    eta = "-"
    if s["eta_s"] is not None:
        eta = f"{duration(s['eta_s'])} ({t['seconds_per_step']:.3f} s/step wall)"
    checkpoint = "none"
    if ckpt:
        checkpoint = (f"{ckpt['path']} (step {ckpt['step']:,}, {_ago(ckpt['age_s'])}"
                      f"{', evaluated' if ckpt['evaluated'] else ''}); {s['checkpoints']} complete")
    skips = f"{s['skips']['count']}"
    if s["skips"]["by_reason"]:
        skips += " (" + ", ".join(f"{k}: {v}" for k, v in s["skips"]["by_reason"].items()) + ")"
    rollbacks = f"{s['rollbacks']['count']}"
    if s["rollbacks"]["last"]:
        last = s["rollbacks"]["last"]
        rollbacks += f" (last: step {last.get('from_step')} -> {last.get('to_step')})"
    loss = "-" if s["loss"] is None else f"{s['loss']:.4f}" + ("" if s["bpb"] is None else f" (bpb {s['bpb']:.4f})")
    return [
        ("run", s["run_dir"]),
        ("state", f"{state['state']}: {state['detail']}"),
        ("step", step),
        ("train loss", loss),
        ("throughput", rates),
        ("ETA", eta),
        ("last checkpoint", checkpoint),
        ("restarts", f"{s['restarts']} ({s['attempts']} attempt(s) logged, {s['launch_starts']} launch start(s))"),
        ("skipped steps", skips),
        ("rollbacks", rollbacks),
        ("eval (trainer)", _eval_line(s["eval"])),
        ("eval (watch)", _eval_line(s["watch_eval"])),
        ("lm-eval", _eval_line(s["lm_eval"])),
        ("wandb run", s["wandb_id"] or "-"),
        ("plot", s.get("plot") or "-"),
    ]


def print_table(summary: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency; plain text keeps status usable without it
        for field, value in rows(summary):
            print(f"{field:>16}  {value}")
        return
    table = Table(title="wordpool status", show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for field, value in rows(summary):
        table.add_row(field, value)
    # piped output (tests, logs) gets wide lines: paths are not folded in the middle
    Console(width=None if sys.stdout.isatty() else 200, highlight=False).print(table)


def _write_plot(run_dir: Path) -> str | None:
    from launcher.status_plot import plot_status

    path = RunDir(run_dir).status_png
    try:
        plot_status(run_dir, path)
    except OSError as exc:  # e.g. someone else's read-only run directory
        print(f"wordpool status: could not write {path}: {exc}", file=sys.stderr)
        return None
    return str(path)
