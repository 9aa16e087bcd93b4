"""Faults with real processes: a diverging trial, a tracking server that goes away mid-run (slow)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raynas.tracking import server_command

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
TINY = '{"epochs": 4, "model": {"C": 4, "layers": 1}, "eval_batches": 2, "max_steps_per_epoch": 6}'


def run(*args, cwd, timeout=900):
    return subprocess.run([str(BIN / "raynas"), *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout)


def test_diverging_trial_is_reported_and_the_others_finish(tmp_path):
    exp = tmp_path / "div.yaml"
    exp.write_text(f"name: div\ngrid: {{seed: [0]}}\nfixed: {TINY}\n"
                   "sweep: {optim.lr: [0.025, 1.0e+30], optim.grad_clip: [1.0e+30]}\n")
    p = run("run", exp, "--out", tmp_path / "out", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trials = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    by_lr = {t["config"]["optim"]["lr"]: t for t in trials}
    assert by_lr[0.025]["status"] == "completed" and by_lr[0.025]["epochs"] == 4
    bad = by_lr[1e30]
    assert bad["status"] == "diverged" and bad["epochs"] == 1 and "diverged at epoch 0" in bad["error"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_ = client.get_run(bad["mlflow_run_id"])
    assert run_.info.status == "FAILED" and "diverged" in run_.data.tags["raynas.failure_reason"]
    assert client.get_run(by_lr[0.025]["mlflow_run_id"]).info.status == "FINISHED"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(server_command("127.0.0.1", port, tmp_path / "srv.db", tmp_path / "artifacts"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.time() + 240
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("mlflow server did not start")


def test_tracking_server_stopped_mid_run_then_synced_without_duplicates(tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    exp = tmp_path / "srv.yaml"
    exp.write_text(f"name: srv\ngrid: {{seed: [3]}}\nfixed: {TINY.replace('4', '6', 1)}\n")
    out = tmp_path / "out"
    job = subprocess.Popen([str(BIN / "raynas"), "run", str(exp), "--out", str(out), "--tracking-uri", uri],
                           env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def epochs_done() -> int:
            files = list((out / "ray_results" / "srv").glob("*/result.json"))
            return len(files[0].read_text().splitlines()) if files else 0

        end = time.time() + 400
        while epochs_done() < 2 and time.time() < end:
            time.sleep(0.5)
        assert epochs_done() >= 2
        os.killpg(server.pid, signal.SIGTERM)  # the server goes away mid-run
        server.wait(timeout=60)
        log, _ = job.communicate(timeout=900)
        assert job.returncode == 0, log[-3000:]
    finally:
        job.kill()
    summary = json.loads((out / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "completed" and trial["epochs"] == 6  # the search went on
    assert summary["tracking"]["pending"] > 0 and "raynas sync" in log
    server = _start_server(tmp_path, port)
    try:
        p = run("sync", out, cwd=tmp_path)
        assert p.returncode == 0 and "0 still pending" in p.stdout, p.stdout + p.stderr
        p = run("sync", out, cwd=tmp_path)  # idempotent
        assert p.returncode == 0
        client = MlflowClient(uri)
        exp_id = client.get_experiment_by_name("srv").experiment_id
        runs = [r for r in client.search_runs([exp_id]) if r.data.tags.get("method")]
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        parent = client.get_run(summary["tracking"]["parent_run_id"])
        assert parent.info.status == "FINISHED"  # its end was queued while the server was down, then synced
        assert json.loads((out / "summary.json").read_text())["tracking"]["pending"] == 0
        history = client.get_metric_history(runs[0].info.run_id, "valid_acc")
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]  # every epoch, none twice
        assert "genotype.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    finally:
        os.killpg(server.pid, signal.SIGKILL)
