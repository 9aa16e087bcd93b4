"""Retrain studies: the NB-201 cell next to training hyperparameters, every trial a real retraining of its
sampled cell scored on held-out training images. The searcher sees the 6 edges and the ranges (fast tests);
a tiny study through real Ray Tune, Optuna and an MLflow sqlite store retrains exactly the sampled cells with
the sampled hyperparameters, reports the held-out split's accuracy, and names the best."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch
from test_searchers import synthetic_frame

from raynas.cli import main
from raynas.data import load_dataset
from raynas.retrain import resolve_retrain
from raynas.searchers.evolution import RegularizedEvolution
from raynas.searchers.retrain_study import load_retrain_study, new_searcher
from raynas.searchers.space import EDGE_KEYS, arch_of
from raynas.tables.nb201 import NB201Table
from search_spaces.nb201 import OPS_NB201, parse_genotype
from trials.checkpoint import load_state
from trials.retrain import Retrain

ROOT = Path(__file__).resolve().parents[1]
LR, WD = (0.01, 0.2), (1e-5, 1e-3)
STUDY = """name: cell-lr
retrain: {dataset: digits, epochs: 1, channels: 4, layers: 1, max_steps_per_epoch: 2, holdout: 0.2, device: cpu}
nb201_table: TABLE
tune:
  metric: holdout_acc
  num_samples: 3
  searcher: tpe
  options: {tpe: {n_startup_trials: 2}}
  space:
    cell: {type: nb201_cell}
    lr: {type: float, low: 0.01, high: 0.2, log: true}
    weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    batch_size: {type: categorical, choices: [16, 32]}
"""


def test_the_joint_searcher_sees_six_categorical_edges_and_the_ranges():
    s = load_retrain_study(ROOT / "experiments" / "study_nb201_retrain.yaml")
    searcher = new_searcher(s)
    assert isinstance(searcher, OptunaSearch) and isinstance(searcher._sampler, optuna.samplers.TPESampler)
    dists = dict(searcher._space)
    assert set(dists) == {f"cell/{k}" for k in EDGE_KEYS} | {"lr", "weight_decay", "batch_size"}
    assert all(list(dists[f"cell/{k}"].choices) == list(OPS_NB201) for k in EDGE_KEYS)
    assert dists["lr"].log and (dists["lr"].low, dists["lr"].high) == (0.02, 0.4)
    config = searcher.suggest("t1")  # what a trial is given: the nested cell and the hyperparameters
    assert parse_genotype(arch_of(config)) and 0.02 <= config["lr"] <= 0.4 and config["batch_size"] in (64, 128, 256)
    rand = new_searcher(load_retrain_study(ROOT / "experiments" / "study_nb201_retrain.yaml",
                                           {"tune": {"searcher": "random"}}))
    assert isinstance(rand._sampler, optuna.samplers.RandomSampler)


def test_the_cell_alone_takes_the_table_studies_searchers():
    s = load_retrain_study(None, {"retrain": {"dataset": "digits", "holdout": 0.1},
                                  "tune": {"searcher": "rea", "options": {"rea": {"population": 4}}, "space": {
                                      "arch_cell": {"type": "nb201_cell"}}}})
    searcher = new_searcher(s)
    assert isinstance(searcher, RegularizedEvolution) and searcher.key == "arch_cell"
    assert arch_of(searcher.suggest("t1"), "arch_cell") == searcher.proposed[0]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_tiny_study_retrains_each_sampled_cell_with_its_hyperparameters_on_the_holdout(local_ray, tmp_path,
                                                                                          capsys):
    from mlflow import MlflowClient

    table = tmp_path / "nb201.csv"
    synthetic_frame().to_csv(table, index=False)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("TABLE", str(table)))
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "retrain_study.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 3 and {t["status"] for t in trials} == {"completed"}
    digits, rows = load_dataset("digits"), NB201Table.load(table)
    n_train = len(digits.train_y)
    for t in trials:
        hp = t["hyperparameters"]
        assert t["genotype"] == t["cell"]  # the network trained is the cell sampled
        assert LR[0] <= hp["lr"] <= LR[1] and WD[0] <= hp["weight_decay"] <= WD[1] and hp["batch_size"] in (16, 32)
        assert t["eval_split"] == "holdout" and t["holdout_images"] == round(0.2 * n_train) != len(digits.test_y)
        assert t["nb201_test"] == rows.query(t["cell"])["cifar10_test"]  # reported, for the summary only
        # the checkpoint holds the sampled cell's network and the sampled optimiser settings ...
        cfg = resolve_retrain({"dataset": "digits", "epochs": 1, "channels": 4, "layers": 1, "max_steps_per_epoch": 2,
                               "holdout": 0.2, "device": "cpu", "space": "nb201", "genotype": t["cell"], **hp})
        group = load_state(Path(t["checkpoint"]) / "retrain.pt", "cpu")["opt"]["param_groups"][0]
        assert group["initial_lr"] == pytest.approx(hp["lr"])
        assert group["weight_decay"] == pytest.approx(hp["weight_decay"])
        run = Retrain(cfg, digits)
        run.load(Path(t["checkpoint"]) / "retrain.pt")
        # ... whose accuracy on the held-out training images is the number the searcher heard
        assert run.evaluate() == pytest.approx((t["holdout_loss"], t["holdout_acc"]))
        lines = (Path(t["path"]) / "result.json").read_text().splitlines()
        assert all("test_acc" not in json.loads(line) and "nb201_test" not in json.loads(line) for line in lines)
    assert len({t["cell"] for t in trials}) == 3 and len({t["hyperparameters"]["lr"] for t in trials}) == 3
    best = max(trials, key=lambda t: t["holdout_acc"])
    assert summary["best"]["trial_id"] == best["trial_id"]
    assert f"best: trial {best['trial_id']}, holdout_acc" in printed and best["cell"] in summary["retrain_best"]

    client = MlflowClient(uri)
    parent = summary["tracking"]["parent_run_id"]
    runs = client.search_runs([client.get_experiment_by_name("cell-lr").experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent}'")
    by_id = {r.info.run_id: r for r in runs}
    assert len(runs) == 3 and client.get_run(parent).data.tags["best_genotype"] == best["cell"]
    for t in trials:
        r = by_id[t["mlflow_run_id"]]
        assert r.info.status == "FINISHED" and r.data.tags["genotype"] == t["cell"]
        assert [r.data.params[f"cell.{k}"] for k in EDGE_KEYS] == list(parse_genotype(t["cell"]).ops)
        assert float(r.data.params["lr"]) == pytest.approx(t["hyperparameters"]["lr"])
        assert r.data.metrics["holdout_acc"] == pytest.approx(t["holdout_acc"])
        assert r.data.metrics["nb201_test"] == pytest.approx(t["nb201_test"])


def test_the_cell_alone_with_rea_and_the_holdout_loss(local_ray, tmp_path):
    """The other path: a table-study searcher (REA, each cell once) over the cell alone, minimising the held-out
    loss; the unnamed fields keep the NB-201 recipe (lr 0.1)."""
    from raynas.searchers.retrain_run import run_retrain_study

    s = load_retrain_study(None, {"name": "cell-only", "tracking_uri": "none",
                                  "retrain": {"dataset": "digits", "epochs": 1, "channels": 4, "layers": 1,
                                              "batch_size": 32, "max_steps_per_epoch": 2, "holdout": 0.1,
                                              "device": "cpu"},
                                  "tune": {"searcher": "rea", "metric": "holdout_loss", "mode": "min",
                                           "num_samples": 3, "options": {"rea": {"population": 2}}}})
    summary = run_retrain_study(s, tmp_path / "out", verbose=0)
    trials = summary["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 3 and len({t["cell"] for t in trials}) == 3
    assert all(t["genotype"] == t["cell"] and t["hyperparameters"] == {} for t in trials)
    assert all(load_state(Path(t["checkpoint"]) / "retrain.pt", "cpu")["opt"]["param_groups"][0]["initial_lr"] == 0.1
               for t in trials)
    assert summary["best"]["trial_id"] == min(trials, key=lambda t: t["holdout_loss"])["trial_id"]
    assert "tracking" not in summary and not (tmp_path / "out" / "mlflow_pending").exists()
