"""The first hour of a new user (issue 21): the demo's console, threads, quiet imports, caches, subsets.

The slow tests run the CLI as a user does (``python -m raynas.cli`` in a temp directory, real local Ray
and MLflow) and check what it prints: progress lines, no Ray noise, the final summary last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raynas.console import NAR, RETRAIN, SEARCH, clock, epoch_line, live_line, part_label, trial_label
from raynas.progress import part_key, trial_reports
from raynas.threads import concurrent_trials, oversubscription, threads_per_trial

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "RAYNAS_PROGRESS_S": "1"}
ENV.pop("MLFLOW_TRACKING_URI", None)
ENV.pop("RAYNAS_CONSOLE", None)

#: a finished epoch: "00000 darts/nb201/digits/s0  epoch 2/6  3.4 s  train 76.8%  valid 38.7%  skips 3"
EPOCH_RE = re.compile(r"^[0-9a-f]{5} darts/nb201/digits/s0  epoch (\d+)/(\d+)  \d+\.\d s  train \d+\.\d%  "
                      r"valid \d+\.\d%  skips \d$")
#: a live line: "00000 darts/nb201/digits/s0  epoch 2/6  step 7/11  2.8 it/s  ETA 0:06  train 72.8% ..."
LIVE_RE = re.compile(r"^[0-9a-f]{5} darts/nb201/digits/s0  epoch (\d+)/(\d+)  step (\d+)/(\d+)"
                     r"(  \d+\.\d (?:it/s|s/it)  ETA \d+:\d\d)?  train \d+\.\d%")
NOISE = ("== Status ==", "Checkpoint successfully created", "Token authentication", " INFO ", "Started a local Ray")


def demo_command() -> list[str]:
    """The ``make demo`` invocation, read from the Makefile (so the test follows the demo's size)."""
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines()
                if ln.strip().startswith("$(BIN)/raynas search"))
    return [sys.executable, "-m", "raynas.cli", *line.split()[1:]]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> tuple[int, list[str]]:
    p = subprocess.run(argv, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout.splitlines()


# ------------------------------------------------------------------------------------------- formatting
def test_clock_and_labels() -> None:
    assert [clock(s) for s in (0, 42.4, 725, 3723)] == ["0:00", "0:42", "12:05", "1:02:03"]
    config = {"method": "darts", "space": "nb201", "dataset": "digits", "seed": 3, "epochs": 2}
    assert trial_label(SEARCH, "abcde_00007", config) == "00007 darts/nb201/digits/s3"
    retrain = {"space": "darts", "dataset": "cifar10", "seed": 0}
    assert trial_label(RETRAIN, "00001", retrain) == "00001 darts/cifar10/s0"
    arch = {"arch": {"space": "nb201", "genotype": "|...|", "search": None}, "dataset": "digits", "seed": 1}
    assert trial_label(RETRAIN, "00002", arch) == "00002 nb201/digits/s1"
    assert trial_label(NAR, "00002", {"bench": "nb201", "dataset": "cifar10", "seed": 1}) == "00002 nb201/cifar10/s1"


def test_live_line_eta_and_table_accuracy() -> None:
    last = {"epoch": 1, "epoch_time": 10.0, "valid_acc": 40.0, "skip_count": 2}
    info = {"epoch": 2, "epochs": 4, "step": 5, "steps": 10, "rate": 2.0, "time": 100.0, "train_acc": 71.25,
            "nb201_test": 93.37}
    line = live_line(SEARCH, "00000 darts/nb201/cifar10/s0", info, last, now=101.0)
    # 5 steps left at 2 it/s, then 2 more epochs of 10 s, minus the second since the report: 2.5 + 20 - 1
    assert line == ("00000 darts/nb201/cifar10/s0  epoch 2/4  step 5/10  2.0 it/s  ETA 0:22  train 71.2%  "
                    "valid 40.0%  skips 2  nb201 93.4%")
    assert "ETA" not in live_line(SEARCH, "x", {**info, "rate": None}, last, 100.0)
    assert "  4.0 s/it  ETA " in live_line(SEARCH, "x", {**info, "rate": 0.25}, last, 100.0)
    assert live_line(SEARCH, "x", None, {}, 0.0) == "x  starting"
    assert live_line(SEARCH, "x", {**info, "epoch": 1}, last, 0.0) == "x  epoch 1 done, next starting"
    assert live_line(SEARCH, "x", None, {"epoch": 4, "total_epochs": 4}, 0.0) == "x  epoch 4/4 done, finishing"
    nar = live_line(NAR, "n", {"epoch": 1, "epochs": 3, "step": 2, "steps": 4, "rate": None, "time": 0.0,
                               "loss": 1.23456, "tier_acc": 0.5}, {}, 0.0)
    assert nar == "n  epoch 1/3  step 2/4  loss 1.235  tier 0.500"


def test_epoch_line() -> None:
    result = {"epoch": 2, "total_epochs": 6, "epoch_time": 3.44, "train_acc": 76.8, "valid_acc": 38.7,
              "skip_count": 3, "nb201_test": None, "training_iteration": 2}
    assert EPOCH_RE.match("00000 darts/nb201/digits/s0" + epoch_line(SEARCH, "", result))
    assert epoch_line(RETRAIN, "r", {"epoch": 1, "total_epochs": 2, "epoch_time": 1.0, "train_acc": 50.0,
                                     "test_acc": 40.0}) == "r  epoch 1/2  1.0 s  train 50.0%  test 40.0%"


def test_a_seed_group_trial_gets_a_line_per_seed_tagged_with_its_phase() -> None:
    """Board routing: a trial's parts (``trial/0``, ``trial/1``, ...) in part order once one has reported,
    else its own report; another trial's keys never mix in; each part's line carries its tag."""
    info = {"epoch": 3, "epochs": 4, "step": 2, "steps": 8, "rate": None, "time": 0.0, "train_acc": 20.0,
            "valid_acc": 75.0, "proxy_test_acc": 31.0, "phase": "proxy", "part": "seed 2/2"}
    board = {part_key("t_00001", 1): info, part_key("t_00001", 0): {**info, "part": "seed 1/2", "phase": "search"},
             "t_00001": {"epoch": 1}, part_key("t_000010", 0): {"epoch": 9}, "t_00002": {"epoch": 2}}
    assert [k for k, _ in trial_reports(board, "t_00001")] == ["t_00001/0", "t_00001/1"]
    assert trial_reports(board, "t_00002") == [("t_00002", {"epoch": 2})]
    assert trial_reports(board, "t_00003") == [("t_00003", None)]
    label = "00001 darts/nb201/digits/s3"
    assert part_label(label, info) == "00001 darts/nb201/digits/s3  [seed 2/2 proxy]"
    assert part_label(label, {"epoch": 1}) == part_label(label, None) == label
    line = live_line(SEARCH, part_label(label, info), info, {"epoch": 2, "total_epochs": 4}, 0.0)
    assert line == ("00001 darts/nb201/digits/s3  [seed 2/2 proxy]  epoch 3/4  step 2/8  train 20.0%  valid 75.0%  "
                    "proxy test 31.0%")
    final = epoch_line(SEARCH, label, {"epoch": 4, "total_epochs": 4, "epoch_time": 1.0, "proxy_acc": 40.0})
    assert final == "00001 darts/nb201/digits/s3  epoch 4/4  1.0 s  proxy 40.0%"


def test_a_seed_reports_its_search_then_its_proxy_numbered_as_its_own_epochs() -> None:
    """``SeedRun.progress`` (what ``SeedWorker.show_progress`` sets): the search's and then the proxy's
    in-epoch reports, numbered 1..search+proxy epochs, tagged with the phase, with the last epoch's numbers;
    both phases report as often as the seed's ``progress_every`` says (0: every step)."""
    import torch

    from raynas.config import resolve
    from raynas.data import load_dataset
    from raynas.objectives import ProxyConfig
    from raynas.proxy import SeedRun

    tiny = {"method": "darts", "space": "nb201", "dataset": "digits", "seed": 5, "epochs": 2, "batch_size": 16,
            "max_steps_per_epoch": 3, "eval_batches": 1, "device": "cpu", "model": {"C": 4, "layers": 1}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = SeedRun(resolve(tiny), load_dataset("digits"), None, ProxyConfig(epochs=1, channels=4, layers=1,
                                                                              batch=32, max_steps_per_epoch=2))
        reports: list[dict] = []
        run.progress_every = 0.0
        run.progress = reports.append
        results = [run.run_epoch() for _ in range(run.epochs)]
    finally:
        torch.set_num_threads(threads)
    assert [(r["phase"], r["epoch"], r["step"]) for r in reports] == [
        ("search", 1, 1), ("search", 1, 2), ("search", 1, 3), ("search", 2, 1), ("search", 2, 2), ("search", 2, 3),
        ("proxy", 3, 1), ("proxy", 3, 2)]
    ends = [(r["phase"], r["epoch"], r["epochs"]) for r in reports if r["step"] == r["steps"]]
    assert ends == [("search", 1, 3), ("search", 2, 3), ("proxy", 3, 3)]
    assert all(0 <= r["train_acc"] <= 100 for r in reports)
    first, = [r for r in reports if r["epoch"] == 1 and r["step"] == r["steps"]]
    assert "valid_acc" not in first  # nothing finished yet
    proxy = [r for r in reports if r["phase"] == "proxy"]
    assert proxy and all(r["valid_acc"] == results[1]["valid_acc"] and r["steps"] == 2 for r in proxy)
    run.progress = None  # a run without a sink reports nothing
    assert run.search.progress is None and run.proxy.progress is None


def test_trials_post_twice_per_console_interval_when_it_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console that prints every second needs fresher reports than the trials' 2-s default, or a short
    epoch shows only its first step (no rate yet) before it ends."""
    from raynas.console import POST_EVERY_S, worker_settings

    monkeypatch.delenv("RAYNAS_PROGRESS_S", raising=False)
    assert worker_settings("b")["every"] == POST_EVERY_S == 2.0
    monkeypatch.setenv("RAYNAS_PROGRESS_S", "1")
    assert worker_settings("b")["every"] == 0.5
    monkeypatch.setenv("RAYNAS_PROGRESS_S", "30")
    assert worker_settings("b")["every"] == 2.0
    monkeypatch.setenv("RAYNAS_PROGRESS_S", "0")  # a line at every console call: not a board call per step
    assert worker_settings("b")["every"] == 0.2


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_progress_interval_is_one_line_and_exit_2(value: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from raynas.cli import main

    monkeypatch.setenv("RAYNAS_PROGRESS_S", value)
    assert main(["search", "--space", "nb201", "--method", "darts", "--dataset", "digits", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "RAYNAS_PROGRESS_S" in err and "a number >= 0" in err, err


def test_a_board_that_answers_late_stays_up(tmp_path: Path) -> None:
    """The first read of a board usually times out (its actor is still starting): the driver must keep its
    handle, or Ray stops the board and no live line shows for the rest of the run (real local Ray)."""
    import ray

    from raynas.progress import TrialSink, read_board, start_board, stop_board

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        name = start_board(str(tmp_path))
        assert read_board(name, timeout_s=0.0) == {}  # not started yet: no answer in no time
        time.sleep(3.0)  # the unanswered call done: had the driver dropped its handle, the board is gone now
        TrialSink(name, "t_00000")({"epoch": 1, "step": 2})
        state: dict = {}
        for _ in range(20):
            state = read_board(name, timeout_s=5.0)
            if state:
                break
            time.sleep(0.5)
        assert state == {"t_00000": {"epoch": 1, "step": 2}}
        stop_board(name)
        assert read_board(name) == {}
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------- threads
def test_one_thread_per_trial_unless_asked() -> None:
    assert threads_per_trial(1.0) == 1 and threads_per_trial(0.5) == 1 and threads_per_trial(2.0) == 2
    assert threads_per_trial(1.0, threads=3) == 3


def test_oversubscription_warning() -> None:
    assert concurrent_trials(8, 0.5, None, 2) == 4 and concurrent_trials(8, 1, 3, 16) == 3
    assert oversubscription(4, 1.0, 1, None, 2, 2) is None  # 2 at once x 1 thread on 2 cores
    msg = oversubscription(8, 0.5, 1, None, 2, 2)
    assert msg and "4 trials at once x 1 torch threads = 4 threads on 2 cores" in msg
    assert "2 threads on 1 cores" in oversubscription(1, 1.0, 2, None, 1, 1)


# ------------------------------------------------------------------------------------------ quiet imports
@pytest.mark.parametrize("argv", [["methods"],
                                  ["bench", "nb201", "query", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                   "--table", "MISSING.csv"],
                                  ["genotype", "--space", "nb201", "--genotype",
                                   "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                   "nor_conv_3x3~2|"]])
def test_commands_without_trials_import_no_ray_or_mlflow(tmp_path: Path, argv: list[str]) -> None:
    code = ("import sys, runpy; sys.argv = ['raynas'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('raynas.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('ray', 'mlflow', 'optuna', 'matplotlib') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert p.stdout.strip().splitlines()[-1] == "LOADED []", p.stdout + p.stderr


# ------------------------------------------------------------------------------------- data and caches
def test_train_subset_per_class_or_fraction_seeded_and_in_mlflow_params() -> None:
    from raynas.config import flatten, resolve
    from raynas.data import load_dataset
    from trials.batches import train_subset

    data = load_dataset("digits")
    five = train_subset(data, resolve({"data": {"train_subset": 5}}).data)
    assert five.train_y.bincount().tolist() == [5] * 10 and five.test_x.shape == data.test_x.shape
    again = train_subset(data, resolve({"data": {"train_subset": 5}}).data)
    other = train_subset(data, resolve({"data": {"train_subset": 5, "subset_seed": 1}}).data)
    assert (five.train_x == again.train_x).all() and not (five.train_x == other.train_x).all()
    tenth = train_subset(data, resolve({"data": {"train_subset": 0.1}}).data)
    counts = data.train_y.bincount()
    assert tenth.train_y.bincount().tolist() == [max(1, round(0.1 * int(c))) for c in counts]
    params = flatten(resolve({"data": {"train_subset": 0.1}}).to_dict())  # what a trial logs as MLflow params
    assert params["data.train_subset"] == 0.1 and params["data.subset_seed"] == 0
    whole = train_subset(data, resolve({"data": {"train_subset": 1.0}}).data)  # the fraction 1.0, not 1 per class
    assert whole.train_y.bincount().tolist() == counts.tolist()
    assert resolve({"data": {"train_subset": 1}}).data.train_subset == 1  # the integer stays a count
    from raynas.config import ConfigError
    for bad in (0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="data.train_subset"):
            resolve({"data": {"train_subset": bad}})


def test_cache_dir_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raynas.data import default_data_dir
    from raynas.data.cache import cache_dir

    monkeypatch.delenv("RAYNAS_CACHE", raising=False)
    monkeypatch.delenv("RAYNAS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == (tmp_path / "xdg" / "raynas").resolve()
    monkeypatch.setenv("RAYNAS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == (tmp_path / "c").resolve() and default_data_dir() == (tmp_path / "c" / "data").resolve()


def test_pyproject_license_is_an_spdx_string() -> None:
    """setuptools >= 77 warns (4 times per install) about the ``license = {text = ...}`` table form."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])


# --------------------------------------------------------------------------------------------- the demo
@pytest.mark.slow
def test_make_demo_prints_progress_and_the_summary_last(tmp_path: Path) -> None:
    rc, lines = _run(demo_command(), tmp_path)
    text = "\n".join(lines)
    assert rc == 0, text
    for noise in NOISE:
        assert noise not in text, noise
    epochs = [EPOCH_RE.match(ln) for ln in lines]
    done = [(int(m[1]), int(m[2])) for m in epochs if m]
    total = done[-1][1]
    assert done == [(e, total) for e in range(1, total + 1)], text  # one line per finished epoch, in order
    live = [LIVE_RE.match(ln) for ln in lines]
    live = [m for m in live if m]
    assert live and all(1 <= int(m[1]) <= total and 1 <= int(m[3]) <= int(m[4]) for m in live), text
    assert any(m[5] for m in live), text  # it/s and ETA once a rate is known
    assert re.search(r"^[0-9a-f]{5} darts/nb201/digits/s0  completed after \d+ epochs in \d+:\d\d$", text, re.M)
    # the final summary is last, nothing after it
    assert lines[-1] == "summary: runs/quick/summary.json", text
    assert lines[-2].startswith("genotype: |") and lines[-3].startswith("darts/nb201/digits/seed0: completed after")
    header = max(i for i, ln in enumerate(lines) if ln.startswith("method "))
    assert lines[header - 1] == "" and len(lines) - header == 5, text

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
             if "raynas.trial_id" in r.data.tags]
    assert run.data.tags["raynas.torch_threads"] == "1"  # one torch thread per trial by default


TINY = ["search", "--space", "nb201", "--method", "darts", "--dataset", "digits", "--epochs", "1", "--seed", "0",
        "--set", "max_steps_per_epoch=3", "--set", "model.C=4", "--set", "model.layers=1", "--tracking-uri", "none"]


@pytest.mark.slow
def test_verbose_gives_ray_output_back_and_quiet_logs_only(tmp_path: Path) -> None:
    rc, lines = _run([sys.executable, "-m", "raynas.cli", *TINY, "--out", "v", "-v"], tmp_path)
    text = "\n".join(lines)
    assert rc == 0, text
    assert "== Status ==" in text and "Checkpoint successfully created" in text  # Ray's own output
    assert not any(EPOCH_RE.match(ln) or LIVE_RE.match(ln) for ln in lines)

    threads = 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    rc, lines = _run([sys.executable, "-m", "raynas.cli", *TINY, "--out", "q", "--quiet", "--threads", str(threads)],
                     tmp_path)
    text = "\n".join(lines)
    assert rc == 0, text
    assert not any(noise in text for noise in NOISE), text
    assert not any(ln.startswith("00000 ") or ln.startswith("trials: ") for ln in lines), text  # no progress
    [warning] = [ln for ln in lines if ln.startswith("raynas: warning:")]
    assert f"1 trials at once x {threads} torch threads" in warning
    assert lines[-1] == "summary: q/summary.json"


SEED_GROUP = """name: seedlive
grid: {method: [darts], space: [nb201], dataset: [digits], seed: [3]}
fixed: {epochs: 2, batch_size: 8, eval_batches: 1, device: cpu, model: {C: 4, layers: 1}, nb201_table: nb201.csv}
proxy: {epochs: 2, channels: 32, layers: 3, batch: 4, eval_batches: 1}
tune: {metric: proxy_acc, num_samples: 1, seeds_per_trial: 2,
       space: {arch.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}}
resources: {cpu: 0.5}
"""
#: a seed's live line: "0a1b2 darts/nb201/digits/s3  [seed 2/2 search]  epoch 1/4  step 26/89  12.3 it/s  ETA ..."
SEED_LIVE_RE = re.compile(r"^[0-9a-f]{5} darts/nb201/digits/s3  \[seed ([12])/2 (search|proxy)\]  epoch (\d)/4  "
                          r"step (\d+)/(\d+)(  \d+\.\d (?:it/s|s/it)  ETA \d+:\d\d)?  train \d+\.\d%(.*)$")


@pytest.mark.slow
def test_seed_group_trials_print_a_live_line_per_seed_and_phase(tmp_path: Path) -> None:
    """2 seeds x (2 search + 2 proxy epochs) through ``raynas run`` with a real local Ray: every seed gets
    its own live lines, tagged with its phase, numbered as the trial's epochs, with it/s, ETA and the
    NB-201 table's accuracy of the seed's current genotype (40-70 s)."""
    from raynas.tables.nb201 import COLUMNS
    from search_spaces.nb201 import all_genotypes, format_genotype

    accs = {f"{40 + i % 50 + 0.25:.1f}" for i in range(50)}
    rows = [f"{format_genotype(g)},{40 + i % 50 - 0.75},{40 + i % 50 + 0.25},30,31,20,21,10,1000"
            for i, g in enumerate(all_genotypes())]
    (tmp_path / "nb201.csv").write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    (tmp_path / "exp.yaml").write_text(SEED_GROUP)
    rc, lines = _run([sys.executable, "-m", "raynas.cli", "run", "exp.yaml", "--out", "out", "--tracking-uri",
                      "none"], tmp_path)
    text = "\n".join(lines)
    assert rc == 0, text
    assert "TBXLoggerCallback" not in text, text  # Tune's complaint about the per-seed list is silenced
    live = [m for m in map(SEED_LIVE_RE.match, lines) if m]
    search = [m for m in live if m[2] == "search"]
    proxy = [m for m in live if m[2] == "proxy"]
    assert {m[1] for m in search} == {"1", "2"}, text  # a line per seed
    assert all(1 <= int(m[3]) <= 2 and 1 <= int(m[4]) <= int(m[5]) for m in search), text
    assert any(m[6] for m in search), text  # it/s and ETA once a rate is known
    nb201 = [re.search(r"  nb201 (\d+\.\d)%$", m[7]) for m in search]  # the table's accuracy of the genotype
    assert all(n and n[1] in accs for n in nb201), text
    assert proxy and all(3 <= int(m[3]) <= 4 for m in proxy), text  # the proxy's epochs follow the search's
    assert all("valid " in m[7] for m in proxy), text  # with the seed's search numbers
    assert re.search(r"^[0-9a-f]{5} darts/nb201/digits/s3  epoch 4/4  \d+\.\d s  .*  proxy \d+\.\d%$", text, re.M)
    assert re.search(r"^[0-9a-f]{5} darts/nb201/digits/s3  completed after 4 epochs in \d+:\d\d$", text, re.M)
    assert lines[-1] == "summary: out/summary.json", text


def test_a_table_query_imports_no_torch(tmp_path: Path) -> None:
    """`raynas bench nb201 query` reads genotypes from search_spaces.nb201_genotype: torch stays unloaded."""
    table = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201.csv.gz"
    if not table.is_file():
        pytest.skip(f"{table} absent")
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    code = ("import sys, runpy; sys.argv = ['raynas'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('raynas.cli', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('TORCH', 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, "bench", "nb201", "query", arch, "--table", str(table)],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    lines = p.stdout.strip().splitlines()
    assert json.loads(lines[0])["arch"] == arch, p.stdout + p.stderr
    assert lines[-1] == "TORCH False", p.stdout + p.stderr


def test_methods_lists_the_registry_without_torch(tmp_path: Path) -> None:
    """`raynas methods` reads the names from the method modules' decorators (trials.catalog): no torch is
    loaded, and the names and their order are exactly those the registry holds once the modules load."""
    code = ("import sys, runpy; sys.argv = ['raynas', 'methods']\n"
            "try:\n    runpy.run_module('raynas.cli', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('TORCH', 'torch' in sys.modules)\n"
            "import trials\nprint('REGISTRY', ', '.join(trials.METHODS))")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=300)
    lines = dict(line.split(" ", 1) for line in p.stdout.strip().splitlines())
    assert lines["TORCH"] == "False", p.stdout + p.stderr
    assert lines["methods:"] == lines["REGISTRY"], p.stdout
    assert lines["methods:"].startswith("darts, darts2, pcdarts, drnas"), p.stdout
    assert lines["spaces:"] == "nb201, darts, s1, s2, s3, s4"


def test_trials_loads_its_methods_on_first_use() -> None:
    """`trials` is lazy like `search_spaces`: its names load every method module; unknown names fail."""
    import trials
    from trials import catalog, registry

    assert registry.list_methods() == catalog.method_names() == trials.METHODS
    assert trials.build_method is trials.darts.build_method
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trials.nope  # noqa: B018


def test_search_spaces_names_are_the_registrys() -> None:
    """The lazy package lists exactly the registry's public names, so a new one cannot be forgotten."""
    import types as _types

    import search_spaces
    from search_spaces import registry

    public = {n for n, v in vars(registry).items()
              if not n.startswith("_") and not isinstance(v, _types.ModuleType) and n not in {"Any", "Callable"}
              and n not in {"annotations", "SPACE_NAMES"}}
    assert public == set(search_spaces.REGISTRY_NAMES)
    assert tuple(registry.SPACES) == search_spaces.SPACE_NAMES
    assert search_spaces.build_supernet is registry.build_supernet
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        search_spaces.nope  # noqa: B018
