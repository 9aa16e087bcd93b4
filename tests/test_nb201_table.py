"""NAS-Bench-201 table lookup on the shared table and on tiny hand-written CSVs."""

import json
from pathlib import Path

import pytest

from raynas.benchmarks.nb201 import COLUMNS, NB201Table, TableError, export
from raynas.cli import main
from search_spaces.nb201 import GenotypeError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201.csv.gz"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def table():
    if not SHARED.is_file():
        pytest.skip(f"shared NB201 table not present at {SHARED}")
    return NB201Table.load(SHARED)


def test_shared_table_has_every_cell_and_known_values(table):
    assert len(table) == 15_625
    best = table.query(BEST)
    assert best["cifar10_test"] == pytest.approx(94.3733, abs=1e-3)
    assert best["cifar10_valid"] == pytest.approx(91.6067, abs=1e-3)
    assert table.query(SKIP)["cifar10_test"] == pytest.approx(54.30, abs=0.01)
    assert table.best("cifar10_test")["arch"] == BEST
    assert table.column("params").shape == (15_625,)


def test_export_round_trips_the_compact_columns(table, tmp_path):
    n = export(SHARED, tmp_path / "nb201.csv")
    assert n == 15_625
    small = NB201Table.load(tmp_path / "nb201.csv")
    assert small.columns == list(COLUMNS)
    assert small.query(BEST) == {c: table.query(BEST)[c] for c in COLUMNS}


def tiny_csv(path, columns=COLUMNS):
    rows = [[BEST, 91.6, 94.37, 72.7, 73.2, 45.6, 46.7, 153.27, 1073466],
            [SKIP, 50.0, 54.30, 20.0, 21.0, 10.0, 11.0, 7.78, 73306]]
    lines = [",".join(columns)] + [",".join(str(v) for v, c in zip(r, COLUMNS) if c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tiny_table_and_cli_query(tmp_path, capsys):
    path = tiny_csv(tmp_path / "t.csv")
    assert main(["bench", "nb201", "query", SKIP, "--table", str(path)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == set(COLUMNS) and row["cifar10_test"] == 54.3 and row["params"] == 73306


@pytest.mark.parametrize("arch, fragment", [
    ("|nor_conv_3x3~0|+|none~0|", "3 '\\+'-separated"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op"),
    ("|none~0|+|none~1|none~1|+|none~0|none~1|none~2|", "expected"),
])
def test_invalid_archs_are_one_line_errors(tmp_path, capsys, arch, fragment):
    path = tiny_csv(tmp_path / "t.csv")
    with pytest.raises(GenotypeError, match=fragment):
        NB201Table.load(path).query(arch)
    assert main(["bench", "nb201", "query", arch, "--table", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(TableError, match="does not exist.*raynas bench nb201 export"):
        NB201Table.load(tmp_path / "nope.csv")
    bad = tiny_csv(tmp_path / "bad.csv", columns=tuple(c for c in COLUMNS if c != "cifar100_test"))
    with pytest.raises(TableError, match="lacks columns cifar100_test"):
        NB201Table.load(bad)
