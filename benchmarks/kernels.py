"""The CPU kernel costs behind three supernet choices, each against the form it replaced.

1. Depthwise 5x5 weight gradient: oneDNN's kernel vs two 3-wide column blocks (``fast.depthwise._ColumnBlocked``).
2. BatchNorm backward with a dense channels-last gradient vs the strided channel slice a ``cat`` hands
   back (what ``fast.grad_in_layout`` avoids).
3. A separable conv's forward + backward in a mixed op with and without recomputation (``Recomputed``).
4. PC-DARTS' narrow ops (C/K = 4 channels, batch 256): batch norm forward + backward on a channels-last
   tensor directly vs through NCHW (``fast.batch_norm``), and the channel shuffle as a view-and-copy vs
   PyTorch's native kernel (``mixed.channel_shuffle``).

    python benchmarks/kernels.py [--reps 20]

Shapes are the DARTS supernet's first stage at batch 64 (16 channels, 32x32, channels-last); for 4.
PC-DARTS' batch 256. Median of
``--reps`` calls, inputs cycled through 8 copies so they come from memory, not cache. glibc is told to
keep freed memory (``mallopt``) as a running search's heap does: otherwise every fresh 4-MiB result is
page-faulted in again (~1 ms per MiB on this VM), which a search in steady state never pays.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from search_spaces.fast import accelerate, batch_norm  # noqa: E402
from search_spaces.fast.depthwise import _ColumnBlocked  # noqa: E402
from search_spaces.mixed import MixedOp  # noqa: E402

CL = torch.channels_last


def keep_freed_memory() -> None:
    """No mmap for large blocks and no trimming: allocations reuse the heap, as in a long search."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD (an int)


def median_ms(fn: Callable[[], object], reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def cycled(make: Callable[[], torch.Tensor], n: int = 8) -> Callable[[], torch.Tensor]:
    pool, i = [make() for _ in range(n)], [0]

    def nxt() -> torch.Tensor:
        i[0] = (i[0] + 1) % n
        return pool[i[0]]
    return nxt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    keep_freed_memory()
    B, C, H = 64, 16, 32
    act = cycled(lambda: torch.randn(B, C, H, H).contiguous(memory_format=CL))
    grad = cycled(lambda: torch.randn(B, C, H, H).contiguous(memory_format=CL))
    print(f"# {machine()}; {B}x{C}x{H}x{H} channels-last, median of {args.reps}")
    print(f"{'what':58s} {'ms':>8s}")

    w = torch.randn(C, 1, 5, 5)
    onednn = median_ms(lambda: torch.ops.aten.convolution_backward(
        grad(), act(), w, None, [1, 1], [2, 2], [1, 1], False, [0, 0], C, [False, True, False]), args.reps)

    def blocked() -> None:
        _ColumnBlocked.apply(act(), w.detach().requires_grad_(), (2, 2)).backward(grad())
    blocked_ms = median_ms(blocked, args.reps)
    plain_fb = median_ms(lambda: F.conv2d(act(), w.detach().requires_grad_(), None, 1, 2, 1, C).backward(grad()),
                         args.reps)
    print(f"{'depthwise 5x5 weight gradient, oneDNN':58s} {onednn:8.2f}")
    print(f"{'depthwise 5x5 forward + weight gradient, column blocks':58s} {blocked_ms:8.2f}")
    print(f"{'depthwise 5x5 forward + weight gradient, oneDNN':58s} {plain_fb:8.2f}")

    x = torch.randn(B, C, H, H).contiguous(memory_format=CL)
    scale = torch.rand(C)
    _, mean, invstd = torch.native_batch_norm(x, scale, None, None, None, True, 0.1, 1e-5)
    wide = torch.randn(B, 4 * C, H, H).contiguous(memory_format=CL)
    for name, g in (("dense channels-last gradient", torch.randn_like(x)), ("strided slice of a cat's gradient",
                                                                              wide[:, C:2 * C])):
        ms = median_ms(lambda g=g: torch.ops.aten.native_batch_norm_backward(
            g, x, scale, None, None, mean, invstd, True, 1e-5, [True, True, False]), args.reps)
        print(f"{'batch-norm backward, ' + name:58s} {ms:8.2f}")

    for op in ("sep_conv_5x5", "dil_conv_5x5"):
        mixed = accelerate(MixedOp(C, 1, [op], affine=False, track=True, pool_bn=True)).to(memory_format=CL)
        weight = torch.ones(1, requires_grad=True)
        for on in (False, True):
            mixed.recompute = on
            ms = median_ms(lambda m=mixed, w=weight: m(act().detach().requires_grad_(), w).backward(grad()), args.reps)
            print(f"{op + ' forward + backward, recompute ' + ('on' if on else 'off'):58s} {ms:8.2f}")

    xs = cycled(lambda: torch.randn(256, C // 4, H, H).contiguous(memory_format=CL).requires_grad_())
    gs = cycled(lambda: torch.randn(256, C // 4, H, H).contiguous(memory_format=CL))
    gamma, beta = torch.ones(C // 4, requires_grad=True), torch.zeros(C // 4, requires_grad=True)
    for name, norm in (("channels-last kernel", F.batch_norm), ("via NCHW (fast.batch_norm)", batch_norm)):
        ms = median_ms(lambda f=norm: f(xs(), None, None, gamma, beta, True, 0.1, 1e-5).backward(gs()), args.reps)
        print(f"{'PC-DARTS BN 256x4x32x32 f+b, ' + name:58s} {ms:8.2f}")
    wide = cycled(lambda: torch.randn(256, C, H, H).contiguous(memory_format=CL))

    def view_copy(x: torch.Tensor, g: int = 4) -> torch.Tensor:  # the NHWC view-and-copy it replaced
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, g, c // g).transpose(3, 4)
        return y.reshape(b, h, w, c).permute(0, 3, 1, 2)
    for name, shuffle in (("view and copy", view_copy), ("native kernel", lambda x: F.channel_shuffle(x, 4))):
        ms = median_ms(lambda f=shuffle: f(wide()), args.reps)
        print(f"{'PC-DARTS channel shuffle 256x16x32x32, ' + name:58s} {ms:8.2f}")


if __name__ == "__main__":
    main()
