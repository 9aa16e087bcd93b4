"""Where one NAR searcher run spends its CPU: each ranker refit and the proposals between refits.

    python benchmarks/nar_refits.py --table ../shared/data/nb201.csv.gz [--dataset cifar10] [--seed 0]
        [--budget 1000] [--set refit_growth=0.2 ...]

One process, one seed, in the simulator. Prints a line per refit (finished cells, cells it trained on, CPU
seconds of the refit and of the proposals until the next one) and the totals: the figures behind the refit
schedule of ``raynas.searchers.nar``. ``--set`` takes the searcher's options (``ranker.lr_mul=0.2`` reaches
into ``ranker``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from raynas.config import ConfigError, parse_set  # noqa: E402
from raynas.searchers import check_options  # noqa: E402
from raynas.searchers.nar import NARSearcher  # noqa: E402
from raynas.searchers.simulate import simulate  # noqa: E402
from raynas.searchers.tabular import load_bench  # noqa: E402
from raynas.tables.nb201 import TableError  # noqa: E402


class TimedNAR(NARSearcher):
    """NAR with the CPU time of every refit and of the proposals after it recorded."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log: list[list[float]] = []  # [finished cells, trained on, refit CPU s, proposals CPU s]

    def refit(self) -> None:
        t = time.process_time()
        super().refit()
        self.log.append([self.fitted_at, self.trained_on, time.process_time() - t, 0.0])

    def _fill_queue(self) -> None:
        t = time.process_time()
        super()._fill_queue()
        self.log[-1][3] += time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    try:
        options = parse_set(a.set)
        check_options("nar", options)
        nar = TimedNAR(seed=a.seed, dataset=a.dataset, **options)
        bench = load_bench(a.table, a.dataset)
    except (ConfigError, TableError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    t0 = time.process_time()
    queries = simulate(nar, bench, a.budget)
    total = time.process_time() - t0
    print(f"{'finished':>8} {'trained':>7} {'refit s':>8} {'proposals s':>11}")
    for n, trained, refit, fill in nar.log:
        print(f"{n:8.0f} {trained:7.0f} {refit:8.2f} {fill:11.2f}")
    refits, fills = sum(r[2] for r in nar.log), sum(r[3] for r in nar.log)
    print(f"{a.dataset} seed {a.seed}, {len(queries)} queries: {total:.1f} s CPU; {len(nar.log)} refits "
          f"{refits:.1f} s, proposals {fills:.1f} s, the rest {total - refits - fills:.1f} s")


if __name__ == "__main__":
    main()
