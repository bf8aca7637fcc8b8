"""EleutherAI's lm-evaluation-harness on wordpool models: an `LM` adapter and an offline runner.

The adapter answers lm-eval's three request types with text_scoring.py (its docstring states the
accounting): loglikelihood, loglikelihood_rolling, generate_until (greedy unless the task asks for a
temperature; `max_gen_toks` is a limit in UTF-8 bytes, the unit every wordpool model shares). It wraps
a live model, so the same code serves `wordpool lm-eval` on a checkpoint or an export and the `lm_eval`
hook inside a training run.

Offline: the hub is switched off before lm-eval or datasets are imported; tasks read local files. The
project's own tasks (lm_eval_tasks/) are always on the include path; lm-eval's built-in task index is
built only when a requested task is not found there (indexing it costs seconds).
lm_eval is an optional extra (`pip install -e '.[eval]'`); importing this module needs it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")  # before lm_eval imports datasets / huggingface_hub

import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402

from pretrain.evaluation.text_scoring import TextScorer, text_scorer  # noqa: E402
from pretrain.run_dir import LM_EVAL_PREFIX, write_json_atomic  # noqa: E402

SHIPPED_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
DEFAULT_MAX_BYTES = 256


class WordpoolLM(LM):
    """lm-eval's view of a wordpool model of any kind."""

    def __init__(self, scorer: TextScorer, seed: int = 0):
        super().__init__()
        self.scorer = scorer
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg, data_dir: str | None = None, batch_size: int = 8) -> "WordpoolLM":
        return cls(text_scorer(model, cfg, data_dir, batch_size))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        scores = self.scorer.loglikelihood([req.args for req in requests])
        return [(s.logprob, s.greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return [s.logprob for s in self.scorer.rolling([req.args[0] for req in requests])]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", True) else 0.0
            out.append(self.scorer.generate(context, until, int(kwargs.get("max_gen_toks", DEFAULT_MAX_BYTES)),
                                            temperature, self.generator))
        return out


def task_manager(tasks: list[str], include_paths: list[str | Path] = ()):
    """lm-eval's TaskManager over the shipped tasks and `include_paths`; with lm-eval's own tasks too only
    if some requested task is not among those."""
    from lm_eval.tasks import TaskManager

    paths = [str(SHIPPED_TASKS), *map(str, include_paths)]
    for path in paths[1:]:
        if not Path(path).exists():
            raise FileNotFoundError(f"--include-path {path}: no such folder or file")
    manager = TaskManager(include_path=paths, include_defaults=False)
    if all(t in manager.all_tasks for t in tasks):
        return manager
    manager = TaskManager(include_path=paths, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {', '.join(unknown)}: not in {SHIPPED_TASKS.name}/, the "
                         f"include path(s) or lm-eval's own tasks")
    return manager


def run_lm_eval(lm: WordpoolLM, tasks: list[str], include_paths: list[str | Path] = (), limit: float | None = None,
                num_fewshot: int | None = None, seed: int = 0) -> dict[str, Any]:
    """lm-eval's results dict (results, configs, versions, n-shot, ...) for `tasks`; no samples kept."""
    import lm_eval

    manager = task_manager(tasks, include_paths)
    # Under torchrun lm-eval takes LOCAL_RANK > 0 for a tensor-parallel worker and returns no results there;
    # here every rank evaluates the whole model itself (the same requests, the same results).
    local_rank = os.environ.pop("LOCAL_RANK", None)
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                          num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0,
                                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                          fewshot_random_seed=seed)
    finally:
        if local_rank is not None:
            os.environ["LOCAL_RANK"] = local_rank
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return results


def metrics(results: dict[str, Any], prefix: str = LM_EVAL_PREFIX) -> dict[str, float]:
    """Flat numeric metrics, e.g. {"lm_eval/wordpool_cloze/acc": 0.31}; lm-eval's ",none" filter suffix
    is dropped, other filters are kept (`exact_match,first_word` -> `exact_match/first_word`)."""
    flat = {}
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name, filt = key.split(",", 1)
            flat[f"{prefix}{task}/{name}" + ("" if filt == "none" else f"/{filt}")] = float(value)
    return flat


def table(results: dict[str, Any]) -> str:
    from lm_eval.utils import make_table

    return make_table(results)


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    from lm_eval.utils import handle_non_serializable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(json.dumps(results, default=handle_non_serializable)))
    return path
