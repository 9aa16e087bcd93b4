"""NAS-Bench-201 table lookup on the shared table and on tiny hand-written CSVs."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from raynas.tables.nb201 import COLUMNS, NB201Table, TableError, accuracy_keys, export
from raynas.cli import main
from search_spaces.nb201 import GenotypeError, all_genotypes, format_genotype, parse_genotype

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201.csv.gz"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
ROWS = [[BEST, 91.6, 94.37, 72.7, 73.2, 45.6, 46.7, 153.27, 1073466],
        [SKIP, 50.0, 54.30, 20.0, 21.0, 10.0, 11.0, 7.78, 73306],
        [ARCH0, 81.98, 85.86, 52.7, 52.91, 28.21, 26.63, 15.65, 129306]]


@pytest.fixture(scope="module")
def table():
    if not SHARED.is_file():
        pytest.skip(f"shared NB201 table not present at {SHARED} (see shared/data/README.md)")
    return NB201Table.load(SHARED)


def tiny_csv(path, columns=COLUMNS, rows=ROWS, extra=True):
    """3 hand-written rows (with an extra ``note`` column, which the table must keep)."""
    header = [c for c in COLUMNS if c in columns] + (["note"] if extra else [])
    lines = [",".join(header)]
    for i, r in enumerate(rows):
        lines.append(",".join([str(v) for v, c in zip(r, COLUMNS) if c in columns] + ([f"row{i}"] if extra else [])))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the shared 15,625-cell table -------------------------------------------------------------------

def test_shared_table_has_every_cell_and_known_values(table):
    assert len(table) == 15_625
    best = table.query(BEST)
    assert best["cifar10_test"] == pytest.approx(94.3733, abs=1e-3)
    assert best["cifar10_valid"] == pytest.approx(91.6067, abs=1e-3)
    assert table.query(SKIP)["cifar10_test"] == pytest.approx(54.30, abs=0.01)
    arch0 = table.query(ARCH0)
    assert arch0["params"] == 129306 and isinstance(arch0["params"], int) and arch0["index"] == 0
    assert table.best("cifar10_test")["arch"] == BEST
    assert table.column("params").shape == (15_625,)
    assert table.column("cifar10_test")[table.index[BEST]] == best["cifar10_test"]
    json.dumps(best)  # JSON-able: plain Python scalars only


def test_shared_table_archs_are_canonical_and_cover_the_space(table):
    assert all(format_genotype(parse_genotype(a)) == a for a in table.archs)
    assert set(table.archs) == {str(g) for g in all_genotypes()}


def test_export_round_trips_the_compact_columns(table, tmp_path):
    assert export(SHARED, tmp_path / "nb201.csv") == 15_625
    small = NB201Table.load(tmp_path / "nb201.csv")
    assert small.columns == list(COLUMNS) and small.archs == table.archs
    for c in COLUMNS[1:]:
        np.testing.assert_array_equal(small.column(c), table.column(c))
    assert small.query(BEST) == {c: table.query(BEST)[c] for c in COLUMNS}


# --- tiny tables (no shared data needed) ------------------------------------------------------------

def test_tiny_table_query_best_column(tmp_path):
    t = NB201Table.load(tiny_csv(tmp_path / "t.csv"))
    assert len(t) == 3 and t.columns == [*COLUMNS, "note"]
    row = t.query(parse_genotype(SKIP))
    assert row == dict(zip(COLUMNS, ROWS[1])) | {"note": "row1"}
    assert isinstance(row["params"], int) and isinstance(row["flops"], float)
    assert t.best("cifar10_valid")["arch"] == BEST
    assert t.column("params").tolist() == [r[-1] for r in ROWS]
    assert t.archs == [r[0] for r in ROWS]


def test_tiny_table_reads_gzip_and_exports_only_the_compact_columns(tmp_path):
    src = tiny_csv(tmp_path / "t.csv")
    assert export(src, tmp_path / "t.csv.gz") == 3
    t = NB201Table.load(tmp_path / "t.csv.gz")
    assert t.columns == list(COLUMNS) and t.query(ARCH0)["params"] == 129306


def test_accuracy_keys():
    assert accuracy_keys("cifar10") == ("cifar10_valid", "cifar10_test")
    assert accuracy_keys("cifar100") == ("cifar100_valid", "cifar100_test")
    assert accuracy_keys("imagenet16-120") == ("imagenet16_valid", "imagenet16_test")
    assert accuracy_keys("svhn") is None


def test_tiny_table_and_cli_query(tmp_path, capsys):
    path = tiny_csv(tmp_path / "t.csv")
    assert main(["bench", "nb201", "query", SKIP, "--table", str(path)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {*COLUMNS, "note"} and row["cifar10_test"] == 54.3 and row["params"] == 73306


@pytest.mark.parametrize("arch, fragment", [
    ("|nor_conv_3x3~0|+|none~0|", "3 '\\+'-separated"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 incoming edges"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op 'conv'"),
    ("|none~0|+|none~1|none~1|+|none~0|none~1|none~2|", "expected 'none~0'"),
])
def test_invalid_archs_are_one_line_errors(tmp_path, capsys, arch, fragment):
    path = tiny_csv(tmp_path / "t.csv")
    with pytest.raises(GenotypeError, match=fragment):
        NB201Table.load(path).query(arch)
    assert main(["bench", "nb201", "query", arch, "--table", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_valid_cell_missing_from_table(tmp_path):
    absent = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(TableError, match="valid NB201 cell but not in"):
        NB201Table.load(tiny_csv(tmp_path / "t.csv")).query(absent)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(TableError, match=r"nope\.csv does not exist.*raynas bench nb201 export --from"):
        NB201Table.load(tmp_path / "nope.csv")
    bad = tiny_csv(tmp_path / "bad.csv", columns=tuple(c for c in COLUMNS if c != "cifar100_test"))
    with pytest.raises(TableError, match="lacks columns cifar100_test"):
        NB201Table.load(bad)


def test_bad_rows_name_the_line(tmp_path):
    rows = [ROWS[0], ["|none~0|+|none~0|", *ROWS[1][1:]]]
    with pytest.raises(TableError, match=r"t\.csv:3: NB201 string needs 3"):
        NB201Table.load(tiny_csv(tmp_path / "t.csv", rows=rows))
    with pytest.raises(TableError, match="more than once"):
        NB201Table.load(tiny_csv(tmp_path / "d.csv", rows=[ROWS[0], ROWS[0]]))


def test_export_from_official_api_without_the_package(tmp_path, monkeypatch):
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    pth.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "nas_201_api", None)  # makes the import fail
    with pytest.raises(TableError, match=r"pip install 'raynas\[nb201\]'"):
        export(pth, tmp_path / "out.csv")
    with pytest.raises(TableError, match="does not exist"):
        export(tmp_path / "missing.pth", tmp_path / "out.csv")


def test_export_uses_the_official_api_calls(tmp_path, monkeypatch):
    """A stand-in for nas_201_api with the real signatures: 200-epoch means, params in millions."""
    calls = []

    class FakeAPI:
        def __init__(self, path, verbose=True):
            self.archs = [ROWS[0][0], ROWS[1][0]]

        def __len__(self):
            return len(self.archs)

        def arch(self, i):
            return self.archs[i]

        def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
            calls.append((dataset, hp, is_random))
            base = {"cifar10-valid": 1, "cifar10": 2, "cifar100": 3, "ImageNet16-120": 5}[dataset] * 10 + index
            info = {"test-accuracy": base + 0.5}
            if dataset != "cifar10":
                info["valid-accuracy"] = base + 0.25
            return info

        def get_cost_info(self, index, dataset, hp="12"):
            return {"flops": 15.64737, "params": 0.129306, "latency": None}

    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=FakeAPI))
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    pth.write_bytes(b"")
    assert export(pth, tmp_path / "out.csv") == 2
    row = NB201Table.load(tmp_path / "out.csv").query(SKIP)
    assert row == {"arch": SKIP, "cifar10_valid": 11.25, "cifar10_test": 21.5, "cifar100_valid": 31.25,
                   "cifar100_test": 31.5, "imagenet16_valid": 51.25, "imagenet16_test": 51.5,
                   "flops": 15.64737, "params": 129306}
    assert set(calls) == {(ds, "200", False) for ds in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")}
