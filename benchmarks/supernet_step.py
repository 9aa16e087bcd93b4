"""One search iteration of raynas' supernets against the reference (xautodl) supernets, same process.

An iteration is what a search does per batch: an arch step on one batch and a weight step on another
(64 CIFAR-shaped images each). Ours runs through ``trials.bilevel.Search`` with the config a user gets;
the reference is xautodl 1.0.0's ``TinyNetworkDarts`` (NB201) / ``NASNetworkDARTS`` (DARTS space) driven
the way its search scripts drive them (DARTS-V1: weight step + arch step; DARTS-V2: the unrolled step of
``exps/NAS-Bench-201-algos/DARTS-V2.py``). Ours and the reference alternate rep by rep so both see the
same machine state; the figure is the median. Peak memory: each
model runs alone in a child process (three iterations, our CUDA graph's recording included) and its
peak is reported: max allocated on a GPU, the RSS high-water mark on the CPU.

    python benchmarks/supernet_step.py [--space nb201|darts|both] [--device auto|cpu|cuda] [--reps 10]
                                       [--orders 1,2] [--set key=value ...]

The DARTS-space comparison uses 9 cells (xautodl's N=3: 3 normal, reduce, 2 normal, reduce, 2 normal),
the nearest layout xautodl can build to DARTS' 8; ours is built with ``model.layers=9`` for it, and
PC-DARTS (K=4) and the 8-cell DARTS supernet are timed as ours-only rows. The last line is one JSON
object: ``ours_ms``, ``reference_ms``, ``ratio`` (reference/ours) of the first-order iteration of the
first space run, and every row under ``rows``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cifar_shaped, machine, peak_mib, sync  # noqa: E402

from raynas.config import deep_merge, parse_set, resolve  # noqa: E402
from trials import cuda_graph  # noqa: E402
from trials.bilevel import Search  # noqa: E402
from trials.epochs import resolve_device  # noqa: E402

NB201_WEIGHTS, NB201_ALPHAS = 1_692_826, 30
BATCH = 64


# ----------------------------------------------------------------------------------------- ours
def ours(space: str, method: str, device: str, overrides: dict[str, Any], layers: int | None = None
         ) -> tuple[Callable[[], None], Callable[[], None], Search]:
    """(iteration, forward, search) of raynas' supernet with the config a user gets (+ overrides)."""
    raw: dict[str, Any] = {"method": method, "space": space, "dataset": "cifar10", "device": device,
                           "batch_size": BATCH, "seed": 0, "arch": {"warmup_epochs": 0}}
    if layers:
        raw["model"] = {"layers": layers}
    raw = deep_merge(raw, parse_set([f"{k}={v}" for k, v in overrides.items()]))
    s = Search(resolve(raw), cifar_shaped(4 * BATCH))
    s.method.on_epoch_start(s, 0)
    x, y = next(iter(s.w_stream.epoch(s.generator(0))))
    xa, ya = next(iter(s.a_stream.epoch(s.generator(1))))
    x, xa = s.to_input(x), s.to_input(xa)

    step = cuda_graph.iteration(s, update_arch=True)  # what a search epoch runs (a CUDA graph on GPUs)

    def iteration() -> None:
        step(x, y, xa, ya)

    def forward() -> None:
        with torch.no_grad():
            s.net(x, s.method.edge_weights(s.net))

    return iteration, forward, s


def count(s: Search) -> tuple[int, int]:
    arch = {id(p) for p in s.method.arch_parameters(s.net)}
    params = list(s.net.parameters())
    return (sum(p.numel() for p in params if id(p) not in arch), sum(p.numel() for p in params if id(p) in arch))


# ------------------------------------------------------------------------------------ reference
def reference_net(space: str) -> nn.Module:
    from xautodl.models.cell_operations import SearchSpaceNames
    from xautodl.models.cell_searchs import NASNetworkDARTS, TinyNetworkDarts

    if space == "nb201":  # NB201's DARTS supernet: C=16, N=5, 4 nodes, affine=False, no running stats
        return TinyNetworkDarts(16, 5, 4, 10, SearchSpaceNames["nas-bench-201"], False, False)
    return NASNetworkDARTS(16, 3, 4, 4, 3, 10, SearchSpaceNames["darts"], False, False)


def unrolled_arch_grads(net: nn.Module, w_opt: torch.optim.SGD, x: torch.Tensor, y: torch.Tensor,
                        xa: torch.Tensor, ya: torch.Tensor) -> None:
    """DARTS' second-order arch gradient as xautodl's DARTS-V2 computes it (a deep-copied unrolled
    model, then a central finite-difference Hessian-vector product with R = 0.01/||v||)."""
    weights, alphas = net.get_weights(), net.get_alphas()
    g = w_opt.param_groups[0]
    lr, wd, mom = g["lr"], g["weight_decay"], g["momentum"]
    loss = F.cross_entropy(net(x)[1], y)
    grads = torch.autograd.grad(loss, weights)
    unrolled = copy.deepcopy(net)
    with torch.no_grad():
        for p, q, d in zip(weights, unrolled.get_weights(), grads):
            buf = w_opt.state.get(p, {}).get("momentum_buffer")
            step = d + wd * p + (mom * buf if buf is not None else 0)
            q.copy_(p - lr * step)
    u_loss = F.cross_entropy(unrolled(xa)[1], ya)
    u_grads = torch.autograd.grad(u_loss, unrolled.get_alphas() + unrolled.get_weights())
    d_alpha, vec = u_grads[:len(alphas)], u_grads[len(alphas):]
    r = 0.01 / torch.cat([v.reshape(-1) for v in vec]).norm()

    def alpha_grads(sign: float) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            for p, v in zip(weights, vec):
                p.add_(v, alpha=sign * r)
        return torch.autograd.grad(F.cross_entropy(net(x)[1], y), alphas)

    g_pos, g_neg = alpha_grads(1.0), alpha_grads(-2.0)
    with torch.no_grad():
        for p, v in zip(weights, vec):
            p.add_(v, alpha=r)
    for a, da, gp, gn in zip(alphas, d_alpha, g_pos, g_neg):
        a.grad = da - lr * (gp - gn) / (2 * r)


def reference(space: str, order: int, device: torch.device) -> tuple[Callable[[], None], Callable[[], None], nn.Module]:
    net = reference_net(space).to(device)
    w_opt = torch.optim.SGD(net.get_weights(), lr=0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    a_opt = torch.optim.Adam(net.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    g = torch.Generator().manual_seed(1)
    x, xa = (torch.randn(BATCH, 3, 32, 32, generator=g).to(device) for _ in range(2))
    y, ya = (torch.randint(0, 10, (BATCH,), generator=g).to(device) for _ in range(2))

    def iteration() -> None:
        w_opt.zero_grad()  # DARTS-V1/V2 search_func: weights first, then alpha
        loss = F.cross_entropy(net(x)[1], y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5)
        w_opt.step()
        a_opt.zero_grad()
        if order == 2:
            unrolled_arch_grads(net, w_opt, x, y, xa, ya)
        else:
            F.cross_entropy(net(xa)[1], ya).backward()
        a_opt.step()

    def forward() -> None:
        with torch.no_grad():
            net(x)

    return iteration, forward, net


# ---------------------------------------------------------------------------------------- timing
def median_ms(fns: list[Callable[[], None]], reps: int, device: torch.device) -> list[float]:
    """Median time of each function, run alternately rep by rep after two warm-up calls each (the
    second records our CUDA graph)."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(-1, reps + 1):
        for fn, t in zip(fns, times):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i > 0:
                t.append(1000 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def peak_in_child(args: list[str]) -> float | None:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        print(f"  memory child failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return float(out.stdout.strip().splitlines()[-1])


def memory_child(which: str, space: str, method: str, order: int, device: str, layers: int | None,
                 overrides: dict[str, Any]) -> None:
    """Print the peak memory (MiB) of three iterations of one model alone in this process."""
    dev = resolve_device(device)
    fn = (ours(space, method, device, overrides, layers)[0] if which == "ours"
          else reference(space, order, dev)[0])
    for _ in range(3):
        fn()
    sync(dev)
    print(peak_mib(dev))


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=["nb201", "darts", "both"], default="both")
    p.add_argument("--device", default="auto")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--orders", default="1,2")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override our search config")
    p.add_argument("--no-reference", action="store_true", help="time ours only")
    p.add_argument("--memory", nargs=6, help=argparse.SUPPRESS)  # which space method order device layers
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = dict(kv.split("=", 1) for kv in a.set)
    if a.memory:
        which, space, method, order, device, layers = a.memory
        memory_child(which, space, method, int(order), device, int(layers) or None, overrides)
        return
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    orders = [int(o) for o in a.orders.split(",")]
    spaces = ["nb201", "darts"] if a.space == "both" else [a.space]
    print(f"# {machine()}; batch {BATCH}, median of {a.reps}; overrides {overrides or 'none'}", flush=True)
    print(f"{'space':<7}{'what':<28}{'ours ms':>10}{'ref ms':>10}{'ratio':>7}{'ours MiB':>10}{'ref MiB':>9}")
    rows: list[dict[str, Any]] = []
    child = ["--device", a.device, *(f"--set={kv}" for kv in a.set)] + (["--threads", str(a.threads)] if a.threads
                                                                         else [])

    def memory(which: str, space: str, method: str, order: int, layers: int | None, *extra: str) -> float | None:
        return peak_in_child(["--memory", which, space, method, str(order), a.device, str(layers or 0), *child,
                              *extra])

    for space in spaces:
        layers = 9 if space == "darts" else None
        for order in orders:
            method = "darts" if order == 1 else "darts2"
            # peaks first, while this process holds no model (a DARTS-space pair would not fit beside it)
            peaks = {"ours_peak_mib": memory("ours", space, method, order, layers)}
            if not a.no_reference:
                peaks["reference_peak_mib"] = memory("ref", space, method, order, layers)
            it, fwd, s = ours(space, method, a.device, overrides, layers)
            w, al = count(s)
            row: dict[str, Any] = {"space": space, "order": order, "layers": s.cfg.model.layers,
                                   "ours_weights": w, "ours_alphas": al}
            if space == "nb201":
                assert (w, al) == (NB201_WEIGHTS, NB201_ALPHAS), f"ours has {w} weights / {al} alphas"
            if a.no_reference:
                row["ours_ms"], row["ours_fwd_ms"] = median_ms([it, fwd], a.reps, dev)
            else:
                rit, rfwd, rnet = reference(space, order, dev)
                rw = sum(q.numel() for q in rnet.get_weights())
                ra = sum(q.numel() for q in rnet.get_alphas())
                row.update(reference_weights=rw, reference_alphas=ra)
                if space == "nb201":
                    assert (rw, ra) == (NB201_WEIGHTS, NB201_ALPHAS), f"reference has {rw} weights / {ra} alphas"
                row["ours_ms"], row["reference_ms"], row["ours_fwd_ms"], row["reference_fwd_ms"] = median_ms(
                    [it, rit, fwd, rfwd], a.reps, dev)
                row["ratio"] = row["reference_ms"] / row["ours_ms"]
                row["fwd_ratio"] = row["reference_fwd_ms"] / row["ours_fwd_ms"]
                del rit, rfwd, rnet
            row.update(peaks)
            rows.append(row)
            _print(space, f"iteration, order {order}", row.get("ours_ms"), row.get("reference_ms"),
                   row.get("ours_peak_mib"), row.get("reference_peak_mib"))
            _print(space, "  forward (no grad)", row.get("ours_fwd_ms"), row.get("reference_fwd_ms"), None, None)
            del it, fwd, s
        if space == "darts":  # ours only: the paper's 8 cells, and PC-DARTS K=4
            for label, method, lay in (("darts 8 cells, order 1", "darts", 8), ("pcdarts K=4 8 cells", "pcdarts", 8)):
                peak = memory("ours", space, method, 1, lay, f"--set=batch_size={BATCH}")
                it, fwd, s = ours(space, method, a.device, {**overrides, "batch_size": BATCH}, lay)
                ms, fms = median_ms([it, fwd], max(2, a.reps // 2), dev)
                rows.append({"space": space, "what": label, "ours_ms": ms, "ours_fwd_ms": fms, "ours_peak_mib": peak})
                _print(space, label, ms, None, peak, None)
                del it, fwd, s
    first = next(r for r in rows if r.get("order") == 1)
    print(json.dumps({"space": first["space"], "device": str(dev), "ours_ms": round(first["ours_ms"], 2),
                      "reference_ms": round(first["reference_ms"], 2) if "reference_ms" in first else None,
                      "ratio": round(first["ratio"], 3) if "ratio" in first else None,
                      "machine": machine(), "overrides": overrides, "rows": rows}))


def _print(space: str, what: str, ours_ms: float | None, ref_ms: float | None, ours_mib: float | None,
           ref_mib: float | None) -> None:
    def f(v: float | None, w: int, d: int = 1) -> str:
        return f"{v:>{w}.{d}f}" if v is not None else " " * (w - 1) + "-"

    ratio = ref_ms / ours_ms if ours_ms and ref_ms else None
    print(f"{space:<7}{what:<28}{f(ours_ms, 10)}{f(ref_ms, 10)}{f(ratio, 7, 2)}{f(ours_mib, 10, 0)}"
          f"{f(ref_mib, 9, 0)}", flush=True)


if __name__ == "__main__":
    main()
