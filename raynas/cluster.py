"""Multi-node guards: on a Ray cluster of more than one node, refuse (one line, exit 2, before any trial
starts) what would silently fall back to one node.

Since Ray 2.7 Tune no longer syncs checkpoints through the head, so a trial on a node that cannot see
``storage_path`` crashes at its first checkpoint and Tune reruns it elsewhere; a sqlite tracking store is a
file on one node, so trials elsewhere open (and migrate) a stray copy of their own. Both look like success.
The checks run where they can be wrong: a marker file that the driver writes into ``storage_path`` (and
beside a sqlite store) must be visible from a task on every node, and a tracking server must answer from
every node. A cluster whose nodes all see those directories (NFS, or one host) passes.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from raynas.config import ConfigError, need


def init_ray(address: str | None = None) -> None:
    """Join the cluster at ``address`` (``auto``: the one this node belongs to), else start a local Ray."""
    import ray

    from raynas.console import ray_logging_level

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=ray_logging_level())
    else:
        ray.init(include_dashboard=False, logging_level=ray_logging_level())


#: written by `ray up` on the head: the launcher's config with the number of workers it starts
BOOTSTRAP_CONFIG = Path.home() / "ray_bootstrap_config.yaml"
#: how long the driver waits for the launcher to start the configured workers (setup installs torch)
WAIT_ENV = "RAYNAS_CLUSTER_WAIT_S"
PROBE_TIMEOUT_S = 300.0
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
SET_STORAGE = ("set storage_path to a directory every node mounts at the same path (NFS) or to a URI "
               "such as s3://bucket/raynas (--set storage_path=...)")
SET_TRACKING = ("run `raynas server --host 0.0.0.0 --allowed-hosts HEAD_IP:5000` on the head and pass "
                "--tracking-uri http://HEAD_IP:5000")


def expected_nodes(bootstrap_config: str | Path = BOOTSTRAP_CONFIG) -> int:
    """Nodes the cluster launcher keeps up: the head plus every node type's ``min_workers`` (1 without a
    launcher config, e.g. a cluster started by hand with ``ray start``)."""
    import yaml

    path = Path(bootstrap_config)
    if not path.is_file():
        return 1
    config = yaml.safe_load(path.read_text()) or {}
    types = config.get("available_node_types") or {}
    return 1 + sum(int(t.get("min_workers") or 0) for t in types.values())


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def wait_for_nodes(count: int, timeout_s: float, poll_s: float = 5.0) -> list[dict[str, Any]]:
    """Block until ``count`` nodes are alive: a study submitted right after `ray up` would otherwise
    start every trial on the head while the workers are still being set up."""
    deadline, said = time.monotonic() + timeout_s, 0.0
    while len(nodes := alive_nodes()) < count:
        now = time.monotonic()
        if now >= deadline:
            raise ConfigError(f"only {len(nodes)} of the {count} nodes of this cluster joined within "
                              f"{timeout_s:.0f} s; see `ray exec cluster.yaml 'tail -n 50 "
                              f"/tmp/ray/session_latest/logs/monitor.*'` (or raise {WAIT_ENV})")
        if now - said >= 30:
            print(f"raynas: {len(nodes)} of {count} nodes up; waiting for the others (at most "
                  f"{deadline - now:.0f} s more, {WAIT_ENV})", flush=True)
            said = now
        time.sleep(poll_s)
    return nodes


def local_path(storage_path: str) -> Path | None:
    """The directory behind ``storage_path``, or None for a URI of a remote filesystem (s3://, gs://)."""
    if storage_path.startswith("file://"):
        return Path(storage_path[len("file://"):]).resolve()
    if "://" in storage_path:
        return None
    return Path(storage_path).expanduser().resolve()


def sqlite_dir(uri: str | None) -> Path | None:
    """The directory of a sqlite tracking store, which every node must then see."""
    if uri is None or not uri.lower().startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().resolve().parent


def tracking_problem(uri: str | None) -> str | None:
    """Why ``uri`` cannot serve trials on several nodes whatever their disks, or None."""
    if uri is None:
        return None
    if uri.lower().startswith(("http://", "https://")):
        if (urlparse(uri).hostname or "") in LOOPBACK_HOSTS:
            return f"tracking server {uri} is this node's loopback, which other nodes cannot reach; {SET_TRACKING}"
        return None
    if uri.lower().startswith("file:") or "://" not in uri:
        return f"tracking URI {uri} is a file store on one node's disk; {SET_TRACKING}"
    return None  # sqlite (its directory is checked like storage_path) or a database server


def probe(markers: list[str], uri: str | None) -> dict[str, Any]:
    """Runs on one node: which of the driver's marker files it sees (it writes its own beside each), and
    whether the tracking server answers from here."""
    import ray

    from raynas.tracking import TrackingError, check_reachable

    node_id = ray.get_runtime_context().get_node_id()
    out: dict[str, Any] = {"node_id": node_id, "ip": ray.util.get_node_ip_address(),
                           "sees": [os.path.isfile(m) for m in markers], "tracking": None}
    for marker, seen in zip(markers, out["sees"]):
        if seen:  # only then: writing into a path that is not shared would leave a stray directory
            Path(f"{marker}.{node_id}").write_text(out["ip"])
    if uri is not None and uri.lower().startswith(("http://", "https://")):
        try:
            check_reachable(uri)
        except TrackingError as e:
            out["tracking"] = str(e)
    return out


def _probe_every_node(nodes: list[dict[str, Any]], markers: list[str], uri: str | None) -> list[dict[str, Any]]:
    import ray
    from ray.exceptions import GetTimeoutError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe)
    refs = {n["NodeManagerAddress"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(markers, uri) for n in nodes}
    try:
        return ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)
    except GetTimeoutError:
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0)
        late = sorted(ip for ip, r in refs.items() if r not in ready)
        raise ConfigError(f"node(s) {', '.join(late)} did not run a storage/tracking check within "
                          f"{PROBE_TIMEOUT_S:.0f} s; is every node healthy (`ray status`)?") from None


def _write_marker(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / f".raynas-shared-{uuid.uuid4().hex}"
        marker.write_text("raynas checks that every node sees this directory\n")
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write there ({e.strerror})") from None
    return marker


def check_cluster(address: str | None, storage_path: str, tracking_uri: str | None) -> None:
    """With ``address`` (joining a running cluster): wait for the nodes its launcher starts, then, on more
    than one node, refuse a ``storage_path`` or sqlite tracking store that some node cannot see, and a
    tracking server that some node cannot reach. Raises ConfigError (exit 2) before the tracking store is
    touched. Without ``address`` Ray starts a one-node instance here, and there is nothing to check."""
    if not address:
        return

    init_ray(address)
    nodes = wait_for_nodes(expected_nodes(), float(os.environ.get(WAIT_ENV, "900")))
    n = len(nodes)
    if n < 2:
        return
    if (problem := tracking_problem(tracking_uri)) is not None:
        raise ConfigError(problem)
    shared = {}  # what must be visible on every node -> (its directory, the refusal)
    if (path := local_path(storage_path)) is not None:
        shared["storage_path"] = (path, f"storage_path {path} is not shared: node(s) {{}} of this {n}-node "
                                        f"cluster do not see it; {SET_STORAGE}")
    if (db := sqlite_dir(tracking_uri)) is not None:
        shared["tracking store"] = (db, f"tracking store {tracking_uri} is a file that node(s) {{}} of this "
                                        f"{n}-node cluster do not see; {SET_TRACKING}")
    markers = [_write_marker(d, what) for what, (d, _) in shared.items()]
    try:
        results = _probe_every_node(nodes, [str(m) for m in markers], tracking_uri)
        for i, (_, refusal) in enumerate(shared.values()):
            if blind := sorted(r["ip"] for r in results if not r["sees"][i]):
                raise ConfigError(refusal.format(", ".join(blind)))
        for r in results:
            if r["tracking"]:
                raise ConfigError(f"from node {r['ip']}: {r['tracking']}")
    finally:
        for marker in markers:
            for f in marker.parent.glob(f"{marker.name}*"):
                f.unlink(missing_ok=True)


def check_cluster_gpus(address: str, devices: set[str], gpus_per_trial: float) -> None:
    """Joined to the cluster at ``address``: trials on ``cuda`` ask Ray for a GPU (Ray gives a trial only the
    GPUs it asked for) and the cluster has that many; one line otherwise, before anything is written."""
    import ray

    cuda = sorted(d for d in devices if d.startswith("cuda"))
    if not cuda:
        return
    init_ray(address)
    have = float(ray.cluster_resources().get("GPU", 0))
    need(have > 0, f"device {cuda[0]}: the Ray cluster at {address} has no GPU; use device auto or cpu, or add GPU "
                   "workers")
    need(gpus_per_trial > 0, f"device {cuda[0]} on a cluster needs a GPU per trial (resources.gpu / --gpus > 0): "
                             "Ray places a trial on a GPU only when it asks for one")
    need(gpus_per_trial <= have, f"{gpus_per_trial:g} GPUs per trial but the Ray cluster at {address} has "
                                 f"{have:g}")
    wanted = max(int(d.partition(":")[2] or 0) for d in cuda)
    need(wanted < max(gpus_per_trial, 1),
         f"device cuda:{wanted}: a trial sees only the {gpus_per_trial:g} GPU(s) Ray gives it, from cuda:0; use cuda")
