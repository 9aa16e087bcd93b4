"""The README's "a new method, complete" example really is one: run as a user's module, it registers a
method, a config block and a piece, and a search with it moves alpha differently from plain DARTS."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import torch
from raynas.config import resolve
from raynas.data import load_dataset
from trials.bilevel import Search
import trials.registry as registry

assert "entdarts" in registry.list_methods()
cfg = resolve({"method": "entdarts", "dataset": "digits", "epochs": 1, "batch_size": 16, "device": "cpu",
               "max_steps_per_epoch": 2, "eval_batches": 1, "model": {"C": 4, "layers": 1},
               "ent": {"weight": 5.0}, "arch": {"lr": 0.1}})
assert [p.__name__ for p in registry.pieces(cfg)] == ["EntropyPenalty"]
data = load_dataset("digits")
alphas = []
for over in ({}, {"method": "darts"}):
    s = Search(resolve({**cfg.to_dict(), **over, "ent": {"weight": 5.0 if not over else 0.0}}), data)
    s.run_epoch()
    alphas.append(s.net.alphas["cell"].detach().clone())
assert not torch.equal(alphas[0], alphas[1])
print("ok")
"""


def test_readme_method_example_runs():
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"A new method, complete.*?```python\n(.*?)```", text, flags=re.S)
    proc = subprocess.run([sys.executable, "-c", code + CHECK], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
