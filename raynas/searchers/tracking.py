"""A searcher comparison in MLflow: one parent run per study, one child run per searcher x seed.

Children carry the tags ``raynas compare`` groups by (``method`` = the searcher, ``space``, ``dataset``, ``seed``),
the anytime curve as step metrics (``incumbent_test_acc`` and ``sim_time_h`` at step k = after k queries), the
final ``test_acc`` and ``test_acc_at_<budget>``, and the incumbent as tag ``genotype``. The parent holds the
study file, the table and the curve.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from raynas.searchers.curves import at_queries, incumbent_rows, incumbents
from raynas.searchers.simulate import Query


def log_study(uri: str, result: dict[str, Any], yaml_text: str | None = None,
              files: tuple[str | Path, ...] = ()) -> str:
    """Log ``result`` (``raynas.searchers.study.run_study``); returns the parent run id."""
    from raynas.tracking import check_reachable, finish_run, start_parent_run
    from raynas.tracking.store import client, log_batch

    check_reachable(uri)
    s, b = result["study"], result["study"]["bench"]
    common = {"raynas.kind": "bench", "space": "nb201", "dataset": b["dataset"], "scheduler": s["scheduler"]["type"],
              "backend": result["backend"]}
    parent = start_parent_run(uri, s["name"], yaml_text=yaml_text, tags=common)  # sqlite: artifacts beside the db
    c = client(uri)
    exp_id = c.get_run(parent).info.experiment_id
    for d in result["runs"]:
        queries = [Query(**q) for q in d["queries"]]
        tags = {**common, "mlflow.parentRunId": parent, "method": d["searcher"], "seed": str(d["seed"])}
        run_id = c.create_run(exp_id, run_name=f"{d['searcher']}/seed{d['seed']}", tags=tags).info.run_id
        now = int(time.time() * 1000)
        inc = incumbents(queries)
        metrics = [("incumbent_test_acc", float(v), now, k) for k, v in enumerate(inc, start=1)]
        metrics += [("sim_time_h", q.time / 3600, now, k) for k, q in enumerate(queries, start=1)]
        metrics += [(f"test_acc_at_{n}", float(v), now, 0)
                    for n, v in zip(b["budgets"], at_queries(queries, b["budgets"]))]
        if len(inc):
            metrics.append(("test_acc", float(inc[-1]), now, 0))
        metrics += [("queries", float(len(queries)), now, 0), ("wall_s", float(d.get("wall_s", 0.0)), now, 0)]
        params = [("budget", str(b["budget"])), ("time_budget", str(b["time_budget"]))]
        params += [(f"option.{k}", str(v)[:500]) for k, v in b["options"].get(d["searcher"], {}).items()]
        arch = queries[incumbent_rows(queries)[-1]].arch if queries else None
        log_batch(c, run_id, metrics, params, [("genotype", arch)] if arch else [])
        c.set_terminated(run_id, "FINISHED")
    for f in files:
        c.log_artifact(parent, str(f))
    finish_run(uri, parent)
    return parent
