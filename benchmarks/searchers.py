"""Searchers on NAS-Bench-201 in the simulator: random, REA, TPE and NAR, 20 seeds, up to 1,000 queries each.

    python benchmarks/searchers.py --table ../shared/data/nb201.csv.gz [--datasets cifar10,cifar100,imagenet16]
        [--seeds 0-19] [--budget 1000] [--workers 2] [--scheduler fifo|asha] [--out DIR]

Prints, per dataset, the Markdown table (incumbent's 200-epoch test accuracy, mean ± std over seeds, at 50,
100, 300 and 1,000 queries), the same for its validation accuracy (what the searchers optimise) with the
seeds that hold the best cell by validation, what each searcher cost (wall and CPU seconds; NAR's ranker
refits apart) and the issue's targets as met / not met; writes ``DIR/<dataset>.json``, ``.md`` and the
curves ``.png``. Wall time on a shared machine is an upper bound; CPU seconds are what the runs used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from raynas.commands.bench import parse_seed_ranges  # noqa: E402
from raynas.searchers.curves import holds, markdown, table_rows  # noqa: E402
from raynas.searchers.study import StudyConfig, load_study, open_bench, run_study, runs_of, write_outputs  # noqa: E402
from raynas.tables.nb201 import TableError  # noqa: E402
from raynas.config import ConfigError  # noqa: E402

SEARCHERS = ["random", "rea", "tpe", "nar"]
#: the NB-201 paper (Dong & Yang, ICLR 2020, table 5): test accuracy at its 12,000 s budget, 12-epoch selection
PAPER = {"cifar10": {"random": (93.70, 0.36), "rea": (93.92, 0.30)},
         "cifar100": {"random": (71.04, 1.07), "rea": (71.84, 0.99)},
         "imagenet16": {"random": (44.57, 1.25), "rea": (45.54, 1.03)}}


def at(row: dict, budget: int) -> tuple[float, float]:
    i = row["budgets"].index(budget)
    return row["mean"][i], row["std"][i]


def targets(rows: dict[str, dict], dataset: str) -> list[str]:
    """The issue's targets for this table, each a line ending in met / NOT met; a target whose budget is not
    a column of the table (a smaller ``--budget``) or whose searchers did not run is left out."""
    lines = []
    cols = next(iter(rows.values()))["budgets"] if rows else []
    for name in ("random", "rea"):
        if name in rows and dataset in PAPER and 100 in cols:
            m, s = at(rows[name], 100)
            pm, ps = PAPER[dataset][name]
            lines.append(f"{name} at 100 queries {m:.2f} ± {s:.2f} vs NB-201 paper {pm:.2f} ± {ps:.2f} "
                         f"(~110 12-epoch queries): {'met' if abs(m - pm) <= ps else 'NOT met'} (within its std)")
    early = [b for b in (50, 100, 300) if b in cols]
    if "nar" in rows and early:
        best = max((at(rows["nar"], b)[0], b) for b in early)
        if dataset == "cifar10":
            lines.append(f"nar >= 94.20 at <= 300 queries: best {best[0]:.2f} at {best[1]}: "
                         f"{'met' if best[0] >= 94.20 else 'NOT met'}")
        others = [n for n in ("rea", "tpe") if n in rows]
        for b in (b for b in (100, 300) if b in cols and others):
            theirs = {n: at(rows[n], b)[0] for n in others}
            mine = at(rows["nar"], b)[0]
            lines.append(f"nar ahead of {', '.join(theirs)} at {b}: {mine:.2f} vs "
                         f"{', '.join(f'{v:.2f}' for v in theirs.values())}: "
                         f"{'met' if all(mine > v for v in theirs.values()) else 'NOT met'}")
    return lines


def validation_view(result: dict) -> str:
    """What the searchers optimise: the incumbent's validation accuracy (mean ± std), and at each budget how
    many seeds hold the table's best cell by validation. Where that cell is not the best by test accuracy
    (ImageNet16-120), a searcher better at its objective can score lower on the test table."""
    runs, budgets = runs_of(result), result["table"][0]["budgets"]
    opt = result["optimum"]
    text = markdown(table_rows(runs, budgets, field="valid"), "incumbent's 200-epoch validation accuracy")
    lines = [text, f"seeds at the best cell by validation (valid {opt['valid_acc']:.2f}, test {opt['test_acc']:.2f};"
                   f" the table's best test accuracy {opt['best_test_acc']:.2f}), at {budgets} queries:"]
    for name, seeds in runs.items():
        hits = np.sum([holds(q, opt["arch"], budgets) for q in seeds], axis=0)
        lines.append(f"  {name:<7} " + " ".join(f"{h:>2}/{len(seeds)}" for h in hits))
    return "\n".join(lines)


def make_study(a: argparse.Namespace, dataset: str) -> StudyConfig:
    """The study for one dataset, validated, its table opened (a ConfigError / TableError otherwise)."""
    budgets = [b for b in (50, 100, 300, 1000) if b < a.budget] + [a.budget]
    bench = {"table": a.table, "dataset": dataset, "searchers": a.searchers.split(","),
             "seeds": parse_seed_ranges(a.seeds), "budget": a.budget, "budgets": budgets}
    study = load_study(None, {"name": f"nb201-{dataset}", "tracking_uri": "none",
                              "scheduler": {"type": a.scheduler}, "bench": bench})
    open_bench(study)
    return study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True)
    p.add_argument("--datasets", default="cifar10")
    p.add_argument("--searchers", default=",".join(SEARCHERS))
    p.add_argument("--seeds", default="0-19")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scheduler", default="fifo")
    p.add_argument("--out", default="runs/bench-searchers")
    a = p.parse_args()
    try:  # every dataset's study and table checked before the first runs: a bad last one loses no hour
        studies = [make_study(a, dataset) for dataset in a.datasets.split(",")]
    except (ConfigError, TableError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    for study in studies:
        dataset = study.bench.dataset
        result = run_study(study, workers=a.workers)
        stem = out / f"{dataset}-{a.scheduler}"
        print(write_outputs(result, f"{stem}.json", f"{stem}.png", f"{stem}.md"))
        print(f"optimum by validation: {result['optimum']['arch']} test {result['optimum']['test_acc']:.2f}")
        print(validation_view(result))
        for name in study.bench.searchers:
            runs = [d for d in result["runs"] if d["searcher"] == name]
            line = (f"{name:<7} wall {sum(d['wall_s'] for d in runs):7.1f} s  "
                    f"CPU {sum(d['cpu_s'] for d in runs):7.1f} s  ({len(runs)} seeds)")
            if "refit_cpu_s" in runs[0]:
                line += (f"; ranker refits {sum(d['refits'] for d in runs)}, "
                         f"{sum(d['refit_cpu_s'] for d in runs):.1f} s CPU")
            print(line)
        print(f"{dataset}: {result['wall_s']:.1f} s wall with {a.workers} worker processes")
        for line in targets({r["searcher"]: r for r in result["table"]}, study.bench.dataset):
            print("target:", line)
        print()
    print(f"all: {time.time() - t_all:.1f} s wall")


if __name__ == "__main__":
    main()
