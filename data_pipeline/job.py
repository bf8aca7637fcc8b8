"""`wordpool prepare`: the Ray Data job from raw files to MDS shards, resumable per unit.

The driver records the job (config + inputs) in `_job.json`, plans the units (an input file, or a part
of one bigger than data.unit_bytes: data_pipeline/plan.py), runs one Ray task per unit that
has no done-marker yet, then merges the finished units' indexes in input order and writes
stats.json, the training split's word frequencies and a histogram PNG. A rerun after a crash skips
finished units; a rerun with another config or other inputs is refused unless `force`.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from schema import DataConfig, UserError, fault_plan
from data_pipeline.documents import Document, read_file
from data_pipeline.shard_format import JOB_FILE, SPLITS
from data_pipeline.sources import expand_inputs, filesystem_for
from data_pipeline.split import assign_split
from data_pipeline.output import OutputRoot
from data_pipeline.plan import absolute_lines, plan_units
from data_pipeline.unit import marker_rel, process_unit

# settings that do not change what is written (where Ray runs, not what it computes)
_NOT_CONTENT = {"inputs", "output", "ray_address", "num_cpus", "object_store_mb"}


class JobMismatch(UserError):
    """The output folder holds a job with another config or other inputs."""


def input_identity(path: str) -> dict[str, Any]:
    """What must not change between a job and its resumption: size and mtime of the file (or of every
    file of a dataset folder)."""
    import pyarrow.fs as pafs

    fs, inner = filesystem_for(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.Directory:
        files = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        return {"path": path, "files": sorted([f.path, f.size, f.mtime_ns] for f in files if f.is_file)}
    return {"path": path, "size": info.size, "mtime_ns": info.mtime_ns}


def job_record(cfg: DataConfig, inputs: list[str]) -> dict[str, Any]:
    content = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_CONTENT}
    return {"config": content, "inputs": [input_identity(p) for p in inputs]}


def _start_or_resume(out: OutputRoot, record: dict[str, Any], force: bool) -> None:
    if out.exists(JOB_FILE):
        previous = json.loads(out.read_text(JOB_FILE))
        if previous == record:
            out.local.mkdir(parents=True, exist_ok=True)
            return
        if not force:
            keys = dict.fromkeys([*previous["config"], *record["config"]])
            changed = [k for k in keys if previous["config"].get(k) != record["config"].get(k)]
            inputs_changed = previous["inputs"] != record["inputs"]
            what = ", ".join([f"data.{k}" for k in changed] + (["the input files"] if inputs_changed else []))
            raise JobMismatch(f"{out.url} holds a prepare job with different {what}: refusing to mix them. "
                              f"Use another --output, or --force to delete it and start over.")
    elif not force and not out.is_empty():
        raise JobMismatch(f"{out.url} is not empty and holds no prepare job: use another --output, or --force "
                          f"to delete its contents")
    out.clear()
    tmp = out.local / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out.local / JOB_FILE)
    out.publish(JOB_FILE)


def _train_tokenizer(cfg: DataConfig, inputs: list[str], out: OutputRoot) -> str | None:
    """The BPE tokenizer as JSON (tasks get the text itself: they may run on nodes without the file)."""
    if cfg.tokenizer != "bpe":
        return None
    from data_pipeline.bpe import TOKENIZER_FILE, train_bpe

    if out.exists(TOKENIZER_FILE):  # a resumed job keeps the tokenizer its finished units used
        return out.fetch(TOKENIZER_FILE).read_text()

    def train_texts():
        budget = cfg.bpe_train_bytes
        for p in inputs:
            for rec in read_file(p, cfg.input_format, cfg.doc_split, cfg.text_field):
                if isinstance(rec, Document) and assign_split(cfg.seed, rec.source, rec.offset,
                                                              cfg.val_fraction) == "train":
                    yield rec.text
                    budget -= len(rec.text)
                    if budget <= 0:
                        return

    train_bpe(train_texts(), cfg.bpe_vocab_size, out.local / TOKENIZER_FILE)
    out.publish(TOKENIZER_FILE)
    return (out.local / TOKENIZER_FILE).read_text()


def _init_ray(cfg: DataConfig):
    """Ray, quiet unless WORDPOOL_VERBOSE is set (`wordpool -v`, launcher/console.py): the job reports its
    own progress per unit, so Ray's log lines and Ray Data's progress bars stay off the console."""
    import logging

    import ray

    verbose = os.environ.get("WORDPOOL_VERBOSE", "") not in ("", "0")
    quiet = {} if verbose else {"configure_logging": False}
    if not ray.is_initialized():
        # ray.init drops the handlers of its loggers, so its notices (token authentication, …) would reach
        # logging's last-resort printer: off for the call
        with contextlib.nullcontext() if verbose else _without_last_resort(logging):
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, log_to_driver=False, **quiet)
            else:
                mem = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
                ray.init(num_cpus=cfg.num_cpus, object_store_memory=mem, include_dashboard=False,
                         log_to_driver=False, **quiet)
    import ray.data

    if not verbose:
        ray.data.DataContext.get_current().enable_progress_bars = False
        _quiet_ray_loggers()  # Ray Data sets up a console handler of its own when imported
    return ray


@contextlib.contextmanager
def _without_last_resort(logging):
    saved, logging.lastResort = logging.lastResort, logging.NullHandler()
    try:
        yield
    finally:
        logging.lastResort = saved


def _quiet_ray_loggers() -> None:
    """Ray's loggers keep only file handlers (the command's log, launcher/console.py), never the console."""
    import logging

    for name in ("ray", "ray.data"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if not isinstance(handler, (logging.FileHandler, logging.NullHandler)):  # Ray's own print plainly
                logger.removeHandler(handler)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _merge_indexes(out: OutputRoot, summaries: list[dict[str, Any]]) -> None:
    """One index.json per dataset folder (a split, or a split's length bucket), from finished units only."""
    from data_pipeline.mds import merge_index  # streaming's, without importing torch (seconds)

    by_dataset: dict[str, list[str]] = {}
    for summary in summaries:
        for folder in summary["folders"]:
            by_dataset.setdefault(folder.rpartition("/")[0], []).append(str(out.fetch(f"{folder}/index.json")))
    for split in SPLITS:  # a split no document drew still gets an (empty) index, so readers see it
        if not any(d == split or d.startswith(f"{split}/") for d in by_dataset):
            (out.local / split).mkdir(parents=True, exist_ok=True)
            (out.local / split / "index.json").write_text(json.dumps({"version": 2, "shards": []}))
            out.publish(f"{split}/index.json")
    for dataset, indexes in sorted(by_dataset.items()):
        (out.local / dataset / "index.json").unlink(missing_ok=True)  # a rerun merges afresh
        merge_index(indexes, str(out.local / dataset))
        out.publish(f"{dataset}/index.json")


def _import_in_background() -> None:
    """The driver's tail (the histogram PNG) imports matplotlib (~0.8 s): a thread loads it while the driver
    waits on Ray's workers."""
    import threading

    def load() -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401

    threading.Thread(target=load, daemon=True).start()


def _forwarded_env() -> dict[str, str]:
    """Object-store settings of the driver, for tasks on workers started before they were set."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "WORDPOOL_STAGING"))}
    return {**env, **fault_plan.forwarded()}  # planted test faults reach the tasks too


def _unit_task(row: dict[str, Any], **kwargs) -> dict[str, Any]:
    # the summary travels as one JSON string: Arrow need not infer a schema for its nested lists
    return {"unit": row["unit"], "summary": json.dumps(process_unit(row, **kwargs))}


def run_prepare(cfg: DataConfig, force: bool = False,
                on_unit: Callable[[dict[str, Any], float], None] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the job; `on_unit(summary, elapsed_s)` is called as each unit finishes (its
    summary's "share": the part of its input file it read)."""
    from data_pipeline.stats import summarize, write_plots, write_word_freq

    inputs = expand_inputs(cfg.inputs)
    out = OutputRoot(cfg.output)
    _start_or_resume(out, job_record(cfg, inputs), force)
    start = time.perf_counter()
    tokenizer_json = _train_tokenizer(cfg, inputs, out)
    units = plan_units(inputs, cfg)
    todo = [row for row in units if not out.exists(marker_rel(row["unit"]))]
    if todo:
        ray = _init_ray(cfg)
        _import_in_background()  # after Ray's imports: the two threads never import the same modules at once
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        env = _forwarded_env()  # a runtime_env only when needed: tasks then reuse the workers Ray started
        ds = ds.map(_unit_task, fn_kwargs={"cfg": cfg, "output": cfg.output, "tokenizer_json": tokenizer_json,
                                           "driver_pid": os.getpid()},
                    **({"runtime_env": {"env_vars": env}} if env else {}))
        for row in ds.iter_rows():
            if on_unit:
                on_unit(json.loads(row["summary"]), time.perf_counter() - start)
    summaries = [json.loads(out.read_text(marker_rel(u))) for u in range(len(units))]
    _merge_indexes(out, summaries)
    absolute_lines(summaries, cfg.input_format)
    stats = summarize(cfg, inputs, summaries, time.perf_counter() - start, skipped=len(units) - len(todo))
    write_word_freq(out, len(units))
    write_plots(out.local, stats)
    (out.local / "stats.json").write_text(json.dumps(stats, indent=1))
    for rel in ("histograms.png", "stats.json"):  # stats.json last: its presence means the job is complete
        out.publish(rel)
    return stats


def prepare_or_replace(cfg: DataConfig) -> dict[str, Any]:
    """run_prepare for a folder a tool owns (`wordpool bench train`, `wordpool compare`): reused when it holds
    this very job, prepared afresh when it holds another one (other settings there mean it is stale)."""
    try:
        return run_prepare(cfg)
    except JobMismatch:
        return run_prepare(cfg, force=True)


def repair_units(data_dir: str, units: set[int]) -> dict[str, Any]:
    """`wordpool verify --repair`: prepare the given units again (nothing else), re-merge the indexes and
    rewrite stats.json. A unit's output depends only on its input file and the config, so the rebuilt
    shards are the original ones; changed inputs are refused (the job record no longer matches)."""
    from data_pipeline.shard_format import read_stats
    from data_pipeline.unit import remove_partial

    root = Path(data_dir)
    cfg = DataConfig(**{**read_stats(root)["config"], "output": str(root)})
    for unit in sorted(units):
        (root / marker_rel(unit)).unlink(missing_ok=True)
        remove_partial(root, unit)
    return run_prepare(cfg)
