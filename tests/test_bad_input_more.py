"""Bad input, round two (issue 23): every subcommand and every experiment-file block. Each case ends in
exit code 2 and one stderr line naming the problem, with no traceback, no Ray started and nothing written
(no mlflow.db, no experiment.json, no output directory)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import ray

from raynas.cli import main

NB201_OK = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
HEADER = "arch,cifar10_valid,cifar10_test,cifar100_valid,cifar100_test,imagenet16_valid,imagenet16_test,flops,params\n"
ALL_NB201_OPS = "[none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]"


def _gz_truncated() -> bytes:
    data = gzip.compress((HEADER + f"{NB201_OK},1,2,3,4,5,6,7,8\n" * 300).encode())
    return data[: len(data) // 2]


def _nar_table(rows: int = 40) -> str:
    """An NB-201 table of ``rows`` distinct cells (NAR splits need more than one)."""
    import itertools

    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    lines = [f"|{a}~0|+|{b}~0|{c}~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|,{i % 90},{i % 89},1,2,3,4,{i},"
             f"{i / 10}\n" for i, (a, b, c) in enumerate(itertools.islice(itertools.product(ops, repeat=3), rows))]
    return HEADER + "".join(lines)


def _state(experiment: object) -> str:
    return json.dumps({"experiment": experiment, "yaml": None, "tracking": None})


#: files each case may name as {tmp}/NAME; a directory when the content is None
FILES: dict[str, str | bytes | None] = {
    "nar.csv": _nar_table(),
    "table.csv": HEADER + f"{NB201_OK},91.0,90.0,70.0,69.0,44.0,43.0,80.0,0.8\n",
    "trunc.csv.gz": _gz_truncated(),
    "notnum.csv": HEADER + f"{NB201_OK},high,90.0,70.0,69.0,44.0,43.0,80.0,0.8\n",
    "binary.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",
    "cut/experiment.json": '{"experiment": {"name": "x", "gri',
    "list/experiment.json": "[1, 2]",
    "badkeys/experiment.json": _state({"name": "x", "gridd": {}}),
    "badkeys/ray_results": None,
    "cutsum/summary.json": '{"experiment": "x", "trials": [{"genotype": ',
    "nosum/summary.json": json.dumps({"experiment": "x", "trials": []}),
    "pending/mlflow_pending/t1/runs.json": "{not json",
    "pending/mlflow_pending/t1/.lock": "",
    "pending/mlflow_pending/t1/pending.jsonl": '{"id": "1", "kind": "log_batch"}\n',
    "empty": None,
    "gen.txt": b"\xff\xfe\x00garbage",
    "c10/cifar-10-batches-py/data_batch_1": b"\x80\x04\x95garbage",
    "f1/train/airplane/0.png": b"not a png",  # a data-folder layout with one class of ten
    "f1/test/airplane/0.png": b"not a png",
    **{f"f10/{split}/class{c}/0.png": b"not a png" for split in ("train", "test") for c in range(10)},
    "fm/train-images-idx3-ubyte.gz": gzip.compress(b"\x00\x00\x08\x03" + bytes(4000))[:30],
    "fm/train-labels-idx1-ubyte.gz": gzip.compress(b"\x00\x00\x08\x01" + bytes(100)),
    "fm/t10k-images-idx3-ubyte.gz": gzip.compress(b"\x00\x00\x08\x03" + bytes(100)),
    "fm/t10k-labels-idx1-ubyte.gz": gzip.compress(b"\x00\x00\x08\x01" + bytes(100)),
}


def exp_file(text: str) -> tuple[str, str]:
    return ("exp.yaml", text)


def _nar_exp(space: str) -> tuple[str, str]:
    """A NAR experiment file (``raynas rank tune``) tuning ``space``, on the one-row table of ``FILES``."""
    return exp_file("name: n\nfixed: {table: '{tmp}/nar.csv', epochs: 1, train_size: 10, val_size: 10}\n"
                    f"tune: {{metric: val_kendall_tau, space: {{{space}}}}}\n")


def _retrain_study(rest: str) -> tuple[str, str]:
    """A retrain study on digits (20% of the train split held out) with ``rest`` on top."""
    return exp_file("name: r\nretrain: {dataset: digits, holdout: 0.2, epochs: 1}\n" + rest)


# (argv, extra file (name, text) or None, fragment of the one error line)
CASES: list[tuple[list[str], tuple[str, str] | None, str]] = [
    # ---- experiment file: structure of every block
    (["run", "{tmp}/exp.yaml"], exp_file("grid: [darts, drnas]\n"), "grid: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("grid: {method: darts}\n"), "grid.method: expected a list"),
    (["run", "{tmp}/exp.yaml"], exp_file("grid: {seed: [zero]}\n"), "grid.seed[0]: expected an integer"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: [1, 2]\n"), "fixed: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {optim: 0.1}\n"), "optim: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("sweep: {optim.lr: 0.1}\n"), "sweep.optim.lr: expected a list"),
    (["run", "{tmp}/exp.yaml"], exp_file("sweep: [optim.lr]\n"), "sweep: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("sweep: {optim.lr: [0.1, -1]}\n"), "optim.lr must be > 0"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: [valid_acc]\n"), "tune: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: [optim.lr]}\n"), "tune.space: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {optim.lr: 0.1}}\n"),
     "tune.space.optim.lr: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {objectives: valid_acc:max, space: {epochs: {type: int, low: 1, "
                                         "high: 2}}}\n"), "tune.objectives: expected a list"),
    (["run", "{tmp}/exp.yaml"], exp_file("resources: [1, 0]\n"), "resources: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("scheduler: asha\n"), "scheduler: expected a mapping"),
    (["run", "{tmp}/exp.yaml"], exp_file("name: [a]\n"), "name: expected a string"),
    (["run", "{tmp}/exp.yaml"], exp_file("max_failures: lots\n"), "max_failures: expected an integer"),
    (["run", "{tmp}/exp.yaml"], exp_file("tracking_uri: 5\n"), "tracking_uri: expected a string"),
    (["run", "{tmp}/binary.yaml"], None, "binary.yaml: not a UTF-8 text file"),
    (["run", "{tmp}/empty"], None, "is a directory"),
    # ---- experiment file: values Ray / Tune / Optuna would reject later
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {optim.lr: {type: float, low: 1e-3, high: 1e-4}}}\n"),
     "low (0.001) must be <= high (0.0001)"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {optim.lr: {type: float, low: 1e-3x, high: 0.1}}}\n"),
     "low: not a number ('1e-3x')"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {train_portion: {type: float, low: 0.2, high: 1.5}}}\n"),
     "train_portion must be in (0, 1), got 1.5"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {optim.lr: {type: float, low: -0.1, high: 0.3}}}\n"),
     "optim.lr must be > 0, got -0.1"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {arch.order: {type: categorical, choices: [1, 3]}}}\n"),
     "arch.order must be 1 or 2, got 3"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {space: {epochs: {type: int, low: 1.5, high: 3}}}\n"),
     "tune.space.epochs: int needs integer low and high"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {metric: val_acc, space: {epochs: {type: int, low: 1, high: 2}}}\n"),
     "no trial reports objective 'val_acc'"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {sampler: nsga2, objectives: [valid_acc:max, latency:min], "
                                         "space: {epochs: {type: int, low: 1, high: 2}}}\n"),
     "no trial reports objective 'latency'"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {storage: 'nosuchdb://x/y', space: {epochs: {type: int, low: 1, "
                                         "high: 2}}}\n"), "tune.storage 'nosuchdb://x/y'"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {storage: 'sqlite:////no/such/dir/o.db', space: {epochs: {type: int,"
                                         " low: 1, high: 2}}}\n"), "tune.storage"),
    (["run", "{tmp}/exp.yaml"], exp_file("scheduler: {type: asha, grace_period: 0}\n"),
     "scheduler.grace_period must be >= 1"),
    (["run", "{tmp}/exp.yaml"], exp_file("scheduler: {type: asha, reduction_factor: 1}\n"),
     "scheduler.reduction_factor must be >= 2"),
    (["run", "{tmp}/exp.yaml"], exp_file("tune: {num_samples: 0, space: {epochs: {type: int, low: 1, high: 2}}}\n"),
     "tune.num_samples and tune.max_concurrent_trials must be >= 1"),
    (["run", "{tmp}/exp.yaml"], exp_file("checkpoint_keep: 0\n"), "checkpoint_keep must be >= 1"),
    (["run", "{tmp}/exp.yaml"], exp_file("max_failures: -2\n"), "max_failures must be >= -1"),
    (["run", "{tmp}/exp.yaml"], exp_file("max_concurrent_trials: -1\n"), "max_concurrent_trials must be >= 0"),
    (["run", "{tmp}/exp.yaml"], exp_file("resources: {cpu: 100000}\n"), "--cpus 100000.0 per trial (resources.cpu)"),
    (["run", "{tmp}/exp.yaml"], exp_file("storage_path: 'nosuchfs://bucket/x'\n"), "storage_path 'nosuchfs://bucket/x'"),
    (["run", "{tmp}/exp.yaml"], exp_file("tracking_uri: 'ftp://host/x'\n"), "tracking URI 'ftp://host/x'"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {device: 'cuda:7'}\n"), "device cuda:7"),
    (["run", "{tmp}/exp.yaml"], exp_file(f"fixed: {{model: {{exclude_ops: {ALL_NB201_OPS}}}}}\n"),
     "model.exclude_ops leaves no op"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {model: {exclude_ops: [skip_connect, nor_conv_1x1, nor_conv_3x3, "
                                         "avg_pool_3x3]}}\n"), "model.exclude_ops leaves no trainable op"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {model: {C: 1000000, layers: 1000}}\n"), "too large"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {batch_size: 100000000}\n"), "batch_size"),
    (["run", "{tmp}/exp.yaml"], exp_file("fixed: {nb201_table: '{tmp}/trunc.csv.gz'}\n"), "trunc.csv.gz"),
    # ---- retrain studies (a retrain: block): the cell next to training hyperparameters
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {searcher: rea, space: {cell: {type: nb201_cell}, "
                                               "lr: {type: float, low: 0.01, high: 0.1}}}\n"),
     "tune.searcher rea searches the cell alone; with hyperparameters in tune.space (lr) use tpe or random"),
    (["run", "{tmp}/exp.yaml"], exp_file("retrain: {dataset: digits, holdout: 0}\n"),
     "retrain.holdout must be in (0, 1), got 0"),
    (["run", "{tmp}/exp.yaml"], exp_file("retrain: {dataset: digits, holdout: 0.2, lrr: 0.1}\n"),
     "retrain: unknown config key lrr"),
    (["run", "{tmp}/exp.yaml"], exp_file("retrain: {dataset: mnist, holdout: 0.2}\n"), "retrain: unknown dataset"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {space: {cell: {type: nb201_cell}, lr: {type: float, "
                                               "low: -0.1, high: 0.3}}}\n"), "tune.space.lr = -0.1: lr must be > 0"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {space: {cell: {type: nb201_cell}, holdout: {type: float, "
                                               "low: 0.1, high: 0.3}}}\n"), "tune.space.holdout: the study fixes"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {metric: test_acc}\n"),
     "tune.metric must be holdout_acc or holdout_loss"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {space: {lr: {type: float, low: 0.01, high: 0.1}}}\n"),
     "tune.space needs exactly one entry {type: nb201_cell}"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("tune: {space: {cell: {type: nb101_cell}}}\n"),
     "tune.space.cell: nb101_cell is an encoding for NB-101 tables"),
    (["run", "{tmp}/exp.yaml"], _retrain_study("nb201_table: '{tmp}/missing.csv'\n"), "missing.csv does not exist"),
    (["bench", "nb201", "simulate", "{tmp}/exp.yaml"], _retrain_study(""), "exp.yaml is a retrain study"),
    # ---- dataset files: truncated or corrupted, found before Ray starts (not in every trial attempt)
    (["search", "--dataset", "cifar10", "--data-dir", "{tmp}/c10"], None, "data_batch_1"),
    (["search", "--dataset", "cifar10", "--data-dir", "{tmp}/f1"], None, "has 1 class folders, expected 10"),
    (["search", "--dataset", "cifar10", "--data-dir", "{tmp}/f10"], None, "cannot decode"),
    (["search", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/fm"], None, "train-images-idx3-ubyte.gz"),
    (["run", "{tmp}/exp.yaml"], exp_file("grid: {dataset: [digits, cifar10]}\nfixed: {data_dir: '{tmp}/c10'}\n"),
     "data_batch_1"),
    # ---- search flags
    (["search", "--cpus", "100000"], None, "--cpus 100000.0"),
    (["search", "--device", "cuda:3"], None, "device cuda:3"),
    (["search", "--seed", "-1"], None, "seed must be >= 0"),
    (["search", "--config", "{tmp}/binary.yaml"], None, "binary.yaml: not a UTF-8 text file"),
    (["search", "--nb201-table", "{tmp}/trunc.csv.gz"], None, "trunc.csv.gz"),
    (["search", "--nb201-table", "{tmp}/notnum.csv"], None, "column cifar10_valid is not numeric"),
    (["search", "--tracking-uri", "ftp://host/x"], None, "tracking URI 'ftp://host/x'"),
    (["search", "--tracking-uri", "http://127.0.0.1:9"], None, "is unreachable"),
    (["search", "--set", "model.exclude_ops=[none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]"], None,
     "model.exclude_ops leaves no op"),
    (["search", "--name", "../../x"], None, "name must be 1-100 letters"),
    (["search", "--out", "{tmp}/table.csv"], None, "is a file, not a directory"),
    # ---- resume
    (["resume", "{tmp}/cut"], None, "experiment.json is truncated or not JSON"),
    (["resume", "{tmp}/list"], None, "does not hold a raynas experiment"),
    (["resume", "{tmp}/badkeys"], None, "unknown config key gridd"),
    (["resume", "{tmp}/nosuch"], None, "is not a raynas experiment directory"),
    # ---- retrain
    (["retrain", "--from", "{tmp}/cutsum"], None, "summary.json is not valid JSON"),
    (["retrain", "--from", "{tmp}/nosum"], None, "holds no finished trial"),
    (["retrain", "--genotype", NB201_OK], None, "--space"),
    (["retrain", "--genotype", "{tmp}/gen.txt", "--space", "darts"], None, "gen.txt"),
    (["retrain", "--genotype", NB201_OK, "--space", "nb201", "--seeds", "a,b"], None, "--seeds"),
    (["retrain", "--genotype", NB201_OK, "--space", "nb201", "--set", "drop_path_prob=2"], None, "drop_path_prob"),
    (["retrain", "--genotype", NB201_OK, "--space", "nb201", "--epochs", "0"], None, "epochs must be >= 1"),
    (["retrain", "--genotype", NB201_OK, "--space", "nb201", "--dataset", "digits", "--device", "cuda:5"], None,
     "device cuda:5"),
    (["retrain", "--genotype", NB201_OK, "--space", "nb201", "--dataset", "digits", "--tracking-uri", "ftp://h/x"],
     None, "ftp://h/x"),
    # ---- compare, sync, report
    (["compare", "--experiment", "nosuch"], None, "no tracking store"),
    (["compare", "--experiment", "nosuch", "--tracking-uri", "sqlite:///{tmp}/missing.db"], None, "no tracking store"),
    (["sync", "{tmp}/pending"], None, "runs.json is truncated or not JSON"),
    (["sync", "{tmp}/empty"], None, "nothing to sync"),
    (["report", "{tmp}/cutsum"], None, "summary.json is truncated or not JSON"),
    (["study", "{tmp}/cut"], None, "experiment.json is truncated or not JSON"),
    (["study", "{tmp}/list"], None, "not a raynas experiment state"),
    (["report", "{tmp}/nosuch"], None, "nosuch"),
    (["report", "{tmp}/nosum", "--format", "pdf"], None, "pdf"),
    # ---- bench, genotype, rank, server, methods
    (["bench", "nb201", "query", NB201_OK, "--table", "{tmp}/trunc.csv.gz"], None, "trunc.csv.gz"),
    (["bench", "nb201", "query", NB201_OK, "--table", "{tmp}/notnum.csv"], None, "is not numeric"),
    (["genotype", "--space", "nb201", "--genotype", "{tmp}/gen.txt"], None, "gen.txt"),
    (["genotype", "--space", "nb201", "--genotype", NB201_OK, "--channels", "0"], None, "--channels"),
    (["genotype", "--space", "nb201", "--genotype", NB201_OK, "--layers", "-1"], None, "--layers"),
    (["genotype", "--space", "nb201", "--genotype", NB201_OK, "--plot", "{tmp}/cell.pdf"], None, "--plot"),
    (["rank", "--table", "{tmp}/trunc.csv.gz"], None, "trunc.csv.gz"),
    (["rank", "--table", "{tmp}/table.csv", "--train-frac", "2"], None, "train"),
    (["rank", "--table", "{tmp}/table.csv", "--seeds", "x"], None, "--seeds"),
    (["rank", "tune"], None, "experiment"),
    # ---- NAR experiment files: every categorical choice and both ends of every tuned range, not one sample
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("dropout: {type: float, low: 0.0, high: 1.5}"),
     "tune.space.dropout = 1.5: dropout must be in [0, 1)"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("weight_decay: {type: float, low: -1.0e-4, high: 5.0e-2}"),
     "tune.space.weight_decay = -0.0001: eps must be > 0 and weight_decay >= 0"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("batch_size: {type: int, low: 1, high: 64}"),
     "tune.space.batch_size = 1: batch_size must be >= 2"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("n_head: {type: categorical, choices: [4, 3]}"),
     "tune.space.n_head = 3: d_model (128) must be divisible by n_head (3)"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("dataset: {type: categorical, choices: [cifar10, svhn]}"),
     "tune.space.dataset = 'svhn': dataset must be cifar10, cifar100 or imagenet16"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("last_tier: {type: int, low: 2, high: 9}"),
     "tune.space.last_tier = 6 (its mid value): last_tier must be in (1, n_tier]"),
    (["rank", "tune", "{tmp}/exp.yaml"], _nar_exp("train_size: {type: int, low: 10, high: 30}"),
     "tune.space.train_size = 30: 30 training + 10 validation architectures leave no held-out ones in a table of 40"),
    (["rank", "tune", "{tmp}/exp.yaml"],
     exp_file("name: n\nfixed: {table: '{tmp}/nar.csv'}\nscheduler: {type: hyperband}\n"),
     "scheduler.type must be fifo or asha for NAR experiments"),
    (["rank", "tune", "{tmp}/exp.yaml"], exp_file("name: n\nfixed: {table: '{tmp}/table.csv', epochs: 1}\n"),
     "1000 training + 256 validation architectures leave no held-out ones in a table of 1"),
    (["server", "--port", "0"], None, "--port must be in 1..65535"),
    (["server", "--backend-store", "{tmp}/no/such/dir/srv.db"], None, "is not a writable directory"),
    (["methods", "--bogus"], None, "unrecognized arguments"),
]


def _setup(tmp: Path, extra: tuple[str, str] | None) -> None:
    for name, content in FILES.items():
        p = tmp / name
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    if extra:
        (tmp / extra[0]).write_text(extra[1].replace("{tmp}", str(tmp)))


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("argv, extra, fragment", CASES,
                         ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, argv, extra, fragment):
    work = tmp_path / "work"
    work.mkdir()
    _setup(tmp_path, extra)
    monkeypatch.chdir(work)  # commands that default to ./mlflow.db or runs/ write here if they write at all
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # a file's own URI wins
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("search", "run", "retrain") and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("raynas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert not ray.is_initialized()
    assert _snapshot(tmp_path) == before  # nothing written: no out dir, no mlflow.db, no experiment.json


def test_at_least_sixty_cases():
    assert len(CASES) >= 60
