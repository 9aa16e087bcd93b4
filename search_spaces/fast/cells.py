"""Fast forms of the search cells: fused node sums, shared per-node work, gradients kept in layout.

Each forward computes what the reference cell's forward computes; the differences are where work is
shared (one dict per node state, handed to every edge leaving it) and where a tensor with several
consumers gets its summed gradient back in its own memory format (``grad_in_layout``).
"""

from __future__ import annotations

import torch

from search_spaces import darts, nb201
from search_spaces.fast.layout import grad_in_layout
from search_spaces.fast.mixed import node_sum


class FastNB201Cell(nb201.SearchCell):
    def forward(self, x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        nodes, k = [grad_in_layout(x)], 0
        shared: list[dict] = [{}]  # per node: work the edges leaving it share
        for i in range(1, nb201.NODES):
            rows = slice(k, k + i)
            s = node_sum(self.edges[rows], nodes, weights[rows], shared, None if scale is None else scale[rows])
            nodes.append(grad_in_layout(s))
            shared.append({})
            k += i
        return nodes[-1]


class FastInferCell(nb201.InferCell):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(grad_in_layout(x))


class FastDartsCell(darts.SearchCell):
    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        states, offset = [grad_in_layout(self.preprocess0(s0)), grad_in_layout(self.preprocess1(s1))], 0
        shared: list[dict] = [{}, {}]  # per state: work the edges leaving it share
        for _ in range(self.steps):
            rows = slice(offset, offset + len(states))
            s = node_sum(self.edges[rows], states, weights[rows], shared, None if scale is None else scale[rows])
            offset += len(states)
            states.append(grad_in_layout(s))
            shared.append({})
        return grad_in_layout(torch.cat(states[-self.multiplier:], dim=1))  # read by the next two cells
