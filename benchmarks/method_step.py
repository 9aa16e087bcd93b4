"""Search iterations per second and peak memory of every method, on NB201 and the DARTS space.

One iteration = the method's arch step + weight step on CIFAR-shaped random batches (32x32x3,
10 classes) at the paper's batch size (PC-DARTS/RF-PCDARTS 256, the rest 64), with the paper's
supernet (DrNAS' DARTS-space preset is 20 cells C=36 with K=6). Each configuration runs in a fresh
subprocess so its peak memory (RSS high-water mark on CPU, max allocated on GPU) is its own.

    python benchmarks/method_step.py [--space nb201|darts] [--methods darts,drnas] [--reps 3]
                                     [--set channels_last=false ...]

The last line is one JSON object with every measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

METHODS = ["darts", "darts2", "pcdarts", "drnas", "rfdarts", "rfpcdarts", "alphadarts"]


def measure(method: str, space: str, reps: int, device: str, sets: list[str]) -> dict:
    import torch

    from raynas.config import parse_set, resolve
    from trials import cuda_graph
    from trials.batches import Dataset
    from trials.bilevel import Search

    overrides = parse_set([f"method={method}", f"space={space}", "dataset=cifar10", f"device={device}",
                           "arch.warmup_epochs=0", *sets])  # later --set entries win
    cfg = resolve(overrides)
    n = 2 * cfg.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    data = Dataset("cifar10", images, labels, images[:8], labels[:8], 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26),
                   4, True)
    s = Search(cfg, data)
    s.method.on_epoch_start(s, 0)
    x, y = next(iter(s.w_stream.epoch(s.generator(0))))
    xa, ya = next(iter(s.a_stream.epoch(s.generator(1))))
    step = cuda_graph.iteration(s, update_arch=True)  # what a search epoch runs (a CUDA graph on GPUs)
    times = []
    for i in range(-1, reps + 1):
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(x, y, xa, ya)
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # two warm-up iterations: allocators, kernels, the CUDA graph's recording
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    from common import peak_mib

    peak = peak_mib(s.device) * 2**20
    return {"method": method, "space": space, "batch": cfg.batch_size, "device": str(s.device),
            "iter_s": round(median, 3), "steps_per_s": round(1 / median, 3),
            "images_per_s": round(2 * cfg.batch_size / median, 1),
            "peak_mib": round(peak / 2**20), "reps": reps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=["nb201", "darts", "both"], default="both")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "SPACE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.one[0], a.one[1], a.reps, a.device, a.set)))
        return
    spaces = ["nb201", "darts"] if a.space == "both" else [a.space]
    rows = []
    print(f"{'method':<11}{'space':<7}{'batch':>6}{'s/iter':>9}{'steps/s':>9}{'img/s':>8}{'peak MiB':>10}")
    for space in spaces:
        for method in a.methods.split(","):
            sets = [f"--set={kv}" for kv in a.set]
            out = subprocess.run([sys.executable, __file__, "--one", method, space, "--reps", str(a.reps),
                                  "--device", a.device, *sets], capture_output=True, text=True)
            if out.returncode:
                print(f"{method:<11}{space:<7} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{method:<11}{space:<7}{r['batch']:>6}{r['iter_s']:>9.3f}{r['steps_per_s']:>9.3f}"
                  f"{r['images_per_s']:>8.1f}{r['peak_mib']:>10}", flush=True)
    print(json.dumps({"device": rows[0]["device"] if rows else None, "results": rows}))


if __name__ == "__main__":
    main()
