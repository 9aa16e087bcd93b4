"""Assertions of the end-to-end cluster test (tests/cluster/e2e.sh) on what `ray submit` left behind:
every trial completed, trials ran on every node, and MLflow holds one parent run whose children (one per
trial) are all FINISHED. Prints ``trials on N nodes`` on success; exits 1 with the reason otherwise.

    python check.py SUMMARY_JSON TRACKING_URI EXPERIMENT NODE_IP [NODE_IP ...]
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"e2e: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check_trials(summary_path: Path, node_ips: list[str]) -> list[dict]:
    if not summary_path.is_file():
        fail(f"no {summary_path}: `ray submit` did not finish the study")
    trials = json.loads(summary_path.read_text())["trials"]
    bad = [f"{t['method']}/seed{t['seed']}: {t['status']} {t.get('error', '')}" for t in trials
           if t["status"] != "completed"]
    if bad:
        fail(f"trials not completed: {'; '.join(bad)}")
    per_node = collections.Counter(t["node_ip"] for t in trials)
    missing = [ip for ip in node_ips if per_node[ip] == 0]
    if missing or set(per_node) - set(node_ips):
        fail(f"trials ran on {dict(per_node)}, expected every one of {node_ips}")
    return trials


def check_runs(uri: str, experiment: str, trials: list[dict]) -> tuple[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        fail(f"no MLflow experiment {experiment!r} at {uri}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if len(parents) != 1:
        fail(f"expected one parent run in {experiment!r}, found {len(parents)}")
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    if len(children) != len(runs) - 1 or len(children) != len(trials):
        fail(f"{len(children)} child runs under {parent} for {len(trials)} trials ({len(runs)} runs in all)")
    unfinished = [f"{r.info.run_name}: {r.info.status}" for r in children + parents if r.info.status != "FINISHED"]
    if unfinished:
        fail(f"runs not FINISHED: {', '.join(unfinished)}")
    ids = {t["mlflow_run_id"] for t in trials}
    if ids != {r.info.run_id for r in children}:
        fail("summary.json's mlflow_run_id values are not the parent's children")
    return parent, len(children)


def main(argv: list[str]) -> int:
    summary, uri, experiment, *node_ips = argv
    trials = check_trials(Path(summary), node_ips)
    parent, n = check_runs(uri, experiment, trials)
    per_node = collections.Counter(t["node_ip"] for t in trials)
    print(f"e2e: {n} MLflow child runs FINISHED under parent {parent}")
    print(f"trials on {len(per_node)} nodes: " + ", ".join(f"{ip} x{k}" for ip, k in sorted(per_node.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
