"""The report as Markdown or one self-contained HTML page (plots inlined as base64 PNG): the same tables in both."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from raynas.report.analysis import ALPHA, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, min_pairs


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _retrain(g: dict[str, Any]) -> str:
    if g["retrain_test_acc"] is None:
        return "–"
    std = "" if g["retrain_test_acc_std"] is None else f" ± {_fmt(g['retrain_test_acc_std'])}"
    return f"{_fmt(g['retrain_test_acc'])}{std} ({g['retrain_n']} of {g['n_trials']} trials)"


def _tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headers, rows, note) of every table, rendered alike in markdown and html."""
    groups = [[g["method"], g["space"], g["dataset"], g["objective_name"], str(g["n"]),
               f"{_fmt(g['mean'])} ± {_fmt(g['std'])}", _fmt(g["best_of_k"]), _fmt(g["worst"]),
               "–" if g["collapse_share"] is None else
               f"{g['collapsed']}/{g['collapse_known']} ({100 * g['collapse_share']:.0f}%)",
               f"{g['degenerate']}/{g['n_trials']}", _fmt(g["params_m"]), _retrain(g), _fmt(g["gpu_hours"], 3),
               _fmt(g["cpu_hours"], 3), _fmt(g["rank"], 1)]
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
               {True: "yes", False: "no", None: "–"}[t["collapsed"]], _fmt(t["skip_count"]),
               "–" if t["genotype"] is None else t["degenerate_reason"] or "no", _fmt(t["params_m"]),
               _fmt(t.get("retrain_test_acc")) + (f" ({t['retrain_seeds']} seeds)" if t.get("retrain_seeds") else ""),
               str(t["genotype"])] for t in report["trials"]]
    obj, rule = report["objective"], report["collapse_rule"]
    return [
        ("Results per method × space × dataset",
         ["method", "space", "dataset", "objective", "n", "mean ± std", "best-of-k", "worst", "collapsed",
          "degenerate", "params (M)", "retrain test acc", "GPU-h", "CPU-h", "rank"], groups,
         f"Objective: {obj['metric']} ({obj['mode']}); std over seeds with ddof=1; best-of-k over the k = n seeds; "
         f"collapsed: `{rule}` on the final genotype; degenerate: final cells whose output cannot depend on "
         "the input; params: the evaluation network of the genotype (NB201 table when looked up); retrain test "
         "acc: mean ± std over the trials' retrained genotypes (retrain directories among the sources)."),
        ("Rank per column (1 = best mean)", ["method", *cols, "mean rank"], ranks, ""),
        ("Paired tests across seeds (A − B)",
         ["space", "dataset", "A", "B", "pairs", "mean A−B", "Wilcoxon p", "bootstrap 95% CI", "verdict"], tests,
         "Two-sided Wilcoxon signed-rank test on the per-seed differences; bootstrap CI of their mean "
         f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}). The exact p of n pairs is at least 2/2^n, so "
         f"below {min_pairs(ALPHA)} non-zero pairs no verdict is given (p < {ALPHA:g} is out of reach); a CI from "
         "so few seeds is optimistic."),
        ("Trials", ["experiment", "trial", "method", "space", "dataset", "seed", "status", "epochs", "objective",
                    "collapsed", "skips", "degenerate", "params (M)", "retrain test acc", "genotype"], trials, ""),
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
