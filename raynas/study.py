"""The Optuna study of an experiment: its RDB, the search Ray Tune drives, warm starts, and reading it
back (best trials, fANOVA importances, Optuna's matplotlib plots as PNGs).

The study lives in an RDB (``tune.storage``, default ``sqlite:///OUT/optuna.db``) under
``tune.study_name``; a later ``raynas run`` with the same storage and name continues it (Optuna loads
the study, its sampler sees every earlier trial, trial numbers go on). ``tune.enqueue`` configs are
enqueued once (``skip_if_exists``), so rerunning or resuming does not queue them twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from raynas.config import ConfigError
from raynas.objectives import enqueue_params, objective_specs

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def storage_url(exp: Any, out: Path) -> str:
    return exp.tune.storage or f"sqlite:///{out / 'optuna.db'}"


def _storage(url: str) -> Any:
    import optuna

    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, **kwargs)


class StudySearch(OptunaSearch):
    """OptunaSearch that tolerates results without the objective (a seed group's epochs before its
    proxy retrain ends): Optuna is told intermediate values only when there is one, and a trial that
    ends without its objective is PRUNED (stopped by the scheduler) or FAIL (an error).

    It also keeps the study's trial count right across a killed driver: Tune checkpoints the searcher
    every few seconds, so a trial asked for after the last checkpoint is RUNNING in the RDB but unknown
    to the restored searcher, which would ask for a new one. Every trial this run asks for is tagged
    with ``run_key`` (the run's output directory); on restore, such orphans go back to WAITING and the
    next asks take them (same trial number, same parameters) instead of adding trials."""

    def __init__(self, *args: Any, run_key: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._run_key = run_key

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # the Tune trial id is the MLflow trial run's raynas.trial_id tag
            self._ot_trials[trial_id].set_user_attr("raynas.run", self._run_key)
            self._ot_trials[trial_id].set_user_attr("raynas.tune_trial_id", trial_id)
        return params

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        from optuna.trial import TrialState

        known = {t._trial_id for t in self._ot_trials.values()}
        orphans = [t for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.user_attrs.get("raynas.run") == self._run_key and t._trial_id not in known]
        for t in orphans:
            self._ot_study._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
        if orphans:  # the restored sampler would draw again what it drew for the orphans: configs run twice
            self._ot_study.sampler.reseed_rng()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and result.get(self.metric) is None:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and isinstance(self.metric, list) and any(result.get(m) is None for m in self.metric):
            result = None
        super().on_trial_complete(trial_id, result, error)


def search_alg(exp: Any, out: Path) -> Any:
    """Ray Tune's OptunaSearch on the study's RDB, with ``tune.enqueue`` queued first."""
    import optuna

    t = exp.tune
    storage = _storage(storage_url(exp, out))
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=t.seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=t.seed),
                "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=t.seed)}
    specs = objective_specs(t)
    name = t.study_name or exp.name
    if t.enqueue:
        directions = ["maximize" if m == "max" else "minimize" for _, m in specs]
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
        for params in enqueue_params(exp):
            study.enqueue_trial(params, skip_if_exists=True)
    metric: Any = [m for m, _ in specs] if t.objectives else t.metric
    mode: Any = [d for _, d in specs] if t.objectives else t.mode
    return StudySearch(sampler=samplers[t.sampler](), storage=storage, study_name=name, metric=metric, mode=mode,
                       run_key=str(out))


# ------------------------------------------------------------------------------- reading a study

def open_study(target: str, study_name: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The study of an experiment directory (its ``experiment.json`` names storage and study) or of an
    RDB URL (``--study-name``, or the only study in it); also the run's tracking (None for a URL)."""
    import optuna

    state = None
    if "://" in target:
        url = target
    else:
        path = Path(target)
        if not (path / "experiment.json").is_file():
            raise ConfigError(f"{target} is neither an experiment directory (no experiment.json) nor an RDB URL")
        from raynas.outdir import read_json
        state = read_json(path / "experiment.json", "experiment.json")
        if not isinstance(state, dict):
            raise ConfigError(f"{path / 'experiment.json'}: not a raynas experiment state (expected a mapping)")
        tune = (state.get("experiment") or {}).get("tune")
        if not tune:
            raise ConfigError(f"{target} ran no Optuna study (its experiment has no tune: block)")
        url = tune.get("storage") or f"sqlite:///{path.resolve() / 'optuna.db'}"
        study_name = study_name or tune.get("study_name") or state["experiment"]["name"]
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no Optuna study at {url} (the file does not exist)")
    try:
        storage = _storage(url)
        names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    except Exception as e:  # noqa: BLE001 - one line for a bad URL or a foreign database
        raise ConfigError(f"cannot open the Optuna storage {url}: {type(e).__name__}") from None
    if study_name is None:
        if len(names) != 1:
            raise ConfigError(f"{url} holds {len(names)} studies ({', '.join(names)}); pass --study-name")
        study_name = names[0]
    if study_name not in names:
        raise ConfigError(f"no study {study_name!r} in {url}; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage), (state or {}).get("tracking")


def importances(study: Any) -> list[dict[str, float]]:
    """fANOVA importance of every parameter, per objective (empty with fewer than two finished trials)."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return []
    out = []
    for i in range(len(study.directions)):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            out.append(optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=(lambda t, i=i: t.values[i]) if len(study.directions) > 1 else None))
        except (RuntimeError, ValueError):  # e.g. every parameter constant so far
            out.append({})
    return out


def best_trials(study: Any, top: int = 5) -> list[Any]:
    """The Pareto front (several objectives) or the ``top`` best finished trials."""
    import optuna

    if len(study.directions) > 1:
        return list(study.best_trials)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: sign * t.value)[:top]


def write_plots(study: Any, out_dir: Path) -> list[Path]:
    """Optimisation history, fANOVA importances and parallel coordinates as PNGs (matplotlib, no browser)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out_dir.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name = study.metric_names[0] if study.metric_names else "objective 0"
    paths = []
    for plot in PLOTS:
        fn = getattr(vis, f"plot_{plot}")
        kwargs: dict[str, Any] = {"target": target, "target_name": name} if multi else {}
        if plot == "param_importances":
            kwargs["evaluator"] = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            ax = fn(study, **kwargs)
        except (RuntimeError, ValueError) as e:  # too few trials for importances, ...
            print(f"raynas study: no {plot} plot ({e})")
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.tight_layout()
        path = out_dir / f"{plot}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
