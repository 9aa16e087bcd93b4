"""Search iterations and evaluation forwards recorded once as CUDA graphs and replayed.

A NAS supernet at batch 64 launches thousands of small kernels per iteration (every op of every edge
of every cell, forward and backward, twice); on a fast GPU the launches, not the arithmetic, set the
pace. A CUDA graph records the launches of one iteration (arch step + weight step, optimiser updates
included) and replays them with one call, on the same kernels and the same numbers.

Graphs bake in Python-side constants, so one graph serves one epoch: the learning rate changes between
epochs and a progressive method may reshape the supernet. Per epoch, the first iteration runs eagerly
on a side stream (it initialises lazy state and chooses cuDNN algorithms), the second is captured, and
every later one is replayed. A method whose step synchronises with the host (``graphable = False``), or
whose capture fails, runs eagerly, with a warning; the results are the same either way.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from trials.step import SearchRun

Tensors = tuple[torch.Tensor, ...]


class Graphed:
    """``fn(*inputs) -> tuple of tensors`` replayed from a CUDA graph after one eager warm-up call.

    ``fn`` must be the same computation for every call; inputs of the captured shape are copied into
    static buffers (other shapes run eagerly). The returned tensors are overwritten by the next call.
    """

    def __init__(self, fn: Callable[..., Tensors], name: str):
        self.fn, self.name = fn, name
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: Tensors = ()
        self.static_out: Tensors = ()
        self.calls = 0
        self.failed = False

    def __call__(self, *inputs: torch.Tensor) -> Tensors:
        self.calls += 1
        if self.graph is not None and all(a.shape == b.shape for a, b in zip(inputs, self.static_in)):
            for buf, x in zip(self.static_in, inputs):
                buf.copy_(x)
            self.graph.replay()
            return self.static_out
        if self.calls == 1 or self.failed or self.graph is not None:
            return self._eager_on_side_stream(inputs)
        out = self._eager_on_side_stream(inputs)  # this batch's real step; then record the next ones
        self._capture(inputs)
        return out

    def _eager_on_side_stream(self, inputs: Tensors) -> Tensors:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, inputs: Tensors) -> None:
        self.static_in = tuple(x.clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        if hasattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch"):
            # the eager warm-up ran on a side stream, as capture requires; the extra sync it warns of is once
            torch.autograd.graph.set_warn_on_accumulate_grad_stream_mismatch(False)
        try:
            with torch.cuda.graph(graph):
                self.static_out = self.fn(*self.static_in)
        except Exception as e:  # a host sync or an uncapturable op: stay eager, nothing was executed
            self.failed = True
            warnings.warn(f"CUDA graph capture of the {self.name} failed ({type(e).__name__}: {e}); "
                          f"running it eagerly", RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize()
            return
        self.graph = graph


def use_graphs(search: SearchRun) -> bool:
    """Graphs on CUDA when the config allows them and the method's steps never sync with the host."""
    return bool(search.cfg.cuda_graphs and search.device.type == "cuda" and search.method.graphable)


def iteration(search: SearchRun, update_arch: bool) -> Callable[..., Tensors]:
    """The search iteration of one epoch: arch step (when ``update_arch``) and weight step, in the
    configured order (``arch.step_order``) -> their losses and logits."""
    weight_first = search.cfg.arch.step_order == "weight_arch"

    def step(x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor) -> Tensors:
        if weight_first:
            loss, logits = search.weight_step(x, y)
        if update_arch:
            a_loss, a_logits = search.method.arch_step(search.step_context(), x, y, xa, ya)
        else:
            a_loss = a_logits = x.new_zeros(())
        if not weight_first:
            loss, logits = search.weight_step(x, y)
        return a_loss, a_logits, loss, logits

    return Graphed(step, "search iteration") if use_graphs(search) else step
