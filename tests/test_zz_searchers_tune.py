"""The searchers through real Ray Tune (``raynas run`` of a study file: ``tune.Tuner``, the tabular trainable,
Ray's ASHAScheduler on a local Ray) propose exactly what the in-process simulator proposes for the same seed.

Named to run after the in-process tests (a Ray instance lives in this process while it runs)."""

import json

import pytest
from test_searchers import synthetic_frame

from raynas.cli import main
from raynas.searchers.study import load_study, run_study

STUDY = """name: agree-{scheduler}
bench:
  table: {table}
  searchers: {searchers}
  seeds: [7]
  budget: 12
  budgets: [6, 12]
  options:
    rea: {{population: 4, sample_size: 2}}
    tpe: {{n_startup_trials: 4}}
    nar: {{n_init: 10, refit_every: 1, refit_epochs: 1}}
scheduler: {{type: {scheduler}, reduction_factor: 2}}
"""


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("scheduler,searchers", [("asha", "[random, rea, tpe, nar]"), ("fifo", "[rea, nar]"),
                                                       ("hyperband", "[random, rea]")])
def test_raynas_run_of_a_study_file_proposes_what_the_simulator_proposes(scheduler, searchers, local_ray, tmp_path):
    table = tmp_path / "table.csv"
    synthetic_frame().to_csv(table, index=False)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(table=table, searchers=searchers, scheduler=scheduler))
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--tracking-uri", "none"]) == 0
    real = json.loads((tmp_path / "out" / "bench.json").read_text())
    sim = run_study(load_study(study))
    assert real["backend"] == "tune" and len(real["runs"]) == len(sim["runs"])
    for r, s in zip(real["runs"], sim["runs"]):
        assert (r["searcher"], r["seed"], r["errors"]) == (s["searcher"], s["seed"], 0)
        assert [q["arch"] for q in r["queries"]] == [q["arch"] for q in s["queries"]]
        assert [q["epochs"] for q in r["queries"]] == [q["epochs"] for q in s["queries"]]
        assert [q["time"] for q in r["queries"]] == pytest.approx([q["time"] for q in s["queries"]])
        if scheduler != "fifo":
            assert {q["epochs"] for q in s["queries"]} == {12, 200}  # ASHA did stop some cells
    assert real["table"] == sim["table"]
