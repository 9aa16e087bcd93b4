"""NAR over several seeds in this process, without Ray: train, evaluate, optionally search; means over seeds.

``raynas rank`` (without ``--ray``) runs this; progress goes to stderr.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_KEYS = ("kendall_tau", "spearman_rho", "precision_at_top_5pct", "kendall_tau_valid", "spearman_rho_valid",
              "precision_at_top_5pct_valid")
SEARCH_KEYS = ("best_test_acc", "best_valid_acc", "best_test_acc_oracle", "rank", "percentile", "queries",
               "search_queries")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kept_epoch(result: dict[str, Any], epochs: int) -> str:
    """Which epoch's model the held-out metrics (and the search) use, and why."""
    return (f"kept epoch {result['best_epoch']} of {epochs}: the best validation tier accuracy "
            f"({result['best_val_tier_acc']:.3f}); the paper evaluates and searches with the best-validation model")


def run_local(cfgs: list, out: Path | None = None) -> list[dict[str, Any]]:
    """Every seed in this process, the table loaded once."""
    from raynas.nar.data import load_bench
    from raynas.nar.search import tier_search
    from raynas.nar.train import NARRun

    c0 = cfgs[0]
    data = load_bench(c0.bench, c0.table, c0.dataset, c0.scale_features)
    if out is not None:  # only once the table has loaded: a bad table leaves nothing behind
        out.mkdir(parents=True, exist_ok=True)
    results = []
    for cfg in cfgs:
        run = NARRun(cfg, data)
        for _ in range(cfg.epochs):
            m = run.run_epoch()
            _log(f"[seed {cfg.seed}] epoch {m['epoch']}/{cfg.epochs} loss {m['loss']:.4f} val_tier_acc "
                 f"{m['val_tier_acc']:.3f} val_tau {m['val_kendall_tau']:.3f} ({m['time_s']:.1f} s)")
        res = {"seed": cfg.seed, **run.evaluate(scatter=out / f"scatter_seed{cfg.seed}.png" if out else None)}
        _log(f"[seed {cfg.seed}] {kept_epoch(res, cfg.epochs)}")
        if cfg.budget > 0:
            res.update(tier_search(run))
        results.append(res)
    return results


def summarize(action: str, cfgs: list, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds; for a search, ``best_arch`` is the architecture found by most seeds (then best test)."""
    keys = TRAIN_KEYS + (SEARCH_KEYS if action == "search" else ())
    per_seed = [{k: r[k] for k in ("seed", *keys, "best_arch", "best_cell", "optimum_test_acc", "n_train", "n_val",
                                   "n_heldout", "best_epoch") if k in r} for r in results]
    s: dict[str, Any] = {"action": action, "bench": cfgs[0].bench, "dataset": cfgs[0].dataset,
                         "seeds": [c.seed for c in cfgs], "epochs": cfgs[0].epochs}
    s.update({k: float(np.mean([r[k] for r in results])) for k in keys if all(k in r for r in results)})
    s.update({f"{k}_std": float(np.std([r[k] for r in results])) for k in ("kendall_tau", "best_test_acc")
              if k in s})
    if action == "search" and all("best_arch" in r for r in results):
        counts = Counter(r["best_arch"] for r in results)
        s["best_arch"] = max(results, key=lambda r: (counts[r["best_arch"]], r["best_test_acc"]))["best_arch"]
        s["optimum_test_acc"] = results[0]["optimum_test_acc"]
    s["per_seed"] = per_seed
    return s

