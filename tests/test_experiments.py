"""Experiment files: validation before Ray, the grid, the Optuna space, the shipped files."""

from pathlib import Path

import pytest
from ray import tune

from raynas.cli import main
from raynas.config import ConfigError
from raynas.experiment import load_experiment, param_space, trial_overrides

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["quickstart", "nb201_all_methods", "robustness_s1_s4", "tune_alphadarts",
                                  "tune_darts_regularisation", "tune_darts_regularisation_nb201"])
def test_shipped_experiments_validate_and_smoke_override(name, tmp_path):
    over = {"dataset": "digits", "epochs": 2}
    if "nb201_table" in (ROOT / "experiments" / f"{name}.yaml").read_text():  # files that need the table
        from raynas.tables.nb201 import COLUMNS
        table = tmp_path / "nb201.csv"
        table.write_text(",".join(COLUMNS) + "\n")
        over["nb201_table"] = str(table)
    exp = load_experiment(ROOT / "experiments" / f"{name}.yaml", over)
    assert exp.grid.dataset == ["digits"]
    assert all(o["epochs"] == 2 for o in trial_overrides(exp))


def test_tuning_files_optimise_what_the_search_finds_over_seeds(tmp_path):
    from raynas.tables.nb201 import COLUMNS
    table = tmp_path / "nb201.csv"
    table.write_text(",".join(COLUMNS) + "\n")
    for name in ("tune_alphadarts", "tune_darts_regularisation_nb201"):
        t = load_experiment(ROOT / "experiments" / f"{name}.yaml", {"nb201_table": str(table)}).tune
        assert (t.metric, t.seeds_per_trial, t.aggregate) == ("nb201_test", 3, "mean") and t.enqueue
    with pytest.raises(ConfigError, match="no trial reports nb201_test"):
        load_experiment(ROOT / "experiments" / "tune_alphadarts.yaml")
    exp = load_experiment(ROOT / "experiments" / "tune_darts_regularisation.yaml")
    t = exp.tune
    assert t.sampler == "nsga2" and t.objectives == ["proxy_acc:max", "params:min"] and t.seeds_per_trial == 2
    assert set(exp.grid.method) == {"darts", "pcdarts"} and exp.grid.space == ["darts"]
    assert {"optim.weight_decay", "model.drop_path", "cutout", "arch.lr"} <= set(t.space)


def test_nb201_all_methods_covers_every_method_and_dataset():
    exp = load_experiment(ROOT / "experiments" / "nb201_all_methods.yaml")
    from trials import METHODS
    assert set(exp.grid.method) == set(METHODS)
    assert exp.grid.dataset == ["cifar10", "cifar100", "imagenet16-120"] and len(exp.grid.seed) == 4
    assert exp.resources.gpu == 0.25


def test_grid_becomes_grid_search_and_tune_space_distributions(tmp_path):
    exp = load_experiment(write(tmp_path, """
name: t
grid: {method: [darts, drnas], seed: [0, 1, 2]}
fixed: {epochs: 2}
tune:
  num_samples: 3
  space:
    mim.mask_ratio: {type: float, low: 0.2, high: 0.8}
    arch.weight_decay: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {type: int, low: 16, high: 64}
    relaxation: {type: categorical, choices: [softmax, dirichlet]}
"""))
    space = param_space(exp)
    assert isinstance(space["mim"]["mask_ratio"], tune.search.sample.Float)
    assert isinstance(space["arch"]["weight_decay"].get_sampler(), tune.search.sample.LogUniform)
    assert isinstance(space["batch_size"], tune.search.sample.Integer)
    assert isinstance(space["method"], tune.search.sample.Categorical)  # under Optuna the grid is a choice
    no_tune = load_experiment(write(tmp_path, "grid: {method: [darts, drnas], seed: [0, 1]}\n"))
    assert param_space(no_tune)["method"] == {"grid_search": ["darts", "drnas"]}
    assert len(trial_overrides(no_tune)) == 4


@pytest.mark.parametrize("text, fragment", [
    ("grid: {method: [nope]}", "unknown method 'nope'"),
    ("grid: {seed: []}", "grid.seed is empty"),
    ("tune: {space: {mim.mask_ratio: {type: float, low: 0.9, high: 0.1}}}", "low (0.9) must be <= high (0.1)"),
    ("tune: {space: {mim.mask_ratio: {type: gaussian}}}", "needs type float, int or categorical"),
    ("tune: {sampler: random, space: {epochs: {type: int, low: 1, high: 2}}}", "tune.sampler must be"),
    ("tune: {sampler: nsga2, space: {epochs: {type: int, low: 1, high: 2}}}", "needs tune.objectives"),
    ("tune: {space: {}}", "tune.space is empty"),
    ("tune: {space: {arch.lr: {type: float, low: 0, high: 1, log: true}}}", "log scale needs low > 0"),
    ("fixed: {mim: {mask_ratio: 1.5}}", "mim.mask_ratio must be in (0, 1)"),
    ("fixed: {optim: {lr: -1}}", "optim.lr must be > 0"),
    ("scheduler: {type: pbt}", "scheduler.type must be one of fifo, asha, hyperband"),
    ("resources: {cpu: 0}", "resources.cpu must be > 0"),
    ("grid: {method: darts}", "grid.method: expected a list"),
    ("gird: {method: [darts]}", "did you mean grid?"),
])
def test_bad_experiments_are_rejected_before_ray(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, text))
    assert fragment in str(e.value)


def test_cli_run_bad_file_exits_2(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, "- a list\n")), "--out", str(tmp_path / "o")]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["resume", str(tmp_path)]) == 2
    assert "is not a raynas experiment directory" in capsys.readouterr().err


def test_run_py_wraps_raynas_run():
    text = (ROOT / "run.py").read_text()
    assert 'main(["run", *args])' in text and '"--address", "auto"' in text
