"""Bad input: one line on stderr naming the problem, exit code 2, no Ray started, nothing written."""

from pathlib import Path

import pytest
import ray

from raynas.cli import main

NB201_OK = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
DARTS_BAD_INPUT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0),"
                   " ('sep_conv_3x3', 4), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0),"
                   " ('dil_conv_3x3', 2)],"
                   " normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2),"
                   " ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2),"
                   " ('max_pool_3x3', 1)], reduce_concat=range(2, 6))")


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "list.yaml").write_text("- not\n- a mapping\n")
    (tmp / "lowhigh.yaml").write_text("tune: {space: {mim.mask_ratio: {type: float, low: 0.8, high: 0.2}}}\n")
    (tmp / "badmethod.yaml").write_text("grid: {method: [darts, nope]}\n")
    (tmp / "pbt.yaml").write_text("scheduler: {type: pbt}\n")
    (tmp / "nsga.yaml").write_text("tune: {sampler: nsga2, space: {epochs: {type: int, low: 1, high: 3}}}\n")
    (tmp / "bad.csv").write_text("arch,cifar10_valid\n" + NB201_OK + ",91.0\n")
    (tmp / "notexp").mkdir(exist_ok=True)
    return {"tmp": str(tmp)}


CASES = [
    (["search", "--method", "dartz"], "unknown method 'dartz'; valid: darts, darts2, pcdarts"),
    (["search", "--space", "nb999"], "unknown space 'nb999'; valid: nb201, darts"),
    (["search", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["search", "--method", "alphadarts", "--set", "mim.mask_ratio=1.5"], "mim.mask_ratio must be in (0, 1)"),
    (["search", "--set", "mim.mask_ratio=0"], "mim.mask_ratio must be in (0, 1)"),
    (["search", "--epochs", "-1"], "epochs must be >= 1"),
    (["search", "--batch-size", "0"], "batch_size must be >= 1"),
    (["search", "--gpus", "64"], "GPUs per trial requested"),
    (["search", "--set", "optim.lrr=0.1"], "did you mean optim.lr?"),
    (["search", "--set", "model.C=3.5"], "model.C: expected an integer"),
    (["search", "--set", "train_portion=1"], "train_portion must be in (0, 1)"),
    (["search", "--set", "arch.order=3"], "arch.order must be 1 or 2"),
    (["search", "--set", "relaxation=gumbel"], "relaxation must be softmax or dirichlet"),
    (["search", "--set", "recompute=sometimes"], "recompute must be auto, always or never"),
    (["search", "--set", "arch.step_order=both"], "arch.step_order must be arch_weight or weight_arch"),
    (["search", "--set", "cutout=-4"], "cutout must be >= 0"),
    (["search", "--set", "cutout_prob=2"], "cutout_prob must be in [0, 1]"),
    (["search", "--set", "pc.k=3"], "pc.k=3 must divide model.C=16"),
    (["search", "--set", "drnas.reg=l3"], "drnas.reg must be l2, kl or none"),
    (["search", "--set", "mim.steps=never"], "mim.steps must be weight, arch or both"),
    (["search", "--set", "collapse_skip=0"], "collapse_skip must be >= 1"),
    (["search", "--set", "model.exclude_ops=[conv_9x9]"], "model.exclude_ops: unknown ops"),
    (["search", "--device", "tpu"], "device must be auto, cpu or cuda"),
    (["search", "--data-dir", "/no/such/dir", "--dataset", "cifar10"], "data_dir /no/such/dir does not exist"),
    (["search", "--dataset", "cifar10", "--data-dir", "{tmp}/notexp"], "--data-dir"),
    (["search", "--config", "{tmp}/missing.yaml"], "config file {tmp}/missing.yaml does not exist"),
    (["search", "--config", "{tmp}/list.yaml"], "the top level must be a mapping"),
    (["search", "--set", "epochs"], "--set expects key=value"),
    (["run", "{tmp}/list.yaml"], "the top level must be a mapping"),
    (["run", "{tmp}/lowhigh.yaml"], "low (0.8) must be <= high (0.2)"),
    (["run", "{tmp}/badmethod.yaml"], "unknown method 'nope'"),
    (["run", "{tmp}/pbt.yaml"], "scheduler.type must be one of fifo, asha, hyperband"),
    (["run", "{tmp}/nsga.yaml"], "needs tune.objectives"),
    (["resume", "{tmp}/notexp"], "is not a raynas experiment directory"),
    (["retrain", "--from", "{tmp}/notexp"], "is not a raynas experiment"),
    (["genotype", "--space", "nb201", "--genotype", "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
     "unknown NB201 op 'conv_9x9'"),
    (["genotype", "--space", "nb201", "--genotype", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"],
     "expected"),
    (["genotype", "--space", "nb201", "--genotype", "|none~0|+|none~0|none~1|"], "needs 3 '+'-separated nodes"),
    (["genotype", "--space", "darts", "--genotype", DARTS_BAD_INPUT], "input"),
    (["genotype", "--space", "s2", "--genotype", DARTS_BAD_INPUT.replace("('sep_conv_3x3', 4)", "('sep_conv_3x3', 2)")],
     "op 'dil_conv_3x3' not allowed on edge 2->5; valid there: skip_connect, sep_conv_3x3"),
    (["bench", "nb201", "query", NB201_OK, "--table", "{tmp}/bad.csv"], "lacks columns cifar10_test"),
    (["bench", "nb201", "query", NB201_OK, "--table", "{tmp}/none.csv"], "does not exist"),
    (["bench", "nb201", "query", "|none~0|+|none~0|", "--table", "{tmp}/bad.csv"], "lacks columns"),
    (["searchh"], "invalid choice"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, fragment):
    subs = _files(tmp_path)
    argv = [a.format(**subs) for a in argv]
    out = tmp_path / "out"
    if argv[0] in ("search", "run", "retrain"):
        argv += ["--out", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("raynas: error: ") and err.count("\n") == 1, err
    assert fragment.format(**subs) in err, err
    assert not ray.is_initialized()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_at_least_thirty_cases():
    assert len(CASES) >= 30
