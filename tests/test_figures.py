"""The figures a researcher puts in a paper, rendered and checked for content: the alpha heatmap, the report's
alpha-evolution plot, the NAR rank scatter and the cell drawings (matplotlib fallback; graphviz source)."""

from __future__ import annotations

import itertools
import math
import random
import shutil
import subprocess

import numpy as np
import pytest

import search_spaces
from raynas.diagram import NOTE, cell_figure, to_dot
from raynas.heatmap import alpha_heatmap_figure, draw_alpha_heatmap
from raynas.nar.scatter import scatter_figure
from raynas.report.plots import alpha_figure, seed_style

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = [f"{i}<-{j}" for i in range(1, 4) for j in range(i)]


def history(epochs: int, lean: float = 0.002) -> list[dict]:
    """NB201 alpha, nearly uniform (as early in a search): skip_connect a little above 1/5 on every edge."""
    out = []
    for e in range(1, epochs + 1):
        skip = 0.2 + lean * e
        out.append({"epoch": e, "alpha": {"cell": {edge: {op: skip if op == "skip_connect" else (1 - skip) / 4
                                                          for op in NB201_OPS} for edge in EDGES}}})
    return out


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_heatmap_shows_the_deviation_from_uniform_on_its_own_scale(tmp_path):
    fig = alpha_heatmap_figure(history(3))
    ax = fig.axes[0]
    (image,) = ax.get_images()
    values = np.asarray(image.get_array())
    assert values.shape == (6 * 5, 3)
    assert values[1] == pytest.approx([0.002, 0.004, 0.006])  # row "1<-0 skip_connect": weight - 1/5
    lo, hi = image.get_clim()
    assert lo == pytest.approx(-0.006) and hi == pytest.approx(0.006)  # own, symmetric scale, not 0..1
    assert image.get_cmap().name == "RdBu_r"
    assert texts(ax) == ["1", "2", "3"] and ax.get_xlabel() == "epoch"
    assert "α − uniform" in ax.get_title() and "strongest op at epoch 3" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["1<-0 none", "1<-0 skip_connect"]
    assert fig.axes[1].get_ylabel() == "weight − 1/#ops of the edge"  # the colour bar
    assert texts(alpha_heatmap_figure(history(1)).axes[0]) == ["1"]  # a 1-epoch run: one integer tick
    pruned = history(2)
    del pruned[1]["alpha"]["cell"]["1<-0"]["none"]  # DrNAS drops an op: blank from then on, 1/4 is uniform
    v = np.asarray(alpha_heatmap_figure(pruned).axes[0].get_images()[0].get_array())
    assert math.isnan(v[0, 1]) and v[1, 1] == pytest.approx(0.204 - 0.25)
    assert draw_alpha_heatmap(history(2), tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def _trials(seeds, epochs):
    trials = [{"key": f"e/t{s}", "method": "darts", "space": "nb201", "dataset": "cifar10", "seed": s}
              for s in seeds]
    return trials, {t["key"]: history(epochs, lean=0.01 * (1 + t["seed"])) for t in trials}


@pytest.mark.parametrize("epochs, ticks", [(1, ["1"]), (3, ["1", "2", "3"])])
def test_alpha_evolution_has_integer_epochs_and_distinguishable_seeds(epochs, ticks):
    fig, axes, used = alpha_figure(*_trials([0, 1, 2], epochs))
    ax = axes.flat[0]
    assert used == 1 and texts(ax) == ticks and ax.get_xlim() == (0.5, epochs + 0.5)
    assert "darts · nb201/cifar10" in ax.get_title() and "edge 1<-0" in ax.get_title()
    lines = [line for line in ax.get_lines() if line.get_marker() != "None"]  # not the uniform line
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 3 and len(lines) == 3 * 5  # 3 seeds x 5 ops, one style per seed
    ops_legend, seed_legend = fig.legends
    assert [t.get_text() for t in ops_legend.get_texts()] == list(NB201_OPS)
    assert [t.get_text() for t in seed_legend.get_texts()] == ["seed 0", "seed 1", "seed 2"]
    handles = seed_legend.legend_handles
    assert [(h.get_linestyle(), h.get_marker()) for h in handles] == \
        [(seed_style(i)["linestyle"], seed_style(i)["marker"]) for i in range(3)]
    assert len({(seed_style(i)["linestyle"], seed_style(i)["marker"]) for i in range(8)}) == 8


def test_rank_scatter_names_what_it_shows():
    rng = np.random.default_rng(0)
    true = rng.normal(size=15_000)
    fig = scatter_figure(true + rng.normal(size=true.size), true, bench="nb201", dataset="cifar100", seed=3,
                         epoch=2, epochs=5)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "true rank by test accuracy (rank 1 = best)"
    assert ax.get_ylabel() == "predicted rank (rank 1 = best)"
    title = ax.get_title()
    assert "nb201/cifar100" in title and "seed 3" in title and "epoch 2 of 5 (best validation)" in title
    assert "15,000 held-out" in title and "Kendall τ = 0." in title
    labels = texts(ax)
    assert labels[0] == "1" and all(label.endswith("k") for label in labels[1:]) and len(labels) <= 7
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    for axis in (ax.get_xticklabels(), ax.get_yticklabels()):  # tick labels apart, not run together
        boxes = [t.get_window_extent(renderer) for t in axis]
        assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def _label_overlaps(fig) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text()]
        bad += [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]
    return bad


@pytest.mark.parametrize("space", ["nb201", "darts", "s1", "s2", "s3", "s4"])
def test_cell_drawings_place_every_label_free_and_show_none_edges(space):
    from test_eval_networks import random_genotype

    rng = random.Random(0)
    for _ in range(8):
        g = random_genotype(space, rng)
        graphs = search_spaces.cell_graphs(space, g)
        fig = cell_figure(graphs)
        assert _label_overlaps(fig) == []
        for ax, graph in zip(fig.axes, graphs):
            shown = sorted(t.get_text() for t in ax.texts if t.get_text())
            ops = [op for *_, op in graph.edges if op]  # every op edge labelled, none included
            assert shown == sorted(ops + list(graph.nodes))
            arrows = [t.arrow_patch for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
            assert len(arrows) == len(graph.edges)
            dotted = [a for a in arrows if a.get_linestyle() == ":"]
            assert len(dotted) == ops.count("none") and all(a.get_edgecolor()[:3] == (154 / 255,) * 3 for a in dotted)
        assert NOTE in [t.get_text().split(";")[0] for t in fig.texts]


def test_degenerate_cell_drawing_says_why():
    g = search_spaces.parse_genotype("nb201", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    fig = cell_figure(search_spaces.cell_graphs("nb201", g))
    ax = fig.axes[0]
    assert ax.get_title().endswith("degenerate: every edge is none") and ax.title.get_color() == "#c00000"
    assert [t.get_text() for t in ax.texts if t.get_text() not in ("0", "1", "2", "3", "")] == ["none"] * 6


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed (the matplotlib path is tested above)")
def test_graphviz_renders_the_dot_source(tmp_path):
    from search_spaces.darts import DARTS_V2

    dead = search_spaces.parse_genotype("nb201", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    for space, g in (("nb201", dead), ("darts", DARTS_V2)):
        out = tmp_path / f"{space}.svg"
        subprocess.run(["dot", "-Tsvg", "-o", str(out)], input=to_dot(search_spaces.cell_graphs(space, g)),
                       text=True, check=True, capture_output=True, timeout=60)
        svg = out.read_text()
        assert "dotted grey: none" in svg and ("degenerate: every edge is none" in svg) == (space == "nb201")
