"""``raynas rank``: train and evaluate NAR over seeds (default action ``train``), or search with it (``search``).

Progress goes to stderr; with ``--json`` the last stdout line is one JSON object (train/search: means over
seeds; tune/--ray: the experiment summary). ``--ray`` and ``tune`` run tracked ``NARTrainable`` trials
(``raynas.nar.experiment``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raynas.console import add_flags
from raynas.commands.common import EXIT_OK, parse_seeds, trials_exit_code

DEFAULT_OUT = "runs/rank"
DEFAULT_BUDGET = 250  # the paper's 50 search iterations x top-5 lookups


def _seeds(text: str) -> list[int]:
    return parse_seeds(text, malformed="--seeds expects comma-separated integers, got {!r}",
                       repeated="--seeds needs at least one seed and no repeats, got {!r}")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rank", help="NAR: train/evaluate the Neural Architecture Ranker, search or tune it",
                              description="Train NAR on a benchmark table and report Kendall's tau, Spearman's rho "
                                          "and precision@top-5% on held-out architectures (action train), run its "
                                          "tier-guided sampling search (search), or run a NAR experiment file with "
                                          "an Optuna tune: block as tracked Ray Tune trials (tune).")
    p.add_argument("action", nargs="?", choices=("train", "search", "tune"), default="train",
                   help="train (default): train and evaluate; search: then search with the trained ranker; "
                        "tune: run EXPERIMENT")
    p.add_argument("experiment", nargs="?", help="tune: NAR experiment YAML (e.g. experiments/nar_nb201.yaml)")
    p.add_argument("--bench", choices=("nb201", "nb101"))
    p.add_argument("--table", help="benchmark CSV (NB201: `raynas bench nb201 export ... --to nb201.csv`)")
    p.add_argument("--dataset", help="NB201: cifar10 (default), cifar100, imagenet16")
    p.add_argument("--train-frac", type=float, dest="train_frac",
                   help="training share of the table (default: the paper's 1000 NB201 / 4236 NB101 archs)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (results are means; default 0)")
    p.add_argument("--epochs", type=int, help="default: the paper's 55 (NB201) / 35 (NB101)")
    p.add_argument("--budget", type=int, help=f"search: benchmark queries of the search (default {DEFAULT_BUDGET})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any NARConfig field (tune: also experiment fields, e.g. tune.num_samples=4)")
    p.add_argument("--out", help="write rank.json and predicted-vs-true rank scatter PNGs here (tune, --ray: the "
                                 "Ray results, summary.json; default runs/rank, with tune/--ray "
                                 "runs/<experiment name>)")
    p.add_argument("--ray", action="store_true", help="one tracked Ray Tune trial (NARTrainable) per seed")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per trial with --ray")
    p.add_argument("--tracking-uri", dest="tracking_uri",
                   help="--ray/tune: MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db; "
                        "none: off)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    add_flags(p)
    p.set_defaults(func=cmd_rank)
    return p


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """NARConfig overrides from the flags (``--set`` last); ``table`` made absolute."""
    from raynas.config import ConfigError, parse_set

    over: dict[str, Any] = {}
    for key in ("bench", "table", "dataset", "train_frac", "epochs"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    if over.get("table"):
        over["table"] = str(Path(over["table"]).expanduser().resolve())
    if args.action == "search":
        over["budget"] = DEFAULT_BUDGET if args.budget is None else args.budget
    elif args.budget is not None:
        over["budget"] = args.budget
        if args.action == "train":
            raise ConfigError("--budget applies to `raynas rank search` (or `tune`)")
    over.update(parse_set(args.set))
    return over


def configs(args: argparse.Namespace) -> list:
    """One validated ``NARConfig`` per seed."""
    from raynas.nar.train import resolve_nar

    over = _flag_overrides(args)
    return [resolve_nar({**over, "seed": s}) for s in _seeds(args.seeds or "0")]


def experiment(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The NAR experiment to run through Ray: the file of ``rank tune``, or one trial per seed from the flags."""
    from raynas.config import ConfigError
    from raynas.nar.experiment import load_nar_experiment

    over = _flag_overrides(args)
    if args.seeds:
        over["seed"] = _seeds(args.seeds)
    if args.tracking_uri:
        over["tracking_uri"] = args.tracking_uri
    if args.action == "tune":
        if not args.experiment:
            raise ConfigError("rank tune needs an experiment file, e.g. raynas rank tune experiments/nar_nb201.yaml")
        path = Path(args.experiment)
        if not path.is_file():
            raise ConfigError(f"experiment file {path} does not exist")
        return load_nar_experiment(path, over), path.read_text()
    if args.experiment:
        raise ConfigError(f"an experiment file is only read by `raynas rank tune`, got {args.experiment!r}")
    over.setdefault("bench", "nb201")
    return load_nar_experiment(None, {**over, "name": f"rank_{over['bench']}",
                                      "resources": {"cpu": args.cpus, "gpu": 0.0}}), None


def cmd_rank(args: argparse.Namespace) -> int:
    from raynas.config import ConfigError
    from raynas.nar.data import require_table
    from raynas.nar.local import run_local, summarize

    if args.ray or args.action == "tune":
        return cmd_rank_ray(args)
    if args.experiment:
        raise ConfigError(f"an experiment file is only read by `raynas rank tune`, got {args.experiment!r}")
    cfgs = configs(args)
    require_table(cfgs[0].bench, cfgs[0].table)
    out = Path(args.out or DEFAULT_OUT)
    results = run_local(cfgs, out)  # creates ``out`` once the table has loaded
    for r in results:
        line = (f"seed {r['seed']}: kendall_tau {r['kendall_tau']:.4f}  spearman_rho {r['spearman_rho']:.4f}  "
                f"precision@top-5% {r['precision_at_top_5pct']:.3f}  (vs validation accuracy: tau "
                f"{r['kendall_tau_valid']:.4f}; train {r['n_train']}, val {r['n_val']}, held-out {r['n_heldout']})")
        if args.action == "search" and "best_arch" in r:
            line += (f"\n  best {r['best_arch']} test {r['best_test_acc']:.2f} (valid {r['best_valid_acc']:.2f}), "
                     f"rank {r['rank']} (top {r['percentile']:.4f}%), {r['queries']} queries "
                     f"({r['search_queries']} in the search)")
        print(line)
    s = summarize(args.action, cfgs, results)
    print(f"mean over seeds {','.join(map(str, s['seeds']))}: kendall_tau {s['kendall_tau']:.4f}  spearman_rho "
          f"{s['spearman_rho']:.4f}  precision@top-5% {s['precision_at_top_5pct']:.3f}"
          + (f"  best_test_acc {s['best_test_acc']:.2f}  top {s['percentile']:.4f}%  queries {s['queries']:.0f}"
             if "best_test_acc" in s else ""))
    (out / "rank.json").write_text(json.dumps(s, indent=2) + "\n")
    print(f"results: {out / 'rank.json'} (scatter_seed*.png beside it)")
    if args.json:
        print(json.dumps(s))
    return EXIT_OK


def cmd_rank_ray(args: argparse.Namespace) -> int:
    """``rank tune FILE`` / ``rank --ray``: tracked NARTrainable trials; prints the summary's trials."""
    import numpy as np

    from raynas.nar.experiment import run_nar_experiment
    from raynas.nar.local import SEARCH_KEYS, TRAIN_KEYS, kept_epoch

    exp, yaml_text = experiment(args)
    out = Path(args.out or f"runs/{exp.name}")
    summary = run_nar_experiment(exp, out, yaml_text=yaml_text, verbose=0 if args.json else 1)
    metric = summary["objective"]["metric"]
    for t in summary["trials"]:
        value = t.get(metric)
        print(f"{t['bench']}/{t['dataset']}/seed{t['seed']} {t['status']} after {t['epochs']} epochs: {metric} "
              f"{'-' if value is None else f'{value:.4f}'}, kendall_tau {t.get('kendall_tau', float('nan')):.4f}"
              + (f", best {t['best_arch']} ({t['best_test_acc']:.2f})" if t.get("best_arch") else "")
              + (f"; {kept_epoch(t, t['epochs'])}" if t.get("best_epoch") is not None
                 and t.get("best_val_tier_acc") is not None else ""))
    print(f"summary: {out / 'summary.json'}")
    if args.json:  # the means over completed trials first (the keys of `rank --json`), then the summary
        done = [t for t in summary["trials"] if t["status"] == "completed"]
        means = {k: float(np.mean([t[k] for t in done])) for k in TRAIN_KEYS + SEARCH_KEYS
                 if done and all(t.get(k) is not None for t in done)}
        print(json.dumps({**means, "seeds": sorted(t["seed"] for t in done), **summary}, default=str))
    return trials_exit_code(summary["trials"])
