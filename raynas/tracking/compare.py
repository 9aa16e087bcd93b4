"""Compare methods across an experiment's finished trial runs: mean ± std of the objective per
(method, space, dataset), the best run and its genotype, and the retrained test accuracy of the found
genotypes where ``raynas retrain`` wrote it back, as CSV and a Markdown table."""

from __future__ import annotations

import csv
import statistics
import tempfile
from pathlib import Path
from typing import Any

from raynas.tracking.store import TrackingError, client

RETRAIN_METRIC = "retrain.test_acc"  # what ``raynas retrain`` writes back onto the search run (mean over seeds)

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
        retrained = [r.data.metrics[RETRAIN_METRIC] for r in runs if RETRAIN_METRIC in r.data.metrics]
        rows.append({"method": method, "space": space, "dataset": dataset, "objective": objective,
                     "n": len(vals), "mean": statistics.fmean(vals),
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "best": best.data.metrics[objective], "best_seed": best.data.tags.get("seed", ""),
                     "best_run_id": best.info.run_id, "genotype": best.data.tags.get("genotype", ""),
                     "retrain_n": len(retrained),
                     "retrain_test_acc": statistics.fmean(retrained) if retrained else None,
                     "retrain_test_acc_std": statistics.stdev(retrained) if len(retrained) > 1 else None})
    rows.sort(key=lambda r: (r["space"], r["dataset"], -r["mean"] if higher else r["mean"]))
    if not rows:  # the command fails: write nothing
        return rows
    if out_dir is not None or (attach and parent is not None):
        with tempfile.TemporaryDirectory() as d:
            _, md = compare_to_files(rows, out_dir or d)
            if attach and parent is not None:
                c.log_artifact(parent.info.run_id, str(md))
    return rows


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped (NB201 genotypes are full of them; GFM splits on them even inside
    code spans), newlines flattened."""
    return text.replace("|", "\\|").replace("\n", " ")


def _retrain(r: dict[str, Any]) -> str:
    if r["retrain_test_acc"] is None:
        return "–"
    std = "" if r["retrain_test_acc_std"] is None else f" ± {r['retrain_test_acc_std']:.2f}"
    return f"{r['retrain_test_acc']:.2f}{std} ({r['retrain_n']} run{'s' if r['retrain_n'] != 1 else ''})"


def compare_to_files(rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``compare.csv`` (all fields) and ``compare.md`` (a table for a paper draft or a PR)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["method", "space", "dataset", "objective", "n", "mean", "std", "best", "best_seed", "best_run_id",
              "genotype", "retrain_n", "retrain_test_acc", "retrain_test_acc_std"]
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    objective = rows[0]["objective"] if rows else "objective"
    lines = [f"| method | space | dataset | n | {_cell(objective)} (mean ± std) | best | retrain test acc | "
             "genotype of best |", "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in (
        r["method"], r["space"], r["dataset"], str(r["n"]), f"{r['mean']:.2f} ± {r['std']:.2f}", f"{r['best']:.2f}",
        _retrain(r), f"`{r['genotype']}`" if r["genotype"] else "–")) + " |" for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return out / "compare.csv", out / "compare.md"

