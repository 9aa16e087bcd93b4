"""Ray Tune orchestration end to end: sweeps, Optuna, faults, resume, a two-node cluster (slow)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raynas.config import resolve
from raynas.data import load_dataset
from trials.bilevel import search

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
FIXED = {"epochs": 5, "model": {"C": 8, "layers": 2}, "eval_batches": 2}


def experiment(tmp_path, name, grid, extra=""):
    text = f"name: {name}\ngrid: {json.dumps(grid)}\nfixed: {json.dumps(FIXED)}\nmax_failures: 3\n{extra}"
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def raynas(*args, timeout=900, env=None):
    return subprocess.run([str(BIN / "raynas"), *map(str, args)], capture_output=True, text=True, env=env or ENV,
                          timeout=timeout)


def direct(method, seed):
    """The same search outside Ray, single-threaded like a 1-CPU trial."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return search(resolve({**FIXED, "method": method, "space": "nb201", "dataset": "digits", "seed": seed}),
                      load_dataset("digits"))
    finally:
        torch.set_num_threads(threads)


def results(out, name):
    """Each trial's reported results (result.json lines), keyed by trial directory."""
    lines = {}
    for f in (Path(out) / "ray_results" / name).glob("*/result.json"):
        lines[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return lines


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sweep_of_methods_and_seeds_in_one_command(tmp_path):
    exp = experiment(tmp_path, "sweep", {"method": ["darts", "drnas", "rfdarts", "alphadarts"], "seed": [0, 1, 2, 3]})
    p = raynas("run", exp, "--out", tmp_path / "out", "--set", "epochs=1", "--set", "mim.patch_size=2")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trials = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    assert len(trials) == 16 and all(t["status"] == "completed" for t in trials)
    assert {(t["method"], t["seed"]) for t in trials} == {(m, s) for m in ("darts", "drnas", "rfdarts", "alphadarts")
                                                          for s in range(4)}
    assert "valid_acc" in p.stdout  # the final table sorted by the objective


def test_every_method_on_every_space_completes_through_ray(tmp_path):
    exp = experiment(tmp_path, "all", {"method": ["darts", "darts2", "pcdarts", "drnas", "rfdarts", "rfpcdarts",
                                                  "alphadarts"], "space": ["nb201", "darts", "s1", "s2", "s3", "s4"]})
    p = raynas("run", exp, "--out", tmp_path / "out", "--set", "epochs=2", "--set", "max_steps_per_epoch=1",
               "--set", "batch_size=16", "--set", "eval_batches=1", "--set", "model.layers=1",
               "--set", "mim.patch_size=2", "--set", "arch.warmup_epochs=0", "--set", "drnas.ks=[4,2]")
    # model.layers=1 is below the DARTS spaces' minimum of 3: the whole file is rejected before Ray
    assert p.returncode == 2 and "model.layers must be >= 3" in p.stderr
    p = raynas("run", exp, "--out", tmp_path / "out", "--set", "epochs=2", "--set", "max_steps_per_epoch=1",
               "--set", "batch_size=16", "--set", "eval_batches=1", "--set", "model.layers=3",
               "--set", "mim.patch_size=2", "--set", "arch.warmup_epochs=0", "--set", "drnas.ks=[4,2]")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    from search_spaces import parse_genotype
    trials = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    assert len(trials) == 42
    for t in trials:
        assert t["status"] == "completed", t
        parse_genotype(t["space"], t["genotype"])


def test_optuna_outer_search_persists_its_study(tmp_path):
    import optuna

    exp = experiment(tmp_path, "tuned", {"method": ["alphadarts"]}, extra="""
tune:
  metric: valid_acc
  num_samples: 3
  max_concurrent_trials: 2
  study_name: mimstudy
  space:
    mim.mask_ratio: {type: float, low: 0.2, high: 0.8}
    mim.loss_weight: {type: float, low: 0.1, high: 2.0, log: true}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
""")
    p = raynas("run", exp, "--out", tmp_path / "out", "--set", "epochs=2", "--set", "mim.patch_size=2")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    study = optuna.load_study(study_name="mimstudy", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    assert len(study.trials) == 3
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    ratios = {round(t.params["mim/mask_ratio"], 6) for t in study.trials}
    assert len(ratios) == 3 and all(0.2 <= r <= 0.8 for r in ratios)
    trials = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    assert len(trials) == 3 and all(t["status"] in ("completed", "stopped") for t in trials)


def test_killed_worker_restarts_from_checkpoint_and_matches(tmp_path):
    exp = experiment(tmp_path, "kill", {"method": ["darts"], "seed": [4]})
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "raynas"), "run", str(exp), "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def mid_run():
            for lines in results(out, "kill").values():
                if lines and 2 <= lines[-1]["training_iteration"] < FIXED["epochs"]:
                    return lines[-1]["pid"]
            return None
        pid = wait_for(mid_run, 300, "the trial's second epoch")
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=600) == 0
    finally:
        proc.kill()
    (trial,) = json.loads((out / "summary.json").read_text())["trials"]
    assert trial["status"] == "completed" and trial["epochs"] == FIXED["epochs"]
    (lines,) = results(out, "kill").values()
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in lines)  # it was restored
    ref = direct("darts", 4)
    assert trial["genotype"] == ref.genotype
    assert trial["final"]["valid_acc"] == ref.final["valid_acc"]


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    exp = experiment(tmp_path, "driver", {"method": ["darts"], "seed": [0, 1, 2]}, extra="max_concurrent_trials: 1\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "raynas"), "run", str(exp), "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def one_done_one_running():
            r = results(out, "driver")
            done = [k for k, v in r.items() if v and v[-1].get("done")]
            running = [k for k, v in r.items() if v and not v[-1].get("done")]
            return (done, running) if done and running else None
        done, _ = wait_for(one_done_one_running, 400, "one finished trial and one running")
        finished_lines = len(results(out, "driver")[done[0]])
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    p = raynas("resume", out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trials = json.loads((out / "summary.json").read_text())["trials"]
    assert sorted(t["seed"] for t in trials) == [0, 1, 2] and all(t["status"] == "completed" for t in trials)
    assert len(results(out, "driver")[done[0]]) == finished_lines  # not rerun
    for t in trials:
        assert t["genotype"] == direct("darts", t["seed"]).genotype


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


def test_two_node_cluster_on_loopback(tmp_path):
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_worker_register_timeout_seconds": "600"}
    port = _free_port()
    ray = str(BIN / "ray")
    common = ["--num-cpus=1", "--memory=3000000000", "--object-store-memory=300000000", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.2", f"--port={port}",
                        "--include-dashboard=false", *common], env=env, check=True, timeout=300, capture_output=True)
        subprocess.run([ray, "start", f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", *common],
                       env=env, check=True, timeout=300, capture_output=True)
        exp = experiment(tmp_path, "cluster", {"method": ["darts"], "seed": [0, 1, 2, 3]})
        p = raynas("run", exp, "--out", tmp_path / "out", "--address", f"127.0.0.2:{port}", "--set", "epochs=2",
                   env=env)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        trials = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
        assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
        assert {t["node_ip"] for t in trials} == {"127.0.0.2", "127.0.0.3"}
        assert len({t["node_id"] for t in trials}) == 2
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, timeout=120, capture_output=True)


def _kill_node(ip: str) -> int:
    """SIGKILL every Ray process of the node at ``ip`` (both nodes share this host, so no `ray stop`)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if f"node-ip-address={ip}" in line
            or f"node_ip_address={ip}" in line]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def test_lost_worker_node_trials_finish_on_the_head(tmp_path):
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_worker_register_timeout_seconds": "600"}
    port = _free_port()
    ray = str(BIN / "ray")
    common = ["--memory=3000000000", "--object-store-memory=300000000", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--num-cpus=2",
                        "--include-dashboard=false", *common], env=env, check=True, timeout=300, capture_output=True)
        subprocess.run([ray, "start", f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", "--num-cpus=2",
                        *common], env=env, check=True, timeout=300, capture_output=True)
        exp = experiment(tmp_path, "lost", {"method": ["darts"], "seed": [0, 1, 2, 3]})
        out = tmp_path / "out"
        job = subprocess.Popen([str(BIN / "raynas"), "run", str(exp), "--out", str(out), "--address",
                                f"127.0.0.2:{port}", "--set", "epochs=6"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def worker_busy():
            for lines in results(out, "lost").values():
                if lines and lines[-1].get("node_ip") == "127.0.0.3" and lines[-1]["training_iteration"] >= 2:
                    return True
            return None
        wait_for(worker_busy, 400, "a trial with two epochs done on the worker node")
        assert _kill_node("127.0.0.3") > 0  # the worker node is lost
        assert job.wait(timeout=900) == 0
        trials = json.loads((out / "summary.json").read_text())["trials"]
        assert len(trials) == 4 and all(t["status"] == "completed" and t["epochs"] == 6 for t in trials)
        assert {t["node_ip"] for t in trials} == {"127.0.0.2"}  # the lost node's trials finished on the head
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, timeout=120, capture_output=True)
