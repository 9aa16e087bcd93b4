"""The CLI: bad input is one line and exit 2 before Ray starts; a real search through Ray writes summary.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raynas.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raynas.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, fragment", [
    (["--method", "dartz"], "unknown method 'dartz'; valid: darts, darts2"),
    (["--space", "nb999"], "unknown space 'nb999'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--epochs", "-3"], "epochs must be >= 1"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--set", "optim.lrr=0.1"], "unknown config key optim.lrr (did you mean optim.lr?)"),
    (["--set", "optim.lr=fast"], "optim.lr: expected a number"),
    (["--set", "optim.lr=-1"], "optim.lr must be > 0"),
    (["--set", "train_portion=1.5"], "train_portion must be in (0, 1)"),
    (["--set", "model.C=3.5"], "model.C: expected an integer"),
    (["--set", "collapse_degenerate=stop"], "collapse_degenerate must be warn or fail, got 'stop'"),
    (["--set", "novalue"], "--set expects key=value"),
    (["--data-dir", "/no/such/dir", "--dataset", "cifar10"], "data_dir /no/such/dir does not exist"),
    (["--nb201-table", "/no/such.csv"], "nb201_table /no/such.csv does not exist"),
    (["--epochs", "many"], "invalid int value"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, args, fragment):
    code = main(["search", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert err.count("\n") == 1 and err.startswith("raynas: error: ")
    assert not (tmp_path / "out").exists()  # nothing written, no Ray started


def test_bad_yaml_files(tmp_path, capsys):
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    assert main(["search", "--config", str(not_mapping)]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("epochs: 2\narch:\n  warmup_epoch: 3\n")
    assert main(["search", "--config", str(typo)]) == 2
    assert "arch.warmup_epoch (did you mean arch.warmup_epochs?)" in capsys.readouterr().err


def test_unknown_subcommand_is_one_line(capsys):
    assert main(["serch"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_search_through_ray_writes_summary(tmp_path):
    out = tmp_path / "quick"
    p = run_cli("search", "--space", "nb201", "--method", "darts", "--dataset", "digits", "--epochs", "2",
                "--seed", "0", "--out", str(out), "--cpus", "1", "--set", "model.C=8", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert {"trial_id", "method", "space", "dataset", "seed", "status", "epochs", "genotype", "final",
            "checkpoint"} <= set(trial)
    assert (trial["method"], trial["space"], trial["dataset"], trial["seed"]) == ("darts", "nb201", "digits", 0)
    assert trial["status"] == "completed" and trial["epochs"] == 2
    from search_spaces.nb201 import parse_genotype
    parse_genotype(trial["genotype"])
    assert set(trial["final"]) == {"train_acc", "valid_acc", "nb201"}
    assert 0 <= trial["final"]["valid_acc"] <= 100
    assert Path(trial["checkpoint"], "search.pt").is_file()
    assert trial["genotype"] in p.stdout


def test_missing_dataset_is_one_line_naming_path_and_flag(tmp_path, capsys):
    code = main(["search", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(tmp_path) in err and "--data-dir" in err and "--download" in err
    assert not (tmp_path / "o").exists()


def test_gpus_without_gpu_is_rejected(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["search", "--gpus", "0.5", "--out", str(tmp_path / "o")]) == 2
    assert "no GPU is visible" in capsys.readouterr().err
