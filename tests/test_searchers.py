"""Searchers on the NB-201 table (raynas.searchers): the cell space, random / REA / TPE / NAR, the tabular
trainable's simulated time, ASHA's rule, curves, MLflow and the ``raynas bench nb201 simulate`` command.

Most tests use a synthetic table of all 15,625 cells (a known additive score per edge op); the shared
table is used only where present.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raynas.cli import main
from raynas.config import ConfigError
from raynas.searchers import make_searcher
from raynas.searchers.curves import at_queries, at_times, holds, incumbents, markdown, table_rows
from raynas.searchers.evolution import RegularizedEvolution, mutants
from raynas.searchers.nar import NARSearcher
from raynas.searchers.random_search import RandomSearcher
from raynas.searchers.simulate import Query, RungStopper, simulate
from raynas.searchers.space import (CELL_KEY, EDGE_KEYS, N_CELLS, all_archs, arch_of, arch_of_index, cell_config,
                                    cell_space, check_space, index_of)
from raynas.searchers.study import load_study, run_study
from raynas.searchers.tabular import HIGH, LOW, CostModel, load_bench
from search_spaces.nb201 import OPS_NB201, parse_genotype

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "nb201.csv.gz"
#: NAR small enough for tests: the first fit after 10 cells, then every 10, two epochs each
NAR_FAST = {"n_init": 10, "refit_every": 10, "refit_epochs": 2, "val_frac": 0.2}
OP_GAIN = {"none": 0.0, "skip_connect": 2.0, "nor_conv_1x1": 3.0, "nor_conv_3x3": 5.0, "avg_pool_3x3": 1.0}


def synthetic_frame(seed: int = 0, low: bool = True) -> pd.DataFrame:
    """Every cell; validation accuracy additive in the ops (edge-weighted, unique optimum), test and 12-epoch
    accuracy noisy copies of it, FLOPs from the conv count."""
    rng = np.random.default_rng(seed)
    archs = list(all_archs())
    ops = np.array([[OPS_NB201.index(o) for o in parse_genotype(a).ops] for a in archs])
    gain = np.array([OP_GAIN[o] for o in OPS_NB201])
    valid = 60 + (gain[ops] * (1 + 0.1 * np.arange(6))).sum(axis=1) + rng.normal(0, 0.3, len(archs))
    convs = np.isin(ops, [2, 3]).sum(axis=1)
    frame = pd.DataFrame({"arch": archs})
    for ds in ("cifar10", "cifar100", "imagenet16"):
        frame[f"{ds}_valid"] = valid
        frame[f"{ds}_test"] = valid + rng.normal(0, 0.5, len(archs))
        if low:
            frame[f"{ds}_valid_12ep"] = valid - 10 + rng.normal(0, 2.0, len(archs))
    frame["flops"] = 8.0 + 20.0 * convs
    frame["params"] = 70000 + 100000 * convs
    return frame


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb201") / "synthetic.csv"
    synthetic_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def bench(table_path):
    return load_bench(str(table_path), "cifar10")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def drive(searcher, bench, budget, scheduler="fifo"):
    return simulate(searcher, bench, budget, scheduler=scheduler)


# --- the cell as a Tune search space -------------------------------------------------------------------

def test_cell_space_round_trips_and_sits_next_to_hyperparameters():
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    assert len(set(all_archs())) == N_CELLS and all(index_of(arch_of_index(i)) == i for i in (0, 1, 777, N_CELLS - 1))
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    cfg = cell_config(arch)
    assert list(cfg[CELL_KEY]) == list(EDGE_KEYS) == ["e01", "e02", "e12", "e03", "e13", "e23"]
    assert arch_of(cfg) == arch and arch_of({f"cell/{k}": v for k, v in cfg["cell"].items()}) == arch
    space = {"cell": cell_space(), "lr": tune.loguniform(1e-4, 1e-1)}  # next to a hyperparameter
    search = OptunaSearch(space=space, metric="valid_acc", mode="max", seed=0)
    config = search.suggest("t0")
    assert parse_genotype(arch_of(config)) and 1e-4 <= config["lr"] <= 1e-1
    assert check_space({"cell": {"type": "nb201_cell"}}) == "cell"
    with pytest.raises(ConfigError, match="nb201_cell"):
        check_space({"cell": {"type": "nb201_cell"}, "lr": {"type": "float", "low": 0.1, "high": 1}})


def test_nb101_encoding_round_trips_to_the_table_hash():
    from ray import tune

    from raynas.searchers.space import nb101_config, nb101_space, nb101_spec
    from search_spaces.nb101 import CONV3X3, INPUT, MAXPOOL3X3, OUTPUT, ModelSpec

    matrix = np.zeros((7, 7), dtype=int)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 6), (0, 4), (4, 6)]:
        matrix[i, j] = 1
    spec = ModelSpec(matrix, [INPUT, CONV3X3, CONV3X3, MAXPOOL3X3, CONV3X3, MAXPOOL3X3, OUTPUT])
    back = nb101_spec(nb101_config(spec))
    assert back.is_valid() and back.hash() == spec.hash() and back.num_vertices == 6  # vertex 5 pruned
    space = nb101_space()
    assert len(space) == 26 and all(isinstance(d, tune.search.sample.Categorical) for d in space.values())


# --- every searcher ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["random", "rea", "tpe", "nar"])
def test_every_searcher_proposes_only_valid_unseen_cells(name, bench):
    options = NAR_FAST if name == "nar" else {}
    s = make_searcher(name, seed=3, options=options, dataset="cifar10")
    queries = drive(s, bench, 40)
    archs = [q.arch for q in queries]
    assert len(archs) == 40 and len(set(archs)) == 40
    assert all(a in bench.table.index for a in archs)
    again = drive(make_searcher(name, seed=3, options=options, dataset="cifar10"), bench, 40)
    assert [q.arch for q in again] == archs  # the seed fixes every proposal


def test_tpe_answers_repeated_asks_itself_and_never_proposes_twice(bench):
    s = make_searcher("tpe", seed=0)
    first = drive(s, bench, 5)
    flat = {f"cell/{k}": v for k, v in cell_config(first[0].arch)["cell"].items()}
    for _ in range(3):  # TPE will ask for a cell it has already seen, three times in a row
        s._ot_study.enqueue_trial(flat)
    more = simulate(s, bench, 3)
    assert s.retries >= 3 and first[0].arch not in {q.arch for q in more}
    assert len({q.arch for q in first + more}) == 8
    fallback = make_searcher("tpe", seed=0, options={"max_retries": 0})  # every proposal a random fallback
    assert len({q.arch for q in drive(fallback, bench, 6)}) == 6
    assert len(fallback._ot_study.trials) == 6  # each added to the study as an evaluated point


def test_searchers_never_see_the_test_accuracy(bench, monkeypatch):
    from ray.tune.search.optuna import OptunaSearch

    class Spy(RandomSearcher):
        seen_scores: list = []

        def observe(self, arch, scores):
            self.seen_scores.append((arch, scores))

    spy = Spy(seed=1)
    queries = drive(spy, bench, 6)
    for (arch, scores), q in zip(spy.seen_scores, queries):
        assert arch == q.arch and set(scores) == {LOW, HIGH} and q.test not in scores.values()
        assert scores[HIGH] == q.valid
    told = []
    monkeypatch.setattr(OptunaSearch, "on_trial_result", lambda self, tid, r: told.append(dict(r)))
    orig = OptunaSearch.on_trial_complete
    monkeypatch.setattr(OptunaSearch, "on_trial_complete",
                        lambda self, tid, r=None, error=False: (told.append(dict(r or {})), orig(self, tid, r, error)))
    drive(make_searcher("tpe", seed=1), bench, 4)
    assert told and all(set(r) <= {"valid_acc", "training_iteration"} for r in told)


# --- regularised evolution -------------------------------------------------------------------------------

class RecordingRandom(random.Random):
    def __init__(self, seed):
        super().__init__(seed)
        self.picked = []

    def choice(self, seq):
        value = super().choice(seq)
        self.picked.append(value)
        return value


def test_rea_population_sample_and_one_edge_mutation(bench):
    P, S = 5, 2
    rea = RegularizedEvolution(seed=4, population=P, sample_size=S)
    rea.rng = RecordingRandom(4)
    finished = []
    for k in range(30):
        before = list(rea.population)
        rea.rng.picked.clear()
        arch = arch_of(rea.suggest(f"t{k}"))
        if k < P:
            assert not rea.parents  # the first P proposals are random
        else:
            sample = [p for p in rea.rng.picked if isinstance(p, tuple)]
            assert len(sample) == S and all(m in before for m in sample)
            parent = max(sample, key=lambda m: m[1])[0]
            assert rea.parents[-1] == parent and arch in mutants(parent)
            diff = [a != b for a, b in zip(parse_genotype(arch).ops, parse_genotype(parent).ops)]
            assert sum(diff) == 1  # exactly one edge changed, to another op
        for report in bench.reports(arch):
            rea.on_trial_result(f"t{k}", report)
        rea.on_trial_complete(f"t{k}", bench.reports(arch)[-1])
        finished.append(arch)
        assert [m[0] for m in rea.population] == finished[-P:]  # aging: the oldest leaves
    assert len(mutants(finished[0])) == 24 and len(set(rea.proposed)) == 30


def test_rea_falls_back_to_a_random_cell_when_every_mutant_was_proposed(bench):
    rea = RegularizedEvolution(seed=0, population=1, sample_size=1)
    arch = arch_of(rea.suggest("a"))
    rea.on_trial_complete("a", bench.reports(arch)[-1])
    rea.seen.update(mutants(arch))
    nxt = arch_of(rea.suggest("b"))
    assert nxt not in mutants(arch) and nxt != arch and not rea.parents


# --- NAR -------------------------------------------------------------------------------------------------

def test_nar_refit_schedule_grows_then_waits_a_max_train_once_capped():
    nar = NARSearcher(seed=0)  # the defaults: refit_every 10, refit_growth 0.2, max_train 256
    points, n = [], 0
    while n < 1000:
        n += nar.refit_interval() if points else nar.n_init
        points.append(n)
        nar.fitted_at, nar.trained_on = n, min(n, nar.max_train)  # val_frac 0: a refit trains on them all
    assert points == [10, 20, 30, 40, 50, 60, 72, 86, 103, 124, 149, 179, 215, 258, 514, 770, 1026]
    nar.max_train = 2000  # never capped: the 20% rule alone
    assert [nar.refit_interval() for nar.fitted_at in (258, 310, 924)] == [52, 62, 185]


def test_nar_waits_a_max_train_after_the_first_refit_that_trained_on_max_train_cells(bench):
    class Recording(NARSearcher):
        def refit(self):
            super().refit()
            self.at.append((self.fitted_at, self.trained_on))

    # val_frac 0.2 holds max_train // 4 = 5 cells out, so the cap of 20 is reached at 25 finished cells
    nar = Recording(seed=0, max_train=20, **NAR_FAST)
    nar.at = []
    drive(nar, bench, 75)
    assert nar.at == [(10, 5), (20, 15), (30, 20), (50, 20), (70, 20)]


def test_nar_refits_warm_started_and_a_perfect_ranker_finds_the_optimum(bench):
    nar = NARSearcher(seed=0, **NAR_FAST)
    drive(nar, bench, 35)
    assert nar.refits == 3 and nar.run.epoch == 3 * NAR_FAST["refit_epochs"]  # one model, trained on
    assert len(nar.run.train_idx) + len(nar.run.val_idx) == 30
    truth = dict(zip(bench.table.archs, bench.valid))

    class Perfect(NARSearcher):
        def predict_score(self, rows):
            return np.array([truth[self.data.names[r]] for r in rows])

        def predict_tier(self, rows):
            return np.zeros(len(rows), dtype=int)

    best = bench.optimum()["arch"]
    queries = drive(Perfect(seed=0, ranker={"sample_size": 8192}, **NAR_FAST), bench, 40)
    assert best in [q.arch for q in queries]
    assert incumbents(queries)[-1] == bench.optimum()["test_acc"]


def test_nar_local_adds_the_one_edge_mutants_of_the_best_cells_to_its_candidates(bench):
    class Recording(NARSearcher):
        def _rank(self, rows):
            self.ranked = rows
            return super()._rank(rows)

    plain = Recording(seed=0, local=0, local_share=0, **NAR_FAST)
    drive(plain, bench, 15)
    assert plain._neighbours() == [] and len(plain.ranked) == plain.cfg.sample_size
    nar = Recording(seed=0, local=2, local_share=0, **NAR_FAST)
    drive(nar, bench, 15)
    best = sorted(nar.scores, key=lambda a: max(nar.scores[a]) * 1000 + nar.scores[a][max(nar.scores[a])])[-2:]
    want = {nar.data.index[m] for a in best for m in mutants(a)}
    assert set(nar._neighbours()) == want and len(want) == 48
    assert want <= set(nar.ranked.tolist()) and len(nar.ranked) == nar.cfg.sample_size + 48
    with pytest.raises(ConfigError, match="local >= 0"):
        NARSearcher(local=-1)


def test_nar_local_share_reserves_proposals_for_the_best_mutants(bench):
    """With every slot reserved, each proposal after the random start is a one-edge mutant of a cell finished
    before it; with none reserved, the ranker also picks sampled cells."""
    def mutant_share(share: int) -> float:
        nar = NARSearcher(seed=0, local=1, local_share=share, **NAR_FAST)
        finished = [q.arch for q in drive(nar, bench, 40)]
        hits = [any(q in mutants(a) for a in finished[:i]) for i, q in enumerate(finished) if i >= 10]
        return sum(hits) / len(hits)

    assert mutant_share(5) == 1.0
    assert mutant_share(0) < 1.0  # the ranker alone also queries sampled cells
    with pytest.raises(ConfigError, match="local_share in"):
        NARSearcher(local_share=6)


def test_nar_options_are_checked():
    with pytest.raises(ConfigError, match="unknown option 'refit'"):
        make_searcher("nar", options={"refit": 3})
    with pytest.raises(ConfigError, match="n_init"):
        NARSearcher(n_init=4)
    with pytest.raises(ConfigError, match="d_model"):
        NARSearcher(ranker={"d_model": 30, "n_head": 4})


# --- simulated time and ASHA -----------------------------------------------------------------------------

def test_simulated_time_advances_by_the_cost_model(table_path, bench):
    frame = pd.read_csv(table_path)
    cost = CostModel()
    queries = drive(RandomSearcher(seed=2), bench, 5)
    flops = frame.set_index("arch").loc[[q.arch for q in queries], "flops"].to_numpy()
    epoch_s = cost.epoch_seconds(flops, "cifar10")
    assert epoch_s == pytest.approx(3.0 + 0.112 * flops)
    assert [q.time for q in queries] == pytest.approx(np.cumsum(HIGH * epoch_s))
    stopped = simulate(RandomSearcher(seed=2), bench, 12, scheduler="asha")
    steps = [q.time - p for q, p in zip(stopped, [0.0] + [q.time for q in stopped[:-1]])]
    fl = frame.set_index("arch").loc[[q.arch for q in stopped], "flops"].to_numpy()
    assert steps == pytest.approx([q.epochs * s for q, s in zip(stopped, cost.epoch_seconds(fl, "cifar10"))])
    assert {q.epochs for q in stopped} == {LOW, HIGH}
    budget = queries[2].time + 100 * epoch_s[3]  # the 4th cell is past 12 epochs, not at 200, when time is up
    timed = simulate(RandomSearcher(seed=2), bench, time_budget=budget)
    assert [q.time for q in timed[:3]] == [q.time for q in queries[:3]] and len(timed) == 4
    assert (timed[3].arch, timed[3].epochs, timed[3].time) == (queries[3].arch, LOW, budget)
    frame["cifar10_epoch_s"] = 10.0  # per-cell times, where a table has them, are used as they are
    frame.to_csv(table_path.parent / "timed.csv", index=False)
    timed_bench = load_bench(str(table_path.parent / "timed.csv"))
    assert [q.time for q in drive(RandomSearcher(seed=2), timed_bench, 3)] == pytest.approx([2000, 4000, 6000])


def test_rung_stopper_is_rays_asha_rule():
    from ray.tune.schedulers.async_hyperband import _Bracket

    class T:
        def __init__(self, i):
            self.trial_id = f"t{i}"

    rng = np.random.default_rng(0)
    for rf in (2, 3, 4):
        ours, ray_bracket = RungStopper(rf), _Bracket(1, 2, rf, 0)
        for i, v in enumerate(rng.normal(80, 5, 60)):
            assert ours.stop(f"t{i}", v) == (ray_bracket.on_result(T(i), 1, v) == "STOP")


def shuffled_200_epoch_table(table_path, tmp_path):
    """The table with its 200-epoch columns permuted across cells, the 12-epoch ones as they were."""
    frame = pd.read_csv(table_path)
    shuffled = frame.copy()
    perm = np.random.default_rng(1).permutation(len(frame))
    for c in ("cifar10_valid", "cifar10_test"):
        shuffled[c] = frame[c].to_numpy()[perm]
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    return frame, tmp_path / "shuffled.csv"


def test_asha_stops_cells_at_the_12_epoch_rung_by_their_12_epoch_accuracy_only(table_path, tmp_path):
    frame, _ = shuffled_200_epoch_table(table_path, tmp_path)
    a = simulate(RandomSearcher(seed=5), load_bench(str(table_path)), 40, scheduler="asha")
    b = simulate(RandomSearcher(seed=5), load_bench(str(tmp_path / "shuffled.csv")), 40, scheduler="asha")
    assert [q.epochs for q in a] == [q.epochs for q in b] and {q.epochs for q in a} == {LOW, HIGH}
    low = frame.set_index("arch")["cifar10_valid_12ep"]
    for k, q in enumerate(a):
        earlier = [low[p.arch] for p in a[:k]]
        if q.epochs == LOW:
            assert low[q.arch] < np.percentile(earlier, 100 * (1 - 1 / 3))
        else:
            assert not earlier or low[q.arch] >= np.percentile(earlier, 100 * (1 - 1 / 3))


def test_hyperband_stops_and_promotes_by_the_12_epoch_accuracy_only(table_path, tmp_path):
    frame, shuffled = shuffled_200_epoch_table(table_path, tmp_path)
    a = simulate(RandomSearcher(seed=5), load_bench(str(table_path)), 60, scheduler="hyperband", seed=3)
    b = simulate(RandomSearcher(seed=5), load_bench(str(shuffled)), 60, scheduler="hyperband", seed=3)
    assert [q.epochs for q in a] == [q.epochs for q in b] and {q.epochs for q in a} == {LOW, HIGH}
    # Ray's two brackets, drawn as ASHAScheduler(brackets=2) draws them (exp(rungs - max)), from the seed
    p = np.array([1.0, np.exp(-1.0)])
    rng = np.random.default_rng(3)
    brackets = [int(rng.choice(2, p=p / p.sum())) for _ in a]
    low = frame.set_index("arch")["cifar10_valid_12ep"]
    rung, promoted_below = [], 0
    for q, bracket in zip(a, brackets):
        cutoff = np.percentile(rung, 100 * (1 - 1 / 3)) if rung else None
        if bracket == 1:  # the full-length bracket: no rung below 200 epochs
            assert q.epochs == HIGH
            promoted_below += cutoff is not None and low[q.arch] < cutoff
        else:  # the ASHA bracket: its own 12-epoch results decide
            assert (q.epochs == LOW) == (cutoff is not None and low[q.arch] < cutoff)
            rung.append(low[q.arch])
    assert 0 < brackets.count(1) < len(a) and promoted_below > 0  # not ASHA: some low cells ran to 200
    other = simulate(RandomSearcher(seed=5), load_bench(str(table_path)), 60, scheduler="hyperband", seed=4)
    assert [q.epochs for q in other] != [q.epochs for q in a]  # the seed draws the brackets


# --- curves, tables, studies -----------------------------------------------------------------------------

def test_incumbent_prefers_longer_training_then_validation():
    qs = [Query("a", HIGH, 90.0, 93.0, 10), Query("b", LOW, 95.0, 99.0, 11), Query("c", HIGH, 91.0, 92.0, 20)]
    assert list(incumbents(qs)) == [93.0, 93.0, 92.0]
    assert list(at_queries(qs, [1, 3, 5])) == [93.0, 92.0, 92.0]
    assert np.isnan(at_times(qs, [5])[0]) and list(at_times(qs, [10, 19, 25])) == [93.0, 93.0, 92.0]
    rows = table_rows({"x": [qs, qs[:2]]}, [1, 3])
    assert rows[0]["mean"] == [93.0, 92.5] and rows[0]["std"][1] == pytest.approx(0.7071, abs=1e-4)
    assert "| x | 2 | 93.00 ± 0.00 | 92.50 ± 0.71 |" in markdown(rows)
    timed = table_rows({"x": [qs]}, [5, 15, 30], by="time")
    assert np.isnan(timed[0]["mean"][0]) and timed[0]["mean"][1:] == [93.0, 92.0] and timed[0]["cost"] == 3
    assert "queries (mean)" in markdown(timed)
    # what the searcher optimised: the same incumbents' validation accuracy (the 12-epoch cell never picked)
    assert list(incumbents(qs, "valid")) == [90.0, 90.0, 91.0]
    assert table_rows({"x": [qs, qs[:2]]}, [1, 3], field="valid")[0]["mean"] == [90.0, 90.5]
    assert list(at_times(qs, [19, 25], "valid")) == [90.0, 91.0]
    assert list(holds(qs, "a", [1, 2, 3, 9])) == [True, True, False, False]
    assert list(holds(qs, "c", [2, 3])) == [False, True] and not holds([], "a", [1])[0]
    with pytest.raises(ValueError, match="unknown curve field 'valid_acc'"):
        incumbents(qs, "valid_acc")


def test_study_runs_writes_outputs_and_logs_to_mlflow(table_path, tmp_path, capsys):
    from raynas.tracking import compare
    from raynas.tracking.store import client

    study = tmp_path / "study.yaml"
    study.write_text(f"name: synth\nbench: {{table: {table_path}, searchers: [random, rea], seeds: [0, 1],"
                     f" budget: 30, budgets: [10, 30], options: {{rea: {{population: 5}}}}}}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["bench", "nb201", "simulate", str(study), "--seeds", "0-2", "--json", str(tmp_path / "r.json"),
            "--plot", str(tmp_path / "curve.png"), "--markdown", str(tmp_path / "t.md"), "--tracking-uri", uri]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| random | 3 |" in out and "| rea | 3 |" in out and "parent run" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["runs"]) == 6 and all(len(r["queries"]) == 30 for r in result["runs"])
    assert (tmp_path / "curve.png").stat().st_size > 10_000 and "30 queries" in (tmp_path / "t.md").read_text()
    rows = compare(uri, "synth", "test_acc", attach=False)
    assert sorted((r["method"], r["n"]) for r in rows) == [("random", 3), ("rea", 3)]
    exp = client(uri).get_experiment_by_name("synth")
    child = next(r for r in client(uri).search_runs([exp.experiment_id]) if r.data.tags.get("method") == "rea")
    curve = client(uri).get_metric_history(child.info.run_id, "incumbent_test_acc")
    assert len(curve) == 30 and child.data.tags["genotype"].startswith("|")


def test_study_file_flags_override_it_and_workers_give_the_same_runs(table_path):
    s = load_study(None, {"bench": {"table": str(table_path), "searchers": ["rea", "random"], "seeds": [0, 1],
                                    "budget": 20, "budgets": [20]}})
    one, two = run_study(s), run_study(s, workers=2)
    assert [r["queries"] for r in one["runs"]] == [r["queries"] for r in two["runs"]]


BAD = [
    (["--searcher", "bohb"], "unknown searcher 'bohb'"),
    (["--budget", "0"], "budget > 0"),
    (["--budget", "-3"], "budget > 0"),
    (["--time-budget", "-1"], "budget > 0"),
    (["--budget", "0", "--time-budget", "0"], "budget > 0"),
    (["--searcher", "random,nar2"], "unknown searcher 'nar2' (did you mean nar?)"),
    (["--searcher", "rea", "--backend", "tune", "--scheduler", "hyperband", "--budget", "0"], "budget > 0"),
    (["--workers", "0"], "--workers"),
    (["--budget", "x"], "invalid int value"),
    (["--seeds", "0-x"], "--seeds"),
    (["--searcher", "rea", "--set", "bench.options.rea.population_size=3"], "unknown option 'population_size'"),
    (["--set", "bench.options.reaa.population=3"], "unknown searcher 'reaa' (did you mean rea?)"),
    (["--backend", "ray"], "--backend"),
    (["--scheduler", "bohb"], "unknown scheduler 'bohb'"),
    (["--scheduler", "hyperband", "--reduction-factor", "1"], "reduction_factor > 1"),
    (["--dataset", "mnist"], "unknown NB201 dataset"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_is_one_line_and_exit_2(extra, message, table_path, tmp_path, capsys):
    argv = ["bench", "nb201", "simulate", "--searcher", "random", "--budget", "5", "--table", str(table_path),
            "--tracking-uri", "none", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "c.png")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("raynas: error:") and message in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_study_file_through_raynas_run_is_one_line_and_exit_2(table_path, tmp_path, capsys):
    import ray

    study = tmp_path / "study.yaml"
    for bench, message in ((f"{{table: {table_path}, searchers: [bohb], budget: 5}}", "unknown searcher 'bohb'"),
                           (f"{{table: {table_path}, budget: 0}}", "budget > 0"),
                           (f"{{table: {tmp_path / 'none.csv'}, budget: 5}}", "does not exist")):
        study.write_text(f"name: bad\nbench: {bench}\nscheduler: {{type: hyperband}}\n")
        assert main(["run", str(study), "--out", str(tmp_path / "out"), "--tracking-uri", "none"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()  # validated before Ray, nothing written


def test_missing_table_and_asha_without_12_epoch_columns_are_one_line_errors(tmp_path, capsys):
    base = ["bench", "nb201", "simulate", "--searcher", "rea", "--budget", "5", "--tracking-uri", "none"]
    assert main(base + ["--table", str(tmp_path / "none.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base) == 2
    assert "bench.table is missing" in capsys.readouterr().err
    synthetic_frame(low=False).to_csv(tmp_path / "no12.csv", index=False)
    assert main(base + ["--table", str(tmp_path / "no12.csv"), "--scheduler", "asha"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cifar10_valid_12ep" in err and "ASHA" in err
    assert main(base + ["--table", str(tmp_path / "no12.csv"), "--scheduler", "hyperband"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cifar10_valid_12ep" in err and "Hyperband" in err
    assert main(base + ["--table", str(tmp_path / "no12.csv")]) == 0  # fifo: the 200-epoch results suffice


README_CHECK = """
import sys
from raynas.searchers import make_searcher
from raynas.searchers.simulate import simulate
from raynas.searchers.study import load_study, run_study
from raynas.searchers.tabular import load_bench

s = make_searcher("local", 0, {"n_init": 5})
queries = simulate(s, load_bench(sys.argv[1]), 30)
assert len({q.arch for q in queries}) == 30 and s.best is not None and len(s.seen) == 30
study = load_study(None, {"bench": {"table": sys.argv[1], "searchers": ["local", "random"], "budget": 20,
                                    "budgets": [20]}})
rows = run_study(study)["table"]
assert [r["searcher"] for r in rows] == ["local", "random"]
print("ok")
"""


def test_readme_searcher_example_runs(table_path):
    (code,) = re.findall(r"### Adding a searcher.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    proc = subprocess.run([sys.executable, "-c", code + README_CHECK, str(table_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_benchmark_script_checks_every_dataset_first_then_prints_both_views(table_path, tmp_path):
    script, out = str(ROOT / "benchmarks" / "searchers.py"), tmp_path / "out"
    bad = subprocess.run([sys.executable, script, "--table", str(table_path), "--datasets", "cifar10,foo",
                          "--budget", "5", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: unknown NB201 dataset 'foo'; valid: cifar10, cifar100, imagenet16"]
    assert not out.exists()  # refused before the first dataset ran
    ok = subprocess.run([sys.executable, script, "--table", str(table_path), "--searchers", "random,rea",
                         "--seeds", "0-1", "--budget", "60", "--workers", "1", "--out", str(out)],
                        capture_output=True, text=True, timeout=300)  # budget under 100: no target lines
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "incumbent's 200-epoch validation accuracy" in ok.stdout and "target:" not in ok.stdout
    assert "seeds at the best cell by validation" in ok.stdout and (out / "cifar10-fifo.json").is_file()


# --- the shared table --------------------------------------------------------------------------------------

def test_random_search_on_the_shared_table_matches_the_reference():
    if not SHARED.is_file():
        pytest.skip(f"shared NB201 table not present at {SHARED} (see shared/data/README.md)")
    b = load_bench(str(SHARED), "cifar10")
    assert b.optimum()["test_acc"] == pytest.approx(94.3733, abs=1e-3)
    mean_s = float(np.mean(b.epoch_s))
    assert 8.5 < mean_s < 9.8  # the cost model's calibration: NB-201's ~9 s per CIFAR-10-valid epoch
    finals = [incumbents(simulate(RandomSearcher(seed=s), b, 100))[-1] for s in range(40)]
    assert np.mean(finals) == pytest.approx(93.78, abs=0.15)  # README: 93.78 ± 0.27 over 2,000 repeats


def test_a_cell_space_in_a_search_experiment_is_a_one_line_error(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: cellx\ngrid: {method: [darts], space: [nb201], dataset: [digits]}\n"
                   "tune: {space: {cell: {type: nb201_cell}, optim.lr: {type: float, low: 0.01, high: 0.1}}}\n")
    assert main(["run", str(exp), "--out", str(tmp_path / "out"), "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tune.space.cell: nb201_cell is an architecture space" in err
    assert "retrain: block" in err and "experiments/study_nb201_retrain.yaml" in err  # where a cell + lr study goes
    assert not (tmp_path / "out").exists()
