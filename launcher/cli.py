"""The `wordpool` command. Heavy libraries (Ray, torch, DeepSpeed) are imported inside each command,
after the config validated, so a bad config fails in well under a second."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.bench_cli import register_bench
from launcher.console import quiet_beside
from launcher.lm_eval_cli import register_lm_eval, split_tasks
from launcher.compare.commands import register_compare, register_ladder
from launcher.cli_args import add_config_arguments
from schema import ConfigError, EvalHookConfig, UserError, WordpoolConfig, load_config


def _config(args: argparse.Namespace, extra: list[str] | None = None) -> WordpoolConfig:
    return load_config(args.config, [*(extra or []), *args.overrides])


def cmd_prepare(args: argparse.Namespace) -> int:
    extra = []
    if args.input:
        extra.append("data.inputs=" + _yaml_list(args.input))
    if args.output:
        extra.append(f"data.output={_yaml_str(args.output)}")
    if args.ray_address:
        extra.append(f"data.ray_address={_yaml_str(args.ray_address)}")
    if args.tokenizer:
        extra.append(f"data.tokenizer={args.tokenizer}")
    cfg = _config(args, extra)
    from data_pipeline.job import run_prepare
    from launcher.console import quiet_libraries
    from launcher.report import PrepareProgress, print_prepare_summary

    quiet_libraries(prepare_log(cfg.data.output))

    with PrepareProgress(len(cfg.data.inputs)) as progress:
        stats = run_prepare(cfg.data, force=args.force, on_unit=progress.update)
    print_prepare_summary(stats, cfg.data.output)
    return 0


def prepare_log(output: str) -> Path | None:
    """<output>/_logs/prepare-<time>.log for a local output (an object-store output keeps no log)."""
    import time

    from data_pipeline.sources import is_url

    return None if is_url(output) else Path(output) / "_logs" / f"prepare-{time.strftime('%Y%m%dT%H%M%S')}.log"


def _register_prepare(sub) -> None:
    """The parser of `wordpool prepare`; cmd_prepare runs it."""
    p = sub.add_parser("prepare", help="raw text/JSONL -> word-segmented MDS shards (Ray Data job)",
                       description="Segment raw corpora into words and write MDS train/val shards plus stats.json.")
    p.add_argument("--input", nargs="+", metavar="PATH", help="input files or globs (overrides data.inputs)")
    p.add_argument("--output", metavar="DIR", help="output folder (overrides data.output)")
    p.add_argument("--ray-address", help="join an existing Ray cluster (overrides data.ray_address)")
    p.add_argument("--tokenizer", choices=["words", "bytes", "bpe"], help="overrides data.tokenizer")
    p.add_argument("--force", action="store_true",
                   help="delete an output folder holding another job (other config or inputs) and start over")
    add_config_arguments(p)
    p.set_defaults(func=cmd_prepare)


def cmd_verify(args: argparse.Namespace) -> int:
    from data_pipeline.verify import check_accounts, check_shards

    problems, checked = check_shards(args.data_dir)
    accounts = check_accounts(args.data_dir)
    for problem in problems:
        print(f"bad shard: {problem.line()}")
    for line in accounts:
        print(f"accounts: {line}")
    if args.repair and (problems or accounts):
        units = {p.unit for p in problems if p.unit is not None}
        if len(units) < len(problems) or accounts and not units:
            raise UserError(f"{args.data_dir}: what is wrong is not confined to prepare units' shards: prepare it "
                            f"again with `wordpool prepare --force`")
        from launcher.console import quiet_libraries

        quiet_libraries(prepare_log(args.data_dir))
        print(f"repairing: preparing unit(s) {', '.join(map(str, sorted(units)))} again", flush=True)
        from data_pipeline.job import repair_units

        repair_units(args.data_dir, units)
        problems, checked = check_shards(args.data_dir)
        accounts = check_accounts(args.data_dir)
    if problems or accounts:
        hint = "" if args.repair else "; `wordpool verify DATA_DIR --repair` prepares the units that wrote them again"
        raise UserError(f"{args.data_dir}: {len(problems)} of {checked} shard files fail and {len(accounts)} "
                        f"account(s) disagree{hint}")
    print(f"{args.data_dir}: all {checked} shard files match their index.json, and stats.json's accounts agree")
    return 0


def _register_verify(sub) -> None:
    """The parser of `wordpool verify`; cmd_verify runs it."""
    p = sub.add_parser("verify", help="check every shard of a prepared data folder (hashes, sizes, accounts); "
                                      "--repair rebuilds the units whose shards fail",
                       description="Check each shard file against index.json (size, hash, decompression) and "
                                   "stats.json against the indexes and the units' records.")
    p.add_argument("data_dir", metavar="DATA_DIR", help="a `wordpool prepare` output folder")
    p.add_argument("--repair", action="store_true",
                   help="prepare again only the units that wrote a bad shard (same inputs and config: the same "
                        "shards), then check again")
    p.set_defaults(func=cmd_verify)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)  # validated before any process starts
    from launcher.local_launch import default_nproc, launch_local, under_torchrun

    if not under_torchrun():
        from pretrain.training.preflight import preflight

        preflight(cfg, args.resume)  # what fails without ranks fails here, in one line, before torchrun starts
        return launch_local(args.argv, args.nproc or default_nproc(), cfg.train.run_dir)
    from pretrain.training.trainer import train

    train(cfg, args.resume)
    _exit_fast()


def _exit_fast() -> None:
    """A rank is done: run the exit handlers (streaming frees its shared memory there) and leave without the
    interpreter's teardown, which spends seconds collecting the objects of torch, DeepSpeed and Ray."""
    import atexit
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(0)


def _register_train(sub) -> None:
    """The parser of `wordpool train`; cmd_train runs it."""
    p = sub.add_parser("train", help="train with DeepSpeed ZeRO on prepared shards (N local ranks via torchrun)",
                       description="Train a word-pooled LM. Without torchrun around it, starts --nproc ranks itself.")
    p.add_argument("--nproc", type=int, help="local processes (default: one per GPU, 1 on CPU)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto: newest complete checkpoint of train.run_dir (fresh start if none); PATH: that one")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_launch(args: argparse.Namespace) -> int:
    from launcher.launch import run_launch

    return run_launch(args)


def _register_launch(sub) -> None:
    """The parser of `wordpool launch`; cmd_launch runs it."""
    from launcher import launch  # stdlib-only at import: the parser stays fast

    p = sub.add_parser("launch", help="supervised training: local, hostfile (ssh), Slurm or a rendezvous endpoint",
                       description="Start training through torchrun on one or many nodes, restart it from the newest "
                                   "checkpoint after a failure (fault.max_restarts), and turn SIGTERM/SIGUSR1 into a "
                                   "checkpoint-and-exit (exit 75). See docs/RUN_DIR.md.")
    launch.add_arguments(p)
    add_config_arguments(p)
    p.set_defaults(func=cmd_launch)


def cmd_status(args: argparse.Namespace) -> int:
    from launcher.status import run_status

    return run_status(args)


def _register_status(sub) -> None:
    """The parser of `wordpool status`; cmd_status runs it."""
    from launcher import status  # stdlib-only at import: the parser stays fast

    p = sub.add_parser("status", help="a run's step, throughput, checkpoints, restarts, skips, evals; writes status.png")
    status.add_arguments(p)
    p.set_defaults(func=cmd_status)


def cmd_eval(args: argparse.Namespace) -> int:
    quiet_beside(args.checkpoint, "eval")
    if args.watch is not None:
        return _watch(args)
    if args.checkpoint is None:
        raise ValueError("give --checkpoint PATH (one checkpoint) or --watch RUN_DIR (each new one of a run)")
    if args.once or args.timeout is not None or args.poll_seconds is not None or args.tasks:
        raise ValueError("--once, --timeout, --poll-seconds and --tasks go with --watch (lm-eval on one "
                         "checkpoint: wordpool lm-eval)")
    from pretrain.inference.loading import eval_checkpoint

    record = eval_checkpoint(args.checkpoint, args.data_dir, args.max_batches, mean_context_gap=args.mean_context_gap)
    print(f"step {record['step']}: val bits/byte {record['val_bpb']:.4f}, next-word accuracy "
          f"{record.get('val_word_acc', 0.0):.4f} over {record.get('val_words', 0):,.0f} words with a letter or digit")
    print("  apart: " + ", ".join(f"{label} {record[f'val_word_acc_{kind}']:.4f} ({record[f'val_words_{kind}']:,.0f})"
                                  for kind, label in (("space", "whitespace-only"), ("punct", "punctuation-only"))))
    buckets = [k.removeprefix("val_word_acc_freq_") for k in record if k.startswith("val_word_acc_freq_")]
    print("  by training frequency: " + ", ".join(
        f"{name}: {record['val_word_acc_freq_' + name]:.4f} ({record['val_words_freq_' + name]:,.0f} words)"
        for name in buckets))
    if args.mean_context_gap:
        print(f"  mean-context gap: {record['mean_context_gap']:+.4f} bits/byte (val bits/byte "
              f"{record['val_bpb_mean_context']:.4f} with every backbone context replaced by their mean)")
    return 0


def _watch(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        raise ValueError("--checkpoint and --watch exclude each other")
    if (args.poll_seconds is not None and args.poll_seconds <= 0) or (args.timeout is not None and args.timeout <= 0):
        raise ValueError("--poll-seconds and --timeout must be positive")
    from pretrain.evaluation.watcher import WatchSettings, watch

    lm_eval = EvalHookConfig(kind="lm_eval", on_checkpoint=True, tasks=split_tasks(args.tasks),
                             include_path=args.include_path or [], limit=args.limit) if args.tasks else None
    return watch(WatchSettings(Path(args.watch), args.poll_seconds or 30.0, args.max_batches, args.timeout,
                               args.once, args.data_dir, lm_eval))


def _register_eval(sub) -> None:
    """The parser of `wordpool eval`; cmd_eval runs it."""
    p = sub.add_parser("eval", help="validation bits/byte and next-word accuracy of a checkpoint, or of each new "
                                    "checkpoint of a run (--watch)")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint folder (…/checkpoints/step_N) or an export folder")
    p.add_argument("--watch", metavar="RUN_DIR",
                   help="evaluate each complete checkpoint of RUN_DIR as it appears (eval.json beside it, "
                        "RUN_DIR/watch_evals.jsonl, the run's wandb under watch/); stops when the run finished")
    p.add_argument("--poll-seconds", type=float, help="--watch: seconds between looks for new checkpoints (default 30)")
    p.add_argument("--timeout", type=float, metavar="S", help="--watch: stop after S seconds")
    p.add_argument("--once", action="store_true", help="--watch: one pass over the checkpoints there now, then exit")
    p.add_argument("--data-dir", help="shards to evaluate on (default: the run's data.output)")
    p.add_argument("--max-batches", type=int, help="limit the number of val micro-batches")
    p.add_argument("--tasks", help="--watch: also these lm-eval tasks on each checkpoint (comma-separated)")
    p.add_argument("--include-path", action="append", metavar="DIR", help="--watch --tasks: task YAML folders")
    p.add_argument("--limit", type=float, help="--watch --tasks: documents per task")
    p.add_argument("--mean-context-gap", action="store_true",
                   help="word-pooled: also the val bits/byte lost when the backbone's context is replaced by its "
                        "mean (how much the decoder uses the backbone)")
    p.set_defaults(func=cmd_eval)


def cmd_generate(args: argparse.Namespace) -> int:
    quiet_beside(args.checkpoint, "generate")
    from pretrain.inference.loading import generate_text, load_model

    loaded = load_model(args.checkpoint)
    print(args.prompt, end="", flush=True)
    generate_text(args.checkpoint, args.prompt, args.max_words, args.temperature, args.top_k, args.seed,
                  on_word=lambda w: print(w, end="", flush=True), loaded=loaded)
    print()
    return 0


def _register_generate(sub) -> None:
    """The parser of `wordpool generate`; cmd_generate runs it."""
    p = sub.add_parser("generate", help="continue a prompt word by word from a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)


def cmd_export(args: argparse.Namespace) -> int:
    quiet_beside(args.checkpoint, "export")
    from pretrain.inference.export import export_checkpoint, read_export_config, resolve_checkpoint

    source = resolve_checkpoint(args.checkpoint)
    out = export_checkpoint(source, args.out, force=args.force, hf=args.hf)
    info = read_export_config(out)[1]
    print(f"exported step {info['step']} ({info['parameters']:,} parameters) from {source} to {out}")
    print(f"sha256 {info['sha256']}")
    return 0


def _register_export(sub) -> None:
    """The parser of `wordpool export`; cmd_export runs it."""
    p = sub.add_parser("export", help="a checkpoint -> model.safetensors + config.json, usable without DeepSpeed",
                       description="Consolidate a checkpoint's weights (any ZeRO stage) to fp32 safetensors plus "
                                   "the run's config; eval and generate accept the output folder.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a checkpoint folder, or a run dir / checkpoints root (its newest complete checkpoint)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    p.add_argument("--hf", action="store_true",
                   help="also loadable by Hugging Face transformers: AutoModelForCausalLM.from_pretrained(DIR, "
                        "trust_remote_code=True), offline, without wordpool (the model's code is copied into DIR)")
    p.set_defaults(func=cmd_export)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from launcher.quickstart import quickstart

    return quickstart(args.out, args.overrides)


def _register_quickstart(sub) -> None:
    """The parser of `wordpool quickstart`; cmd_quickstart runs it."""
    p = sub.add_parser("quickstart", help="the main job on a built-in corpus: prepare, train (2 ranks), eval, generate")
    p.add_argument("--out", default="runs/quickstart", help="folder for the corpus, shards and run")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override configs/quickstart.yaml keys")
    p.set_defaults(func=cmd_quickstart)


def _yaml_str(value: str) -> str:
    import json

    return json.dumps(value)  # JSON strings are valid YAML scalars, quoting included


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(_yaml_str(v) for v in values) + "]"


# every command, in the order `wordpool --help` lists them
COMMANDS = (_register_prepare, _register_verify, _register_train, _register_launch, _register_status, _register_eval,
            _register_generate, register_lm_eval, _register_export, register_compare, register_ladder, _register_quickstart,
            register_bench)


def _add_verbose(parser: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show everything on the console: Ray, streaming, DeepSpeed and torchrun output, "
                             "warnings, tracebacks (otherwise they go to the run's logs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wordpool", description="Pretrain word-pooled language models.")
    _add_verbose(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    for command in sub.choices.values():  # `wordpool train -v …` as well as `wordpool -v train …`
        _add_verbose(command)
        for action in command._subparsers._group_actions if command._subparsers else []:
            for nested in action.choices.values():
                _add_verbose(nested)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-run the same command under torchrun
    from launcher.console import set_verbose

    set_verbose(args.verbose)  # inherited by every process this one starts
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"wordpool: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        # expected user errors get one clear line; anything deeper keeps its traceback
        if not isinstance(exc, UserError) and type(exc) not in (FileNotFoundError, ValueError):
            raise
        print(f"{_speaker(args.command)}: error: {exc}", file=sys.stderr)
        return 2


def _speaker(command: str) -> str:
    """Who says an error: `wordpool <command>`, or, inside a rank, `rank N` (the launcher above it prints the
    run's one `wordpool <command>: error:` line from the ranks' reports)."""
    import os

    from launcher.local_launch import under_torchrun

    return f"rank {os.environ.get('RANK', 0)}" if under_torchrun() else f"wordpool {command}"


if __name__ == "__main__":
    sys.exit(main())
