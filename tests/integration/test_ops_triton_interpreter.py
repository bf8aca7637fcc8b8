"""The Triton cross-entropy kernel on CPU, through the Triton interpreter, in a fresh process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
INTERPRETER_CHECK = """
import torch, sys
sys.path.insert(0, {tests!r})
from ops_reference import check_cross_entropy
for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
    check_cross_entropy("fast", "cpu", dtype, atol=tol, rtol=tol, n=11)
print("checked")
"""


def test_triton_cross_entropy_in_interpreter():
    # Triton reads TRITON_INTERPRET when triton.language is first imported (its tl.max/tl.sum are
    # themselves jit functions), and torch may import triton earlier in this process: hence a fresh one.
    pytest.importorskip("triton")
    code = INTERPRETER_CHECK.format(tests=str(TESTS))
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("checked")
