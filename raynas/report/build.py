"""``build_report``: read the experiments, compute the numbers, draw the plots, write report.{md,html,json}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raynas.config import ConfigError
from raynas.report.analysis import Progress, load_trials, summarise
from raynas.report.plots import plot_accuracy, plot_alpha, plot_hessian
from raynas.report.render import render_html, render_md

FORMATS = ("md", "html")


def build_report(sources: list[str | Path], out: Path, formats: tuple[str, ...] = FORMATS,
                 collapse_rule: str = "skip_count>=4", objective: str | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Read the experiments, write ``out/report.{md,html,json}`` and ``out/plots/*.png``; return the numbers.
    ``progress(stage, item, total, what)`` is told of each trial, figure and file before it is made."""
    bad = set(formats) - set(FORMATS)
    if bad or not sources:
        raise ConfigError(f"report formats must be among {', '.join(FORMATS)}, got {sorted(bad)}" if bad
                          else "report: name at least one experiment directory")
    step = progress or (lambda stage, item, total, what: None)
    trials, histories, exp_obj = load_trials(list(sources), collapse_rule, objective, step)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({t["objective_name"] for t in trials})
    report: dict[str, Any] = {
        "experiments": sorted({t["experiment"] for t in trials}),
        "objective": {"metric": objective or (" / ".join(names) if names else exp_obj["metric"]),
                      "mode": trials[0]["mode"] if trials else exp_obj["mode"], "experiment": exp_obj["metric"]},
        "collapse_rule": collapse_rule, **summarise(trials), "trials": trials,
        "notes": [f"warning: {t['key']} ({t['method']}, seed {t['seed']}) ended in a degenerate cell: "
                  f"{t['degenerate_reason']}" for t in trials if t["degenerate_reason"]]}
    plots: dict[str, Path] = {}
    figures = (("alpha evolution (first edge)", lambda p: plot_alpha(trials, histories, p)),
               ("accuracy distribution", lambda p: plot_accuracy(trials, p)),
               ("Hessian eigenvalue", lambda p: plot_hessian(trials, histories, p)))
    for i, (name, make) in enumerate(figures, 1):
        step("figures", i, len(figures), name)
        path = make(out / "plots" / f"{name.split()[0].lower()}.png")
        if path is None:
            report["notes"].append(f"no {name} plot: the trials' histories hold no data for it"
                                   + (" (run with hessian_every > 0)" if "Hessian" in name else ""))
        else:
            plots[name] = path
    report["plots"] = {k: str(v) for k, v in plots.items()}
    report["files"] = {"json": str(out / "report.json")}
    render = {"md": lambda: render_md(report, plots, out), "html": lambda: render_html(report, plots)}
    kinds = [k for k in FORMATS if k in formats]
    for i, kind in enumerate(kinds, 1):
        step("writing", i, len(kinds) + 1, f"report.{kind}")
        (out / f"report.{kind}").write_text(render[kind]())
        report["files"][kind] = str(out / f"report.{kind}")
    step("writing", len(kinds) + 1, len(kinds) + 1, "report.json")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
