"""The CPU speed layer beside the reference model code, applied by one call: :func:`accelerate`.

The reference modules (:mod:`search_spaces.ops`, :mod:`search_spaces.mixed`, the cells of
:mod:`search_spaces.nb201` / :mod:`search_spaces.darts`) compute the papers' formulas plainly. The
modules here are subclasses of them that compute the same numbers faster or with less memory:

- ``layout``: channels-last helpers; ``grad_in_layout`` hands a tensor's summed gradient back in its
  own memory format; polyphase split/merge;
- ``batchnorm``: narrow channels-last batch norm through NCHW, and the edge weight folded into an
  op's last BN (``weighted_batch_norm``);
- ``depthwise``: dilated depthwise convs as undilated convs of polyphase parts, and the weight
  gradient of wide depthwise kernels in 3-wide column blocks;
- ``ops`` / ``mixed`` / ``cells``: subsampled ``FactorizedReduce``, shared first layers per node,
  the cached layer plan, fused node sums;
- ``recompute``: separable-conv segments that keep only their inputs for backward.

The float64 equivalence tests (``tests/test_accelerate.py`` and the per-kernel tests) are the
contract between the two.
"""

from __future__ import annotations

import torch.nn as nn

from search_spaces import darts, nb201
from search_spaces.fast.batchnorm import NARROW_CHANNELS, FastBatchNorm2d, batch_norm, weighted_batch_norm
from search_spaces.fast.cells import FastDartsCell, FastInferCell, FastNB201Cell
from search_spaces.fast.depthwise import DepthwiseConv2d
from search_spaces.fast.layout import grad_in_layout, memory_format_of, polyphase_merge, polyphase_split
from search_spaces.fast.mixed import FastMixedOp, node_sum, recompute_off, set_recompute
from search_spaces.fast.ops import FastFactorizedReduce, FastPool, accelerate_op, parts
from search_spaces.fast.recompute import Recomputed
from search_spaces.mixed import MixedOp
from search_spaces.ops import DilConv, FactorizedReduce, Pool, ReLUConvBN

__all__ = ["NARROW_CHANNELS", "DepthwiseConv2d", "FastBatchNorm2d", "FastDartsCell", "FastFactorizedReduce",
           "FastInferCell", "FastMixedOp", "FastNB201Cell", "FastPool", "Recomputed", "accelerate", "accelerate_op",
           "batch_norm", "grad_in_layout", "memory_format_of", "node_sum", "parts", "polyphase_merge",
           "polyphase_split", "recompute_off", "set_recompute", "weighted_batch_norm"]

#: modules whose BatchNorms (all of them, nested ones included) belong to a candidate op
_OP_ROOTS = (MixedOp, ReLUConvBN, DilConv, FactorizedReduce, Pool)
_FAST: dict[type, type] = {MixedOp: FastMixedOp, nb201.SearchCell: FastNB201Cell, nb201.InferCell: FastInferCell,
                           darts.SearchCell: FastDartsCell}


def accelerate(net: nn.Module, *, recompute: bool = False) -> nn.Module:
    """Switch ``net`` (a supernet, an evaluation network, a cell or a single op) to the fast forms, in
    place, and return it; ``recompute`` turns on recomputed segments in every mixed op.

    Only the classes of modules change (each fast class is a subclass of the reference one that adds
    no parameters or buffers), so ``net.state_dict()`` keeps its keys, shapes and values, every
    ``nn.Parameter`` stays the same object (optimisers built before or after see the same tensors),
    and the method code still finds ``MixedOp``s with their ``prune`` / ``widen``. BatchNorms outside
    the candidate ops (stems, the final BN-ReLU, auxiliary heads) stay plain ``nn.BatchNorm2d``.
    Applying it twice changes nothing but ``recompute``.
    """
    for m in list(net.modules()):
        if isinstance(m, _OP_ROOTS):
            accelerate_op(m)
        if type(m) in _FAST:
            m.__class__ = _FAST[type(m)]
        if isinstance(m, FastMixedOp):
            m.recompute = recompute
    return net
