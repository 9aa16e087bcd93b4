"""``raynas study`` on a real Optuna RDB without Ray: best trials, fANOVA importances, the PNGs, errors."""

import optuna
import pytest

from raynas.cli import main


def make_study(tmp_path, directions):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="s", directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        x, y = trial.suggest_float("arch/lr", 1e-4, 1e-2, log=True), trial.suggest_categorical("cutout", [0, 16])
        acc = 90 - 1000 * abs(x - 3e-3) + (y == 16)
        return (acc, 1.0 + x * 100) if len(directions) > 1 else acc

    study.optimize(objective, n_trials=8)
    return url, study


def test_study_prints_the_best_trials_and_importances_and_writes_the_plots(tmp_path, capsys):
    url, study = make_study(tmp_path, ["maximize"])
    assert main(["study", url, "--out", str(tmp_path / "png"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    best = max(study.trials, key=lambda t: t.value)
    assert "study s: 8 trials (8 complete); maximize" in out
    assert out.index(f"#{best.number} ") < out.index("fANOVA importance")
    assert "arch/lr" in out.split("fANOVA importance")[1] and "cutout" in out.split("fANOVA importance")[1]
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == [
        "optimization_history.png", "parallel_coordinate.png", "param_importances.png"]


def test_study_of_two_objectives_lists_the_pareto_front(tmp_path, capsys):
    url, study = make_study(tmp_path, ["maximize", "minimize"])
    assert main(["study", url, "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "(Pareto front)" in out and "fANOVA importance (objective 1)" in out
    for t in study.best_trials:
        assert f"#{t.number} " in out
    assert len(list((tmp_path / "png").glob("*.png"))) == 3


@pytest.mark.parametrize("target, fragment", [
    ("{tmp}/nothing", "is neither an experiment directory"),
    ("sqlite:///{tmp}/missing.db", "no Optuna study at"),
])
def test_bad_targets_are_one_line_errors(tmp_path, capsys, target, fragment):
    assert main(["study", target.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_unknown_study_name_is_an_error(tmp_path, capsys):
    url, _ = make_study(tmp_path, ["maximize"])
    assert main(["study", url, "--study-name", "other"]) == 2
    assert "no study 'other'" in capsys.readouterr().err


def test_a_trial_asked_after_the_searchers_checkpoint_is_reused_on_restore(tmp_path):
    """The killed-driver case without Ray: the searcher is checkpointed, asks once more, dies; the
    restored searcher's next ask takes that orphan (same number, same parameters): no extra trial."""
    from ray import tune

    from raynas.study import StudySearch

    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher():
        s = StudySearch(storage=optuna.storages.RDBStorage(url), study_name="k", metric="proxy_acc", mode="max",
                        sampler=optuna.samplers.TPESampler(seed=0), run_key=str(tmp_path))
        s.set_search_properties(None, None, {"lr": tune.loguniform(1e-4, 1e-2)})
        return s

    first = searcher()
    first.suggest("t1")
    first.on_trial_complete("t1", {"proxy_acc": 50.0})
    first.save(str(tmp_path / "searcher.pkl"))
    orphan = first.suggest("t2")  # asked after the checkpoint, then the driver is killed
    again = searcher()
    again.restore(str(tmp_path / "searcher.pkl"))
    assert again.suggest("t3") == orphan
    again.on_trial_complete("t3", {"proxy_acc": 60.0})
    assert again.suggest("t4") != orphan  # the restored sampler does not replay the orphan's draw
    again.on_trial_complete("t4", {"proxy_acc": 55.0})
    study = optuna.load_study(study_name="k", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.value for t in study.trials] == [50.0, 60.0, 55.0]
    assert [t.user_attrs["raynas.tune_trial_id"] for t in study.trials] == ["t1", "t3", "t4"]
