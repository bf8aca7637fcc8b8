"""`wordpool bench data`: throughput of the data pipeline against a subword baseline, on one text.

Figures, in MB of input text per second:
  - segmentation+encoding per core: `segment_batch()` over every document, as a Ray task does (words
    -> flat bytes + uint32 lengths per document), in one single-threaded process; hat-splitter alone
    beside it, called as segment_batch() calls it (one call per group of documents);
  - BPE encoding per core: Hugging Face `tokenizers` byte-level BPE trained on the same documents
    (training excluded), `encode_batch` of them, pinned to one thread;
  - the whole Ray job (`run_prepare`) with 1 and with 2 workers, on the text repeated `scale` times
    and cut into several files (one task per input file), Ray start-up and worker imports excluded.
End to end (data_pipeline/bench_e2e.py): `wordpool prepare` as a user runs it, and a plain peer script
(HF BPE + mosaicml-streaming's MDSWriter), each timed at two input sizes: a fixed cost in seconds and a
marginal rate in MB/s.
The per-core figures come from one subprocess that alternates many short passes and keeps each
measure's best: on a shared VM a core's speed drifts by up to 2× within seconds, and this way both
measures see the same quiet moments. Rates divide by CPU time; wall-clock rates are kept beside them.
Targets: segmentation ≥ 3× BPE per core, 2 workers ≥ 1.7× one worker.
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
    repeats: int = 16  # per-core passes over the text, the measures alternating; each one's best counts
    scale: int = 8  # the Ray job reads the text repeated N times (its fixed ~1 s per run then weighs less)
    job_repeats: int = 2  # Ray job runs per worker count; the best counts
    parts: int = 8  # files the text is cut into for the Ray job (its unit of parallelism)
    workers: list[int] = field(default_factory=lambda: [1, 2])
    doc_split: str = "paragraph"
    max_word_bytes: int = 32
    split_digits: bool = False
    bpe_vocab_size: int = 8192
    e2e_scale: int = 8  # end to end: the text once and this many times over (the fit's two points)


def load_documents(settings: BenchSettings) -> list[str]:
    from data_pipeline.documents import Document, read_file
    from data_pipeline.job import expand_inputs

    return [rec.text for path in expand_inputs(settings.inputs)
            for rec in read_file(path, "auto", settings.doc_split, "text") if isinstance(rec, Document)]


# ---- per core: one process, one thread, the measures' passes alternating ----

def _per_core_worker(docs_file: str, settings_json: str) -> None:
    """Runs in a subprocess whose environment pins `tokenizers` to one thread (read at import)."""
    from data_pipeline.bpe import train_bpe
    from data_pipeline.segment import UNCAPPED, _groups, _splitter, segment_batch
    from tokenizers import Tokenizer

    settings = BenchSettings(**json.loads(settings_json))
    docs = json.loads(Path(docs_file).read_text(encoding="utf-8"))
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    start = time.perf_counter()
    tokenizer_file = Path(docs_file).with_name("tokenizer.json")
    train_bpe(docs, settings.bpe_vocab_size, tokenizer_file)
    train_s = time.perf_counter() - start
    tokenizer, splitter = Tokenizer.from_file(str(tokenizer_file)), _splitter()
    measures = {
        "segment": lambda: segment_batch(docs, settings.max_word_bytes, split_digits=settings.split_digits),
        "bpe": lambda: tokenizer.encode_batch(docs),
        # segment_batch()'s engine, called the same way
        "hat_splitter": lambda: [splitter.split_with_limit("".join(docs[a:b]), UNCAPPED) for a, b in _groups(docs)],
    }
    for fn in measures.values():
        fn()  # warm-up: the splitter is built, BPE's merge cache filled, first-call allocations made
    passes = settings.repeats
    timings: dict[str, list[tuple[float, float, float]]] = {name: [] for name in measures}
    for _ in range(passes):
        for name, fn in measures.items():
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            fn()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread))
    result: dict[str, Any] = {"train_s": round(train_s, 3), "text_bytes": text_bytes, "passes": passes}
    for name, runs in timings.items():
        walls, cpus, threads = zip(*runs)
        mb = text_bytes / 1e6
        result[name] = {"mb_s_per_core": round(mb / min(cpus), 3),
                        "mb_s_per_core_median": round(mb / statistics.median(cpus), 3),
                        "mb_s_wall": round(mb / min(walls), 3),
                        # 1.0 when the calling thread did all the work (a thread pool would lower it)
                        "main_thread_cpu_share": round(sum(threads) / max(sum(cpus), 1e-9), 3)}
    print(json.dumps(result))


def measure_per_core(docs: list[str], settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    docs_file = workdir / "documents.json"
    docs_file.write_text(json.dumps(docs), encoding="utf-8")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "data_pipeline.bench", "--per-core-worker", str(docs_file),
                           json.dumps(asdict(settings))], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"per-core benchmark failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- what the machine allows: N busy processes vs one (a shared machine may not give N cores) ----

def _burn(iterations: int) -> None:
    total = 0
    for i in range(iterations):
        total += i * i


def measure_cpu_ceiling(workers: int, iterations: int = 2_000_000) -> float:
    """How much more work N busy processes get done than one, right now: the most that any job
    could gain from N workers (about N on an idle machine)."""
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
    (a part keeps its input's suffix, so JSON Lines stay JSON Lines)."""
    from data_pipeline.job import expand_inputs

    inputs = expand_inputs(settings.inputs)
    per_input = max(1, round(settings.parts / len(inputs)))
    paths = []
    for i, path in enumerate(inputs):
        data = Path(path).read_bytes()
        data += b"" if data.endswith(b"\n") else b"\n"  # keeps the repeated copies' lines apart
        target = len(data) * settings.scale / per_input
        pieces, chunk, size = [], [], 0
        for line in (data * settings.scale).splitlines(keepends=True):
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


def _warm_workers(workers: int) -> int:
    """Starts `workers` worker processes at once, each importing what a unit task imports (mosaicml-
    streaming pulls in torch: ~9 s a process), so no timed run pays a start-up. The tasks overlap, so
    each lands on its own process; they carry the job's runtime_env, so the job's tasks reuse them.
    Returns how many distinct processes ran them."""
    import ray

    from data_pipeline.job import _forwarded_env

    @ray.remote(num_cpus=1, runtime_env={"env_vars": _forwarded_env()})
    def warm(seconds: float) -> int:
        import streaming  # noqa: F401

        import data_pipeline.unit  # noqa: F401

        time.sleep(seconds)
        return os.getpid()

    return len(set(ray.get([warm.remote(1.0) for _ in range(workers)])))


def measure_ray_job(parts: list[str], settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    import ray

    from schema import DataConfig
    from data_pipeline.job import run_prepare

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process: the bench starts its own clusters")
    _quiet_logs()
    part_bytes = sum(os.path.getsize(p) for p in parts)
    results: dict[str, Any] = {}
    runs = 0

    def job(inputs: list[str], workers: int) -> tuple[float, float | None]:
        """(seconds, seconds until the last unit finished: the rest is the driver's serial tail)"""
        nonlocal runs
        runs += 1  # a fresh output folder each time: a rerun into the same one resumes (does nothing)
        cfg = DataConfig(inputs=inputs, output=str(workdir / f"job-{runs:03d}"), num_cpus=workers,
                         doc_split=settings.doc_split, max_word_bytes=settings.max_word_bytes,
                         split_digits=settings.split_digits)
        unit_done: list[float] = []
        start = time.perf_counter()
        run_prepare(cfg, on_unit=lambda summary, elapsed: unit_done.append(time.perf_counter() - start))
        return time.perf_counter() - start, max(unit_done, default=None)

    for workers in settings.workers:
        ray.init(num_cpus=workers, object_store_memory=512 * 2**20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False
            warmed = _warm_workers(workers)
            # warm-up on small files too: the Ray Data path (its tasks and the driver's imports) once
            warm_parts = [workdir / f"warm-{workers}-{i}.txt" for i in range(2 * workers)]
            for p in warm_parts:
                p.write_bytes(Path(parts[0]).read_bytes()[:4096] + b"\n")
            job([str(p) for p in warm_parts], workers)
            timed = [job(parts, workers) for _ in range(settings.job_repeats)]
        finally:
            ray.shutdown()
        best, last_unit = min(timed, key=lambda t: t[0])
        results[str(workers)] = {"mb_s": round(part_bytes / 1e6 / best, 3), "seconds": [round(t, 3) for t, _ in timed],
                                 "warmed_processes": warmed,
                                 "serial_tail_s": None if last_unit is None else round(best - last_unit, 3)}
    return {"input_bytes": part_bytes, "files": len(parts), "by_workers": results}


# ---- the run and its report ----

def _end_to_end(settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    from data_pipeline.bench_e2e import measure_end_to_end
    from data_pipeline.job import expand_inputs

    text_file = workdir / "e2e-source.txt"
    text_file.write_bytes(b"".join(Path(p).read_bytes() for p in expand_inputs(settings.inputs)))
    return measure_end_to_end(text_file, settings.doc_split, settings.e2e_scale, settings.job_repeats,
                              settings.bpe_vocab_size, workdir)


def run_bench(settings: BenchSettings, json_path: str | None = None) -> dict[str, Any]:
    load_start, start = os.getloadavg(), time.perf_counter()
    docs = load_documents(settings)
    if not docs:
        raise ValueError("the inputs hold no documents")
    with tempfile.TemporaryDirectory(prefix="wordpool-bench-") as tmp:
        per_core = measure_per_core(docs, settings, Path(tmp))
        e2e = _end_to_end(settings, Path(tmp))  # before this process starts Ray: its clusters linger a while
        ceiling = measure_cpu_ceiling(max(settings.workers))  # just before the Ray runs, under the same load
        job = measure_ray_job(write_parts(settings, Path(tmp)), settings, Path(tmp))
    lo, hi = str(min(settings.workers)), str(max(settings.workers))
    speedup = job["by_workers"][hi]["mb_s"] / job["by_workers"][lo]["mb_s"]
    result = {
        "settings": asdict(settings), "documents": len(docs), "text_bytes": per_core["text_bytes"],
        "per_core_passes": per_core["passes"],
        "segment": per_core["segment"], "hat_splitter": per_core["hat_splitter"],
        "bpe": {**per_core["bpe"], "train_s": per_core["train_s"], "vocab_size": settings.bpe_vocab_size},
        "ray_job": job,
        "end_to_end": e2e,
        "ratios": {"segment_vs_bpe": round(per_core["segment"]["mb_s_per_core"] / per_core["bpe"]["mb_s_per_core"], 3),
                   f"workers_{hi}_vs_{lo}": round(speedup, 3)},
        "targets": {"segment_vs_bpe": TARGET_SEGMENT_VS_BPE, f"workers_{hi}_vs_{lo}": TARGET_SPEEDUP},
        # N busy processes vs one, right now: below the target, the machine (not the job) caps the speed-up
        "machine_ceiling": {f"processes_{hi}_vs_1": ceiling},
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

    console, s, job = Console(), result["settings"], result["ray_job"]
    table = Table(title=f"wordpool bench data: {result['text_bytes'] / 1e6:.2f} MB, {result['documents']:,} documents "
                        f"({s['doc_split']}), max_word_bytes={s['max_word_bytes']}"
                        + (", split_digits" if s["split_digits"] else ""))
    for column in ("measure", "MB/s per core", "MB/s wall", "how"):
        table.add_column(column, justify="right" if column.startswith("MB") else "left")
    for key, label, how in (("segment", "segmentation+encoding", "segment_batch(), as a Ray task"),
                            ("hat_splitter", "  hat-splitter alone", "reference: its engine"),
                            ("bpe", "HF BPE encoding", f"encode_batch, vocab {s['bpe_vocab_size']}, 1 thread")):
        r = result[key]
        table.add_row(label, f"{r['mb_s_per_core']:.2f}", f"{r['mb_s_wall']:.2f}", how)
    for workers, r in job["by_workers"].items():
        tail = "" if r["serial_tail_s"] is None else f"; tail {r['serial_tail_s']:.2f} s"
        table.add_row(f"Ray job, {workers} worker{'s' if workers != '1' else ''}", "", f"{r['mb_s']:.2f}",
                      ", ".join(f"{x:.2f} s" for x in r["seconds"]) + tail)
    e2e = result["end_to_end"]
    for name, label in (("ours", "wordpool prepare, 1 CPU"), ("peer", "peer: HF BPE + MDSWriter")):
        r = e2e[name]
        rate = "n/a" if r["marginal_mb_s"] is None else f"{r['marginal_mb_s']:.2f}"  # noise beat the extra bytes
        table.add_row(f"end to end: {label}", "", rate, f"fixed {r['fixed_s']:.1f} s + bytes / marginal rate; "
                      + ", ".join(f"{t:.1f}" for t in r["seconds"]) + " s")
    console.print(table)
    sizes = " and ".join(f"{b / 1e6:.2f} MB" for b in e2e["input_bytes"])
    console.print(f"end to end: each command as its own process on {sizes}, best of {s['job_repeats']}; "
                  f"fixed cost = the line through both at 0 bytes", markup=False)
    seg, hat, bpe = result["segment"], result["hat_splitter"], result["bpe"]
    console.print(f"per core: MB per CPU-second, best of {result['per_core_passes']} alternating passes (medians "
                  f"{seg['mb_s_per_core_median']:.2f} / {hat['mb_s_per_core_median']:.2f} / "
                  f"{bpe['mb_s_per_core_median']:.2f}); BPE main-thread CPU share {bpe['main_thread_cpu_share']:.2f} "
                  f"(1.00 = single-threaded). Ray job: {job['input_bytes'] / 1e6:.2f} MB (text × {s['scale']}) "
                  f"in {job['files']} files, best run counts; tail = driver time after the last unit.", markup=False)
    (ceiling_key, ceiling), = result["machine_ceiling"].items()
    for key, ratio in result["ratios"].items():
        mark = "[green]PASS[/green]" if result["pass"][key] else "[red]FAIL[/red]"
        note = f" (machine ceiling now: {ceiling:.2f}×)" if key.startswith("workers") else ""
        console.print(f"{key.replace('_', ' ')}: {ratio:.2f}× (target ≥ {result['targets'][key]}×) {mark}{note}")
    load = result["load_average"]
    console.print(f"machine ceiling = {ceiling_key.replace('_', ' ')} busy processes, measured just before the "
                  f"Ray runs; {result['cpu_count']} CPUs; load average {load['start'][0]:.2f} at start, "
                  f"{load['end'][0]:.2f} at end; {result['seconds']:.0f} s in all", markup=False)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--per-core-worker":
    _per_core_worker(sys.argv[2], sys.argv[3])
