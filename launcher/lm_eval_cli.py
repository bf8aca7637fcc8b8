"""`wordpool lm-eval`: EleutherAI's lm-evaluation-harness on a checkpoint or an export, offline."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def split_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks names no task (e.g. --tasks wordpool_cloze,wordpool_bpb)")
    return tasks


def cmd_lm_eval(args: argparse.Namespace) -> int:
    from launcher.console import quiet_beside, verbose

    source = args.checkpoint or args.export
    if (args.checkpoint is None) == (args.export is None):
        raise ValueError("give one of --checkpoint PATH and --export DIR")
    tasks = split_tasks(args.tasks)
    folder = Path(source)
    log = quiet_beside(source, "lm-eval")  # lm-eval, datasets and torch narrate: into the run's logs
    if not verbose():
        os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's per-request progress bars

    try:
        from pretrain.evaluation.lm_eval_adapter import WordpoolLM, metrics, run_lm_eval, table, write_results
    except ImportError as exc:
        raise ValueError(f"lm-evaluation-harness is not installed ({exc}): pip install -e '.[eval]'") from None
    from pretrain.inference.loading import checkpoint_step, load_model

    model, cfg = load_model(source)
    lm = WordpoolLM.from_model(model, cfg, args.data_dir, args.batch_size)
    results = run_lm_eval(lm, tasks, args.include_path or [], args.limit, args.num_fewshot, args.seed)
    print(table(results))
    out = Path(args.out) if args.out else folder / "lm_eval.json"
    write_results({**results, "wordpool": {"source": str(folder), "step": checkpoint_step(folder),
                                           "metrics": metrics(results)}}, out)
    print(f"results in {out}" + (f"; lm-eval's log in {log}" if log else ""))
    return 0


def register_lm_eval(sub) -> None:
    """The parser of `wordpool lm-eval`; cmd_lm_eval runs it."""
    p = sub.add_parser("lm-eval", help="downstream tasks with EleutherAI's lm-evaluation-harness (offline)",
                       description="Run lm-evaluation-harness tasks on a checkpoint or an export, with no hub "
                                   "access: tasks read local files. wordpool ships wordpool_cloze (multiple "
                                   "choice), wordpool_bpb (rolling bits/byte) and wordpool_next_word (generation).")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint folder (…/checkpoints/step_N)")
    p.add_argument("--export", metavar="DIR", help="a `wordpool export` folder")
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--include-path", action="append", metavar="DIR",
                   help="a folder of task YAML files (repeatable); the shipped tasks are always included")
    p.add_argument("--limit", type=float, help="documents per task (a fraction if < 1)")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--batch-size", type=int, default=8, help="windows scored per forward (default 8)")
    p.add_argument("--data-dir", help="bytes/BPE models: the data folder with their tokenizer (default: the "
                                      "run's data.output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="results JSON (default: lm_eval.json in the checkpoint/export)")
    p.set_defaults(func=cmd_lm_eval)
