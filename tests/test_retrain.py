"""Retraining genotypes from scratch: config validation, one epoch on digits, bit-exact resume, cutout,
picking genotypes from a search, and (genotype x seed) trials through a real local Ray."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from raynas.commands.retrain import register
from raynas.config import ConfigError
from raynas.data import load_dataset
from raynas.retrain import (
    genotypes_from_search,
    resolve_retrain,
    run_retrain,
)
from search_spaces.published import PUBLISHED
from trials.batches import cutout
from trials.retrain import Retrain, RetrainDiverged

V2 = PUBLISHED["DARTS_V2"].genotype
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
TINY = {"dataset": "digits", "channels": 4, "layers": 3, "batch_size": 32, "max_steps_per_epoch": 3,
        "eval_batches": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def darts_cfg(**kw):
    return resolve_retrain({"genotype": V2, **TINY, **kw})


def nb201_cfg(**kw):
    return resolve_retrain({"space": "nb201", "genotype": NB201_ARCH, **TINY, "layers": 1, **kw})


# ------------------------------------------------------------------------------------------- config

def test_paper_recipes_are_the_defaults():
    d = resolve_retrain({"genotype": V2})
    assert (d.epochs, d.batch_size, d.lr, d.lr_min, d.momentum, d.weight_decay, d.grad_clip) == (
        600, 96, 0.025, 0.0, 0.9, 3e-4, 5.0)
    assert (d.layers, d.channels, d.auxiliary, d.auxiliary_weight, d.drop_path_prob, d.cutout) == (
        20, 36, True, 0.4, 0.2, 16)
    n = resolve_retrain({"space": "nb201", "genotype": NB201_ARCH})
    assert (n.epochs, n.batch_size, n.lr, n.nesterov, n.weight_decay, n.layers, n.channels) == (
        200, 256, 0.1, True, 5e-4, 5, 16)
    assert not n.auxiliary and n.drop_path_prob == 0 and n.cutout == 0 and n.grad_clip is None
    assert resolve_retrain({"space": "nb201", "genotype": NB201_ARCH, "epochs": 3}).epochs == 3


@pytest.mark.parametrize("over, fragment", [
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"lr": -0.1}, "lr must be > 0"),
    ({"lr_min": 1.0}, "lr_min must be in [0, lr]"),
    ({"momentum": 1.0}, "momentum must be in [0, 1)"),
    ({"grad_clip": 0}, "grad_clip must be > 0 or null"),
    ({"layers": 2}, "layers must be >= 3 for the darts space"),
    ({"drop_path_prob": 1.0}, "drop_path_prob must be in [0, 1)"),
    ({"cutout": -1}, "cutout must be >= 0"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
    ({"space": "nb999"}, "unknown space 'nb999'"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
    ({"genotype": ""}, "genotype is empty"),
    ({"genotype": "Genotype(normal=[('conv_9x9', 0)])"}, "genotype: "),
    ({"space": "s2"}, "not allowed on edge"),  # DARTS_V2 has max pools, S2 only skip/sep_conv_3x3
    ({"batch_sise": 8}, "unknown config key batch_sise (did you mean batch_size?)"),
    ({"subset": 0.5}, "config key subset was removed; use data.train_subset (a per-class count, or a fraction"),
    ({"data": {"train_subset": 1.5}}, "data.train_subset must be an integer count per class >= 1 or a fraction"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"data_dir": "/no/such/dir", "dataset": "cifar10"}, "data_dir /no/such/dir does not exist"),
])
def test_config_errors_are_one_line(over, fragment):
    with pytest.raises(ConfigError) as e:
        resolve_retrain({"genotype": V2, **over})
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_nb201_has_no_auxiliary_head_or_drop_path():
    with pytest.raises(ConfigError, match="NB201 has neither"):
        resolve_retrain({"space": "nb201", "genotype": NB201_ARCH, "auxiliary": True})
    with pytest.raises(ConfigError, match="layers must be >= 1"):
        resolve_retrain({"space": "nb201", "genotype": NB201_ARCH, "layers": 0})


# ---------------------------------------------------------------------------------------- training

@pytest.mark.parametrize("make", [darts_cfg, nb201_cfg], ids=["darts", "nb201"])
def test_one_epoch_on_digits(make, digits):
    run = Retrain(make(epochs=2), digits)
    m = run.run_epoch()
    assert m["epoch"] == 1 and m["steps"] == 3 and run.epoch == 1
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time", "params_m"):
        assert math.isfinite(m[key]), key
    assert 0 <= m["test_acc"] <= 100 and m["params_m"] > 0
    m2 = run.run_epoch()
    assert m2["lr"] < m["lr"]  # cosine
    if run.cfg.space == "darts":
        assert m["drop_path_prob"] == 0 and m2["drop_path_prob"] == pytest.approx(0.1)  # 0.2 * 1/2


def test_loss_goes_down_on_digits(digits):
    run = Retrain(nb201_cfg(epochs=8, max_steps_per_epoch=None, batch_size=64, eval_batches=None), digits)
    history = [run.run_epoch() for _ in range(8)]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 50


def test_divergence_is_reported(digits):
    run = Retrain(darts_cfg(lr=1e30, epochs=2), digits)
    with pytest.raises(RetrainDiverged) as e:
        run.run_epoch()
    assert e.value.epoch == 0
    from raynas.retrain import RetrainTrainable

    result = RetrainTrainable(config={"genotype": V2, **TINY, "lr": 1e30, "epochs": 2}).step()
    assert result["status"] == "diverged" and result["epoch"] == 1 and result["done"]


def test_resume_is_bit_identical(tmp_path, digits):
    cfg = darts_cfg(epochs=3, cutout=4, drop_path_prob=0.5)  # drop-path and cutout draw random numbers
    straight = Retrain(cfg, digits)
    expected = [straight.run_epoch() for _ in range(3)]

    first = Retrain(cfg, digits)
    first.run_epoch()
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(1234)  # the global RNG state must not matter
    resumed = Retrain(cfg, digits)
    resumed.load(tmp_path / "ckpt.pt")
    got = [resumed.run_epoch() for _ in range(2)]

    for a, b in zip(expected[1:], got):
        assert {k: v for k, v in a.items() if "time" not in k and k != "images_per_s"} == \
               {k: v for k, v in b.items() if "time" not in k and k != "images_per_s"}
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.opt.state_dict()["param_groups"] == resumed.opt.state_dict()["param_groups"]


def test_bad_checkpoint_is_one_error(tmp_path, digits):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        Retrain(nb201_cfg(), digits).load(tmp_path / "bad.pt")


def test_cutout_zeroes_the_reference_square():
    x = torch.randn(64, 3, 32, 32)
    out = cutout(x, 16, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # same draws: centre row, then centre column
    cy, cx = torch.randint(0, 32, (64,), generator=g), torch.randint(0, 32, (64,), generator=g)
    full = 0
    for i in range(64):
        mask = np.ones((32, 32), np.float32)  # quark0/darts utils.Cutout
        y1, y2 = np.clip(int(cy[i]) - 8, 0, 32), np.clip(int(cy[i]) + 8, 0, 32)
        x1, x2 = np.clip(int(cx[i]) - 8, 0, 32), np.clip(int(cx[i]) + 8, 0, 32)
        mask[y1:y2, x1:x2] = 0.0
        assert torch.equal(out[i], x[i] * torch.from_numpy(mask))
        full += int((out[i, 0] == 0).sum()) == 256
    assert full > 0  # some squares lie fully inside the image: exactly 16x16 zeros
    assert torch.equal(cutout(x, 0, torch.Generator().manual_seed(0)), x)


# ------------------------------------------------------------------------------- genotypes of a search

def write_summary(path, trials):
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"experiment": "s", "trials": trials}))


def trial(genotype, valid, status="completed", seed=0, space="darts", nb201=None):
    return {"trial_id": f"t{seed}", "method": "darts", "space": space, "dataset": "cifar10", "seed": seed,
            "status": status, "epochs": 50, "genotype": genotype,
            "final": {"train_acc": 90.0, "valid_acc": valid, "nb201": nb201}}


def test_genotypes_from_search_best_distinct(tmp_path):
    v1 = PUBLISHED["DARTS_V1"].genotype
    pc = PUBLISHED["PC_DARTS_cifar"].genotype  # written with range(2, 6): same cell as its list form
    write_summary(tmp_path, [trial(V2, 80.0, seed=0), trial(V2, 85.0, seed=1), trial(v1, 99.0, "diverged", 2),
                             trial(pc, 82.0, seed=3), trial(v1, 70.0, seed=4), trial(None, 95.0, "error", 5)])
    best = genotypes_from_search(tmp_path, top_k=5)
    assert [meta["seed"] for _, _, meta in best] == [1, 3, 4]
    assert [meta["value"] for _, _, meta in best] == [85.0, 82.0, 70.0]
    space, text, meta = best[0]
    assert space == "darts" and text == V2 and meta["dataset"] == "cifar10" and meta["method"] == "darts"
    assert len(genotypes_from_search(tmp_path, top_k=1)) == 1


def test_genotypes_from_search_nb201_objective(tmp_path):
    other = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    write_summary(tmp_path, [trial(NB201_ARCH, 60.0, space="nb201", nb201={"cifar10_test": 93.0}),
                             trial(other, 70.0, space="nb201", seed=1, nb201={"cifar10_test": 60.0})])
    assert genotypes_from_search(tmp_path, 1)[0][1] == other
    assert genotypes_from_search(tmp_path, 1, objective="nb201_test")[0][1] == NB201_ARCH


def test_genotypes_from_search_errors(tmp_path):
    with pytest.raises(ConfigError, match="is not a raynas experiment \\(no summary.json\\)"):
        genotypes_from_search(tmp_path / "nothing")
    write_summary(tmp_path, [trial(None, 1.0, "error")])
    with pytest.raises(ConfigError, match="no finished trial with a genotype"):
        genotypes_from_search(tmp_path)


def retrain_cli(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="raynas")
    register(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["retrain", *argv])


@pytest.mark.parametrize("argv, fragment", [
    (["--from", "/no/such/run"], "is not a raynas experiment (no summary.json)"),
    (["--genotype", V2], "--genotype needs --space"),
    (["--genotype", V2, "--space", "darts", "--seeds", "0,x"], "--seeds expects comma-separated integers"),
    (["--genotype", V2, "--space", "darts", "--set", "lr=-1"], "lr must be > 0"),
    (["--genotype", V2, "--space", "darts", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--genotype", "Genotype(normal=[])", "--space", "darts"], "genotype: genotype misses normal_concat"),
])
def test_cli_errors_before_ray(tmp_path, argv, fragment):
    args = retrain_cli(*argv, "--out", str(tmp_path / "out"))
    with pytest.raises(ConfigError) as e:
        args.func(args)
    assert fragment in str(e.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- Ray

@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_run_retrain_through_ray(tmp_path, local_ray):
    from mlflow import MlflowClient

    from raynas.tracking import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    search_run = client.create_run(ensure_experiment(uri, "search")).info.run_id
    meta = {"trial_id": "abc", "method": "darts", "dataset": "digits", "seed": 7, "value": 50.0,
            "mlflow_run_id": search_run}
    summary = run_retrain([("darts", V2, meta)], seeds=[0, 1], out=tmp_path, epochs=1,
                          overrides={k: v for k, v in TINY.items() if k != "dataset"},
                          resources={"cpu": 1, "gpu": 0}, verbose=0, tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("retrain").experiment_id])
    assert len(runs) == 2 and {r.data.tags["raynas.search_run_id"] for r in runs} == {search_run}
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in runs)
    mean = sum(r.data.metrics["test_acc"] for r in runs) / 2
    assert client.get_run(search_run).data.metrics["retrain.test_acc"] == pytest.approx(mean)
    on_disk = json.loads((tmp_path / "retrain_summary.json").read_text())
    assert on_disk["trials"] == json.loads(json.dumps(summary["trials"], default=str))
    trials = sorted(on_disk["trials"], key=lambda t: t["seed"])
    assert [t["seed"] for t in trials] == [0, 1]
    for t in trials:
        assert t["status"] == "completed" and t["epochs"] == 1 and t["dataset"] == "digits"  # the searched one
        assert t["space"] == "darts" and t["genotype"] == V2 and t["search"]["trial_id"] == "abc"
        assert 0 <= t["test_acc"] <= 100 and t["params_m"] > 0 and t["checkpoint"]
    assert trials[0]["test_acc"] != trials[1]["test_acc"] or trials[0]["train_acc"] != trials[1]["train_acc"]
    (agg,) = on_disk["genotypes"]
    assert agg["completed"] == 2 and agg["test_acc_std"] is not None


def test_holdout_scores_a_fixed_part_of_the_train_split_and_never_the_test_split(digits):
    """The outer search's proxy (``holdout`` > 0) selects on images held out of the train split (cut to
    ``data.train_subset`` first): the same ones for every seed, disjoint from what it trains on, and the
    test split is never read."""
    from trials.batches import train_subset
    from trials.retrain import split_train
    half = train_subset(digits, resolve_retrain({"genotype": V2, "data": {"train_subset": 0.5}}).data)
    train, held = split_train(half, 0.2)
    n = len(half.train_y)
    assert n < len(digits.train_y) and len(held) == round(0.2 * n) and len(train) == n - len(held)
    assert not set(train.tolist()) & set(held.tolist())
    again_train, again_held = split_train(half, 0.2)
    assert torch.equal(train, again_train) and torch.equal(held, again_held)
    runs = [Retrain(nb201_cfg(seed=s, holdout=0.2, data={"train_subset": 0.5}, epochs=1, max_steps_per_epoch=2),
                    digits) for s in (0, 1)]
    for r in runs:  # the subset's seed is data.subset_seed (0), not the run's: both seeds see the same images
        assert torch.equal(r.test_stream.x, half.train_x[held]) and torch.equal(r.train_stream.x, half.train_x[train])
        m = r.run_epoch()
        assert m["eval_split"] == "holdout" and m["test_acc"] is not None
    plain = Retrain(nb201_cfg(epochs=1), digits)
    assert torch.equal(plain.test_stream.x, digits.test_x) and plain.run_epoch()["eval_split"] == "test"
