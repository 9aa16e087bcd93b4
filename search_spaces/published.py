"""Published DARTS-space genotypes, with the parameter counts their papers print (CIFAR-10: 20 cells, C=36).

Genotype text copied from the authors' code:
  DARTS_V1, DARTS_V2: quark0/darts ``cnn/genotypes.py`` (Liu et al., ICLR 2019, Table 1: 3.3M each;
                      Table 3, ImageNet mobile: DARTS_V2 4.7M params, 574M FLOPs).
  PC_DARTS_cifar:     yuhuixu1993/PC-DARTS ``genotypes.py`` (Xu et al., ICLR 2020, Table 1: 3.6M).
  DrNAS_cifar10:      xiangning-chen/DrNAS ``DARTS-space/genotypes.py`` (Chen et al., ICLR 2021, Table 2: 4.1M).
"""

from __future__ import annotations

from typing import NamedTuple

from search_spaces.darts import Genotype, parse_genotype


class Published(NamedTuple):
    genotype: str           # the reference repository's text, verbatim
    params_m: float         # CIFAR-10 network, millions, auxiliary head excluded, as printed
    source: str
    imagenet_params_m: float | None = None
    imagenet_flops_m: float | None = None


PUBLISHED: dict[str, Published] = {
    "DARTS_V1": Published(
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
        "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
        "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
        "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
        3.3, "quark0/darts cnn/genotypes.py"),
    "DARTS_V2": Published(
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
        "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
        "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
        "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
        3.3, "quark0/darts cnn/genotypes.py", imagenet_params_m=4.7, imagenet_flops_m=574),
    "PC_DARTS_cifar": Published(
        "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
        "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], "
        "normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), "
        "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), "
        "('sep_conv_3x3', 2)], reduce_concat=range(2, 6))",
        3.6, "yuhuixu1993/PC-DARTS genotypes.py"),
    "DrNAS_cifar10": Published(
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), "
        "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('dil_conv_5x5', 3)], "
        "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_5x5', 2), "
        "('sep_conv_5x5', 1), ('sep_conv_5x5', 1), ('dil_conv_5x5', 3), ('skip_connect', 4), "
        "('sep_conv_5x5', 1)], reduce_concat=range(2, 6))",
        4.1, "xiangning-chen/DrNAS DARTS-space/genotypes.py"),
}


def published_genotype(name: str) -> Genotype:
    """The parsed genotype of a published architecture; unknown names list the known ones."""
    if name not in PUBLISHED:
        raise KeyError(f"unknown published genotype {name!r}; known: {', '.join(PUBLISHED)}")
    return parse_genotype(PUBLISHED[name].genotype)
