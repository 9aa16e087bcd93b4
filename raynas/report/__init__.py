"""Study reports over experiment directories (md, self-contained html), as ``raynas report`` writes them.

``analysis`` computes the numbers (trials, statistics, ranks, paired tests), ``plots`` draws the figures,
``render`` writes Markdown and HTML, ``build`` ties them together and ``attach`` logs a report to MLflow.
"""

from raynas.report.analysis import load_trials, paired_test, parse_rule, read_history, resolve_source, summarise
from raynas.report.attach import attach_to_mlflow, tracking_target
from raynas.report.build import FORMATS, build_report
from raynas.report.plots import plot_accuracy, plot_alpha, plot_hessian
from raynas.report.render import render_html, render_md

__all__ = ["FORMATS", "attach_to_mlflow", "build_report", "load_trials", "paired_test", "parse_rule", "plot_accuracy",
           "plot_alpha", "plot_hessian", "read_history", "render_html", "render_md", "resolve_source", "summarise",
           "tracking_target"]
