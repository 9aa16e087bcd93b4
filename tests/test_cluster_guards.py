"""Multi-node guards (raynas/cluster.py, issue 17) and the cluster launcher files they go with.

The slow tests start a real two-node Ray on loopback (127.0.0.2 head, 127.0.0.3 worker), each node in its
own PID namespace so that tearing one down cannot touch any other Ray on this machine, and the worker in
its own mount namespace with a tmpfs over one directory: a path that only the head has, as a local disk
is. The end-to-end test of `ray up` / `ray submit` itself is `make test-cluster` (tests/cluster/e2e.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raynas.cluster import (check_cluster, expected_nodes, local_path, sqlite_dir, tracking_problem,
                            wait_for_nodes)
from raynas.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD, WORKER = "127.0.0.2", "127.0.0.3"


# ------------------------------------------------------------------------------------------ no Ray needed

def test_storage_paths():
    assert local_path("s3://bucket/raynas") is None and local_path("gs://b/x") is None
    assert local_path("file:///mnt/nfs/raynas") == Path("/mnt/nfs/raynas")
    assert local_path("runs/x") == Path.cwd() / "runs" / "x"


def test_tracking_uris():
    assert tracking_problem(None) is None
    assert tracking_problem("http://10.0.0.10:5000") is None
    assert tracking_problem("postgresql://db.lan/mlflow") is None
    for uri in ("http://127.0.0.1:5000", "http://localhost:5000/"):
        assert "loopback" in tracking_problem(uri) and "raynas server --host 0.0.0.0" in tracking_problem(uri)
    for uri in ("file:///srv/mlruns", "/srv/mlruns"):
        assert "file store" in tracking_problem(uri)
    assert tracking_problem("sqlite:////srv/mlflow.db") is None  # its directory is checked on every node
    assert sqlite_dir("sqlite:////srv/ml/mlflow.db") == Path("/srv/ml") and sqlite_dir("http://h:1") is None


def test_no_address_checks_nothing():
    import ray

    check_cluster(None, "/nonexistent/ray_results", "sqlite:////nonexistent/mlflow.db")
    assert not ray.is_initialized()


def test_expected_nodes_from_the_launcher_config(tmp_path):
    from ray.autoscaler._private.util import prepare_config

    assert expected_nodes(tmp_path / "absent.yaml") == 1
    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))  # as `ray up` writes it
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    assert expected_nodes(tmp_path / "ray_bootstrap_config.yaml") == 1 + len(config["provider"]["worker_ips"])


def test_waiting_for_nodes_ends_in_one_line(monkeypatch):
    monkeypatch.setattr("raynas.cluster.alive_nodes", lambda: [{"NodeID": "a", "Alive": True}])
    with pytest.raises(ConfigError, match=r"^only 1 of the 2 nodes of this cluster joined within 0 s; see"):
        wait_for_nodes(2, timeout_s=0.05, poll_s=0.01)
    assert len(wait_for_nodes(1, timeout_s=0)) == 1


def test_cluster_yaml_is_valid_and_pins_the_makefile_versions():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    pin = re.compile(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)")
    install = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line
                   and "-e " in line)
    setup = " ".join(config["setup_commands"])
    assert set(pin.findall(install)) == set(pin.findall(setup)) != set()
    assert "RAY_enable_autoscaler_v2=0" in " ".join(config["head_start_ray_commands"])
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if re.search(r"ray start --(head|address)", c)]
    assert len(starts) == 2 and all("--disable-usage-stats" in c for c in starts)


# ------------------------------------------------------------------------- two nodes, one with a local disk

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HEAD, 0))
        return s.getsockname()[1]


def _start_node(args: list[str], log: Path, env: dict[str, str], hide: Path | None = None) -> subprocess.Popen:
    """`ray start ARGS --block` as PID 1 of its own PID (and mount) namespace: SIGKILL to it ends the node."""
    ray = [str(BIN / "ray"), "start", *args, "--num-cpus=1", "--memory=2000000000",
           "--object-store-memory=200000000", "--disable-usage-stats", "--block"]
    cmd = ["sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(hide), *ray] if hide else ray
    return subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc",
                             "--propagation", "private", *cmd], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray start did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root and util-linux (unshare, nsenter) for the nodes' namespaces")
    base = tmp_path_factory.mktemp("two_nodes")
    (base / "node-local").mkdir()
    (base / "shared").mkdir()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_worker_register_timeout_seconds": "600",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    port = _free_port()
    procs = []
    try:
        procs.append(_start_node(["--head", f"--node-ip-address={HEAD}", f"--port={port}",
                                  "--include-dashboard=false"], base / "head.log", env))
        head_pid1 = _wait_started(procs[0], base / "head.log")
        procs.append(_start_node([f"--address={HEAD}:{port}", f"--node-ip-address={WORKER}"], base / "worker.log",
                                 env, hide=base / "node-local"))
        _wait_started(procs[1], base / "worker.log")
        yield {"address": f"{HEAD}:{port}", "base": base, "env": env, "head_pid1": head_pid1}
    finally:
        for p in procs:
            os.killpg(p.pid, 9)
            p.wait(timeout=60)
        current = Path("/tmp/ray/ray_current_cluster")  # SIGKILL leaves it; `address="auto"` would follow it
        if current.is_file() and current.read_text().strip() == f"{HEAD}:{port}":
            current.unlink()


def _on_head(nodes, *cmd: str) -> subprocess.CompletedProcess:
    """A driver on the head node (in its PID namespace, where its raylet sees it)."""
    return subprocess.run(["nsenter", "-t", str(nodes["head_pid1"]), "-p", "-m", "--", *cmd], capture_output=True,
                          text=True, env=nodes["env"], cwd=nodes["base"], timeout=600)


def _run(nodes, *args: str) -> subprocess.CompletedProcess:
    exp = nodes["base"] / "guard.yaml"
    exp.write_text("name: guard\ngrid: {method: [darts], space: [nb201], dataset: [digits], seed: [0]}\n"
                   "fixed: {epochs: 1, model: {C: 8}}\n")
    return _on_head(nodes, str(BIN / "raynas"), "run", str(exp), "--address", nodes["address"], "--out",
                    str(nodes["base"] / "out"), *args)


def _refusal(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_local_storage_path_on_two_nodes_exits_2(two_nodes):
    local = two_nodes["base"] / "node-local" / "ray_results"
    line = _refusal(_run(two_nodes, "--set", f"storage_path={local}", "--tracking-uri", "none"))
    assert line.startswith(f"raynas: error: storage_path {local} is not shared: node(s) {WORKER} of this "
                           "2-node cluster do not see it; set storage_path to a directory every node mounts")
    assert not (two_nodes["base"] / "out" / "experiment.json").exists()  # no trial started
    assert not list(local.glob(".raynas-shared-*"))


@pytest.mark.slow
def test_sqlite_store_on_one_node_exits_2(two_nodes):
    db = two_nodes["base"] / "node-local" / "mlflow.db"
    shared = two_nodes["base"] / "shared" / "ray_results"
    line = _refusal(_run(two_nodes, "--set", f"storage_path={shared}", "--tracking-uri", f"sqlite:///{db}"))
    assert line.startswith(f"raynas: error: tracking store sqlite:///{db} is a file that node(s) {WORKER} of")
    assert "raynas server --host 0.0.0.0 --allowed-hosts HEAD_IP:5000" in line
    assert not db.exists()  # refused before the store was created (and migrated)


@pytest.mark.slow
def test_loopback_tracking_server_exits_2(two_nodes):
    line = _refusal(_run(two_nodes, "--tracking-uri", "http://127.0.0.1:5999"))
    assert line.startswith("raynas: error: tracking server http://127.0.0.1:5999 is this node's loopback")


@pytest.mark.slow
def test_shared_storage_and_store_are_accepted(two_nodes):
    shared = two_nodes["base"] / "shared"
    code = ("import sys; from raynas.cluster import check_cluster; "
            "check_cluster(sys.argv[1], sys.argv[2], sys.argv[3]); print('accepted')")
    p = _on_head(two_nodes, sys.executable, "-c", code, two_nodes["address"], str(shared / "ray_results"),
                 f"sqlite:///{shared}/mlflow.db")
    assert p.returncode == 0 and p.stdout.strip().endswith("accepted"), p.stdout[-2000:] + p.stderr[-3000:]
    assert not list(shared.rglob(".raynas-shared-*"))  # markers cleaned up


def test_cuda_on_a_cluster_is_the_clusters_to_check():
    """Without ``--address`` a ``cuda`` device this machine lacks is refused here (tests/test_bad_input_more);
    joined to a cluster, the driver checks only its form: the GPUs are the cluster's."""
    from raynas.checks import check_device, devices_on_cluster

    devices_on_cluster()
    try:
        check_device("cuda")
        check_device("cuda:3")
        with pytest.raises(ConfigError, match="expected cuda or cuda:N"):
            check_device("cuda:x")
    finally:
        devices_on_cluster(False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU visible"):
            check_device("cuda")


@pytest.mark.slow
def test_cuda_on_a_cluster_without_gpus_exits_2(two_nodes):
    """``device: cuda`` with ``--address``: refused (one line, nothing written) because the cluster has no
    GPU, not because the driver has none; with --gpus the same, said of the cluster."""
    line = _refusal(_run(two_nodes, "--set", "device=cuda", "--tracking-uri", "none"))
    assert line == (f"raynas: error: device cuda: the Ray cluster at {two_nodes['address']} has no GPU; use device "
                    "auto or cpu, or add GPU workers")
    assert not (two_nodes["base"] / "out").exists()
