"""Retrain results (``raynas retrain``'s ``retrain_summary.json``) joined to the search trials of a report.

A search's validation accuracy is the supernet's; what a paper quotes is the test accuracy of the found
genotype trained from scratch. A retrain trial names the search trial it came from (``search``: trial id
and summary path, as ``--from`` records it); a retrain of a genotype given by hand (or of a moved experiment) is matched
by space, dataset and genotype instead: the retrained accuracy belongs to the genotype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FILE = "retrain_summary.json"  # the file raynas.retrain writes (not imported: keeps Ray off this path)


def is_retrain_dir(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file() and not (path / "summary.json").is_file()


def read_retrain(path: Path) -> list[dict[str, Any]]:
    """The completed retrain trials (with a test accuracy) of one retrain directory."""
    from raynas.config import ConfigError
    from raynas.outdir import read_json

    summary = read_json(path / SUMMARY_FILE, SUMMARY_FILE)
    entries = summary.get("trials") if isinstance(summary, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path / SUMMARY_FILE} is not a raynas retrain summary (no list of trials)")
    return [e for e in entries if e.get("status") == "completed" and e.get("test_acc") is not None]


def _canonical(space: str, genotype: str) -> str:
    try:
        import search_spaces
        return search_spaces.genotype_str(space, search_spaces.parse_genotype(space, genotype))
    except (ValueError, KeyError):
        return genotype


def join_retrain(trials: list[dict[str, Any]], summaries: dict[str, Path], entries: list[dict[str, Any]]) -> None:
    """Set ``retrain_test_acc`` (mean over seeds) and ``retrain_seeds`` on each trial with retrain results.

    ``summaries`` maps a trial's ``key`` to the resolved ``summary.json`` of its experiment."""
    by_trial: dict[tuple[str, str], list[float]] = {}
    by_genotype: dict[tuple[str, str, str], list[float]] = {}
    for e in entries:
        search = e.get("search") or {}
        if search.get("trial_id") and search.get("summary"):
            by_trial.setdefault((str(Path(search["summary"]).resolve()), search["trial_id"]), []).append(e["test_acc"])
        key = (e["space"], e["dataset"], _canonical(e["space"], e["genotype"]))
        by_genotype.setdefault(key, []).append(e["test_acc"])
    for t in trials:
        accs = by_trial.get((str(summaries[t["key"]]), t["trial_id"]))
        if accs is None and t.get("genotype"):
            accs = by_genotype.get((t["space"], t["dataset"], _canonical(t["space"], t["genotype"])))
        t["retrain_test_acc"] = float(np.mean(accs)) if accs else None
        t["retrain_seeds"] = len(accs) if accs else 0
