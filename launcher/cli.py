"""The `wordpool` command. Heavy libraries (Ray, torch, DeepSpeed) are imported inside each command,
after the config validated, so a bad config fails in well under a second."""
from __future__ import annotations

import argparse
import sys

from launcher.config import ConfigError, WordpoolConfig, load_config


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (see configs/); defaults apply where it is silent")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override any config key, e.g. train.steps=100 data.max_word_bytes=24")


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
    cfg = _config(args, extra)
    from data_pipeline.job import run_prepare
    from launcher.report import print_prepare_summary

    stats = run_prepare(cfg.data)
    print_prepare_summary(stats, cfg.data.output)
    return 0


def _yaml_str(value: str) -> str:
    import json

    return json.dumps(value)  # JSON strings are valid YAML scalars, quoting included


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(_yaml_str(v) for v in values) + "]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wordpool", description="Pretrain word-pooled language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("prepare", help="raw text/JSONL -> word-segmented MDS shards (Ray Data job)",
                       description="Segment raw corpora into words and write MDS train/val shards plus stats.json.")
    p.add_argument("--input", nargs="+", metavar="PATH", help="input files or globs (overrides data.inputs)")
    p.add_argument("--output", metavar="DIR", help="output folder (overrides data.output)")
    p.add_argument("--ray-address", help="join an existing Ray cluster (overrides data.ray_address)")
    _add_common(p)
    p.set_defaults(func=cmd_prepare)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"wordpool: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"wordpool {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
