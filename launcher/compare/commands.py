"""The parsers of `wordpool compare` and `wordpool ladder` (registered by launcher/cli.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_compare(args: argparse.Namespace) -> int:
    from launcher.compare.config import load_compare_config

    cfg = load_compare_config(args.config, args.overrides)  # validated before anything heavy is imported
    from launcher.compare.run import compare
    from launcher.console import quiet_libraries

    quiet_libraries(Path(args.out or cfg.out_dir()) / "logs" / "compare.log")

    compare(cfg, Path(args.out) if args.out else None)
    return 0


def register_compare(sub) -> None:
    """The parser of `wordpool compare`; cmd_compare runs it."""
    p = sub.add_parser("compare", help="word-pooled vs BPE vs bytes at equal training FLOPs: LR sweep, seeds, report",
                       description="Prepare the three tokenizations, train each model to the same FLOP budget "
                                   "(LR sweep on seed 0, best LR on every seed) with `wordpool train`, evaluate "
                                   "with `wordpool eval`, and write report.md, results.json and plots.")
    p.add_argument("--config", required=True, help="compare config (configs/compare/*.yaml)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: the config's out, or runs/compare/<name>)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override compare config keys")
    p.set_defaults(func=cmd_compare)


def cmd_ladder(args: argparse.Namespace) -> int:
    from launcher.compare.ladder import ladder

    print(ladder([Path(d) for d in args.dirs], Path(args.plots) if args.plots else None, args.title))
    return 0


def register_ladder(sub) -> None:
    """The parser of `wordpool ladder`; cmd_ladder runs it."""
    p = sub.add_parser("ladder", help="several compare results on one corpus at different budgets: a table and plots "
                                      "against training FLOPs")
    p.add_argument("dirs", nargs="+", metavar="COMPARE_DIR", help="folders written by `wordpool compare`")
    p.add_argument("--plots", metavar="PREFIX", help="write PREFIX_bpb.png and PREFIX_acc.png")
    p.add_argument("--title", default="compute ladder", help="the plots' title")
    p.set_defaults(func=cmd_ladder)
