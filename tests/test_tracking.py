"""MLflow tracking against real stores: sqlite in tmp_path, and (slow) a real `mlflow server` over HTTP."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raynas.tracking import (TrackingError, TrialTracker, check_reachable, compare, default_artifact_root,
                             default_tracking_uri, ensure_experiment, epoch_metrics, find_trial_run,
                             server_command,
                             start_parent_run, sync)

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"]
NB201_GENO = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
DARTS_GENO = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 1), "
              "('skip_connect', 0), ('dil_conv_3x3', 2), ('skip_connect', 0), ('sep_conv_3x3', 1)], "
              "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
              "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
              "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def nb201_metrics(epoch: int) -> dict:
    """Shaped like ``Search.run_epoch()`` on NB201 with an NB201 table."""
    edges = [f"{i}<-{j}" for i in range(1, 4) for j in range(i)]
    alpha = {"cell": {e: dict(zip(NB201_OPS, _softmax([0.1 * epoch * (k + i) for k in range(5)])))
                      for i, e in enumerate(edges)}}
    return {"epoch": epoch, "lr": 0.025 / epoch, "train_loss": 2.0 / epoch, "train_acc": 30.0 + epoch,
            "arch_loss": 2.1 / epoch, "arch_acc": 28.0 + epoch, "valid_loss": 2.2 / epoch, "valid_acc": 27.0 + epoch,
            "steps": 10, "epoch_time": 1.5, "images_per_s": 420.0, "genotype": NB201_GENO, "skip_count": 2,
            "param_free_count": 3, "alpha_entropy": 1.6 - 0.1 * epoch, "alpha": alpha,
            "nb201": {"arch": NB201_GENO, "cifar10_valid": 85.1, "cifar10_test": 88.2, "cifar100_valid": 60.3,
                      "cifar100_test": 60.9, "imagenet16_valid": 33.0, "imagenet16_test": 32.5}}


def darts_metrics(epoch: int) -> dict:
    """Shaped like ``Search.run_epoch()`` on the DARTS space: 2 cells x 14 edges x 8 ops."""
    edges = [f"{j}->{i}" for i in range(2, 6) for j in range(i)]
    alpha = {cell: {e: dict(zip(DARTS_OPS, _softmax([0.01 * epoch * k for k in range(8)]))) for e in edges}
             for cell in ("normal", "reduce")}
    m = nb201_metrics(epoch)
    return {**m, "genotype": DARTS_GENO, "alpha": alpha, "nb201": None, "skip_count_reduce": 3,
            "param_free_count_reduce": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact_paths(c: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in c.list_artifacts(run_id, path):
        out |= artifact_paths(c, run_id, f.path) if f.is_dir else {f.path}
    return out


PARAMS = {"method": "darts", "space": "nb201", "optim.lr": 0.025, "model.C": 16, "model.exclude_ops": []}
TAGS = {"method": "darts", "space": "nb201", "dataset": "digits", "seed": 0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite store for the module (creating one costs seconds of migrations); tests use own experiments."""
    return tmp_path_factory.mktemp("store")


def log_trial(tracker: TrialTracker, epochs: range, metrics=nb201_metrics, space="nb201", final=True) -> None:
    for e in epochs:
        tracker.log_epoch(metrics(e), step=e)
    if final:
        geno = metrics(1)["genotype"]
        tracker.log_final(geno, {"arch": geno}, space, checkpoint_path="/ckpt/search.pt", alpha_history=None)
        tracker.finish("completed")


def test_defaults_and_server_command(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_artifact_root(tmp_path) == str(tmp_path.resolve() / "mlartifacts")
    cmd = server_command(port=5999, backend_store=tmp_path / "m.db", artifacts_destination=tmp_path / "a")
    assert cmd[-10:] == ["--backend-store-uri", f"sqlite:///{tmp_path.resolve()}/m.db", "--artifacts-destination",
                         str(tmp_path.resolve() / "a"), "--host", "127.0.0.1", "--port", "5999", "--workers", "1"]
    assert cmd[-11] == "server"


def test_check_reachable(tmp_path):
    port = free_port()
    with pytest.raises(TrackingError) as e:
        check_reachable(f"http://127.0.0.1:{port}", timeout=2)
    msg = str(e.value)
    assert "\n" not in msg and "unreachable (connection refused)" in msg and "raynas server" in msg
    check_reachable(default_tracking_uri(tmp_path / "new" / "dir"))  # creatable
    assert (tmp_path / "new" / "dir").is_dir()
    with pytest.raises(TrackingError, match="file store"):
        check_reachable(f"file://{tmp_path}/mlruns")


def test_trial_run_round_trip(store, tmp_path):
    uri = default_tracking_uri(store)
    parent = start_parent_run(uri, "exp", yaml_text="grid: {seed: [0]}\n", study_name="study-1",
                              tags={"raynas.out": str(tmp_path)})
    t = TrialTracker(uri, "exp", "darts-nb201-digits-s0", parent_run_id=parent, params=PARAMS, tags=TAGS,
                     pending_dir=tmp_path / "pending")
    log_trial(t, range(1, 4))
    assert t.pending == 0
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("exp")
    assert exp.artifact_location == (store.resolve() / "mlartifacts" / "exp").as_uri()
    run = c.get_run(t.run_id)
    d = run.data
    assert d.params == {"method": "darts", "space": "nb201", "optim.lr": "0.025", "model.C": "16",
                        "model.exclude_ops": "[]"}
    hist = c.get_metric_history(t.run_id, "alpha.cell.1_0.skip_connect")
    assert [m.step for m in hist] == [1, 2, 3]
    assert hist[0].value == pytest.approx(nb201_metrics(1)["alpha"]["cell"]["1<-0"]["skip_connect"])
    assert [m.value for m in c.get_metric_history(t.run_id, "valid_acc")] == [28.0, 29.0, 30.0]
    assert d.metrics["nb201.cifar10_test"] == 88.2 and "nb201.arch" not in d.metrics and "epoch" not in d.metrics
    assert d.tags["genotype"] == NB201_GENO and d.tags["checkpoint"] == "/ckpt/search.pt"
    assert d.tags["mlflow.parentRunId"] == parent and d.tags["mlflow.runName"] == "darts-nb201-digits-s0"
    assert {d.tags[k] for k in ("method", "space", "dataset", "seed")} == {"darts", "nb201", "digits", "0"}
    assert d.tags["status"] == d.tags["raynas.status"] == "completed" and d.tags["node"]
    assert run.info.status == "FINISHED"
    arts = artifact_paths(c, t.run_id)
    assert {"genotype.json", "cell.png", "cell.svg", "alpha_heatmap.png", "alpha/alpha_epoch_003.json",
            "genotype/genotype_epoch_001.json"} <= arts
    assert json.loads(Path(c.download_artifacts(t.run_id, "genotype.json", str(tmp_path / "dl"))).read_text()) == \
        {"space": "nb201", "genotype": NB201_GENO, "json": {"arch": NB201_GENO}}
    png = Path(c.download_artifacts(t.run_id, "alpha_heatmap.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:4] == b"\x89PNG"
    p = c.get_run(parent).data.tags
    assert p["raynas.parent"] == "true" and p["optuna.study_name"] == "study-1" and p["version.mlflow"]
    assert "mlflow.source.git.commit" in p
    assert "experiment.yaml" in artifact_paths(c, parent)
    print(f"\none NB201 trial (3 epochs): {len(d.params)} params, {len(d.metrics)} metrics, {len(arts)} artifacts")


def test_degenerate_cell_tags(store, tmp_path):
    """A degenerate epoch tags the run degenerate=true with the reason; a sound final cell clears both."""
    uri = default_tracking_uri(store)
    t = TrialTracker(uri, "degenerate-exp", "d", parent_run_id=None, params={}, tags=TAGS,
                     pending_dir=tmp_path / "pending")
    dead = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    t.log_epoch({**nb201_metrics(1), "genotype": dead, "degenerate": True,
                 "degenerate_reason": "NB201 cell: every edge is none"}, step=1)
    c = MlflowClient(uri)
    tags = c.get_run(t.run_id).data.tags
    assert tags["degenerate"] == "true" and tags["degenerate_reason"] == "NB201 cell: every edge is none"
    t.log_final(dead, {"arch": dead}, "nb201")  # the final tags come from the genotype itself
    assert c.get_run(t.run_id).data.tags["degenerate"] == "true"
    t.log_final(NB201_GENO, {"arch": NB201_GENO}, "nb201")
    tags = c.get_run(t.run_id).data.tags
    assert tags["degenerate"] == "false" and tags["degenerate_reason"] == ""
    t.finish("completed")


def test_darts_space_and_chunking(store, tmp_path):
    uri = default_tracking_uri(store)
    t = TrialTracker(uri, "darts-exp", "darts", parent_run_id=None, params={}, tags={**TAGS, "space": "darts"},
                     pending_dir=tmp_path / "pending")
    log_trial(t, range(1, 3), metrics=darts_metrics, space="darts")
    wide = {"alpha": {"cell": {f"{i}<-0": {f"op{k}": 0.1 for k in range(10)} for i in range(120)}}}  # 1200
    t.log_epoch(wide, step=5)
    c = MlflowClient(uri)
    keys = c.get_run(t.run_id).data.metrics
    assert sum(k.startswith("alpha.normal.") for k in keys) == 14 * 8
    assert sum(k.startswith("alpha.reduce.") for k in keys) == 14 * 8
    assert "alpha.normal.0_2.skip_connect" in keys and keys["skip_count_reduce"] == 3
    assert sum(k.startswith("alpha.cell.") for k in keys) == 1200
    arts = artifact_paths(c, t.run_id)
    assert {"cell.png", "cell.svg", "alpha_heatmap.png"} <= arts
    assert len(epoch_metrics(darts_metrics(1))) == 224 + 15  # 15 scalars


def test_resume_continues_the_same_run(store, tmp_path):
    uri, pending = default_tracking_uri(store), tmp_path / "pending"
    a = TrialTracker(uri, "resume-exp", "trial", parent_run_id=None, params=PARAMS,
                     tags={**TAGS, "raynas.trial_id": "trial_00001"}, pending_dir=pending)
    log_trial(a, range(1, 3), final=False)  # the worker dies here: no finish
    assert find_trial_run(uri, "resume-exp", "trial_00001") == a.run_id  # if the checkpoint lacks the run id
    assert find_trial_run(uri, "resume-exp", "trial_00002") is None
    assert find_trial_run(f"http://127.0.0.1:{free_port()}", "resume-exp", "trial_00001") is None
    b = TrialTracker(uri, "resume-exp", "trial", parent_run_id=None, params=PARAMS, tags=TAGS, pending_dir=pending,
                     run_id=a.run_ref)
    log_trial(b, range(3, 4))
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("resume-exp").experiment_id])
    assert [r.info.run_id for r in runs] == [a.run_id] and runs[0].info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(a.run_id, "valid_acc")] == [1, 2, 3]


def test_unreachable_server_queues_then_sync_delivers_exactly_once(store, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    pending = tmp_path / "pending"
    t0 = time.perf_counter()
    t = TrialTracker(dead, "offline-exp", "offline-trial", parent_run_id=None, params=PARAMS, tags=TAGS,
                     pending_dir=pending)
    log_trial(t, range(1, 4))
    t.log_metric_on(t.run_ref, "retrain.test_acc", 93.5)
    assert time.perf_counter() - t0 < 30  # no MLflow retry storms: queued at once
    assert t.run_id is None and t.run_ref.startswith("local:")
    queued = t.pending
    # create, 3 x (batch, artifacts), final (files, tags), finish (tags, end), metric
    assert queued == 1 + 3 * 2 + 2 + 2 + 1
    crashed_copy = tmp_path / "copy"
    shutil.copytree(pending, crashed_copy)  # as if a sync had sent everything but died before marking it

    uri = default_tracking_uri(store)
    assert sync(pending, uri) == {"sent": queued, "remaining": 0, "failed": 0}
    assert sync(pending, uri) == {"sent": 0, "remaining": 0, "failed": 0}
    assert sync(crashed_copy, uri) == {"sent": queued, "remaining": 0, "failed": 0}
    assert not (pending / "files").exists() and t.pending == 0

    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("offline-exp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_name == "offline-trial"
    rid = runs[0].info.run_id
    assert json.loads((pending / "runs.json").read_text()) == {t.run_ref: rid}
    for key in ("valid_acc", "alpha.cell.3_2.avg_pool_3x3"):
        assert [m.step for m in c.get_metric_history(rid, key)] == [1, 2, 3]
    assert [m.value for m in c.get_metric_history(rid, "retrain.test_acc")] == [93.5]
    assert runs[0].data.params["optim.lr"] == "0.025" and runs[0].data.tags["genotype"] == NB201_GENO
    assert {"genotype.json", "cell.png", "alpha_heatmap.png", "alpha/alpha_epoch_002.json"} <= artifact_paths(c, rid)


def test_rejected_operation_is_set_aside(store, tmp_path):
    """An operation MLflow refuses for good (here: an unknown run) is recorded, not retried forever."""
    pending = tmp_path / "pending"
    t = TrialTracker(f"http://127.0.0.1:{free_port()}", "rejected-exp", "r", parent_run_id=None, params={},
                     tags=TAGS, pending_dir=pending)
    t.log_metric_on("0" * 32, "retrain.test_acc", 1.0)
    t.log_epoch({"valid_acc": 50.0}, step=1)
    uri = default_tracking_uri(store)
    assert sync(pending, uri) == {"sent": 2, "remaining": 0, "failed": 1}
    assert json.loads((pending / "failed.jsonl").read_text())["run"] == "0" * 32
    c = MlflowClient(uri)
    rid = c.search_runs([c.get_experiment_by_name("rejected-exp").experiment_id])[0].info.run_id
    assert c.get_run(rid).data.metrics == {"valid_acc": 50.0}


def test_compare(store, tmp_path):
    uri, pending = default_tracking_uri(store), tmp_path / "pending"
    start_parent_run(uri, "cmp", yaml_text="x: 1\n", study_name=None, tags={})
    accs = {("darts", 0): 90.0, ("darts", 1): 92.0, ("drnas", 0): 93.0, ("drnas", 1): 94.0}
    genos = {("drnas", 1): NB201_GENO}
    for (method, seed), acc in accs.items():
        t = TrialTracker(uri, "cmp", f"{method}-s{seed}", parent_run_id=None, params={},
                         tags={**TAGS, "method": method, "seed": seed}, pending_dir=pending)
        geno = genos.get((method, seed), f"g-{method}-{seed}")
        t.log_epoch({"valid_acc": acc - 5, "genotype": geno}, step=1)
        t.log_epoch({"valid_acc": acc, "genotype": geno}, step=2)
        t.finish("completed")
        if method == "drnas":  # as raynas retrain writes it back onto the search run
            t.log_metric_on(t.run_id, "retrain.test_acc", 90.0 + seed)
    t = TrialTracker(uri, "cmp", "diverged", parent_run_id=None, params={}, tags={**TAGS, "seed": 2},
                     pending_dir=pending)
    t.log_epoch({"valid_acc": 99.0}, step=1)
    t.finish("diverged", reason="search diverged at epoch 1: alpha is not finite")
    c = MlflowClient(uri)
    failed = c.get_run(t.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["raynas.status"] == "diverged"
    assert failed.data.tags["raynas.failure_reason"].startswith("search diverged")

    rows = compare(uri, "cmp", out_dir=tmp_path / "out")
    assert [(r["method"], r["n"]) for r in rows] == [("drnas", 2), ("darts", 2)]
    drnas, darts = rows
    assert darts["mean"] == pytest.approx(91.0) and darts["std"] == pytest.approx(math.sqrt(2))
    assert darts["best"] == 92.0 and darts["best_seed"] == "1" and darts["genotype"] == "g-darts-1"
    assert drnas["mean"] == pytest.approx(93.5) and drnas["best"] == 94.0
    assert drnas["retrain_test_acc"] == 90.5 and drnas["retrain_n"] == 2 and darts["retrain_test_acc"] is None
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| darts | nb201 | digits | 2 | 91.00 ± 1.41 | 92.00 | – | `g-darts-1` |" in md
    escaped = NB201_GENO.replace("|", "\\|")
    assert f"| drnas | nb201 | digits | 2 | 93.50 ± 0.71 | 94.00 | 90.50 ± 0.71 (2 runs) | `{escaped}` |" in md
    for line in md.splitlines():  # every row has the header's 8 cells once escaped pipes are set aside
        assert line.replace("\\|", "").count("|") == 9, line
    assert (tmp_path / "out" / "compare.csv").read_text().startswith("method,space,dataset,objective,n,mean")
    parent = [r for r in c.search_runs([c.get_experiment_by_name("cmp").experiment_id])
              if r.data.tags.get("raynas.parent") == "true"][0]
    assert "compare.md" in artifact_paths(c, parent.info.run_id)


# ------------------------------------------------------------------------- a real tracking server

def _get(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (started, not yet waited for: a test may log before it is up)."""
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(server_command(port=port, backend_store=d / "mlflow.db",
                                           artifacts_destination=d / "artifacts"),
                            cwd=d, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", proc, d
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_up(uri: str, proc: subprocess.Popen, log: Path, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited: {log.read_text()[-2000:]}"
        try:
            check_reachable(uri, timeout=2)
            return
        except TrackingError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server not up after {limit:.0f}s: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_tracking_server_over_http(mlflow_server, tmp_path):
    uri, proc, d = mlflow_server
    # started before the server answers: queued, then flushed by the first call that gets through
    t = TrialTracker(uri, "http-exp", "darts-nb201-digits-s0", parent_run_id=None, params=PARAMS, tags=TAGS,
                     pending_dir=tmp_path / "pending")
    t.log_epoch(nb201_metrics(1), step=1)
    _wait_up(uri, proc, d / "server.log")
    parent = start_parent_run(uri, "http-exp", yaml_text="grid: {}\n", study_name=None, tags={})
    log_trial(t, range(2, 4))
    assert t.pending == 0 and t.run_id is not None
    t.log_metric_on(parent, "best.valid_acc", 30.0)

    api = f"{uri}/api/2.0/mlflow"
    exp = _get(f"{api}/experiments/get-by-name?experiment_name=http-exp")["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:")
    runs = _get(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    assert {r["info"]["run_name"] for r in runs} == {"darts-nb201-digits-s0", "http-exp"}
    q = urllib.parse.urlencode({"run_id": t.run_id, "metric_key": "alpha.cell.2_1.nor_conv_3x3"})
    assert [m["step"] for m in _get(f"{api}/metrics/get-history?{q}")["metrics"]] == [1, 2, 3]
    files = {f["path"] for f in _get(f"{api}/artifacts/list?run_id={t.run_id}")["files"]}
    assert {"genotype.json", "cell.png", "alpha_heatmap.png", "alpha", "genotype"} <= files
    alpha = {f["path"] for f in _get(f"{api}/artifacts/list?run_id={t.run_id}&path=alpha")["files"]}
    assert alpha == {f"alpha/alpha_epoch_{e:03d}.json" for e in (1, 2, 3)}
    assert list((d / "artifacts").rglob("alpha_heatmap.png"))  # proxied: stored by the server
    run = _get(f"{api}/runs/get?run_id={t.run_id}")["run"]
    assert run["info"]["status"] == "FINISHED"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_mlflow_ui_shows_the_runs(mlflow_server, tmp_path):
    uri, proc, d = mlflow_server
    _wait_up(uri, proc, d / "server.log")
    exp_id = ensure_experiment(uri, "ui-exp")
    for seed in (0, 1):
        t = TrialTracker(uri, "ui-exp", f"ui-darts-seed{seed}", parent_run_id=None, params=PARAMS,
                         tags={**TAGS, "seed": seed}, pending_dir=tmp_path / "pending")
        t.log_epoch(nb201_metrics(1), step=1)
        t.finish("completed")
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
                          f"{uri}/#/experiments/{exp_id}/runs"], capture_output=True, text=True, timeout=180)
    assert "ui-darts-seed0" in out.stdout and "ui-darts-seed1" in out.stdout, out.stderr[-2000:]
