"""`wordpool bench train`: training throughput of the word-pooled model against its byte and BPE
baselines on the same backbone and the same text, in one process, through the trainer's own DeepSpeed
engine (`pretrain.training.trainer.build_engine`, one rank).

Each model sees backbone sequences of the same length (words per sample = tokens per sample), as a
GPT with a 1024-token context is compared with a word model of 1024 words. Batches are read before
the clock starts (this measures the model, not the loader); the first `warmup` steps are not timed.
Figures per model: text bytes/s, words/s (the splitter's words of the text trained on), tokens/s
(backbone positions: words or tokens), step time, peak memory, model FLOP/s (pretrain.models.flops: useful
FLOPs, padding excluded) and MFU when a peak is given, plus the ratios word-pooled / BPE and / bytes.
Word-pooled variants: `word_pooled` runs the config's model.layout (packed by default);
`word_pooled_packed` and `word_pooled_padded` force a layout, and the speed-up of each layout
over padded is printed under its name (e.g. packed/padded).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from schema import TOKENIZER_OF, WordpoolConfig, validate

MODELS = ("word_pooled", "word_pooled_packed", "word_pooled_padded", "bpe", "bytes")
# word-pooled variants that force a layout (word_pooled itself runs the config's, packed by default)
FORCED_LAYOUT = {"word_pooled_packed": "packed", "word_pooled_padded": "padded"}


def kind_of(model: str) -> str:
    """The model.kind of a bench model (the word-pooled variants differ in layout only)."""
    return "word_pooled" if model.startswith("word_pooled") else model


def tokenizer_of(model: str) -> str:
    return TOKENIZER_OF[kind_of(model)]


@dataclass
class Row:
    model: str
    params: int
    step_s: float
    text_bytes_per_s: float
    words_per_s: float
    tokens_per_s: float
    peak_memory_mb: float
    flops_per_s: float
    mfu: float | None


def prepare_data(cfg: WordpoolConfig, inputs: list[str], work_dir: Path) -> dict[str, Path]:
    """The three tokenizations of `inputs` (a rerun with the same settings reuses them)."""
    from data_pipeline.job import prepare_or_replace

    folders = {}
    for tokenizer in ("words", "bytes", "bpe"):
        prepare_or_replace(data_section(cfg, tokenizer, work_dir / tokenizer, inputs=inputs))
        folders[tokenizer] = work_dir / tokenizer
    return folders


def data_section(cfg: WordpoolConfig, tokenizer: str, folder: Path, **update):
    """cfg.data for one tokenization in `folder`: as many tokens per sample as the word model has words."""
    return cfg.data.model_copy(update={**update, "output": str(folder), "tokenizer": tokenizer,
                                       "tokens_per_sample": cfg.data.words_per_sample})


def model_config(cfg: WordpoolConfig, model: str, data_dir: Path) -> WordpoolConfig:
    """cfg for one bench model on its tokenization in data_dir (model.max_word_bytes / max_words derived again)."""
    from pretrain.training.preflight import check_shards

    kind = kind_of(model)
    model_section = {**cfg.model.model_dump(exclude={"max_word_bytes", "max_words"}), "kind": kind,
                     "layout": FORCED_LAYOUT.get(model, cfg.model.layout)}
    raw = {**cfg.model_dump(), "data": data_section(cfg, TOKENIZER_OF[kind], data_dir).model_dump(),
           "model": model_section}
    return check_shards(validate(raw, f"bench train / {model}"))[0]


def read_batches(data_dir: Path, cfg: WordpoolConfig, n: int) -> list[dict[str, torch.Tensor]]:
    """n micro-batches of the training split, samples in order (wrapping around)."""
    import itertools

    from data_pipeline.reader import iter_samples
    from pretrain.training.loader import collate, sample_encoder

    encode = sample_encoder(data_dir, cfg.model.max_word_bytes)
    mb = cfg.train.micro_batch_size
    raw = list(itertools.islice(iter_samples(data_dir / "train"), n * mb))
    if not raw:
        raise ValueError(f"{data_dir}/train holds no samples")
    samples = [encode(raw[i % len(raw)]) for i in range(n * mb)]
    return [collate(samples[i * mb:(i + 1) * mb]) for i in range(n)]


def _text_words(batch) -> int:
    if "text_bytes" in batch:
        return int((batch["text_bytes"][:, 1:] > 0).sum())
    return 0  # token models: counted from the text below


def _peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def measure(cfg: WordpoolConfig, model: str, data_dir: Path, steps: int, warmup: int,
            peak_flops: float | None, bytes_per_word: float) -> Row:
    from pretrain.evaluation.validation import to_device
    from pretrain.training.distributed import uses_bf16
    from pretrain.training.trainer import build_engine

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    bf16 = uses_bf16(cfg.train.precision, on_gpu)
    torch.manual_seed(cfg.train.seed)
    engine = build_engine(cfg, 1, bf16)
    accum = cfg.train.grad_accum
    batches = read_batches(data_dir, cfg, (warmup + steps) * accum)
    flops = text_bytes = positions = words = 0.0
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            if on_gpu:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        for i in range(accum):
            batch = batches[step * accum + i]
            out = engine(**to_device(batch, device))
            engine.backward(out["loss"])
            engine.step()
            if step >= warmup:
                flops += engine.module.train_flops(**batch)
                text_bytes += float(out["n_text_bytes"])
                positions += float(out["n_symbols"]) if model in ("bpe", "bytes") else _text_words(batch)
                words += _text_words(batch)
    if on_gpu:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if not words:  # token models: the same text holds the same words (bytes_per_word from the words shards)
        words = text_bytes / bytes_per_word
    row = Row(model=model, params=sum(p.numel() for p in engine.module.parameters()), step_s=seconds / steps,
              text_bytes_per_s=text_bytes / seconds, words_per_s=words / seconds, tokens_per_s=positions / seconds,
              peak_memory_mb=_peak_memory_mb(device), flops_per_s=flops / seconds,
              mfu=flops / seconds / peak_flops if peak_flops else None)
    if hasattr(engine, "destroy"):
        engine.destroy()
    return row


def run_bench(cfg: WordpoolConfig, inputs: list[str], work_dir: Path, steps: int, warmup: int,
              models: list[str], peak_flops: float | None = None) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    from data_pipeline.shard_format import read_stats
    from pretrain.training.distributed import init_single_rank

    folders = prepare_data(cfg, inputs, work_dir)
    bytes_per_word = read_stats(folders["words"])["bytes_per_word"]
    init_single_rank()
    rows = []
    # the first engine of a process pays one-time costs (thread pools, allocator growth, lazy imports):
    # a short pass of the first model is run and discarded so the first row is not penalized
    first = model_config(cfg, models[0], folders[tokenizer_of(models[0])])
    measure(first, models[0], folders[tokenizer_of(models[0])], 2, 2, peak_flops, bytes_per_word)
    for model in models:
        run_cfg = model_config(cfg, model, folders[tokenizer_of(model)])
        rows.append(measure(run_cfg, model, folders[tokenizer_of(model)], steps, warmup, peak_flops, bytes_per_word))
        print(f"  {model}: {rows[-1].text_bytes_per_s:,.0f} text bytes/s", flush=True)
    by_name = {r.model: r for r in rows}
    ratios = {}
    for base in ("bpe", "bytes"):
        if "word_pooled" in by_name and base in by_name:
            ratios[f"word_pooled/{base}"] = by_name["word_pooled"].text_bytes_per_s / by_name[base].text_bytes_per_s
    # layout speed-ups, named by the layout each model actually ran (word_pooled: the config's)
    layouts = {"word_pooled": cfg.model.layout,
               "word_pooled_packed": "packed"}
    padded = by_name.get("word_pooled_padded")
    for model, layout in layouts.items():
        if model in by_name and padded and layout != "padded":
            ratios[f"{layout}/padded"] = by_name[model].text_bytes_per_s / padded.text_bytes_per_s
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return {"device": device, "steps": steps, "warmup": warmup, "threads": torch.get_num_threads(),
            "rows": [asdict(r) for r in rows], "ratios": ratios}


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"wordpool bench train — {result['device']}, {result['steps']} timed steps "
                        f"after {result['warmup']} warm-up")
    for col in ("model", "params", "step s", "text B/s", "words/s", "tokens/s", "peak MB", "GFLOP/s", "MFU"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in result["rows"]:
        table.add_row(r["model"], f"{r['params']:,}", f"{r['step_s']:.3f}", f"{r['text_bytes_per_s']:,.0f}",
                      f"{r['words_per_s']:,.0f}", f"{r['tokens_per_s']:,.0f}", f"{r['peak_memory_mb']:,.0f}",
                      f"{r['flops_per_s'] / 1e9:,.2f}", "-" if r["mfu"] is None else f"{r['mfu']:.1%}")
    console = Console(width=max(120, Console().width))
    console.print(table)
    for name, value in result["ratios"].items():
        console.print(f"{name} text bytes/s: {value:.2f}x")
