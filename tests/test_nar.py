"""NAR: NB101 cells and hashing, cost encodings against the benchmarks' numbers, training, search and CLI."""

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from raynas.config import ConfigError
from raynas.cli import main as rank_main
from raynas.nar.encoding import nb101_costs, nb101_features, nb201_costs, nb201_features, nb201_totals
from raynas.nar.search import TierSampler, tier_search
from raynas.nar.tier_stats import histogram
from raynas.nar.train import NARRun, quintile_tiers, ranking_metrics, resolve_nar
from search_spaces.nb101 import (CONV1X1, CONV3X3, INPUT, MAXPOOL3X3, OUTPUT, ModelSpec, SpecError, hash_module,
                                 nb201_to_spec, parse_flat, random_spec)
from search_spaces.nb201 import OPS_NB201, parse_genotype

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NB201_CSV, NB101_CSV = DATA / "nb201.csv.gz", DATA / "nb101_naslib_zc500.csv.gz"
NAR_EXAMPLES = DATA / "nar_examples"
# the NB101 cell of the NAR authors' example record and its NB101 ``unique_hash``
EX_MATRIX = [[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
             [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
EX_OPS = [INPUT, CONV3X3, MAXPOOL3X3, CONV3X3, CONV3X3, CONV1X1, OUTPUT]
EX_HASH = "00005c142e6f48ac74fdcf73e3439874"
TINY = {"d_model": 32, "d_ffn": 64, "n_layers": 1, "n_head": 2, "d_tier_hidden": 32, "d_score_hidden": 64,
        "dropout": 0.0, "batch_size": 64, "warmup": 5, "lr_mul": 0.1, "scale_features": True, "threads": 1}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """NARRun sets torch's (process-wide) thread count; one thread is fastest for these tiny models."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared benchmark data not present at {path} (see shared/data/README.md)")
    return path


@pytest.fixture(scope="module")
def nb201():
    from raynas.nar.data import load_nb201

    return load_nb201(str(need(NB201_CSV)), scale_features=True)


@pytest.fixture(scope="module")
def small(nb201):
    """A fixed 700-cell subset of NB201 (every 22nd row)."""
    return nb201.subset(np.arange(0, len(nb201), 22)[:700])


# --- NB101 cells ------------------------------------------------------------------------------------------

def test_nb101_hash_matches_the_benchmark_and_is_isomorphism_invariant():
    spec = ModelSpec(EX_MATRIX, EX_OPS)
    assert spec.is_valid() and spec.hash() == EX_HASH
    path = NAR_EXAMPLES / "nasbench101_vertice_example.json"
    if path.exists():  # the record as the authors exported it from the NB101 API
        rec = json.loads(path.read_text())[0]
        rec_spec = ModelSpec(rec["module_adjacency"], rec["module_operations"])
        assert rec_spec.hash() == rec["unique_hash"]
    labels = [-1] + [[CONV3X3, CONV1X1, MAXPOOL3X3].index(o) for o in EX_OPS[1:-1]] + [-2]
    m = np.array(EX_MATRIX)
    rng = np.random.default_rng(0)
    for _ in range(5):  # any relabelling of the vertices
        p = rng.permutation(7)
        assert hash_module(m[np.ix_(p, p)], [labels[i] for i in p]) == EX_HASH
    # vertices 3 and 4 are unordered (no edge between them): swapping them keeps a topological order
    p = [0, 1, 2, 4, 3, 5, 6]
    assert ModelSpec(m[np.ix_(p, p)], [EX_OPS[i] for i in p]).hash() == EX_HASH
    other = list(EX_OPS)
    other[5] = CONV3X3
    assert ModelSpec(EX_MATRIX, other).hash() != EX_HASH
    m2 = m.copy()
    m2[0, 6] = 1
    assert ModelSpec(m2, EX_OPS).hash() != EX_HASH


def test_nb101_pruning_and_validity():
    # vertex 2 reads the input but feeds nothing; vertex 3 feeds the output but reads nothing
    m = [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    spec = ModelSpec(m, [INPUT, CONV3X3, MAXPOOL3X3, CONV1X1, OUTPUT])
    assert spec.valid_spec and spec.ops == [INPUT, CONV3X3, OUTPUT]
    assert spec.matrix.tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert spec.hash() == ModelSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, CONV3X3, OUTPUT]).hash()
    assert not ModelSpec([[0, 1, 0], [0, 0, 0], [0, 0, 0]], [INPUT, CONV3X3, OUTPUT]).valid_spec
    dense = np.triu(np.ones((7, 7), dtype=int), 1)  # 21 edges
    assert not ModelSpec(dense, [INPUT] + [CONV3X3] * 5 + [OUTPUT]).is_valid()
    with pytest.raises(SpecError):
        ModelSpec([[0, 1], [1, 0]], [INPUT, OUTPUT])
    rng = random.Random(0)
    specs = [random_spec(rng, rng.randint(3, 7)) for _ in range(200)]
    assert sum(s.is_valid() for s in specs) > 100
    assert all(s.num_edges <= 9 for s in specs if s.is_valid())


def test_nb201_cell_as_a_graph():
    resnet = nb201_to_spec(parse_genotype(
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|").ops)
    assert resnet.ops == [INPUT, "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "skip_connect", OUTPUT]
    assert resnet.num_edges == 6
    assert not nb201_to_spec(("none",) * 6).valid_spec
    # node 1 is dead (its only input is none): the ops leaving it do not matter
    a = nb201_to_spec(("none", "skip_connect", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "skip_connect"))
    b = nb201_to_spec(("none", "skip_connect", "avg_pool_3x3", "skip_connect", "none", "skip_connect"))
    assert a.hash(OPS_NB201) == b.hash(OPS_NB201)
    c = nb201_to_spec(("nor_conv_1x1", "skip_connect", "avg_pool_3x3", "skip_connect", "none", "skip_connect"))
    assert c.hash(OPS_NB201) != a.hash(OPS_NB201)


# --- cost encodings ---------------------------------------------------------------------------------------

def test_nb101_costs_match_the_nar_record_and_the_naslib_sample():
    c = nb101_costs(ModelSpec(EX_MATRIX, EX_OPS))
    assert c["params"] == 8_555_530 and c["flops"] == 2_527_684_618  # NB101 / NAR totals of the record
    assert c["vertex_flops"]["stack1/module0"] == [0, 83886080, 294912, 75497472, 83886080, 16842752, 0]
    assert c["vertex_params"]["stack2/module1"] == [0, 721920, 0, 590336, 721920, 197632, 0]
    path = NAR_EXAMPLES / "nasbench101_vertice_example.json"
    if path.exists():
        rec = json.loads(path.read_text())[0]
        assert c["vertex_flops"] == rec["vertex_flops"] and c["vertex_params"] == rec["vertex_params"]
    import pandas as pd

    df = pd.read_csv(need(NB101_CSV), dtype=str)
    params = [nb101_costs(parse_flat(a, o))["params"] for a, o in zip(df.pruned_adjacency, df.pruned_ops)]
    assert np.array_equal(np.array(params), np.round(df.params_M.astype(float).to_numpy() * 1e6))


def test_nb101_features_pad_before_the_output():
    spec = ModelSpec([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, CONV3X3, MAXPOOL3X3, OUTPUT])
    x = nb101_features(spec)
    assert x.shape == (19, 7, 7)
    assert x[0, 0, 1] == 3 and x[0, 0, 2] == 4 and x[0, 1, 6] == 5 and x[0, 2, 6] == 5
    assert not x[:, 3:6].any() and not x[:, :, 3:6].any()
    assert x[1, 0, 1] == pytest.approx(nb101_costs(spec)["vertex_flops"]["stack0/module0"][1] / 1e7)


def test_nb201_costs_match_the_table_and_the_nar_record():
    arch0 = parse_genotype("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
                           "skip_connect~2|")
    for ds, params, flops_nar in (("cifar10", 129306, 16315008), ("cifar100", 135156, 16320768),
                                  ("imagenet16", 136456, 4086272)):
        c = nb201_costs(arch0.ops, ds)
        assert (c["params"], c["flops_nar"]) == (params, flops_nar)
    c = nb201_costs(arch0.ops)
    assert c["flops"] == pytest.approx(15.64737, abs=1e-9)
    assert c["edge_flops"][0] == [0, 294912, 0, 294912, 0, 0] and c["edge_params"][14] == [0, 4224, 0, 4224, 0, 0]
    path = NAR_EXAMPLES / "nasbench201_vertice_example.json"
    if path.exists():
        rec = json.loads(path.read_text())["0"]
        for ds, key in (("cifar10", "cifar10-valid"), ("cifar100", "cifar100"), ("imagenet16", "ImageNet16-120")):
            c = nb201_costs(arch0.ops, ds)
            assert c["edge_flops"] == list(rec[f"{key}_opt_flops"].values())
            assert c["edge_params"] == list(rec[f"{key}_opt_params"].values())
        x = nb201_features(np.array([[OPS_NB201.index(o) for o in arch0.ops]]))[0]
        assert x[0].tolist() == rec["cell_adjacency"]
    import pandas as pd

    df = pd.read_csv(need(NB201_CSV))
    ops = df[["op_e01", "op_e02", "op_e12", "op_e03", "op_e13", "op_e23"]].to_numpy()
    index = np.vectorize(OPS_NB201.index)(ops)
    for ds in ("cifar10", "cifar100", "imagenet16"):  # every cell of the table
        tot = nb201_totals(index, ds)
        assert np.array_equal(tot["params"], df[f"params_{ds}"].to_numpy())
        assert np.abs(tot["flops"] - df[f"flops_{ds}"].to_numpy()).max() < 1e-5
        for i in range(0, len(df), 1111):  # the per-edge sums add up to the same totals
            c = nb201_costs(tuple(ops[i]), ds)
            assert (c["params"], c["flops_nar"]) == (tot["params"][i], tot["flops_nar"][i])
            assert c["flops"] == pytest.approx(tot["flops"][i], abs=1e-9)


def test_nb101_table_merges_isomorphic_rows_and_trains(tmp_path):
    from raynas.nar.data import load_nb101

    data = load_nb101(str(need(NB101_CSV)))  # 500 single runs of 292 distinct cells
    assert len(data) == 292 and data.features.shape == (292, 19, 7, 7)
    assert len(set(data.names)) == 292 and np.isfinite(data.features.numpy()).all()
    cfg = resolve_nar({"bench": "nb101", "train_size": 100, "val_size": 40, "epochs": 1, "sample_size": 32,
                       "max_trials": 10, **TINY})
    run = NARRun(cfg, data)
    assert np.isfinite(run.run_epoch()["loss"]) and run.evaluate()["n_heldout"] == 152
    found = tier_search(run, budget=5)
    assert found["best_arch"] in data.index and ModelSpec(**found["best_cell"]).hash() == found["best_arch"]


# --- ranker -----------------------------------------------------------------------------------------------

def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown bench"):
        resolve_nar({"bench": "nb301"})
    with pytest.raises(ConfigError, match="did you mean epochs"):
        resolve_nar({"epochz": 3})
    with pytest.raises(ConfigError, match="expected an integer"):
        resolve_nar({"epochs": "many"})
    with pytest.raises(ConfigError, match="d_model"):
        resolve_nar({"d_model": 30, "n_head": 4})
    assert resolve_nar({"bench": "nb101"}).train_size == 4236
    assert resolve_nar({"bench": "nb101", "train_size": 100}).d_model == 256


def test_batched_tier_decoding_equals_the_per_tier_loop():
    import torch

    from raynas.nar.model import NARanker

    torch.manual_seed(0)
    m = NARanker(31, 4, d_model=16, d_ffn=32, n_layers=2, n_head=2, d_k=8, d_tier_hidden=8, d_score_hidden=8).eval()
    x, tiers = torch.randn(3, 31, 4, 4), torch.randn(5, 31, 16)
    with torch.no_grad():
        enc = m.encode(x)
        z = sum(m.decoder(m.trg_prj(tiers[t:t + 1]), enc) for t in range(5))  # the authors' loop over tiers
        assert torch.allclose(m.classify(enc, tiers), m.tier_head(z.flatten(1)) * 16 ** -0.5, atol=1e-5)


def test_tiers_metrics_and_histograms():
    assert quintile_tiers(np.array([5.0, 1, 4, 2, 3, 0, 9]), 5).tolist() == [1, 4, 2, 4, 3, 4, 0]
    m = ranking_metrics(np.arange(100.0), np.arange(100.0))
    assert m["kendall_tau"] == pytest.approx(1) and m["precision_at_top_5pct"] == 1
    # NAR build_counts_dict: bins of ceil((max-min)/bins) keyed by upper edge, the minimum in the first bin
    assert histogram(np.array([10, 11, 14, 20]), 10, 20, 5, 1e3) == {12000: 2, 14000: 1, 16000: 0, 18000: 0,
                                                                    20000: 1}


def _reference_sample(sampler: TierSampler, stats: dict, size: int) -> list[int]:
    """The sampler as first written: ``draw`` per value, cells looked up by their arch string."""
    from raynas.nar.data import nb201_name
    from raynas.nar.search import draw, guide

    cfg, data, rng = sampler.cfg, sampler.data, sampler.rng
    dist = {k: guide(stats[k], cfg, thr) for k, thr in (("flops", cfg.flops_kl), ("params", cfg.params_kl),
                                                        ("kind", cfg.ops_kl))}
    chosen, seen, fb, pb = [], set(), 0.0, 0.0
    for k in range(int(size * (1 - cfg.noisy_factor))):
        if k % cfg.reuse_step == 0:
            fb, pb = draw(rng, stats["flops"], dist["flops"]), draw(rng, stats["params"], dist["params"])
        last = None
        for _ in range(cfg.max_trials + 1):
            i = data.index.get(nb201_name(tuple(OPS_NB201[draw(rng, stats["kind"], dist["kind"])]
                                                for _ in range(6))))
            if i is None or i in seen:
                continue
            last = i
            if data.flops[i] <= fb and data.params[i] <= pb:
                break
        if last is not None:
            chosen.append(last)
            seen.add(last)
    while len(chosen) < min(size, len(data)):
        i = rng.randrange(len(data))
        if i not in seen:
            chosen.append(i)
            seen.add(i)
    return chosen


@pytest.mark.parametrize("kl", [0.0, 1e9])
def test_fast_sampler_draws_what_the_reference_draws(small, kl):
    """Cell codes instead of arch strings, cumulative weights built once: the same rows from the same seed,
    guided (KL thresholds 0) or uniform (thresholds no histogram passes), on a table missing most cells."""
    from raynas.nar.tier_stats import batch_tier_stats

    cfg = resolve_nar({**TINY, "flops_kl": kl, "params_kl": kl, "ops_kl": kl})
    rows = np.arange(0, 256)
    stats = batch_tier_stats(small, rows, quintile_tiers(small.target[rows], 5), 5, cfg.bins)
    fast = TierSampler(small, cfg, random.Random(7)).sample(stats, 64)
    ref = _reference_sample(TierSampler(small, cfg, random.Random(7)), stats, 64)
    assert fast == ref and len(set(fast)) == 64


def test_training_reduces_loss_and_ranks_held_out_cells(small, tmp_path):
    cfg = resolve_nar({"train_size": 256, "val_size": 64, "epochs": 8, **TINY})
    run = NARRun(cfg, small)
    hist = [run.run_epoch() for _ in range(cfg.epochs)]
    assert hist[-1]["loss"] < hist[0]["loss"]
    res = run.evaluate(scatter=tmp_path / "scatter.png")
    assert res["n_heldout"] == len(small) - 320
    # a random ranker on the same held-out cells: |tau| < 0.1 for every seed tried (380 cells: sd ~0.035)
    test = small.test[run.test_idx]
    random_tau = max(abs(ranking_metrics(np.random.default_rng(s).random(len(test)), test)["kendall_tau"])
                     for s in range(20))
    assert random_tau < 0.15
    assert res["kendall_tau"] > random_tau + 0.2 and res["spearman_rho"] > 0.4
    assert res["kendall_tau_valid"] > 0.3
    assert (tmp_path / "scatter.png").read_bytes()[:4] == b"\x89PNG"

    rng = random.Random(0)
    rows = TierSampler(small, run.cfg, rng).sample(run.best["distri"][0], 40)
    assert len(rows) == len(set(rows)) == 40 and all(0 <= r < len(small) for r in rows)
    assert all(parse_genotype(small.names[r]) for r in rows)
    found = tier_search(run, budget=20)
    assert found["search_queries"] == 20 and found["queries"] == 320 + 20
    assert found["best_arch"] in small.index and 0 < found["percentile"] <= 100


def test_checkpoint_resume_is_exact(small, tmp_path):
    cfg = resolve_nar({"train_size": 128, "val_size": 32, "epochs": 2, **TINY, "dropout": 0.1})
    a = NARRun(cfg, small)
    full = [a.run_epoch()["loss"] for _ in range(2)]
    b = NARRun(cfg, small)
    b.run_epoch()
    b.save(tmp_path / "nar.pt")
    c = NARRun(cfg, small)
    c.load(tmp_path / "nar.pt")
    assert c.run_epoch()["loss"] == full[1]


def test_trainable_steps_and_checkpoints(tmp_path):
    from raynas.nar.trainable import NARTrainable

    table = tmp_path / "nb201.csv"
    _small_csv(table)
    t = NARTrainable(config={"table": str(table), "train_size": 60, "val_size": 20, "epochs": 2, "budget": 5,
                             **TINY})
    r1 = t.train()
    assert not r1["done"] and {"loss", "val_kendall_tau", "val_spearman_rho"} <= set(r1)
    ckpt = t.save(str(tmp_path / "ckpt"))
    r2 = t.train()
    assert r2["done"] and {"kendall_tau", "spearman_rho", "best_arch", "queries"} <= set(r2)
    assert Path(r2["scatter_png"]).read_bytes()[:4] == b"\x89PNG"
    t.restore(ckpt)
    assert t.run.epoch == 1
    t.stop()


# --- CLI --------------------------------------------------------------------------------------------------

def _small_csv(path: Path, n: int = 200) -> Path:
    import pandas as pd

    pd.read_csv(need(NB201_CSV)).iloc[::78][:n].to_csv(path, index=False)
    return path


def _tiny_flags() -> list[str]:
    return [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")] + ["--set", "val_size=20"]


def test_rank_json_schema(tmp_path, capsys, monkeypatch):
    table = _small_csv(tmp_path / "nb201.csv")
    rc = rank_main(["rank", "--bench", "nb201", "--table", str(table), "--train-frac", "0.3", "--seeds", "0,1",
                    "--epochs", "2", "--json", "--out", str(tmp_path / "out"), *_tiny_flags()])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["seeds"] == [0, 1] and len(out["per_seed"]) == 2
    for key in ("kendall_tau", "spearman_rho", "precision_at_top_5pct"):
        assert -1 <= out[key] <= 1
    assert (tmp_path / "out" / "rank.json").exists() and (tmp_path / "out" / "scatter_seed1.png").exists()

    monkeypatch.chdir(tmp_path)  # no --out: the documented default runs/rank
    rc = rank_main(["rank", "search", "--table", str(table), "--train-frac", "0.3", "--budget", "10",
                    "--epochs", "2", "--json", *_tiny_flags()])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert {"best_arch", "best_test_acc", "percentile", "queries"} <= set(out)
    assert out["queries"] == 60 + 20 + 10 and parse_genotype(out["best_arch"])
    assert json.loads((tmp_path / "runs" / "rank" / "rank.json").read_text())["best_arch"] == out["best_arch"]
    kept = re.findall(r"\[seed 0\] kept epoch (\d) of 2: the best validation tier accuracy \((\d\.\d{3})\)",
                      captured.err)
    assert len(kept) == 1 and int(kept[0][0]) == out["per_seed"][0]["best_epoch"]


def test_rank_without_a_table_says_which_file_and_how(tmp_path, capsys):
    assert rank_main(["rank", "--table", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "raynas bench nb201 export" in err and "missing.csv" in err
    assert rank_main(["rank", "search", "--bench", "nb101"]) == 2
    assert "NAS-Bench-101" in capsys.readouterr().err
    assert rank_main(["rank", "--seeds", "0,x", "--table", "t.csv"]) == 2
    assert "--seeds expects comma-separated integers" in capsys.readouterr().err


def test_rank_bad_input_is_one_line_exit_2(capsys):
    table = str(need(NB201_CSV))
    for argv, fragment in ((["--set", "epochz=3"], "did you mean epochs"),
                           (["--train-frac", "1.5"], "train_frac must be in [0, 1)"),
                           (["--set", "n_tier=1"], "n_tier must be >= 2"),
                           (["--budget", "5"], "--budget applies to"),
                           (["tune"], "needs an experiment file")):
        assert rank_main(["rank", "--table", table, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err


# --- Ray Tune + Optuna + MLflow ---------------------------------------------------------------------------

def test_nar_experiment_validation(tmp_path):
    from raynas.nar.experiment import load_nar_experiment, nar_param_space

    table = str(need(NB201_CSV))
    exp = load_nar_experiment(Path(__file__).resolve().parents[1] / "experiments" / "nar_nb201.yaml",
                              {"table": table})
    space = nar_param_space(exp)
    assert space["bench"] == "nb201" and "method" not in space
    assert Path(space["table"]).resolve() == Path(table).resolve()  # made absolute, symlinks resolved
    assert exp.tune.metric == "val_kendall_tau" and "loss_factor" in space
    bad = tmp_path / "bad.yaml"
    for text, fragment in (("tune: {metric: valid_acc, space: {lr_mul: {type: float, low: 0.1, high: 1}}}",
                            "not a NAR result"),
                           ("fixed: {epochz: 3}", "did you mean epochs"),
                           ("grid: {method: [darts]}", "grid.method must be nar"),
                           ("tune: {metric: val_kendall_tau, space: {lr_mul: {type: float, low: 1, high: 0.1}}}",
                            "low (1) must be <= high"),
                           ("grid: {dataset: [digits]}", "dataset must be cifar10")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            load_nar_experiment(bad, {"table": table})


@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_tuned_nar_trials_through_ray_are_tracked_in_mlflow(tmp_path, local_ray, capsys):
    """`raynas rank tune`: 2 Optuna trials of NARTrainable in a real local Ray Tune run (one after the other, so
    the second reuses the first's worker: ``reset_config``), logged to a real MLflow store (sqlite + file
    artifacts): per-epoch metrics, held-out tau/rho, best architecture found, rank scatter PNG."""
    from mlflow import MlflowClient

    table = _small_csv(tmp_path / "nb201.csv")
    exp = tmp_path / "nar.yaml"
    exp.write_text(f"""
name: nar_test
grid: {{seed: [3]}}
fixed: {{table: {table}, train_size: 60, val_size: 20, epochs: 2, budget: 5, {", ".join(f"{k}: {v}" for k, v in
                                                                                    TINY.items())}}}
tune:
  metric: val_kendall_tau
  num_samples: 2
  max_concurrent_trials: 1
  space:
    loss_factor: {{type: float, low: 0.1, high: 10.0, log: true}}
resources: {{cpu: 1}}
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    assert rank_main(["rank", "tune", str(exp), "--out", str(out), "--tracking-uri", uri, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["trials"]) == 2 and summary["seeds"] == [3, 3]
    assert all(t["status"] == "completed" and t["epochs"] == 2 for t in summary["trials"])
    assert {t["config"]["loss_factor"] for t in summary["trials"]} != {1.0}  # Optuna chose the values
    assert -1 <= summary["kendall_tau"] <= 1 and summary["tracking"]["pending"] == 0
    assert (out / "optuna.db").exists()

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nar_test").experiment_id])
    children = [r for r in runs if r.data.tags.get("raynas.kind") == "nar"]
    assert len(children) == 2 and len(runs) == 3  # + the parent run
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["method"] == "nar" and r.data.tags["space"] == "nb201"
        assert r.data.tags["mlflow.parentRunId"] == summary["tracking"]["parent_run_id"]
        assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == [1, 2]
        assert len(client.get_metric_history(r.info.run_id, "val_kendall_tau")) == 2
        for key in ("kendall_tau", "spearman_rho", "precision_at_top_5pct", "best_test_acc", "percentile"):
            assert key in r.data.metrics
        assert parse_genotype(r.data.tags["genotype"])  # the best architecture found
        assert float(r.data.params["loss_factor"]) != 1.0
        art = Path(r.info.artifact_uri.removeprefix("file://"))
        assert (art / "rank_scatter.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((art / "nar_result.json").read_text())["best_arch"] == r.data.tags["genotype"]
        assert (art / "cell.png").exists()
