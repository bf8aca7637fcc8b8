"""`wordpool bench data`: throughput of the data pipeline against a subword baseline, on one text.

Four figures, all in MB of input text per second:
  - segmentation+encoding per core: `segment()` over every document, as a Ray task does (words ->
    flat bytes + uint32 lengths), in one single-threaded process;
  - BPE encoding per core: Hugging Face `tokenizers` byte-level BPE trained on the same text (training
    excluded), `encode_batch` of the same documents, pinned to one thread;
  - the whole Ray job (`run_prepare`) with 1 and with 2 workers, on the text cut into several files
    (the job runs one task per input file), Ray start-up excluded.
The two per-core figures come from one subprocess that alternates their passes, so a busy shared
machine slows both alike; each rate divides by CPU time (what one core spent), and wall-clock rates
are kept beside them. Targets: segmentation ≥ 3× BPE per core, 2 workers ≥ 1.7× one worker.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGET_SEGMENT_VS_BPE = 3.0
TARGET_SPEEDUP = 1.7


@dataclass
class BenchSettings:
    inputs: list[str]
    scale: int = 4  # the text is repeated this many times (steadier timings, less fixed overhead)
    repeats: int = 4  # alternating segmentation/BPE passes; the best pass counts
    job_repeats: int = 2  # Ray job runs per worker count; the best counts
    parts: int = 8  # files the text is cut into for the Ray job (its unit of parallelism)
    workers: list[int] = field(default_factory=lambda: [1, 2])
    doc_split: str = "paragraph"
    max_word_bytes: int = 32
    split_digits: bool = False
    bpe_vocab_size: int = 8192


def load_documents(settings: BenchSettings) -> list[str]:
    from data_pipeline.documents import Document, read_file
    from data_pipeline.job import expand_inputs

    return [rec.text for path in expand_inputs(settings.inputs)
            for rec in read_file(path, "auto", settings.doc_split, "text") if isinstance(rec, Document)]


# ---- per core: one process, one thread, segmentation and BPE passes alternating ----

def _per_core_worker(docs_file: str, settings_json: str) -> None:
    """Runs in a subprocess started with one-thread settings for `tokenizers` (read at import)."""
    from data_pipeline.bpe import train_bpe
    from data_pipeline.segment import segment
    from tokenizers import Tokenizer

    settings = BenchSettings(**json.loads(settings_json))
    docs = json.loads(Path(docs_file).read_text(encoding="utf-8"))
    text_bytes = sum(len(d.encode("utf-8")) for d in docs) * settings.scale
    start = time.perf_counter()
    tokenizer_file = Path(docs_file).with_name("tokenizer.json")
    train_bpe(docs, settings.bpe_vocab_size, tokenizer_file)
    train_s = time.perf_counter() - start
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    docs = docs * settings.scale

    def run_segment() -> None:
        for text in docs:
            segment(text, settings.max_word_bytes, split_digits=settings.split_digits)

    def run_bpe() -> None:
        tokenizer.encode_batch(docs)

    timings: dict[str, list[tuple[float, float, float]]] = {"segment": [], "bpe": []}
    run_segment()  # warm-up: builds the splitter (cached), and BPE's merge cache and first-call allocations
    run_bpe()
    for _ in range(settings.repeats):
        for name, fn in (("segment", run_segment), ("bpe", run_bpe)):
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            fn()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread))
    result = {"train_s": round(train_s, 3), "text_bytes": text_bytes,
              "threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None}
    for name, runs in timings.items():
        walls, cpus, threads = zip(*runs)
        result[name] = {
            "mb_s_per_core": round(text_bytes / 1e6 / min(cpus), 3),
            "mb_s_per_core_median": round(text_bytes / 1e6 / statistics.median(cpus), 3),
            "mb_s_wall": round(text_bytes / 1e6 / min(walls), 3),
            # ≈ 1.0 when the calling thread did all the work (a thread pool would lower it)
            "main_thread_cpu_share": round(sum(threads) / max(sum(cpus), 1e-9), 3),
            "cpu_s": [round(c, 4) for c in cpus], "wall_s": [round(w, 4) for w in walls],
        }
    print(json.dumps(result))


def measure_per_core(docs: list[str], settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    docs_file = workdir / "documents.json"
    docs_file.write_text(json.dumps(docs), encoding="utf-8")
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "data_pipeline.bench", "--per-core-worker", str(docs_file),
                           json.dumps(asdict(settings))], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"per-core benchmark failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- what the machine allows: N plain processes vs one (a shared machine may not give N cores) ----

def _burn(iterations: int) -> None:
    total = 0
    for i in range(iterations):
        total += i * i


def measure_cpu_ceiling(workers: int, iterations: int = 4_000_000) -> float:
    """How much more work N busy processes get done than one, right now: the best 2-vs-1 speed-up
    any job could show (about N on an idle machine)."""
    import multiprocessing

    def wall(n: int) -> float:
        procs = [multiprocessing.get_context("fork").Process(target=_burn, args=(iterations,)) for _ in range(n)]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        return time.perf_counter() - start

    one, many = min(wall(1) for _ in range(2)), min(wall(workers) for _ in range(2))
    return round(workers * one / many, 3)


# ---- the whole Ray job, with 1 and 2 workers ----

def write_parts(settings: BenchSettings, folder: Path) -> list[str]:
    """Each input repeated `scale` times, cut at line boundaries into files of about equal size
    (an input keeps its suffix, so JSON Lines stay JSON Lines)."""
    from data_pipeline.job import expand_inputs

    inputs = expand_inputs(settings.inputs)
    per_input = max(1, round(settings.parts / len(inputs)))
    paths = []
    for i, path in enumerate(inputs):
        data = Path(path).read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"  # keeps the repeated copies' lines apart
        lines = (data * settings.scale).splitlines(keepends=True)
        target, chunk, size = len(data) * settings.scale / per_input, [], 0
        pieces = []
        for line in lines:
            chunk.append(line)
            size += len(line)
            if size >= target * (len(pieces) + 1) and len(pieces) < per_input - 1:
                pieces.append(b"".join(chunk))
                chunk = []
        pieces.append(b"".join(chunk))
        for j, piece in enumerate(p for p in pieces if p):
            part = folder / f"input{i:03d}-part{j:03d}{Path(path).suffix}"
            part.write_bytes(piece)
            paths.append(str(part))
    return paths


def _quiet_logs() -> None:
    # Ray Data's progress lines and mosaicml-streaming's index-merge warnings would bury the table;
    # ray.data sets its loggers' levels when imported, so this runs after that import
    import ray.data  # noqa: F401

    for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor", "streaming"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def measure_ray_job(parts: list[str], settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    import ray

    from data_pipeline.config import DataConfig
    from data_pipeline.job import run_prepare

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process: the bench starts its own clusters")
    _quiet_logs()
    part_bytes = sum(os.path.getsize(p) for p in parts)
    results: dict[str, Any] = {}
    run = 0
    for workers in settings.workers:
        ray.init(num_cpus=workers, object_store_memory=512 * 2**20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False

            def job(inputs: list[str]) -> float:
                nonlocal run
                run += 1  # a fresh output folder each time: a rerun into the same one resumes (does nothing)
                cfg = DataConfig(inputs=inputs, output=str(workdir / f"job-{run:03d}"), num_cpus=workers,
                                 doc_split=settings.doc_split, max_word_bytes=settings.max_word_bytes,
                                 split_digits=settings.split_digits)
                start = time.perf_counter()
                run_prepare(cfg)
                return time.perf_counter() - start

            # warm-up on a small slice: worker processes start and import their modules once
            warm_parts = [str(workdir / f"warm-{workers}-{i}.txt") for i in range(2 * workers)]
            for p in warm_parts:
                Path(p).write_bytes(Path(parts[0]).read_bytes()[:4096] + b"\n")
            job(warm_parts)
            seconds = [job(parts) for _ in range(settings.job_repeats)]
        finally:
            ray.shutdown()
        results[str(workers)] = {"mb_s": round(part_bytes / 1e6 / min(seconds), 3),
                                 "seconds": [round(s, 3) for s in seconds]}
    return {"input_bytes": part_bytes, "files": len(parts), "by_workers": results}


# ---- the run and its report ----

def run_bench(settings: BenchSettings, json_path: str | None = None) -> dict[str, Any]:
    load_start = os.getloadavg()
    start = time.perf_counter()
    docs = load_documents(settings)
    if not docs:
        raise ValueError("the inputs hold no documents")
    with tempfile.TemporaryDirectory(prefix="wordpool-bench-") as tmp:
        workdir = Path(tmp)
        per_core = measure_per_core(docs, settings, workdir)
        ceiling = measure_cpu_ceiling(max(settings.workers))  # just before the Ray runs, under the same load
        job = measure_ray_job(write_parts(settings, workdir), settings, workdir)
    segment_rate, bpe_rate = per_core["segment"]["mb_s_per_core"], per_core["bpe"]["mb_s_per_core"]
    lo, hi = str(min(settings.workers)), str(max(settings.workers))
    speedup = job["by_workers"][hi]["mb_s"] / job["by_workers"][lo]["mb_s"]
    result = {
        "settings": asdict(settings),
        "documents": len(docs),
        "text_bytes": per_core["text_bytes"],
        "segment": per_core["segment"],
        "bpe": {**per_core["bpe"], "train_s": per_core["train_s"], "vocab_size": settings.bpe_vocab_size,
                "process_threads": per_core["threads"]},
        "ray_job": job,
        "ratios": {"segment_vs_bpe": round(segment_rate / bpe_rate, 3), f"workers_{hi}_vs_{lo}": round(speedup, 3)},
        # two plain busy processes vs one: below the target, the machine (not the job) caps the speed-up
        "machine_ceiling": {f"processes_{hi}_vs_1": ceiling},
        "targets": {"segment_vs_bpe": TARGET_SEGMENT_VS_BPE, f"workers_{hi}_vs_{lo}": TARGET_SPEEDUP},
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    result["pass"] = {k: result["ratios"][k] >= v for k, v in result["targets"].items()}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = result["settings"]
    table = Table(title=f"wordpool bench data: {result['text_bytes'] / 1e6:.2f} MB ({result['documents']:,} documents "
                        f"× {s['scale']}, {s['doc_split']}), max_word_bytes={s['max_word_bytes']}")
    for column in ("measure", "MB/s", "MB/s wall", "how"):
        table.add_column(column, justify="right" if column.startswith("MB") else "left")
    seg, bpe = result["segment"], result["bpe"]
    table.add_row("segmentation+encoding, per core", f"{seg['mb_s_per_core']:.2f}", f"{seg['mb_s_wall']:.2f}",
                  f"segment(), best of {s['repeats']} (median {seg['mb_s_per_core_median']:.2f})")
    table.add_row("HF BPE encoding, per core", f"{bpe['mb_s_per_core']:.2f}", f"{bpe['mb_s_wall']:.2f}",
                  f"encode_batch, vocab {bpe['vocab_size']}, 1 thread (main-thread CPU share "
                  f"{bpe['main_thread_cpu_share']:.2f}), best of {s['repeats']} (median {bpe['mb_s_per_core_median']:.2f})")
    for workers, r in result["ray_job"]["by_workers"].items():
        table.add_row(f"Ray job, {workers} worker(s)", "", f"{r['mb_s']:.2f}",
                      f"run_prepare on {result['ray_job']['files']} files, best of {len(r['seconds'])}: "
                      + ", ".join(f"{x:.2f} s" for x in r["seconds"]))
    console.print(table)
    for key, ratio in result["ratios"].items():
        ok = result["pass"][key]
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(f"{key.replace('_', ' ')}: {ratio:.2f}× (target ≥ {result['targets'][key]}×) {mark}")
    for key, ceiling in result["machine_ceiling"].items():
        console.print(f"machine ceiling now: {key.replace('_', ' ')} plain busy processes {ceiling:.2f}× "
                      f"(what any job could gain from more workers on this machine at this load)")
    load = result["load_average"]
    console.print(f"{result['cpu_count']} CPUs; load average {load['start'][0]:.2f} at start, {load['end'][0]:.2f} "
                  f"at end; {result['seconds']:.0f} s in all", markup=False)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--per-core-worker":
    _per_core_worker(sys.argv[2], sys.argv[3])
