"""`wordpool bench data` and `wordpool bench train`: the benchmark commands (figures printed, never timed tests)."""
from __future__ import annotations

import argparse
from pathlib import Path

from launcher.cli_args import add_config_arguments
from schema import load_config


def cmd_bench_data(args: argparse.Namespace) -> int:
    from data_pipeline.bench import BenchSettings, print_report, run_bench

    settings = BenchSettings(inputs=args.input, scale=args.scale, repeats=args.repeats, job_repeats=args.job_repeats,
                             parts=args.parts, doc_split=args.doc_split, max_word_bytes=args.max_word_bytes,
                             split_digits=args.split_digits, bpe_vocab_size=args.bpe_vocab_size,
                             e2e_scale=args.e2e_scale)
    print_report(run_bench(settings, args.json))
    return 0


def _register_bench_data(sub) -> None:
    """The parser of `wordpool bench data`; cmd_bench_data runs it."""
    p = sub.add_parser("data", help="segmentation MB/s per core vs HF BPE, and the Ray job with 1 and 2 workers",
                       description="Measure segmentation+encoding and HF BPE encoding MB/s per core, and the whole "
                                   "prepare job's MB/s with 1 and 2 Ray workers, on the same text.")
    p.add_argument("--input", action="extend", nargs="+", required=True, metavar="PATH",
                   help="text or JSONL files (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--scale", type=int, default=8, help="the Ray job reads the text N times over (default 8)")
    p.add_argument("--repeats", type=int, default=16, help="per-core passes, best counts (default 16)")
    p.add_argument("--job-repeats", type=int, default=2, help="Ray job runs per worker count (default 2)")
    p.add_argument("--parts", type=int, default=8, help="files the text is cut into for the Ray job (default 8)")
    p.add_argument("--doc-split", choices=["file", "paragraph", "line"], default="paragraph")
    p.add_argument("--max-word-bytes", type=int, default=32)
    p.add_argument("--split-digits", action="store_true", help="number-aware splitting (groups of 3 digits)")
    p.add_argument("--bpe-vocab-size", type=int, default=8192)
    p.add_argument("--e2e-scale", type=int, default=8,
                   help="end to end (`wordpool prepare` and the peer script, fixed cost + marginal rate): the text "
                        "once and N times over (default 8)")
    p.set_defaults(func=cmd_bench_data)


def cmd_bench_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from pretrain.training.throughput_bench import MODELS, print_report, run_bench

    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    inputs = args.input or cfg.data.inputs
    if not inputs:
        raise ValueError("no input text: give --input FILE or data.inputs in the config")
    result = run_bench(cfg, inputs, Path(args.work_dir), args.steps, args.warmup, models,
                       args.peak_flops or cfg.train.peak_flops)
    print_report(result)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _register_bench_train(sub) -> None:
    """The parser of `wordpool bench train`; cmd_bench_train runs it."""
    p = sub.add_parser("train", help="training text bytes/s of the word-pooled model vs byte and BPE baselines",
                       description="Train the word-pooled model and its byte and BPE baselines (same backbone, "
                                   "same text, one rank of the trainer's DeepSpeed engine) and print text bytes/s, "
                                   "words/s, tokens/s, step time, peak memory, FLOP/s and MFU for each.")
    add_config_arguments(p)
    p.add_argument("--input", action="extend", nargs="+", metavar="PATH", help="text to train on (default: data.inputs)")
    p.add_argument("--work-dir", default="runs/bench-train", help="where the three tokenizations are prepared")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per model (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--models", default="word_pooled,word_pooled_packed,word_pooled_padded,bpe,bytes",
                   help="comma-separated, from word_pooled (model.layout), word_pooled_packed, word_pooled_padded, "
                        "bpe, bytes")
    p.add_argument("--peak-flops", type=float, help="peak FLOP/s of the device, for MFU (default: train.peak_flops)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.set_defaults(func=cmd_bench_train)


def register_bench(sub) -> None:
    """`wordpool bench`: the benchmark commands under it."""
    p = sub.add_parser("bench", help="benchmarks: `bench data` (pipeline throughput), `bench train` (model training throughput)")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    _register_bench_data(bench)
    _register_bench_train(bench)
