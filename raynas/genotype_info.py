"""Parameters, FLOPs, a drawing and the NB201 row of one genotype, without training (``raynas genotype``).

The numbers are those of the evaluation network the genotype is retrained in: DARTS-family spaces
``NetworkCIFAR`` (20 cells, C=36) or, for ``--dataset imagenet``, the mobile ``NetworkImageNet``
(14 cells, C=48); NB201 the benchmark's network (C=16, N=5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

SPACES = ("darts", "s1", "s2", "s3", "s4", "nb201")


class Shape(NamedTuple):
    in_channels: int
    resolution: int
    num_classes: int


#: input shape and classes per dataset; "imagenet" (224x224, 1000 classes) selects NetworkImageNet
SHAPES: dict[str, Shape] = {
    "cifar10": Shape(3, 32, 10), "cifar100": Shape(3, 32, 100), "svhn": Shape(3, 32, 10),
    "imagenet": Shape(3, 224, 1000), "imagenet16-120": Shape(3, 16, 120),
    "digits": Shape(1, 8, 10), "fashion-mnist": Shape(1, 28, 10),
}
#: (layers, channels) of the papers' evaluation networks; for NB201 "layers" is N, cells per stage
DEFAULT_SIZE = {"nb201": (5, 16), "imagenet": (14, 48), "darts": (20, 36)}


def network_size(space: str, dataset: str, layers: int | None = None, channels: int | None = None
                 ) -> tuple[int, int]:
    """(layers, channels), the paper's value for each one left None."""
    d_layers, d_channels = DEFAULT_SIZE["nb201" if space == "nb201" else "imagenet" if dataset == "imagenet"
                                        else "darts"]
    return d_layers if layers is None else layers, d_channels if channels is None else channels


def build_eval_network(space: str, genotype: Any, dataset: str = "cifar10", layers: int | None = None,
                       channels: int | None = None, auxiliary: bool = False) -> Any:
    """The evaluation network of a parsed genotype for ``dataset``'s input shape and classes."""
    from search_spaces.darts_eval import DartsNetwork, NetworkImageNet
    from search_spaces.nb201 import NB201Network

    shape = SHAPES[dataset]
    layers, channels = network_size(space, dataset, layers, channels)
    if space == "nb201":
        return NB201Network(genotype, C=channels, N=layers, num_classes=shape.num_classes,
                            in_channels=shape.in_channels)
    net_cls = NetworkImageNet if dataset == "imagenet" else DartsNetwork
    return net_cls(genotype, C=channels, layers=layers, num_classes=shape.num_classes, auxiliary=auxiliary,
                   in_channels=shape.in_channels)


def describe(space: str, text: str, dataset: str = "cifar10", layers: int | None = None,
             channels: int | None = None, auxiliary: bool = False, plot: str | None = None,
             nb201_table: str | None = None) -> dict[str, Any]:
    """Everything ``raynas genotype`` prints, as one dict.

    A genotype that does not parse raises ``GenotypeError``, a bad option ``ConfigError`` (one line each).
    """
    import search_spaces
    from trials.config import ConfigError  # not raynas.config: that loads every search method
    from search_spaces.darts_eval import count_flops, count_params

    layers, channels = network_size(space, dataset, layers, channels)
    for ok, msg in ((space in SPACES, f"unknown space {space!r}; valid: {', '.join(SPACES)}"),
                    (dataset in SHAPES, f"unknown dataset {dataset!r}; valid: {', '.join(SHAPES)}"),
                    (layers >= (1 if space == "nb201" else 3),
                     f"--layers must be >= {1 if space == 'nb201' else 3} for the {space} space, got {layers}"),
                    (channels >= 1, f"--channels must be >= 1, got {channels}"),
                    (not plot or Path(plot).suffix.lower() in (".png", ".svg"), f"--plot {plot}: use a .png or .svg"),
                    (not nb201_table or space == "nb201", "--nb201-table only applies to --space nb201")):
        if not ok:
            raise ConfigError(msg)
    genotype = search_spaces.parse_genotype(space, text)
    net = build_eval_network(space, genotype, dataset, layers, channels, auxiliary)
    shape = SHAPES[dataset]
    params = count_params(net)
    out: dict[str, Any] = {
        "space": space, "dataset": dataset, "genotype": search_spaces.genotype_str(space, genotype),
        "network": type(net).__name__, "layers": layers, "channels": channels,
        "input": [shape.in_channels, shape.resolution, shape.resolution], "num_classes": shape.num_classes,
        "params": params, "params_m": params / 1e6,
        "flops_m": count_flops(net, (shape.in_channels, shape.resolution, shape.resolution)) / 1e6,
        **search_spaces.genotype_stats(space, genotype),
        "degenerate_reason": search_spaces.degenerate_reason(space, genotype),
    }
    if auxiliary and space != "nb201":
        out["params_with_aux_m"] = sum(p.numel() for p in net.parameters()) / 1e6
    if plot:
        from raynas.diagram import draw_cell

        out["plot"] = str(draw_cell(space, genotype, plot))
    if nb201_table:
        from raynas.tables.nb201 import NB201Table

        out["nb201"] = NB201Table.load(nb201_table).query(genotype)
    return out
