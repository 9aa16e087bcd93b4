"""A disk that fills up while trials run: the trial stops once (no retries), the driver ends with one line
naming the full path and exit 2, no half-copied checkpoint or summary is left, and once space is freed
``raynas resume`` finishes the run as if it had never stopped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trials.epochs import EpochRun

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAYNAS_MIN_FREE_MB": "0.5"}
# C=8: a checkpoint of ~0.9 MB, so a 2400 KiB filesystem holds two (checkpoint_keep) but not the third
SEARCH = ["search", "--tracking-uri", "none", "--epochs", "4", "--set", "model.C=8", "--set", "model.layers=1",
          "--set", "max_steps_per_epoch=2", "--set", "eval_batches=1", "--cpus", "1"]


def raynas(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raynas.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=900)


class _Run(EpochRun):
    def __init__(self, n: int):
        super().__init__()
        self.weights, self.device = torch.arange(n, dtype=torch.float32), torch.device("cpu")

    def state_dict(self):
        return {"w": self.weights}

    def load_state_dict(self, state):
        self.weights = state["w"]


def test_checkpoint_save_is_whole_or_not_at_all(tmp_path):
    """``EpochRun.save`` past ``RLIMIT_FSIZE`` (EFBIG, as ENOSPC): an ``OSError`` naming the file (torch's
    own writer says only "file write failed"), the earlier checkpoint intact, no temporary file."""
    path = tmp_path / "run.pt"
    _Run(10).save(path)
    code = ("import resource, sys, torch\n"
            "from tests.test_disk_full import _Run\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
            f"try:\n    _Run(100_000).save({str(path)!r})\n"
            "except OSError as e:\n    print(e.errno, e.filename, file=sys.stderr); sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code], env={**ENV, "PYTHONPATH": str(Path(__file__).parents[1])},
                       capture_output=True, text=True)
    assert p.returncode == 3, p.stderr[-2000:]
    assert p.stderr.split() == ["27", str(path)]  # EFBIG, the checkpoint's own name
    run = _Run(1)
    run.load(path)
    assert torch.equal(run.weights, torch.arange(10, dtype=torch.float32))
    assert [x.name for x in tmp_path.iterdir()] == ["run.pt"]


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A 2400 KiB tmpfs, grown with ``remount`` to free space."""
    return mount_tmpfs("2400k")


@pytest.mark.slow
def test_disk_filling_during_a_search_is_one_line_then_resume_finishes(tmpfs, tmp_path):
    out = tmpfs / "out"
    p = raynas(*SEARCH, "--out", out, cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    trial_dir = next((out / "ray_results" / "search").glob("SearchTrainable_*"))
    err = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr + p.stdout and not [ln for ln in err if "ERROR" in ln], p.stderr[-3000:]
    assert err[-1] == (f"raynas: error: {trial_dir / 'checkpoint_000002'}: is full (No space left on device); the "
                       f"run stopped with nothing half-written kept: free space, then `raynas resume {out}`")
    assert p.stderr.count("raynas: error:") == 1
    assert p.stdout.count("Restored") == 0 and p.stderr.count("Restored") == 0  # no retries
    # the half-copied third checkpoint is gone, the two good ones are whole, no summary claims anything
    assert sorted(c.name for c in trial_dir.glob("checkpoint_*")) == ["checkpoint_000000", "checkpoint_000001"]
    for c in trial_dir.glob("checkpoint_*"):
        torch.load(c / "search.pt", weights_only=True)
    assert not (out / "summary.json").exists()
    for state in (out / "ray_results" / "search").glob("experiment_state-*.json"):
        json.loads(state.read_text())

    subprocess.run(["mount", "-o", "remount,size=16m", "tmpfs", str(tmpfs)], check=True)  # space freed
    r = raynas("resume", out, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    resumed = json.loads((out / "summary.json").read_text())["trials"]
    assert [(t["status"], t["epochs"]) for t in resumed] == [("completed", 4)]

    ref = raynas(*SEARCH, "--out", tmp_path / "ref", cwd=tmp_path)  # the same search never stopped
    assert ref.returncode == 0, ref.stderr[-3000:]
    straight = json.loads((tmp_path / "ref" / "summary.json").read_text())["trials"]
    assert resumed[0]["genotype"] == straight[0]["genotype"]
    assert resumed[0]["final"]["valid_acc"] == straight[0]["final"]["valid_acc"]


def test_truncated_tune_state_is_refused_by_resume_in_one_line(tmp_path):
    """A Tune experiment state cut short (Ray wrote it onto a full disk) is one line from ``resume``."""
    from raynas.cli import main
    from raynas.experiment import load_experiment
    from raynas.outdir import write_json
    import dataclasses

    exp = load_experiment(None, {"name": "cut", "fixed": {"epochs": 1}})
    out = tmp_path / "out"
    state_dir = out / "ray_results" / "cut"
    state_dir.mkdir(parents=True)
    write_json(out / "experiment.json", {"experiment": dataclasses.asdict(exp), "yaml": None, "tracking": None})
    (state_dir / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{\\"a')
    (state_dir / "tuner.pkl").write_bytes(b"")
    before = sorted(p.name for p in out.rglob("*"))
    code = main(["resume", str(out)])
    assert code == 2
    assert sorted(p.name for p in out.rglob("*")) == before
