"""Loading `wordpool export --hf` folders with transformers in a process that cannot reach the hub and
must not import wordpool: `python -I` (no cwd, no PYTHONPATH on sys.path; wordpool stays importable
through the editable install, which the script checks, so the sys.modules check means something)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

PROJECT = ("schema", "ops", "data_pipeline", "pretrain", "launcher", "deepspeed")
PROMPT = "The service was"
TEXTS = ["The service was good, and 12345 people came.", "Hi"]

SCRIPT = r"""
import importlib.util, json, sys
import torch
from transformers import AutoModelForCausalLM

project = %(project)r
assert importlib.util.find_spec("pretrain") is not None  # installed: not importing it is the point
results = {}
for name, folder in json.loads(sys.argv[1]).items():
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in project)
    assert not leaked, leaked
    inputs = torch.load(f"{folder}.inputs.pt")
    encoded = model.encode(%(texts)r)
    with torch.no_grad():
        out = {"given": model(**inputs).logits, "encoded": model(**encoded).logits,
               **{f"encoded_{k}": v for k, v in encoded.items()}}
    torch.save(out, f"{folder}.hf_logits.pt")
    results[name] = {"class": type(model).__name__, "greedy": model.generate(%(prompt)r, max_words=3),
                     "sampled": model.generate(%(prompt)r, max_words=2, temperature=0.9, top_k=20, seed=3)}
assert not [m for m in sys.modules if m.split(".")[0] in project]
print(json.dumps(results))
"""


def load_with_transformers(exports: dict[str, Path], inputs: dict[str, dict[str, torch.Tensor]],
                           home: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Run SCRIPT over the exports (inputs[name]: forward's keyword arguments); returns (per export: class
    name and generations, per export: the logits and encodings it computed)."""
    for name, folder in exports.items():
        torch.save(inputs[name], f"{folder}.inputs.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home),
               HF_MODULES_CACHE=str(home / "modules"))
    script = SCRIPT % {"project": PROJECT, "texts": TEXTS, "prompt": PROMPT}
    proc = subprocess.run([sys.executable, "-I", "-c", script, json.dumps({k: str(v) for k, v in exports.items()})],
                          capture_output=True, text=True, env=env, cwd=home.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return results, {name: torch.load(f"{folder}.hf_logits.pt") for name, folder in exports.items()}
