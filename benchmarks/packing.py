"""Packing NB201 searches on one GPU: aggregate throughput of 1, 2, 4, 8 concurrent trials.

Each trial is a first-order DARTS NB201 search (C=16, N=5, batch 64, CIFAR-shaped data) that warms up,
waits until every trial of its round is warm, then times ``--steps`` search iterations (arch + weight
step, 128 images). Two launchers:
- ``ray`` (default when Ray is installed): one Ray Tune trial per search with ``{"gpu": 1/n}``, the
  fractional resources an experiment file asks for with ``resources: {gpu: 0.25}``;
- ``process``: the same searches as plain child processes on the same GPU (what fractional GPU
  resources amount to at run time: several CUDA contexts time-sharing one device), for machines
  without Ray.

    python benchmarks/packing.py [--counts 1,2,4,8] [--steps 200] [--launcher ray|process]

Prints aggregate images/s, speed-up over one trial and per-trial slowdown; the last line is JSON.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cifar_shaped, machine, sync  # noqa: E402


def measure(steps: int, warmup: int, barrier: str, rank: int, n: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """One trial: warm up, wait for the round's other trials, time ``steps`` iterations."""
    import torch

    from raynas.config import resolve
    from trials import cuda_graph
    from trials.bilevel import Search

    torch.backends.cudnn.benchmark = True
    cfg = resolve({"method": "darts", "space": "nb201", "dataset": "cifar10", "batch_size": 64, "seed": rank,
                   "device": "cuda" if torch.cuda.is_available() else "cpu", **overrides})
    s = Search(cfg, cifar_shaped(2048, seed=rank))
    batches = list(zip(s.w_stream.epoch(s.generator(0)), s.a_stream.epoch(s.generator(1))))
    step = cuda_graph.iteration(s, update_arch=True)  # what a search epoch runs (a CUDA graph on GPUs)

    def run(k: int) -> None:
        for i in range(k):
            (x, y), (xa, ya) = batches[i % len(batches)]
            step(x, y, xa, ya)

    run(warmup)
    sync(s.device)
    Path(barrier, f"ready{rank}").touch()
    while len(list(Path(barrier).glob("ready*"))) < n:  # start the timed part together
        time.sleep(0.01)
    t0 = time.perf_counter()
    run(steps)
    sync(s.device)
    dt = time.perf_counter() - t0
    return {"rank": rank, "seconds": dt, "images_per_s": steps * 128 / dt}


def _ray_round(n: int, steps: int, warmup: int, barrier: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    import ray
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        tune.report(measure(steps, warmup, barrier, config["rank"], n, overrides))

    gpus = 1 if n == 1 else 1 / n
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1, "gpu": gpus}),
                       param_space={"rank": tune.grid_search(list(range(n)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=n),
                       run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0))
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"packing round of {n} failed: {results.errors[0]}")
    ray.shutdown()
    return [r.metrics for r in results]


def _process_round(n: int, steps: int, warmup: int, barrier: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(r), str(n), barrier, str(steps),
                               str(warmup), json.dumps(overrides)], stdout=subprocess.PIPE, text=True)
             for r in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"packing child exited with {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--launcher", choices=["ray", "process"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="search config override")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        rank, n, barrier, steps, warmup, over = a.child
        print(json.dumps(measure(int(steps), int(warmup), barrier, int(rank), int(n), json.loads(over))))
        return
    from raynas.config import parse_set

    overrides = parse_set(a.set)
    launcher = a.launcher
    if launcher is None:
        try:
            import ray  # noqa: F401
            launcher = "ray"
        except ImportError:
            launcher = "process"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(f"# {machine()}; launcher {launcher}; {a.steps} timed iterations per trial (128 images each)")
    print(f"{'trials':>6}{'agg img/s':>11}{'speed-up':>10}{'per-trial img/s':>17}{'slowdown':>10}")
    rows, base = [], None
    for n in (int(c) for c in a.counts.split(",")):
        with tempfile.TemporaryDirectory() as barrier:
            fn = _ray_round if launcher == "ray" else _process_round
            res = fn(n, a.steps, a.warmup, barrier, overrides)
        per = [r["images_per_s"] for r in res]
        agg = sum(per)
        base = base or agg
        row = {"trials": n, "aggregate_images_per_s": agg, "speedup": agg / base,
               "per_trial_images_per_s": agg / n, "per_trial_slowdown": base / (agg / n)}
        rows.append(row)
        print(f"{n:>6}{agg:>11.0f}{agg / base:>10.2f}{agg / n:>17.0f}{base / (agg / n):>10.2f}", flush=True)
    print(json.dumps({"launcher": launcher, "machine": machine(), "rows": rows}))


if __name__ == "__main__":
    main()
