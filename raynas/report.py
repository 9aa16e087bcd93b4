"""Study reports over experiment directories: ``raynas report DIR [DIR ...]`` (md, self-contained html).

Per method x space x dataset: seeds, mean ± std of the objective, best-of-k, worst, share of collapsed
searches, parameter count of the found cells, search CPU/GPU-hours; each method's rank per column
(space x dataset); paired tests between methods across seeds; plots. Conventions:

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
- **params** (millions): the nb201 row's ``params`` on NB201; for DARTS-family genotypes the CIFAR
  evaluation network ``DartsNetwork(genotype, C=36, layers=20, auxiliary=False)`` (10 classes, 100 for
  cifar100, 120 for imagenet16-120) without the auxiliary head; none when that module is unavailable.
- **search hours**: sum of the per-epoch ``epoch_time`` x the trial's ``resources`` cpu/gpu.
- **paired tests**: per column and pair of methods, the per-seed differences A - B (seeds present in both;
  repeated seeds averaged), two-sided Wilcoxon signed-rank p, and a seeded bootstrap 95% CI of the mean
  difference. With fewer than 6 pairs Wilcoxon cannot reach p < 0.05 (n=4: p >= 0.125), so the verdict
  also reads the CI -- which, with so few seeds, is optimistic: treat it as a hint, not proof.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import itertools
import json
import operator
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raynas.config import ConfigError

NB201_TEST = {"cifar10": "cifar10_test", "cifar100": "cifar100_test", "imagenet16-120": "imagenet16_test"}
NB201_VALID = {"cifar10": "cifar10_valid", "cifar100": "cifar100_valid", "imagenet16-120": "imagenet16_valid"}
EVAL_CLASSES = {"cifar100": 100, "imagenet16-120": 120}
COLLAPSE_METRICS = ("skip_count", "param_free_count", "skip_count_reduce", "param_free_count_reduce")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_RULE = re.compile(r"\s*([a-z_]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*")
BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED = 10_000, 0
FORMATS = ("md", "html")


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
    """An experiment directory, an experiment YAML (its default ``runs/<name>``) or a name under ``runs/``."""
    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from raynas.experiment import load_experiment
        path = Path("runs") / load_experiment(path).name
    elif not path.exists() and (Path("runs") / path).is_dir():
        path = Path("runs") / path
    if not (path / "summary.json").is_file():
        raise ConfigError(f"{source} is not a raynas experiment (no summary.json)")
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


def _genotype_stats(space: str, genotype: str | None) -> dict[str, int]:
    if not genotype:
        return {}
    try:
        import search_spaces
        return search_spaces.genotype_stats(space, search_spaces.parse_genotype(space, genotype))
    except (ValueError, KeyError):
        return {}


@functools.lru_cache(maxsize=None)
def _darts_params(space: str, genotype: str, classes: int) -> float | None:
    try:
        import search_spaces
        from search_spaces.darts_eval import DartsNetwork, count_params
        net = DartsNetwork(search_spaces.parse_genotype(space, genotype), C=36, layers=20, num_classes=classes,
                           auxiliary=False)
    except (ImportError, ValueError, KeyError):
        return None
    return count_params(net) / 1e6


def _params(entry: dict[str, Any]) -> float | None:
    if entry.get("space") == "nb201":
        return ((entry.get("final") or {}).get("nb201") or {}).get("params")
    if not entry.get("genotype"):
        return None
    return _darts_params(entry["space"], entry["genotype"], EVAL_CLASSES.get(entry.get("dataset"), 10))


def load_trials(sources: list[str | Path], collapse_rule: str = "skip_count>=4", objective: str | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Trial records of all sources, their histories (by trial key) and the first experiment's objective."""
    rule = parse_rule(collapse_rule)
    trials, histories, exp_objective = [], {}, None
    for src in sources:
        src = resolve_source(src)
        summary = json.loads((src / "summary.json").read_text())
        state_file = src / "experiment.json"
        exp = json.loads(state_file.read_text()).get("experiment", {}) if state_file.is_file() else {}
        obj = summary.get("objective") or {"metric": "valid_acc", "mode": "max"}
        exp_objective = exp_objective or obj
        for entry in summary.get("trials", []):
            history = read_history(entry, src)
            value, name = _objective(entry, history, objective, obj["metric"])
            stats = _genotype_stats(entry["space"], entry.get("genotype"))
            res = (entry.get("config") or {}).get("resources") or exp.get("resources") or {}
            seconds = sum(h.get("epoch_time") or 0.0 for h in history) if history else None
            hours = {k: None if seconds is None else seconds * float(res.get(k, 0.0)) / 3600 for k in ("cpu", "gpu")}
            key = f"{summary.get('experiment', src.name)}/{entry['trial_id']}"
            histories[key] = history
            trials.append({
                "key": key, "experiment": summary.get("experiment", src.name), "trial_id": entry["trial_id"],
                **{k: entry.get(k) for k in ("method", "space", "dataset", "seed", "status", "epochs", "genotype")},
                "objective": None if value is None else float(value), "objective_name": name,
                "mode": obj["mode"] if name == obj["metric"] else ("min" if "loss" in name else "max"),
                "collapsed": rule(stats) if stats else None, "skip_count": stats.get("skip_count"),
                "params_m": _params(entry), "cpu_hours": hours["cpu"], "gpu_hours": hours["gpu"]})
    return trials, histories, exp_objective or {"metric": "valid_acc", "mode": "max"}


# ---------------------------------------------------------------------------------------- statistics
def paired_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Differences a - b over the shared seeds: two-sided Wilcoxon p and a bootstrap 95% CI of the mean."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    out: dict[str, Any] = {"n": len(d), "seeds": seeds, "mean_diff": float(d.mean()) if len(d) else None,
                           "p_wilcoxon": None, "ci95": None, "verdict": "fewer than 2 pairs"}
    if len(d) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = 1.0 if not d.any() else float(wilcoxon(d).pvalue)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = d[rng.integers(0, len(d), (BOOTSTRAP_SAMPLES, len(d)))].mean(axis=1)
    lo, hi = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    if p < 0.05:
        verdict = "differ (Wilcoxon p < 0.05)"
    elif len(d) < 6 and not lo <= 0 <= hi:
        verdict = "likely differ (CI excludes 0; too few seeds for Wilcoxon)"
    else:
        verdict = "noise"
    return {**out, "p_wilcoxon": p, "ci95": [lo, hi], "verdict": verdict}


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


# ---------------------------------------------------------------------------------------------- plots
_STYLES = ["-", "--", ":", "-."]


def _grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, axes: np.ndarray, used: int, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat[:used]:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[used:]:
        ax.set_visible(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _by_column(trials: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in sorted(trials, key=lambda t: (t["space"], t["dataset"], t["method"], t["seed"])):
        out.setdefault((t["space"], t["dataset"]), []).append(t)
    return out


def plot_alpha(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    """Per method: the weight of each op on the first edge over epochs; colours = ops, styles = seeds."""
    panels = []
    for (space, dataset), col in _by_column(trials).items():
        for method in sorted({t["method"] for t in col}):
            runs = [(t, [h for h in histories[t["key"]] if h.get("alpha")]) for t in col if t["method"] == method]
            runs = [(t, h) for t, h in runs if h]
            if runs:
                panels.append((f"{method} · {space}/{dataset}", runs))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (title, runs) in zip(axes.flat, panels):
        cell = next(iter(runs[0][1][0]["alpha"]))
        edge = next(iter(runs[0][1][0]["alpha"][cell]))
        ops = list(runs[0][1][0]["alpha"][cell][edge])
        for i, (_, hist) in enumerate(runs):
            epochs = [h["epoch"] for h in hist]
            for j, op in enumerate(ops):
                ax.plot(epochs, [h["alpha"][cell][edge].get(op, np.nan) for h in hist], color=f"C{j}",
                        linestyle=_STYLES[i % len(_STYLES)], marker=".",
                        label=op if i == 0 else None)
        ax.set_title(f"{title}\n{cell} edge {edge} (styles: seeds {', '.join(str(t['seed']) for t, _ in runs)})",
                     fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("op weight")
        ax.legend(fontsize=7)
    return _save(fig, axes, len(panels), path)


def plot_accuracy(trials: list[dict[str, Any]], path: Path) -> Path | None:
    """Per column: the objective of each seed per method (box + points)."""
    cols = {c: ts for c, ts in _by_column(trials).items() if any(t["objective"] is not None for t in ts)}
    if not cols:
        return None
    fig, axes = _grid(len(cols))
    for ax, ((space, dataset), col) in zip(axes.flat, cols.items()):
        methods = sorted({t["method"] for t in col})
        data = [[t["objective"] for t in col if t["method"] == m and t["objective"] is not None] for m in methods]
        ax.boxplot(data, positions=range(len(methods)), widths=0.5, showfliers=False)
        for i, values in enumerate(data):
            ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=18, zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=20)
        ax.set_title(f"{space}/{dataset}", fontsize=9)
        ax.set_ylabel(col[0]["objective_name"])
    return _save(fig, axes, len(cols), path)


def plot_hessian(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    """Dominant Hessian eigenvalue per epoch; colours = methods, styles = seeds. None when never reported."""
    cols = {c: ts for c, ts in _by_column(trials).items()
            if any(h.get("hessian_eigenvalue") is not None for t in ts for h in histories[t["key"]])}
    if not cols:
        return None
    fig, axes = _grid(len(cols))
    for ax, ((space, dataset), col) in zip(axes.flat, cols.items()):
        methods = sorted({t["method"] for t in col})
        seeds, labelled = sorted({t["seed"] for t in col}), set()
        for t in col:
            pts = [(h["epoch"], h["hessian_eigenvalue"]) for h in histories[t["key"]]
                   if h.get("hessian_eigenvalue") is not None]
            if pts:
                ax.plot(*zip(*pts), color=f"C{methods.index(t['method'])}", marker=".",
                        linestyle=_STYLES[seeds.index(t["seed"]) % len(_STYLES)],
                        label=None if t["method"] in labelled else t["method"])
                labelled.add(t["method"])
        ax.set_title(f"{space}/{dataset} (styles: seeds)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dominant eigenvalue of ∇²α L_val")
        ax.legend(fontsize=7)
    return _save(fig, axes, len(cols), path)


# ---------------------------------------------------------------------------------------------- render
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headers, rows, note) of every table, rendered alike in markdown and html."""
    groups = [[g["method"], g["space"], g["dataset"], g["objective_name"], str(g["n"]),
               f"{_fmt(g['mean'])} ± {_fmt(g['std'])}", _fmt(g["best_of_k"]), _fmt(g["worst"]),
               "–" if g["collapse_share"] is None else
               f"{g['collapsed']}/{g['collapse_known']} ({100 * g['collapse_share']:.0f}%)",
               _fmt(g["params_m"]), _fmt(g["gpu_hours"], 3), _fmt(g["cpu_hours"], 3), _fmt(g["rank"], 1)]
              for g in report["groups"]]
    cols = list(report["ranks"])
    ranks = [[m, *(_fmt(report["ranks"][c].get(m), 1) for c in cols), _fmt(report["mean_rank"][m], 2)]
             for m in sorted(report["mean_rank"], key=lambda m: (report["mean_rank"][m] is None,
                                                                  report["mean_rank"][m] or 0.0))]
    tests = [[t["space"], t["dataset"], t["a"], t["b"], str(t["n"]), _fmt(t["mean_diff"]),
              _fmt(t["p_wilcoxon"], 3), "–" if t["ci95"] is None else f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]",
              t["verdict"]] for t in report["tests"]]
    trials = [[t["experiment"], t["trial_id"], t["method"], t["space"], t["dataset"], str(t["seed"]),
               str(t["status"]), str(t["epochs"]), _fmt(t["objective"]),
               {True: "yes", False: "no", None: "–"}[t["collapsed"]], _fmt(t["skip_count"]), _fmt(t["params_m"]),
               str(t["genotype"])] for t in report["trials"]]
    obj, rule = report["objective"], report["collapse_rule"]
    return [
        ("Results per method × space × dataset",
         ["method", "space", "dataset", "objective", "n", "mean ± std", "best-of-k", "worst", "collapsed",
          "params (M)", "GPU-h", "CPU-h", "rank"], groups,
         f"Objective: {obj['metric']} ({obj['mode']}); std over seeds with ddof=1; best-of-k over the k = n seeds; "
         f"collapsed: `{rule}` on the final genotype."),
        ("Rank per column (1 = best mean)", ["method", *cols, "mean rank"], ranks, ""),
        ("Paired tests across seeds (A − B)",
         ["space", "dataset", "A", "B", "pairs", "mean A−B", "Wilcoxon p", "bootstrap 95% CI", "verdict"], tests,
         "Two-sided Wilcoxon signed-rank test on the per-seed differences; bootstrap CI of their mean "
         f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}). With n < 6 pairs Wilcoxon cannot reach "
         "p < 0.05; a CI from so few seeds is optimistic."),
        ("Trials", ["experiment", "trial", "method", "space", "dataset", "seed", "status", "epochs", "objective",
                    "collapsed", "skips", "params (M)", "genotype"], trials, ""),
    ]


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_md(report: dict[str, Any], plots: dict[str, Path], out: Path) -> str:
    lines = [f"# raynas report: {', '.join(report['experiments'])}", ""]
    for title, headers, rows, note in _tables(report):
        lines += [f"## {title}", "", *([note, ""] if note else []),
                  "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                  *("| " + " | ".join(map(_md_cell, r)) + " |" for r in rows), ""]
    lines += ["## Plots", ""]
    lines += [f"![{name}]({p.relative_to(out).as_posix()})\n" for name, p in plots.items()]
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 "
        "1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}"
        "tr:nth-child(even){background:#fafafa}img{max-width:100%;display:block;margin:1em 0}.note{color:#555}")


def render_html(report: dict[str, Any], plots: dict[str, Path]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>raynas report</title><style>{_CSS}</style>"
             f"</head><body><h1>raynas report: {e(', '.join(report['experiments']))}</h1>"]
    for title, headers, rows, note in _tables(report):
        parts.append(f"<h2>{e(title)}</h2>" + (f"<p class='note'>{e(note)}</p>" if note else ""))
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    parts.append("<h2>Plots</h2>")
    for name, p in plots.items():
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<h3>{e(name)}</h3><img alt='{e(name)}' src='data:image/png;base64,{data}'>")
    parts += [f"<p class='note'>{e(n)}</p>" for n in report["notes"]]
    return "\n".join(parts) + "</body></html>\n"


# ------------------------------------------------------------------------------------------------ API
def build_report(sources: list[str | Path], out: Path, formats: tuple[str, ...] = FORMATS,
                 collapse_rule: str = "skip_count>=4", objective: str | None = None) -> dict[str, Any]:
    """Read the experiments, write ``out/report.{md,html,json}`` and ``out/plots/*.png``; return the numbers."""
    bad = set(formats) - set(FORMATS)
    if bad or not sources:
        raise ConfigError(f"report formats must be among {', '.join(FORMATS)}, got {sorted(bad)}" if bad
                          else "report: name at least one experiment directory")
    trials, histories, exp_obj = load_trials(list(sources), collapse_rule, objective)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({t["objective_name"] for t in trials})
    report: dict[str, Any] = {
        "experiments": sorted({t["experiment"] for t in trials}),
        "objective": {"metric": objective or (" / ".join(names) if names else exp_obj["metric"]),
                      "mode": trials[0]["mode"] if trials else exp_obj["mode"], "experiment": exp_obj["metric"]},
        "collapse_rule": collapse_rule, **summarise(trials), "trials": trials, "notes": []}
    plots: dict[str, Path] = {}
    for name, make in (("alpha evolution (first edge)", lambda p: plot_alpha(trials, histories, p)),
                       ("accuracy distribution", lambda p: plot_accuracy(trials, p)),
                       ("Hessian eigenvalue", lambda p: plot_hessian(trials, histories, p))):
        path = make(out / "plots" / f"{name.split()[0].lower()}.png")
        if path is None:
            report["notes"].append(f"no {name} plot: the trials' histories hold no data for it"
                                   + (" (run with hessian_every > 0)" if "Hessian" in name else ""))
        else:
            plots[name] = path
    report["plots"] = {k: str(v) for k, v in plots.items()}
    report["files"] = {"json": str(out / "report.json")}
    if "md" in formats:
        (out / "report.md").write_text(render_md(report, plots, out))
        report["files"]["md"] = str(out / "report.md")
    if "html" in formats:
        (out / "report.html").write_text(render_html(report, plots))
        report["files"]["html"] = str(out / "report.html")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def attach_to_mlflow(report_dir: str | Path, tracking_uri: str, experiment_name: str) -> str | None:
    """Log the report files and plots as artifacts (under ``report/``) of the experiment's parent run
    (tag ``raynas.parent`` = "true", newest first); return its run id, or None (said on stderr)."""
    report_dir = Path(report_dir)
    db = tracking_uri[len("sqlite:///"):].split("?")[0] if tracking_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():
        print(f"raynas report: no MLflow store at {tracking_uri}; report not attached", file=sys.stderr)
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`raynas.parent` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not runs:
        print(f"raynas report: no MLflow parent run (tag raynas.parent=true) in experiment {experiment_name!r} "
              f"at {tracking_uri}; report not attached", file=sys.stderr)
        return None
    run_id = runs[0].info.run_id
    for name in ("report.md", "report.html", "report.json"):
        if (report_dir / name).is_file():
            client.log_artifact(run_id, str(report_dir / name), artifact_path="report")
    if (report_dir / "plots").is_dir():
        client.log_artifacts(run_id, str(report_dir / "plots"), artifact_path="report/plots")
    return run_id


# ------------------------------------------------------------------------------------------------ CLI
def register(subparsers: Any) -> None:
    """Add ``raynas report`` to the CLI's subparsers."""
    p = subparsers.add_parser("report", help="study report (md, self-contained html) over experiment directories")
    p.add_argument("sources", nargs="+", metavar="DIR_OR_EXPERIMENT",
                   help="experiment output dirs (with summary.json), experiment YAMLs or names under runs/")
    p.add_argument("--format", default="md,html", help="comma-separated: md, html (default both)")
    p.add_argument("--out", help="report directory (default: FIRST_DIR/report)")
    p.add_argument("--collapse-rule", dest="collapse_rule", default="skip_count>=4",
                   help="e.g. skip_count>=4, param_free_count>5 (normal cell on DARTS-family spaces)")
    p.add_argument("--objective", help="metric to compare (default: nb201 test acc, else the experiment's)")
    p.add_argument("--tracking-uri", dest="tracking_uri",
                   help="attach the report to the experiment's MLflow parent run (default, as the runner: the "
                        "experiment's tracking_uri, $MLFLOW_TRACKING_URI, ./mlflow.db when it exists)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    dirs = [resolve_source(s) for s in args.sources]
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    out = Path(args.out) if args.out else dirs[0] / "report"
    report = build_report(dirs, out, formats, args.collapse_rule, args.objective)
    for kind, path in report["files"].items():
        print(f"{kind}: {path}")
    attached = set()
    for d in dirs:
        state = d / "experiment.json"
        exp = json.loads(state.read_text()).get("experiment", {}) if state.is_file() else {}
        implicit = Path("mlflow.db")  # the runner's default store, sqlite:///<cwd>/mlflow.db, when it exists
        uri = args.tracking_uri or exp.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or (
            f"sqlite:///{implicit.resolve()}" if implicit.is_file() else None)
        name = json.loads((d / "summary.json").read_text()).get("experiment", exp.get("name"))
        if uri and (uri, name) not in attached:
            attached.add((uri, name))
            run_id = attach_to_mlflow(out, uri, name)
            if run_id:
                print(f"attached to MLflow run {run_id} ({name})")
    return 0
