"""The numbers of a study report, read from experiment directories (``raynas report DIR [DIR ...]``).

Per method x space x dataset: seeds, mean ± std of the objective, best-of-k, worst, share of collapsed
searches, parameter count of the found cells, search CPU/GPU-hours; each method's rank per column
(space x dataset); paired tests between methods across seeds. Conventions:

- **objective**: ``objective`` when given (a ``final`` key such as ``valid_acc``, ``nb201_test``/``nb201_valid``,
  or any metric of the last epoch); otherwise the NAS-Bench-201 test accuracy of the searched dataset when
  the trial has an nb201 row (cifar10 -> cifar10_test, cifar100 -> cifar100_test, imagenet16-120 ->
  imagenet16_test, other datasets -> cifar10_test), else the experiment's objective metric, else the
  final ``valid_acc``. Higher is better unless the metric is the experiment's with mode ``min`` or a loss.
- **std** is the sample standard deviation (ddof=1), as papers' "mean ± std over seeds"; none for one seed.
  **best-of-k** is the best of the k seeds of a cell (the S1-S4 literature reports best of 4).
- **collapse**: a rule ``METRIC OP NUMBER`` (``skip_count>=4``; metrics of ``search_spaces.genotype_stats``:
  skip_count, param_free_count -- the normal cell for DARTS-family genotypes -- and their ``_reduce``
  variants; ops >=, >, <=, <, ==), parsed by a regex, applied to the final genotype.
- **params** (millions): the nb201 row's ``params`` when the trial has one; otherwise the evaluation network
  of the genotype on the searched dataset (CIFAR-10 for a dataset ``raynas genotype`` does not know), as
  ``raynas genotype --space S --dataset D`` computes it (``raynas.genotype_info``): NB201 C=16, N=5; DARTS
  spaces ``NetworkCIFAR`` with 20 cells, C=36, without the auxiliary head.
- **degenerate**: the final cell cannot carry its input to its output (``search_spaces.degenerate_reason``:
  every edge ``none``, the output unreachable, a node with no input that feeds the output).
- **retrain test acc**: with retrain directories among the sources (``retrain_summary.json``), the mean
  test accuracy over the completed retrain seeds of each trial's genotype (matched by the search trial the
  retrain came from, else by space, dataset and genotype).
- **search hours**: sum of the per-epoch ``epoch_time`` x the trial's ``resources`` cpu/gpu.
- **paired tests**: per column and pair of methods, the per-seed differences A - B (seeds present in both;
  repeated seeds averaged), two-sided Wilcoxon signed-rank p, and a seeded bootstrap 95% CI of the mean
  difference. The exact two-sided p of n non-zero differences is at least 2 / 2^n, so below
  ``min_pairs(0.05)`` = 6 pairs no outcome can reach p < 0.05: the verdict is then "n too small to test",
  never "differ" (the CI is still shown; from so few seeds it is optimistic).
"""

from __future__ import annotations

from raynas.outdir import read_json

import functools
import itertools
import json
import math
import operator
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raynas.config import ConfigError

NB201_TEST = {"cifar10": "cifar10_test", "cifar100": "cifar100_test", "imagenet16-120": "imagenet16_test"}
NB201_VALID = {"cifar10": "cifar10_valid", "cifar100": "cifar100_valid", "imagenet16-120": "imagenet16_valid"}
COLLAPSE_METRICS = ("skip_count", "param_free_count", "skip_count_reduce", "param_free_count_reduce")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_RULE = re.compile(r"\s*([a-z_]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*")
BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED = 10_000, 0
ALPHA = 0.05  # significance level of the paired tests
#: ``progress(stage, item, total, what)``, called before each item (``raynas.console.StageProgress``)
Progress = Callable[[str, int, int, str], None]


# ------------------------------------------------------------------------------------------ reading
def parse_rule(rule: str) -> Callable[[dict[str, int]], bool | None]:
    """``"skip_count>=4"`` -> a predicate on genotype stats (None when the metric is not in them)."""
    m = _RULE.fullmatch(rule)
    if m is None or m[1] not in COLLAPSE_METRICS:
        raise ConfigError(f"collapse rule {rule!r}: expected METRIC OP NUMBER with METRIC one of "
                          f"{', '.join(COLLAPSE_METRICS)} and OP one of {' '.join(_OPS)}, e.g. 'skip_count>=4'")
    metric, op, value = m[1], _OPS[m[2]], float(m[3])
    return lambda stats: None if stats.get(metric) is None else bool(op(stats[metric], value))


def resolve_source(source: str | Path) -> Path:
    """An experiment directory, an experiment YAML (its default ``runs/<name>``), a name under ``runs/``, or a
    ``raynas retrain`` output directory (its results are joined to the experiments' trials)."""
    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from raynas.experiment import load_experiment
        path = Path("runs") / load_experiment(path).name
    elif not path.exists() and (Path("runs") / path).is_dir():
        path = Path("runs") / path
    from raynas.report.retrain_join import is_retrain_dir

    if not (path / "summary.json").is_file() and not is_retrain_dir(path):
        raise ConfigError(f"{source} is not a raynas experiment (no summary.json) nor a retrain directory "
                          "(no retrain_summary.json)")
    return path


def read_history(entry: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """The trial's per-epoch results (Ray's ``result.json``), one per epoch (the last report of a
    re-run epoch wins); looked up at ``entry["path"]``, then under ``source/ray_results`` if moved."""
    path = entry.get("path") or ""
    files = [Path(path) / "result.json"] if path and "://" not in path else []
    if path:
        files += sorted(source.glob(f"ray_results/*/{Path(path).name}/result.json"))
    for f in files:
        if f.is_file():
            by_epoch: dict[int, dict[str, Any]] = {}
            for line in f.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # blank or half-written last line
                    continue
                if isinstance(row, dict) and "epoch" in row:
                    by_epoch[row["epoch"]] = row
            return [by_epoch[e] for e in sorted(by_epoch)]
    return []


def _objective(entry: dict[str, Any], history: list[dict[str, Any]], objective: str | None,
               exp_metric: str) -> tuple[float | None, str]:
    final, dataset = entry.get("final") or {}, entry.get("dataset")
    nb = final.get("nb201") or {}
    last = history[-1] if history else {}

    def lookup(metric: str) -> float | None:
        if metric == "nb201_test":
            return nb.get(NB201_TEST.get(dataset, "cifar10_test"))
        if metric == "nb201_valid":
            return nb.get(NB201_VALID.get(dataset, "cifar10_valid"))
        return final.get(metric, last.get(metric))

    if objective:
        return lookup(objective), objective
    if nb:
        return lookup("nb201_test"), NB201_TEST.get(dataset, "cifar10_test")
    value = lookup(exp_metric)
    return (value, exp_metric) if value is not None else (final.get("valid_acc"), "valid_acc")


def _parsed(space: str, genotype: str | None) -> Any:
    if not genotype:
        return None
    import search_spaces  # torch: imported when a report is built, not with the CLI

    try:
        return search_spaces.parse_genotype(space, genotype)
    except (ValueError, KeyError):
        return None


def _genotype_stats(space: str, genotype: Any) -> dict[str, int]:
    import search_spaces

    return {} if genotype is None else search_spaces.genotype_stats(space, genotype)


def _degenerate_reason(space: str, genotype: Any) -> str | None:
    import search_spaces

    return None if genotype is None else search_spaces.degenerate_reason(space, genotype)


@functools.lru_cache(maxsize=None)
def genotype_params(space: str, genotype: str, dataset: str) -> float | None:
    """Parameters (millions) of the genotype's evaluation network, as ``raynas genotype`` counts them."""
    from raynas.genotype_info import SHAPES, build_eval_network
    from search_spaces.darts_eval import count_params

    parsed = _parsed(space, genotype)
    if parsed is None:
        return None
    return count_params(build_eval_network(space, parsed, dataset if dataset in SHAPES else "cifar10")) / 1e6


def _params(entry: dict[str, Any]) -> float | None:
    row = (entry.get("final") or {}).get("nb201") or {}
    if row.get("params") is not None:
        return row["params"]
    if not entry.get("genotype"):
        return None
    return genotype_params(entry["space"], entry["genotype"], entry.get("dataset") or "cifar10")


def load_trials(sources: list[str | Path], collapse_rule: str = "skip_count>=4", objective: str | None = None,
                progress: Progress | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Trial records of all sources, their histories (by trial key) and the first experiment's objective;
    ``progress(stage, item, total, what)`` is told of each trial before it is read."""
    from raynas.report.retrain_join import is_retrain_dir, join_retrain, read_retrain

    rule = parse_rule(collapse_rule)
    trials, histories, exp_objective, summaries, retrained = [], {}, None, {}, []
    experiments = []
    for src in sources:
        src = resolve_source(src)
        if is_retrain_dir(src):
            retrained += read_retrain(src)
            continue
        summary = read_json(src / "summary.json", "summary.json")
        state_file = src / "experiment.json"
        exp = read_json(state_file, "experiment.json").get("experiment", {}) if state_file.is_file() else {}
        experiments.append((src, summary, exp))
    total, done = sum(len(summary.get("trials", [])) for _, summary, _ in experiments), 0
    for src, summary, exp in experiments:
        obj = summary.get("objective") or {"metric": "valid_acc", "mode": "max"}
        exp_objective = exp_objective or obj
        for entry in summary.get("trials", []):
            done += 1
            if progress is not None:
                progress("reading trials", done, total, f"{summary.get('experiment', src.name)}/{entry['trial_id']}")
            history = read_history(entry, src)
            value, name = _objective(entry, history, objective, obj["metric"])
            parsed = _parsed(entry["space"], entry.get("genotype"))
            stats = _genotype_stats(entry["space"], parsed)
            res = (entry.get("config") or {}).get("resources") or exp.get("resources") or {}
            seconds = sum(h.get("epoch_time") or 0.0 for h in history) if history else None
            hours = {k: None if seconds is None else seconds * float(res.get(k, 0.0)) / 3600 for k in ("cpu", "gpu")}
            key = f"{summary.get('experiment', src.name)}/{entry['trial_id']}"
            histories[key], summaries[key] = history, (src / "summary.json").resolve()
            trials.append({
                "key": key, "experiment": summary.get("experiment", src.name), "trial_id": entry["trial_id"],
                **{k: entry.get(k) for k in ("method", "space", "dataset", "seed", "status", "epochs", "genotype")},
                "objective": None if value is None else float(value), "objective_name": name,
                "mode": obj["mode"] if name == obj["metric"] else ("min" if "loss" in name else "max"),
                "collapsed": rule(stats) if stats else None, "skip_count": stats.get("skip_count"),
                "degenerate_reason": _degenerate_reason(entry["space"], parsed),
                "params_m": _params(entry), "cpu_hours": hours["cpu"], "gpu_hours": hours["gpu"]})
    if not trials and retrained:
        raise ConfigError("report: retrain directories need the experiment directories they retrained from")
    join_retrain(trials, summaries, retrained)
    return trials, histories, exp_objective or {"metric": "valid_acc", "mode": "max"}


# ---------------------------------------------------------------------------------------- statistics
def min_pairs(alpha: float = ALPHA) -> int:
    """Fewest non-zero paired differences at which the exact two-sided Wilcoxon p (>= 2 / 2^n) can be < alpha."""
    return math.floor(math.log2(2 / alpha)) + 1


def paired_test(a: dict[int, float], b: dict[int, float], alpha: float = ALPHA) -> dict[str, Any]:
    """Differences a - b over the shared seeds: two-sided Wilcoxon p and a bootstrap 95% CI of the mean.

    Below ``min_pairs(alpha)`` non-zero differences the verdict is "n too small to test": no outcome of
    so few pairs could be significant, so neither "differ" nor "noise" would be honest."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    need = min_pairs(alpha)
    out: dict[str, Any] = {"n": len(d), "seeds": seeds, "mean_diff": float(d.mean()) if len(d) else None,
                           "p_wilcoxon": None, "ci95": None, "min_pairs": need,
                           "verdict": f"n too small to test (Wilcoxon needs >= {need} pairs for p < {alpha:g})"}
    if len(d) < 2:
        return out
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = d[rng.integers(0, len(d), (BOOTSTRAP_SAMPLES, len(d)))].mean(axis=1)
    lo, hi = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = 1.0 if not d.any() else float(wilcoxon(d).pvalue)
    out.update(p_wilcoxon=p, ci95=[lo, hi])
    if np.count_nonzero(d) < need:
        nonzero = np.count_nonzero(d)
        if nonzero < len(d):
            out["verdict"] += f"; {len(d) - nonzero} of {len(d)} differences are 0"
        return out
    out["verdict"] = f"differ (Wilcoxon p < {alpha:g})" if p < alpha else f"no difference shown (p >= {alpha:g})"
    return out


def _seed_values(trials: list[dict[str, Any]]) -> dict[int, float]:
    by_seed: dict[int, list[float]] = {}
    for t in trials:
        if t["objective"] is not None:
            by_seed.setdefault(t["seed"], []).append(t["objective"])
    return {s: float(np.mean(v)) for s, v in by_seed.items()}


def _total(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(sum(present)) if present else None


def summarise(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Groups (method x space x dataset) with their statistics, ranks per column and paired tests."""
    key = operator.itemgetter("method", "space", "dataset")
    groups = []
    for (method, space, dataset), members in itertools.groupby(sorted(trials, key=key), key=key):
        members = list(members)
        values = np.array([t["objective"] for t in members if t["objective"] is not None], dtype=float)
        mode = members[0]["mode"]
        best, worst = (np.max, np.min) if mode == "max" else (np.min, np.max)
        flags = [t["collapsed"] for t in members if t["collapsed"] is not None]
        params = [t["params_m"] for t in members if t["params_m"] is not None]
        retrained = [t["retrain_test_acc"] for t in members if t.get("retrain_test_acc") is not None]
        groups.append({
            "method": method, "space": space, "dataset": dataset, "objective_name": members[0]["objective_name"],
            "mode": mode, "n": len(values), "seeds": sorted({t["seed"] for t in members}),
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "best_of_k": float(best(values)) if len(values) else None, "k": len(values),
            "worst": float(worst(values)) if len(values) else None,
            "collapsed": sum(flags), "collapse_known": len(flags),
            "collapse_share": sum(flags) / len(flags) if flags else None,
            "params_m": float(np.mean(params)) if params else None,
            "degenerate": sum(t["degenerate_reason"] is not None for t in members), "n_trials": len(members),
            "retrain_test_acc": float(np.mean(retrained)) if retrained else None,
            "retrain_test_acc_std": float(np.std(retrained, ddof=1)) if len(retrained) > 1 else None,
            "retrain_n": len(retrained),
            "cpu_hours": _total([t["cpu_hours"] for t in members]),
            "gpu_hours": _total([t["gpu_hours"] for t in members]),
            "rank": None, "_seed_values": _seed_values(members)})
    from scipy.stats import rankdata

    ranks: dict[str, dict[str, float]] = {}
    tests = []
    columns = sorted({(g["space"], g["dataset"]) for g in groups})
    for space, dataset in columns:
        col = [g for g in groups if (g["space"], g["dataset"]) == (space, dataset)]
        scored = [g for g in col if g["mean"] is not None]
        order = rankdata([-g["mean"] if g["mode"] == "max" else g["mean"] for g in scored], method="average")
        for g, r in zip(scored, order):
            g["rank"] = float(r)
        ranks[f"{space}/{dataset}"] = {g["method"]: g["rank"] for g in scored}
        for ga, gb in itertools.combinations(col, 2):
            tests.append({"space": space, "dataset": dataset, "a": ga["method"], "b": gb["method"],
                          **paired_test(ga["_seed_values"], gb["_seed_values"])})
    methods = sorted({g["method"] for g in groups})
    mean_rank = {m: float(np.mean(r)) if (r := [c[m] for c in ranks.values() if m in c]) else None
                 for m in methods}
    for g in groups:
        g["seed_values"] = {str(s): v for s, v in sorted(g.pop("_seed_values").items())}
    return {"groups": groups, "ranks": ranks, "mean_rank": mean_rank, "tests": tests}
