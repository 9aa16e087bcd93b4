"""The cost of running a search as a Ray Tune trial instead of calling the engine directly.

The same search (method, space, dataset, epochs, seed, torch threads) runs twice, each in a fresh
process: directly (``benchmarks/search_time.py``: ``trials.bilevel.Search`` epoch by epoch) and through
``raynas search`` (a one-trial ``tune.Tuner`` run with per-epoch checkpoints, MLflow tracking to a
sqlite store unless ``--no-tracking``). Printed: the search loop's time in each (the direct epochs'
sum; the trial's ``time_total_s``, which covers Tune's per-epoch bookkeeping and our metric reporting
and tracking), the whole command's wall time in each, and the ratios.

    python benchmarks/tune_overhead.py [--epochs 5] [--dataset digits] [--method darts] [--threads 2]

The last line is one JSON object with both times and ``loop_ratio`` / ``wall_ratio`` (Tune / direct).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(cmd[:3])} failed ({out.returncode}): {out.stderr.strip().splitlines()[-3:]}")
    return wall, out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--method", default="darts")
    p.add_argument("--space", default="nb201")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-tracking", action="store_true", help="run the Tune trial without MLflow")
    a = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONUNBUFFERED": "1"}
    common = [f"method={a.method}", f"space={a.space}", f"dataset={a.dataset}", f"epochs={a.epochs}",
              f"seed={a.seed}", "device=cpu"]
    direct_wall, out = run([sys.executable, "benchmarks/search_time.py", *(f"--set={c}" for c in common)], env)
    direct = json.loads(out.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        track = "none" if a.no_tracking else f"sqlite:///{tmp}/mlflow.db"
        tune_wall, _ = run([sys.executable, "-m", "raynas.cli", "search", "--method", a.method, "--space", a.space,
                            "--dataset", a.dataset, "--epochs", str(a.epochs), "--seed", str(a.seed),
                            "--device", "cpu", "--cpus", str(a.threads), "--out", f"{tmp}/out",
                            "--tracking-uri", track], env)
        results = [json.loads(line) for f in Path(tmp, "out").rglob("result.json")
                   for line in f.read_text().splitlines() if line.strip()]
        summary = json.loads(next(Path(tmp, "out").rglob("summary.json")).read_text())
    last = max(results, key=lambda r: r["training_iteration"])
    tune_loop = last["time_total_s"]
    trial = summary["trials"][0] if isinstance(summary, dict) and "trials" in summary else summary
    same = str(trial).find(direct["genotype"]) >= 0
    print(f"# {a.method} on {a.space}/{a.dataset}, {a.epochs} epochs, seed {a.seed}, {a.threads} threads; "
          f"tracking {'off' if a.no_tracking else 'sqlite'}")
    print(f"{'':<22}{'direct s':>10}{'tune s':>10}{'ratio':>8}")
    print(f"{'search loop':<22}{direct['search_s']:>10.1f}{tune_loop:>10.1f}{tune_loop / direct['search_s']:>8.3f}")
    print(f"{'whole command':<22}{direct_wall:>10.1f}{tune_wall:>10.1f}{tune_wall / direct_wall:>8.3f}")
    print(f"same genotype: {same} ({direct['genotype']})")
    print(json.dumps({"epochs": a.epochs, "dataset": a.dataset, "method": a.method, "space": a.space,
                      "threads": a.threads, "tracking": not a.no_tracking, "direct_loop_s": direct["search_s"],
                      "tune_loop_s": tune_loop, "loop_ratio": tune_loop / direct["search_s"],
                      "direct_wall_s": direct_wall, "tune_wall_s": tune_wall, "wall_ratio": tune_wall / direct_wall,
                      "same_genotype": same}))


if __name__ == "__main__":
    main()
