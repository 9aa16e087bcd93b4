"""One seed of an Optuna trial: its search, then the proxy retrain of the genotype it found.

``SeedRun`` is one ``EpochRun`` (the skeleton every run shares) that runs the search's epochs and then
``trials.retrain.Retrain``'s with the ``proxy:`` recipe (``raynas.objectives.proxy_overrides``, the
same config ``raynas retrain`` builds), so it is checkpointed and resumed at any epoch boundary of
either phase. ``SeedWorker`` (a Ray actor of the trial's placement group, ``raynas.seeds``) drives one
and logs it: the search is an MLflow run under the Optuna trial's run, the proxy its own run under the
search's, linked by ``raynas.search_run_id``; ``proxy_acc`` is also written back onto the search run.
Live progress: the search's and the proxy's in-epoch reports go out through the ``SeedRun``'s own
``progress`` sink, numbered as its epochs and tagged with the phase, with the seed's last epoch's numbers.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch

from raynas.objectives import ProxyConfig, proxy_overrides
from trials.epochs import Diverged, EpochRun, ProgressSink

#: what a seed's epoch result keeps for the trial (no alpha: the seed's own run logs that)
KEEP = ("epoch", "phase", "valid_acc", "train_acc", "valid_loss", "train_loss", "skip_count", "param_free_count",
        "alpha_entropy", "nb201_test", "nb201_valid", "nb201", "genotype", "proxy_test_acc", "proxy_train_acc",
        "proxy_acc", "params", "flops", "search_gpu_hours", "epoch_time", "seed")
#: the proxy epoch's metrics a seed reports, as ``proxy_<name>`` (its own MLflow run has them unprefixed)
PROXY_KEYS = ("test_acc", "test_loss", "train_acc", "train_loss", "lr", "params_m")
#: what a live report carries of the seed's last finished epoch (besides the running epoch's own numbers)
LIVE_KEEP = tuple(k for k in KEEP if k not in ("epoch", "phase", "nb201", "genotype", "epoch_time", "seed"))


class SeedRun(EpochRun):
    """Search epochs, then (with ``proxy``) proxy-retrain epochs; costs are measured when the search ends."""

    def __init__(self, cfg: Any, data: Any, lookup: Any, proxy: ProxyConfig | None, gpus: float = 0.0, *,
                 recipe: ProxyConfig | None = None):
        """``proxy``: the recipe retrained after the search (None: no proxy epochs); ``recipe``: the shape the
        costs are measured at when there is no proxy to train (default: ``proxy``, else the defaults)."""
        from trials.bilevel import Search

        super().__init__()
        self.cfg, self.seed, self.data, self.gpus = cfg, cfg.seed, data, gpus
        self.recipe = proxy or recipe or ProxyConfig()
        self.search = Search(cfg, data, lookup)
        self.device = self.search.device
        self.epochs = cfg.epochs + (proxy.epochs if proxy is not None else 0)
        self.proxy: Any = None            # trials.retrain.Retrain, built when the search ends
        self.search_seconds = 0.0
        self.final: dict[str, Any] = {}   # the search's last metrics and costs, carried through the proxy epochs
        self.shown: dict[str, Any] = {}   # the last epoch's LIVE_KEEP numbers, sent with every live report

    @property
    def progress(self) -> ProgressSink | None:
        return self._sink

    @progress.setter
    def progress(self, sink: ProgressSink | None) -> None:
        """The seed's sink: the running phase's run (``Search``, then ``Retrain``) reports through it, as
        often as this run's ``progress_every`` says (set it before the sink)."""
        self._sink = sink
        for phase in ("search", "proxy"):
            run = self.__dict__.get(phase)  # none yet while EpochRun.__init__ sets the first sink
            if run is not None:
                run.progress = self._relay(phase) if sink is not None else None
                run.progress_every = self.progress_every

    def _relay(self, phase: str) -> ProgressSink:
        offset = 0 if phase == "search" else self.search.epochs

        def send(info: dict[str, Any]) -> None:
            if self._sink is not None:
                self._sink({**self.shown, **info, "epoch": info["epoch"] + offset, "epochs": self.epochs,
                            "phase": phase})
        return send

    @property
    def genotype_text(self) -> str:
        import search_spaces

        return search_spaces.genotype_str(self.cfg.space, self.search.genotype())

    def proxy_config(self) -> Any:
        from raynas.retrain import resolve_retrain

        return resolve_retrain(proxy_overrides(self.recipe, self.cfg.space, self.genotype_text, self.cfg))

    def _build_proxy(self) -> Any:
        from trials.retrain import Retrain

        proxy = Retrain(self.proxy_config(), self.data)
        proxy.progress = self._relay("proxy") if self._sink is not None else None
        proxy.progress_every = self.progress_every
        return proxy

    def _costs(self, net: Any) -> dict[str, float]:
        """``params`` (M) and ``flops`` (M multiply-adds per image) of the derived network at the proxy's
        shape; ``search_gpu_hours``: the search's wall hours times its GPUs (CPU-only: times 1)."""
        from search_spaces.darts_eval import count_flops, count_params

        shape = tuple(self.data.train_x.shape[1:])
        return {"params": count_params(net) / 1e6, "flops": count_flops(net, shape) / 1e6,
                "search_gpu_hours": self.search_seconds / 3600 * (self.gpus if self.gpus > 0 else 1.0)}

    def run_epoch(self) -> dict[str, Any]:
        from raynas.trainable import nb201_headline

        if not self.search.done:
            t0 = time.perf_counter()
            m = self.search.run_epoch()
            self.search_seconds += time.perf_counter() - t0
            m = {**m, **nb201_headline(m.get("nb201"), self.cfg.dataset), "phase": "search"}
            if self.search.done:
                self.proxy = self._build_proxy()
                self.final = {k: m.get(k) for k in KEEP if k not in ("epoch", "phase", "epoch_time")}
                self.final.update(self._costs(self.proxy.net))
                m.update(self.final)
        else:
            pm = self.proxy.run_epoch()
            m = {**self.final, **{f"proxy_{k}": pm[k] for k in PROXY_KEYS}, "epoch_time": pm["epoch_time"],
                 "phase": "proxy"}
            if self.proxy.done:
                self.final["proxy_acc"] = m["proxy_acc"] = pm["test_acc"]
        self.epoch += 1
        m["epoch"] = self.epoch
        self.shown = {k: m[k] for k in LIVE_KEEP if k in m}
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "search": self.search.state_dict(), "search_seconds": self.search_seconds,
                "final": self.final, "proxy": self.proxy.state_dict() if self.proxy is not None else None,
                "shown": self.shown}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search.load_state_dict(state["search"])
        self.epoch, self.search_seconds, self.final = state["epoch"], state["search_seconds"], dict(state["final"])
        self.shown = dict(state.get("shown") or {})  # absent from checkpoints of earlier versions
        if state["proxy"] is not None:
            self.proxy = self._build_proxy()
            self.proxy.load_state_dict(state["proxy"])


class SeedWorker:
    """One seed of a trial in its own Ray actor (one bundle of the trial's placement group)."""

    def __init__(self, config: dict[str, Any], proxy: dict[str, Any] | None, gpus: float, trial_id: str,
                 index: int, tracking: dict[str, Any] | None, recipe: dict[str, Any] | None = None):
        from raynas.config import resolve
        from raynas.data import load_dataset
        from trials.config import build
        from trials.epochs import set_threads_from_env

        set_threads_from_env()
        self.cfg = c = resolve(config)
        lookup = None
        if c.nb201_table:
            from raynas.tables.nb201 import NB201Table
            lookup = NB201Table.load(c.nb201_table).query
        train = build(ProxyConfig, proxy) if proxy is not None else None
        shape = build(ProxyConfig, recipe) if recipe is not None else None
        self.run = SeedRun(c, load_dataset(c.dataset, c.data_dir, c.download), lookup, train, gpus, recipe=shape)
        self.trial_id, self.index, self.tracking = trial_id, index, tracking
        self.parent: str | None = None
        self.refs: dict[str, str | None] = {"search": None, "proxy": None}
        self.trackers: dict[str, Any] = {}
        self.closed: set[str] = set()

    def attach(self, parent_run_id: str | None) -> None:
        self.parent = parent_run_id

    def show_progress(self, board: str, seeds: int, every: float | None = None) -> None:
        """Live progress of this seed, as the trial's part ``index`` of ``seeds``, on the driver's board
        (``raynas.progress``): the console draws one line per seed, ``[seed 2/3 search]``; ``every``: seconds
        between two in-epoch reports (``raynas.console.post_every``; None: the run's default)."""
        from raynas.progress import TrialSink, part_key
        from raynas.trainable import search_live

        part = f"seed {self.index + 1}/{seeds}"
        if every is not None:
            self.run.progress_every = every
        self.run.progress = TrialSink(board, part_key(self.trial_id, self.index),
                                      lambda info: {**search_live(info, self.cfg.dataset), "part": part})

    def _tracker(self, kind: str) -> Any:
        if not self.tracking:
            return None
        if kind not in self.trackers:
            from raynas.config import flatten
            from raynas.tracking import TrialTracker

            t, c = self.tracking, self.cfg
            base = {"method": c.method, "space": c.space, "dataset": c.dataset, "seed": c.seed,
                    "raynas.group_trial_id": self.trial_id, "raynas.seed_index": self.index}
            if kind == "search":
                name, parent = f"seed{c.seed}/{c.method}/{c.space}/{c.dataset}", self.parent
                params = flatten(c.to_dict())
                tags = {**base, "raynas.kind": "seed_search", "raynas.trial_run_id": self.parent or ""}
            else:
                search_run = self._search_run_id()
                pc = self.run.proxy.cfg
                name, parent = f"proxy/seed{c.seed}/{c.space}/{c.dataset}", search_run
                params = {k: v for k, v in flatten(dict(vars(pc))).items() if k != "search"}
                tags = {**base, "raynas.kind": "proxy", "raynas.search_run_id": search_run or "",
                        "raynas.trial_run_id": self.parent or "", "genotype": pc.genotype}
            self.trackers[kind] = TrialTracker(
                t["uri"], t["experiment"], name, parent_run_id=parent, params=params, tags=tags,
                run_id=self.refs[kind] or self._find(tags["raynas.kind"]),
                pending_dir=Path(t["pending_root"]) / f"{self.trial_id}_seed{self.index}",
                artifact_root=t.get("artifact_root"))
        return self.trackers[kind]

    def _search_run_id(self) -> str | None:
        """This seed's search run, without reopening it (a tracker built on resume would set a FINISHED
        search run back to RUNNING): the open tracker's, else the checkpointed reference, else a lookup."""
        if "search" in self.trackers:
            return self.trackers["search"].run_id
        ref = self.refs.get("search") or self._find("seed_search")
        return None if ref is None or ref.startswith("local:") else ref

    def _find(self, kind: str) -> str | None:
        """This seed's run of an earlier attempt of the trial (restarted without a checkpoint), so a
        restart continues it rather than adding a second run (as ``find_trial_run`` does for trials)."""
        from raynas.tracking.store import client, is_http, probe

        t = self.tracking
        try:
            if is_http(t["uri"]) and not probe(t["uri"]):
                return None
            exp = client(t["uri"]).get_experiment_by_name(t["experiment"])
            if exp is None:
                return None
            query = (f"tags.`raynas.group_trial_id` = '{self.trial_id}' AND tags.`raynas.seed_index` = '{self.index}'"
                     f" AND tags.`raynas.kind` = '{kind}'")
            runs = client(t["uri"]).search_runs([exp.experiment_id], query, max_results=1,
                                                order_by=["attributes.start_time DESC"])
        except Exception:  # noqa: BLE001 - a lookup must not kill the seed; a new run is created instead
            return None
        return runs[0].info.run_id if runs else None

    def step(self) -> dict[str, Any]:
        """One epoch of this seed (search or proxy), logged; the trial gets the ``KEEP`` keys."""
        try:
            m = self.run.run_epoch()
        except Diverged as e:
            return {"diverged": str(e), "epoch": e.epoch + 1, "seed": self.cfg.seed}
        m["seed"] = self.cfg.seed
        self._log(m)
        return {k: m[k] for k in KEEP if k in m}

    def _log(self, m: dict[str, Any]) -> None:
        if not self.tracking:
            return
        if m["phase"] == "search":
            tracker = self._tracker("search")
            tracker.log_epoch(m, step=m["epoch"])
            if self.run.search.done:
                self._end_search(tracker)
            return
        tracker = self._tracker("proxy")
        tracker.log_epoch({**{k: m[f"proxy_{k}"] for k in PROXY_KEYS}, "epoch_time": m["epoch_time"]},
                          step=self.run.proxy.epoch)
        if self.run.proxy.done:
            tracker.log_epoch({"proxy_acc": m["proxy_acc"]}, step=self.run.proxy.epoch)
            if search_run := self._search_run_id():  # written back through the proxy's tracker
                tracker.log_metric_on(search_run, "proxy_acc", m["proxy_acc"], step=self.run.epoch)
            self._close("proxy", "completed")

    def _end_search(self, tracker: Any) -> None:
        import search_spaces

        geno = self.run.search.genotype()
        gjson = search_spaces.genotype_json(geno)
        tracker.log_final(search_spaces.genotype_str(self.cfg.space, geno), gjson, self.cfg.space)
        tracker.log_epoch({k: self.run.final[k] for k in ("params", "flops", "search_gpu_hours")},
                          step=self.run.search.epoch)
        self._close("search", "completed")

    def _close(self, kind: str, status: str) -> None:
        if kind in self.trackers and kind not in self.closed:
            self.trackers[kind].finish(status)
            self.closed.add(kind)

    def stop(self) -> None:
        """Stopped before its end (a scheduler, a failure): close what is still open."""
        for kind in ("search", "proxy"):
            self._close(kind, "stopped")

    def state(self) -> bytes:
        buf = io.BytesIO()
        refs = {k: (t.run_ref if k in self.trackers else self.refs[k]) for k, t in
                {**{k: None for k in self.refs}, **self.trackers}.items()}
        torch.save({"run": self.run.state_dict(), "refs": refs, "closed": sorted(self.closed)}, buf)
        return buf.getvalue()

    def restore(self, blob: bytes) -> int:
        from trials.checkpoint import load_state

        try:
            state = load_state(io.BytesIO(blob), self.run.device)
        except Exception as e:  # noqa: BLE001 - reported to the trial as a corrupted checkpoint
            raise RuntimeError(f"seed {self.index} checkpoint is corrupted ({type(e).__name__})") from None
        self.run.load_state_dict(state["run"])
        self.refs, self.closed = dict(state["refs"]), set(state["closed"])
        self.trackers = {}
        return self.run.epoch
