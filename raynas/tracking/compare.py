"""Compare methods across an experiment's finished trial runs: mean ± std of the objective per
(method, space, dataset), the best run and its genotype, as CSV and a Markdown table."""

from __future__ import annotations

import csv
import statistics
import tempfile
from pathlib import Path
from typing import Any

from raynas.tracking.store import TrackingError, client

def _all_runs(c: Any, exp_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def compare(uri: str, experiment: str, objective: str = "valid_acc", *, out_dir: str | Path | None = None,
            attach: bool = True) -> list[dict[str, Any]]:
    """One row per (method, space, dataset) over the experiment's FINISHED trial runs: n, mean and
    sample std of ``objective`` (its last value), the best value, its seed, run and genotype. Writes
    ``compare.csv``/``compare.md`` to ``out_dir`` and attaches ``compare.md`` to the parent run."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"no experiment {experiment!r} in {uri}")
    groups: dict[tuple[str, str, str], list[Any]] = {}
    parent = None
    for r in _all_runs(c, exp.experiment_id):
        t = r.data.tags
        if t.get("raynas.parent") == "true":
            parent = parent or r  # the newest
        elif "method" in t and r.info.status == "FINISHED" and objective in r.data.metrics:
            groups.setdefault((t["method"], t.get("space", ""), t.get("dataset", "")), []).append(r)
    higher = not objective.endswith(("loss", "error", "time"))
    rows = []
    for (method, space, dataset), runs in groups.items():
        vals = [r.data.metrics[objective] for r in runs]
        best = (max if higher else min)(runs, key=lambda r: r.data.metrics[objective])
        rows.append({"method": method, "space": space, "dataset": dataset, "objective": objective,
                     "n": len(vals), "mean": statistics.fmean(vals),
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "best": best.data.metrics[objective], "best_seed": best.data.tags.get("seed", ""),
                     "best_run_id": best.info.run_id, "genotype": best.data.tags.get("genotype", "")})
    rows.sort(key=lambda r: (r["space"], r["dataset"], -r["mean"] if higher else r["mean"]))
    if not rows:  # the command fails: write nothing
        return rows
    if out_dir is not None or (attach and parent is not None):
        with tempfile.TemporaryDirectory() as d:
            _, md = compare_to_files(rows, out_dir or d)
            if attach and parent is not None:
                c.log_artifact(parent.info.run_id, str(md))
    return rows


def compare_to_files(rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``compare.csv`` (all fields) and ``compare.md`` (a table for a paper draft or a PR)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["method", "space", "dataset", "objective", "n", "mean", "std", "best", "best_seed", "best_run_id",
              "genotype"]
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    objective = rows[0]["objective"] if rows else "objective"
    lines = [f"| method | space | dataset | n | {objective} (mean ± std) | best | genotype of best |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['space']} | {r['dataset']} | {r['n']} | {r['mean']:.2f} ± {r['std']:.2f} "
              f"| {r['best']:.2f} | `{r['genotype']}` |" for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return out / "compare.csv", out / "compare.md"

