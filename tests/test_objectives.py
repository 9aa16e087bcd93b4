"""The outer search's objectives without Ray: the aggregate over seeds, the checks that reject what
cannot work (one line, exit 2, nothing written), and a seed's search + proxy retrain as one resumable
run whose proxy_acc is the retraining's own number."""

import pytest
import torch

from raynas.cli import main
from raynas.config import ConfigError, resolve
from raynas.experiment import load_experiment
from raynas.objectives import ProxyConfig, aggregate, aggregate_result, proxy_overrides
from raynas.retrain import resolve_retrain
from trials.batches import DataConfig

BASE = """
name: obj
grid: {method: [darts], space: [nb201], dataset: [digits], seed: [0]}
fixed: {epochs: 1}
"""
SPACE = "  space: {arch.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\n"


def write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    full = BASE + text
    if "  seeds_per_trial: 3" in text:  # the grid lists two seeds
        full = full.replace("seed: [0]", "seed: [0, 1]")
    if "collapse_skip" in text:
        full = full.replace("epochs: 1}", "epochs: 1, collapse_skip: 2}").replace("collapse_skip\n", "\n")
    p.write_text(full)
    return p


def test_aggregate_mean_std_worst_and_risk_in_both_directions():
    got = aggregate([90.0, 80.0, 70.0], "mean_minus_std", 2.0, "max")
    assert got == {"mean": 80.0, "std": 10.0, "worst": 70.0, "value": 60.0}
    assert aggregate([90.0, 80.0, 70.0], "worst", 1.0, "max")["value"] == 70.0
    low = aggregate([1.0, 3.0], "mean_minus_std", 1.0, "min")  # minimising: the penalty is added
    assert low["worst"] == 3.0 and low["value"] == pytest.approx(2.0 + 2 ** 0.5)
    assert aggregate([5.0], "mean_minus_std", 3.0, "max") == {"mean": 5.0, "std": 0.0, "worst": 5.0, "value": 5.0}


def test_aggregate_result_has_a_metric_only_when_every_seed_reports_it(tmp_path):
    exp = load_experiment(write(tmp_path, f"tune:\n  metric: proxy_acc\n  seeds_per_trial: 2\n  aggregate: worst\n{SPACE}"))  # noqa: E501
    seeds = [{"valid_acc": 50.0, "proxy_acc": None}, {"valid_acc": 70.0, "proxy_acc": 40.0}]
    out = aggregate_result(seeds, exp.tune, ["proxy_acc", "valid_acc"])
    assert "proxy_acc" not in out  # one seed's proxy has not finished: Optuna and ASHA see nothing yet
    assert out["valid_acc"] == 50.0 and out["valid_acc_mean"] == 60.0 and out["valid_acc_worst"] == 50.0


@pytest.mark.parametrize("text, fragment", [
    (f"tune:\n  metric: proxy_acc\n{SPACE}scheduler: {{type: asha}}\n", "proxy_acc is known only at the end"),
    (f"tune:\n  metric: valid_acc\n  seeds_per_trial: 0\n{SPACE}", "tune.seeds_per_trial must be >= 1"),
    (f"tune:\n  metric: proxy_accuracy\n{SPACE}", "no trial reports objective 'proxy_accuracy'"),
    (f"tune:\n  metric: nb201_test\n{SPACE}", "no trial reports nb201_test: it needs space nb201 and fixed.nb201_table"),  # noqa: E501
    (f"tune:\n  aggregate: median\n{SPACE}", "tune.aggregate must be one of mean, worst, mean_minus_std"),
    (f"tune:\n  aggregate: mean_minus_std\n  risk: -1\n{SPACE}", "tune.risk must be a finite number >= 0"),
    (f"tune:\n  pruner: median\n{SPACE}", "Ray Tune's OptunaSearch runs no Optuna pruner"),
    (f"tune:\n  sampler: nsga2\n  objectives: [proxy_acc:max, params:min]\n{SPACE}scheduler: {{type: hyperband}}\n",
     "with several tune.objectives needs scheduler.metric"),
    (f"tune:\n  metric: valid_acc\n{SPACE}scheduler: {{type: asha, metric: flops}}\n", "flops is known only at the end"),  # noqa: E501
    (f"tune:\n  metric: valid_acc\n  seeds_per_trial: 3\n{SPACE}", "grid.seed lists 2 seeds but tune.seeds_per_trial is 3"),  # noqa: E501
    (f"tune:\n  enqueue: [{{arch.lr: 0.5}}]\n{SPACE}", "tune.enqueue[0].arch.lr: 0.5 is outside"),
    (f"tune:\n  enqueue: [{{arch.weight_decay: 0.001}}]\n{SPACE}", "tune.enqueue[0].arch.weight_decay is not a tuned key"),  # noqa: E501
    (f"tune:\n  metric: proxy_acc\n{SPACE}proxy: {{epochs: 0}}\n", "proxy: epochs must be >= 1"),
    (f"tune:\n  metric: proxy_acc\n{SPACE}proxy: {{data: {{train_subset: 1.5}}}}\n",
     "proxy: data.train_subset must be an integer count per class >= 1 or a fraction in (0, 1]"),
    (f"tune:\n  metric: proxy_acc\n{SPACE}proxy: {{subset: 0.5}}\n",
     "config key proxy.subset was removed; use proxy.data.train_subset"),
    (f"tune:\n  metric: proxy_acc\n  seeds_per_trial: 2\n{SPACE}# collapse_skip\n", "collapse_skip stops a single search"),  # noqa: E501
])
def test_impossible_combinations_are_one_line_errors_before_ray(tmp_path, capsys, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert fragment in str(e.value)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rung_on_a_per_epoch_metric_while_optuna_optimises_the_proxy(tmp_path):
    exp = load_experiment(write(tmp_path, f"tune:\n  metric: proxy_acc\n{SPACE}"
                                          "scheduler: {type: asha, metric: valid_acc}\n"))
    assert exp.scheduler.metric == "valid_acc" and exp.tune.metric == "proxy_acc"


TINY = {"method": "darts", "space": "nb201", "dataset": "digits", "seed": 5, "epochs": 2, "batch_size": 16,
        "max_steps_per_epoch": 2, "eval_batches": 1, "device": "cpu", "model": {"C": 4, "layers": 1}}
RECIPE = ProxyConfig(epochs=2, channels=4, layers=1, batch=32, max_steps_per_epoch=2, eval_batches=2,
                     data=DataConfig(train_subset=0.5))


def seed_run():
    from raynas.data import load_dataset
    from raynas.proxy import SeedRun

    return SeedRun(resolve(TINY), load_dataset("digits"), None, RECIPE)


def test_seed_run_proxy_acc_is_the_retraining_of_its_genotype_and_resumes_exactly(tmp_path):
    from raynas.data import load_dataset
    from trials.retrain import Retrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = seed_run()
        phases = [whole.run_epoch()["phase"] for _ in range(whole.epochs)]
        assert phases == ["search", "search", "proxy", "proxy"]
        assert whole.done and whole.epoch == 4 and whole.final["proxy_acc"] is not None
        genotype = whole.genotype_text
        cfg = resolve_retrain(proxy_overrides(RECIPE, "nb201", genotype, resolve(TINY)))
        alone = Retrain(cfg, load_dataset("digits")).run()
        assert whole.final["proxy_acc"] == alone[-1]["test_acc"]
        assert whole.final["params"] == pytest.approx(alone[-1]["params_m"])
        # stop after the search and the first proxy epoch, restore in a fresh run, finish: the same numbers
        first = seed_run()
        for _ in range(3):
            m = first.run_epoch()
        assert m["phase"] == "proxy"
        first.save(tmp_path / "seed.pt")
        again = seed_run()
        again.load(tmp_path / "seed.pt")
        last = again.run_epoch()
        assert again.done and last["proxy_acc"] == whole.final["proxy_acc"]
        assert last["genotype"] == genotype
    finally:
        torch.set_num_threads(threads)


def test_the_proxy_trains_on_data_train_subset_the_same_images_for_every_seed():
    """``proxy.data.train_subset`` is the retraining's ``data.train_subset``, drawn by its fixed
    ``subset_seed`` (0), never the trial's seed: every seed's proxy sees the same images."""
    from raynas.data import load_dataset
    from trials.retrain import Retrain

    data = load_dataset("digits")
    geno = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    runs = []
    for seed in (5, 6):
        cfg = resolve_retrain(proxy_overrides(RECIPE, "nb201", geno, resolve({**TINY, "seed": seed})))
        assert cfg.seed == seed and cfg.data == DataConfig(train_subset=0.5, subset_seed=0)
        runs.append(Retrain(cfg, data))
    a, b = runs
    assert len(a.data.train_y) == pytest.approx(len(data.train_y) / 2, abs=data.num_classes)
    assert torch.equal(a.data.train_x, b.data.train_x)  # the subset
    assert torch.equal(a.train_stream.x, b.train_stream.x) and torch.equal(a.test_stream.x, b.test_stream.x)
    assert not torch.equal(a.net.state_dict()["stem.0.weight"], b.net.state_dict()["stem.0.weight"])


def test_costs_without_a_proxy_retrain_are_measured_at_the_users_proxy_shape():
    """``params``/``flops`` as objectives with no ``proxy_acc``: no proxy epochs run, but the costs are of
    the derived network at the experiment's ``proxy:`` shape, not at the default recipe's."""
    from raynas.data import load_dataset
    from raynas.proxy import SeedRun

    data = load_dataset("digits")
    costs = {}
    for channels in (4, 8):
        run = SeedRun(resolve(TINY), data, None, None, recipe=ProxyConfig(channels=channels, layers=1))
        metrics = [run.run_epoch() for _ in range(run.epochs)]
        assert run.done and [m["phase"] for m in metrics] == ["search", "search"]
        costs[channels] = run.final["params"]
        assert run.final["params"] == pytest.approx(run.proxy.params_m)
    assert costs[8] > costs[4]


def test_worst_of_a_non_objective_metric_follows_its_own_direction(tmp_path):
    """Minimising params, the seeds' worst valid_acc is still the lowest and their worst loss the highest
    (the direction ASHA rungs a ``scheduler.metric`` in)."""
    exp = load_experiment(write(tmp_path, f"tune:\n  metric: params\n  mode: min\n  seeds_per_trial: 2\n"
                                          f"  aggregate: worst\n{SPACE}"))
    seeds = [{"valid_acc": 50.0, "valid_loss": 0.9, "params": 1.0}, {"valid_acc": 70.0, "valid_loss": 0.4,
                                                                     "params": 2.0}]
    out = aggregate_result(seeds, exp.tune, ["params", "valid_acc", "valid_loss"])
    assert out["params"] == 2.0 and out["valid_acc"] == 50.0 and out["valid_loss"] == 0.9
