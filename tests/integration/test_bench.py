"""`wordpool bench data` on a 100 KB slice with tiny settings: every figure present and positive.
No timing thresholds: the figures depend on the machine and its load."""
import json
import os
import subprocess
import sys
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ROOT = Path(__file__).resolve().parents[1]


def test_bench_data_reports_every_figure(corpora, tmp_path):
    # its own process: the bench starts (and stops) Ray clusters of 1 and 2 CPUs, which must not
    # collide with the session's shared cluster
    slice_file = tmp_path / "slice.txt"
    slice_file.write_bytes((CORPORA / "tinyshakespeare.txt").read_bytes()[:100_000])
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "launcher.cli", "bench", "data", "--input", str(slice_file), "--json", str(out),
           "--scale", "1", "--repeats", "1", "--job-repeats", "1", "--parts", "2", "--bpe-vocab-size", "300"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["text_bytes"] == 100_000 and result["documents"] > 0
    for name in ("segment", "hat_splitter", "bpe"):
        assert result[name]["mb_s_per_core"] > 0 and result[name]["mb_s_wall"] > 0
    assert result["bpe"]["main_thread_cpu_share"] > 0.9  # BPE ran on the calling thread only
    assert result["ray_job"]["files"] == 2
    assert set(result["ray_job"]["by_workers"]) == {"1", "2"}
    for run in result["ray_job"]["by_workers"].values():
        assert run["mb_s"] > 0 and run["serial_tail_s"] >= 0
    assert set(result["ratios"]) == set(result["targets"]) == set(result["pass"]) == {"segment_vs_bpe", "workers_2_vs_1"}
    assert all(r > 0 for r in result["ratios"].values())
    assert result["machine_ceiling"]["processes_2_vs_1"] > 0
    assert "segment vs bpe" in proc.stdout and "workers 2 vs 1" in proc.stdout


def test_write_parts_cuts_at_lines_and_keeps_every_byte(tmp_path):
    from data_pipeline.bench import BenchSettings, write_parts

    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(b'{"text": "line %d"}\n' % i for i in range(100)))
    (tmp_path / "parts").mkdir()
    parts = write_parts(BenchSettings(inputs=[str(source)], scale=3, parts=4), tmp_path / "parts")
    assert len(parts) == 4 and all(p.endswith(".jsonl") for p in parts)
    pieces = [Path(p).read_bytes() for p in parts]
    assert b"".join(pieces) == source.read_bytes() * 3
    assert all(piece.endswith(b"\n") for piece in pieces)
