"""`wordpool bench data`, end to end: what a user waits for, as a fixed cost plus a marginal rate.

Each command runs as its own process, as a user runs it, on the text once and on the text repeated
`e2e_scale` times (one file each); a line through the two (best of `job_repeats` runs each) gives the
fixed cost (seconds at 0 bytes: process start, imports, Ray start-up, the driver's tail) and the
marginal rate (MB/s of each further byte). Two commands:
  - ours: `wordpool prepare --input FILE --output DIR data.num_cpus=1` (words, a local Ray cluster);
  - the peer: a plain script (below): Hugging Face `tokenizers` byte-level BPE trained on the file,
    every paragraph encoded, tokens packed into samples and written with mosaicml-streaming's
    MDSWriter (zstd), in one process, `tokenizers` pinned to one thread like our one worker.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> float:
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed:\n{proc.stderr[-3000:]}")
    return seconds


def _fit(sizes: list[int], seconds: list[float]) -> dict[str, Any]:
    """The line through (bytes, seconds) of both runs. When the bigger input did not take longer (a shared
    machine's noise outweighed the extra work), the marginal rate is unknown (None): take a bigger scale."""
    (b1, b2), (t1, t2) = sizes, seconds
    fit: dict[str, Any] = {"fixed_s": round(t1, 3), "marginal_mb_s": None, "seconds": [round(t1, 3), round(t2, 3)]}
    if t2 > t1:
        per_byte = (t2 - t1) / (b2 - b1)
        fit.update(fixed_s=round(t1 - b1 * per_byte, 3), marginal_mb_s=round(1e-6 / per_byte, 3))
    return fit


def measure_end_to_end(text_file: Path, doc_split: str, e2e_scale: int, repeats: int, vocab_size: int,
                       workdir: Path) -> dict[str, Any]:
    data = text_file.read_bytes()
    data += b"" if data.endswith(b"\n") else b"\n"
    inputs = []
    for scale in (1, e2e_scale):
        path = workdir / f"e2e-x{scale}.txt"
        path.write_bytes(data * scale)
        inputs.append(path)
    commands = {
        "ours": lambda src, out: [sys.executable, "-m", "launcher.cli", "prepare", "--input", str(src), "--output",
                                  str(out), "data.num_cpus=1", f"data.doc_split={doc_split}"],
        "peer": lambda src, out: [sys.executable, "-m", "data_pipeline.bench_e2e", "--peer", str(src), str(out),
                                  str(vocab_size)],
    }
    sizes = [p.stat().st_size for p in inputs]
    result: dict[str, Any] = {"input_bytes": sizes}
    runs = 0
    for name, command in commands.items():
        best = []
        for src in inputs:
            times = []
            for _ in range(repeats):
                runs += 1
                times.append(_run(command(src, workdir / f"e2e-out-{runs:03d}")))
            best.append(min(times))
        result[name] = _fit(sizes, best)
    return result


# ---- the peer: a plain BPE + MDSWriter script ----

def peer_script(src: str, out: str, vocab_size: int, tokens_per_sample: int = 1024) -> None:
    import numpy as np
    from streaming import MDSWriter
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = Path(src).read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|eod|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(docs, trainer)
    eod = tokenizer.token_to_id("<|eod|>")
    ids = np.concatenate([np.append(np.asarray(e.ids, np.uint32), np.uint32(eod))
                          for e in tokenizer.encode_batch(docs)])
    with MDSWriter(out=out, columns={"tokens": "ndarray:uint32"}, compression="zstd") as writer:
        for start in range(0, len(ids), tokens_per_sample):
            writer.write({"tokens": ids[start:start + tokens_per_sample]})


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--peer":
    peer_script(sys.argv[2], sys.argv[3], int(sys.argv[4]))
