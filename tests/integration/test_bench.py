"""`wordpool bench data` on a 100 KB slice of the built-in corpus with tiny settings: every figure present and positive.
No timing thresholds: the figures depend on the machine and its load."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_data_reports_every_figure(english, tmp_path):
    # its own process: the bench starts (and stops) Ray clusters of 1 and 2 CPUs, which must not
    # collide with the session's shared cluster
    slice_file = tmp_path / "slice.txt"
    data = english.prose(150_000).encode()[:100_000]
    slice_file.write_bytes(data[: data.rindex(b"\n") + 1])  # whole lines, whole characters
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "launcher.cli", "bench", "data", "--input", str(slice_file), "--json", str(out),
           "--scale", "1", "--repeats", "1", "--job-repeats", "1", "--parts", "2", "--bpe-vocab-size", "300",
           "--e2e-scale", "4"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=360,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["text_bytes"] == slice_file.stat().st_size > 99_000 and result["documents"] > 0
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
    e2e = result["end_to_end"]
    assert e2e["input_bytes"][1] == 4 * e2e["input_bytes"][0]
    for name in ("ours", "peer"):  # on a noisy machine the fit may fail (None) or the fixed cost come out < 0
        assert (e2e[name]["marginal_mb_s"] or 1) > 0 and min(e2e[name]["seconds"]) > 0
    assert "end to end" in proc.stdout and "peer" in proc.stdout
    assert "segment vs bpe" in proc.stdout and "workers 2 vs 1" in proc.stdout
