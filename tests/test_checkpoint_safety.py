"""No checkpoint executes code: every run's loader (search, retraining, NAR) reads with weights_only=True.

A crafted ``.pt`` whose pickle calls a function on load is refused with a one-line error naming the
file, and the function never runs (issue 23: NAR checkpoints used ``weights_only=False``).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from raynas.config import resolve
from raynas.data import load_dataset
from raynas.nar.data import load_bench
from raynas.nar.train import NARRun, resolve_nar
from trials.bilevel import Search
from trials.retrain import Retrain, resolve_retrain


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file in torch's zip format whose data.pkl runs the payload under a plain ``torch.load``."""
    torch.save({"epoch": 0}, path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        entries = {n: z.read(n) for n in names}
    data = next(n for n in names if n.endswith("data.pkl"))
    entries[data] = pickle.dumps({"epoch": _Payload(marker)}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for n in names:
            z.writestr(n, entries[n])
    return path


def test_the_crafted_file_really_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "ran"
    torch.load(malicious_checkpoint(tmp_path / "x.pt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of a live payload


def _runs(tmp_path: Path) -> dict[str, object]:
    digits = load_dataset("digits")
    search = Search(resolve({"dataset": "digits", "device": "cpu", "epochs": 1, "model": {"C": 4, "layers": 1}}),
                    digits)
    retrain = Retrain(resolve_retrain({"space": "nb201", "dataset": "digits", "device": "cpu", "epochs": 1,
                                       "channels": 4, "layers": 1,
                                       "genotype": "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|"
                                                   "skip_connect~2|"}), digits)
    table = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201.csv.gz"
    if not table.is_file():
        pytest.skip(f"shared NB201 table not present at {table}")
    bench = load_bench("nb201", str(table), "cifar10", True)
    nar = NARRun(resolve_nar({"table": str(table), "train_size": 64, "val_size": 16, "epochs": 1}), bench)
    return {"search": search, "retrain": retrain, "nar": nar}


def test_every_run_refuses_a_checkpoint_that_runs_code(tmp_path):
    for kind, run in _runs(tmp_path).items():
        marker = tmp_path / f"ran_{kind}"
        path = malicious_checkpoint(tmp_path / f"{kind}.pt", marker)
        with pytest.raises(RuntimeError, match=f"cannot read checkpoint {path}"):
            run.load(path)
        assert not marker.exists(), f"{kind}: the checkpoint's code ran"
