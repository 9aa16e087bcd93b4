"""A seed-robust Optuna study end to end (slow): 4 trials x 2 seeds through ``raynas run`` with real Ray,
a real Optuna RDB and a real MLflow store, its driver killed mid-study and ``raynas resume`` finishing it;
Optuna's values are recomputed from the seeds' MLflow runs, every seed equals the same seed run without
stopping, ``proxy_acc`` is checked against ``raynas retrain``, and ``raynas study`` reads the study back.
One study serves every test (about 4 minutes on 2 busy cores)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raynas.objectives import aggregate

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
RECIPE = {"epochs": 2, "channels": 4, "layers": 1, "batch": 32, "max_steps_per_epoch": 2, "eval_batches": 2,
          "data": {"train_subset": 0.5}}
EXPERIMENT = f"""
name: seedstudy
grid: {{method: [darts], space: [nb201], dataset: [digits], seed: [3]}}
fixed: {{epochs: 2, batch_size: 16, max_steps_per_epoch: 2, eval_batches: 1, device: cpu, model: {{C: 4, layers: 1}}}}
proxy: {json.dumps(RECIPE)}
tune:
  metric: proxy_acc
  num_samples: 4
  max_concurrent_trials: 2
  seeds_per_trial: 2
  aggregate: mean_minus_std
  risk: 0.5
  study_name: robust
  enqueue: [{{arch.lr: 3.0e-4}}]
  space:
    arch.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
resources: {{cpu: 0.5}}
"""


def raynas(*args, cwd=None):
    return subprocess.run([str(BIN / "raynas"), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=900, cwd=cwd)


def results(out):
    """Each trial's reported results (result.json lines), keyed by trial directory."""
    return {f.parent.name: [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            for f in (out / "ray_results" / "seedstudy").glob("*/result.json")}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The study, its driver killed (with the local Ray it started) once one trial has finished and
    another is between epochs, then resumed."""
    tmp = tmp_path_factory.mktemp("seedstudy")
    (tmp / "exp.yaml").write_text(EXPERIMENT)
    out, uri = tmp / "out", f"sqlite:///{tmp / 'mlflow.db'}"
    proc = subprocess.Popen([str(BIN / "raynas"), "run", str(tmp / "exp.yaml"), "--out", str(out), "--tracking-uri",
                             uri], env=ENV, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        end = time.time() + 600
        while time.time() < end:
            r = results(out)
            done = [k for k, v in r.items() if v and v[-1].get("done")]
            if done and any(v and not v[-1].get("done") for v in r.values()):
                break
            time.sleep(0.3)
        else:
            raise AssertionError("timed out waiting for one finished trial and one running")
        finished = {k: len(v) for k, v in results(out).items() if v and v[-1].get("done")}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    p = raynas("resume", out, cwd=tmp)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return tmp, uri, finished


def test_optuna_values_are_the_aggregate_of_the_seeds_mlflow_runs(study_run):
    import mlflow
    import optuna

    tmp, uri, _ = study_run
    study = optuna.load_study(study_name="robust", storage=f"sqlite:///{tmp / 'out' / 'optuna.db'}")
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[0].params["arch/lr"] == pytest.approx(3.0e-4)  # the enqueued config ran first
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("seedstudy")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kind = {r.info.run_id: r.data.tags.get("raynas.kind") for r in runs}
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    trial_runs = [r for r in runs if kind[r.info.run_id] == "optuna_trial"]
    assert len(trial_runs) == 4
    # the driver was killed mid-study and resumed: no seed search or proxy run may be left RUNNING
    assert all(r.info.status == "FINISHED" for r in runs if kind[r.info.run_id] in ("seed_search", "proxy")), \
        [(kind[r.info.run_id], r.info.status) for r in runs if r.info.status != "FINISHED"]
    for ot in study.trials:
        (tr,) = [r for r in trial_runs if r.data.tags["raynas.trial_id"] == ot.user_attrs["raynas.tune_trial_id"]]
        assert float(tr.data.params["arch.lr"]) == ot.params["arch/lr"]
        seeds = [r for r in runs if parent[r.info.run_id] == tr.info.run_id]
        assert sorted(kind[s.info.run_id] for s in seeds) == ["seed_search", "seed_search"]
        assert sorted(int(s.data.params["seed"]) for s in seeds) == [3, 4]
        proxies = []
        for s in seeds:
            (px,) = [r for r in runs if parent[r.info.run_id] == s.info.run_id]
            assert kind[px.info.run_id] == "proxy" and px.data.tags["raynas.search_run_id"] == s.info.run_id
            assert px.data.metrics["proxy_acc"] == px.data.metrics["test_acc"] == s.data.metrics["proxy_acc"]
            assert px.data.tags["genotype"] == s.data.tags["genotype"]
            proxies.append(px.data.metrics["proxy_acc"])
        expected = aggregate(proxies, "mean_minus_std", 0.5, "max")
        assert ot.value == pytest.approx(expected["value"], abs=1e-9)
        assert tr.data.metrics["proxy_acc_mean"] == pytest.approx(expected["mean"], abs=1e-9)
        assert tr.data.metrics["proxy_acc_std"] == pytest.approx(expected["std"], abs=1e-9)
        assert tr.data.metrics["proxy_acc_worst"] == pytest.approx(expected["worst"], abs=1e-9)


def test_proxy_acc_equals_raynas_retrain_of_the_same_genotype_seed_and_recipe(study_run):
    tmp, uri, _ = study_run
    trials = json.loads((tmp / "out" / "summary.json").read_text())["trials"]
    seed = trials[0]["seeds"][1]
    p = raynas("retrain", "--genotype", seed["genotype"], "--space", "nb201", "--dataset", "digits", "--seeds",
               seed["seed"], "--epochs", RECIPE["epochs"], "--out", tmp / "retrain", "--tracking-uri", "none",
               "--set", f"channels={RECIPE['channels']}", "--set", f"layers={RECIPE['layers']}",
               "--set", f"batch_size={RECIPE['batch']}", "--set", f"max_steps_per_epoch={RECIPE['max_steps_per_epoch']}",  # noqa: E501
               "--set", f"eval_batches={RECIPE['eval_batches']}",
               "--set", f"data.train_subset={RECIPE['data']['train_subset']}",
               "--set", "holdout=0.1",
               "--set", "device=cpu", cwd=tmp)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (retrained,) = json.loads((tmp / "retrain" / "retrain_summary.json").read_text())["trials"]
    assert retrained["test_acc"] == seed["proxy_acc"]
    assert retrained["params_m"] == pytest.approx(seed["params"])


def test_raynas_study_prints_best_trials_and_writes_plots_onto_the_parent_run(study_run):
    import mlflow

    tmp, uri, _ = study_run
    p = raynas("study", tmp / "out", "--out", tmp / "plots", cwd=tmp)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "best trials" in p.stdout and "arch/lr" in p.stdout and "importance" in p.stdout
    pngs = sorted(f.name for f in (tmp / "plots").glob("*.png"))
    assert pngs == ["optimization_history.png", "parallel_coordinate.png", "param_importances.png"]
    parent = json.loads((tmp / "out" / "summary.json").read_text())["tracking"]["parent_run_id"]
    arts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent, "study")}
    assert arts == {f"study/{n}" for n in pngs}



def test_resume_finished_the_study_without_rerunning_a_seed_or_losing_a_trial(study_run):
    import optuna
    import torch

    from raynas.config import resolve
    from raynas.data import load_dataset
    from raynas.objectives import ProxyConfig
    from raynas.proxy import SeedRun
    from trials.config import build

    tmp, uri, finished = study_run
    out = tmp / "out"
    assert finished and all(len(results(out)[k]) == n for k, n in finished.items())  # not rerun
    study = optuna.load_study(study_name="robust", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 4  # no duplicate, no lost Optuna trial
    assert len({t.params["arch/lr"] for t in study.trials}) == 4  # and no config run twice
    trials = json.loads((out / "summary.json").read_text())["trials"]
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 0.5-CPU seed actors
    try:
        for t in trials:  # every seed, the interrupted ones included, equals the same seed run without stopping
            for s in t["seeds"]:
                run = SeedRun(resolve({**t["config"], "seed": s["seed"]}), load_dataset("digits"), None,
                              build(ProxyConfig, RECIPE))
                while not run.done:
                    run.run_epoch()
                assert run.final["proxy_acc"] == s["proxy_acc"] and run.genotype_text == s["genotype"]
    finally:
        torch.set_num_threads(threads)
