"""Degenerate cells, per space: the graph view of a genotype and why its output cannot depend on its input."""

import pytest

import search_spaces
from search_spaces.darts import DARTS_V2, Genotype, format_genotype

SOUND_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"


@pytest.mark.parametrize("arch, reason", [
    (SOUND_NB201, None),
    ("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", None),  # one conv 0->3: a plain cell
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "NB201 cell: every edge is none"),
    ("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|none~2|",
     "NB201 cell: the output is unreachable from the input"),
    ("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|none~1|skip_connect~2|",
     "NB201 cell: node 1 has no input but feeds the output"),
    ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", None),  # node 1, 2 dead but feed nothing
])
def test_nb201_degenerate_reasons(arch, reason):
    assert search_spaces.degenerate_reason("nb201", search_spaces.parse_genotype("nb201", arch)) == reason


def _darts(normal, reduce=None):
    return Genotype(normal, [2, 3, 4, 5], reduce or list(DARTS_V2.reduce), [2, 3, 4, 5])


@pytest.mark.parametrize("space", ["darts", "s3"])  # S3 is the RobustDARTS space with none on every edge
def test_darts_family_degenerate_reasons(space):
    ok = [("sep_conv_3x3", 0), ("skip_connect", 1)] * 4
    none_all = [("none", 0), ("none", 1)] * 4
    dead_node = [("none", 0), ("none", 1)] + ok[2:]
    chained = [("none", 0), ("none", 1), ("skip_connect", 2), ("none", 1)] + ok[4:]  # node 1 only reads node 0
    reduce = ok if space == "s3" else None
    cases = {format_genotype(_darts(ok, reduce)): None,
             format_genotype(_darts(none_all, reduce)): "normal cell: every edge is none",
             format_genotype(_darts(dead_node, reduce)): "normal cell: node 0 has no input but feeds the output",
             format_genotype(_darts(chained, reduce)): "normal cell: node 0 has no input but feeds the output; "
                                                       "normal cell: node 1 has no input but feeds the output",
             format_genotype(_darts(ok, none_all)): "reduce cell: every edge is none"}
    for text, reason in cases.items():
        g = search_spaces.parse_genotype(space, text)
        assert search_spaces.degenerate_reason(space, g) == reason, text


def test_published_cells_are_sound():
    from search_spaces.published import PUBLISHED

    for name, p in PUBLISHED.items():
        assert search_spaces.degenerate_reason("darts", search_spaces.parse_genotype("darts", p.genotype)) is None, name


def test_graph_keeps_none_edges():
    (g,) = search_spaces.cell_graphs("nb201", search_spaces.parse_genotype("nb201", SOUND_NB201))
    assert len(g.edges) == 6 and ("1", "3", "none") in g.edges and len(g.live_edges()) == 5
    normal, reduce = search_spaces.cell_graphs("darts", DARTS_V2)
    assert len(normal.edges) == 8 + 4 and normal.inputs == ("c_{k-2}", "c_{k-1}") and normal.output == "c_{k}"
