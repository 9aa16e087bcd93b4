"""No lost results: an ``--out`` holding another experiment is refused, a second run on a live ``--out`` is
refused, names stay inside ``--out``, a refused ``--out`` creates no MLflow run, a full disk is one line."""

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from raynas.cli import main
from raynas.experiment import load_experiment
from raynas.outdir import LOCK_FILE, OutputError, claim, write_json

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
TINY = ["--epochs", "1", "--set", "model.C=4", "--set", "model.layers=1", "--set", "max_steps_per_epoch=2",
        "--set", "eval_batches=1", "--cpus", "1"]


def raynas(*args, cwd, preexec_fn=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raynas.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def one_error_line(err: str, fragment: str) -> None:
    assert err.startswith("raynas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_experiment(out: Path, name: str) -> dict[str, bytes]:
    """An ``--out`` as a finished run of experiment ``name`` left it (its state and summary)."""
    exp = load_experiment(None, {"name": name, "fixed": {"epochs": 1}})
    out.mkdir(parents=True)
    write_json(out / "experiment.json", {"experiment": dataclasses.asdict(exp), "yaml": None, "tracking": None})
    write_json(out / "summary.json", {"experiment": name, "trials": [{"trial_id": "abc", "status": "completed"}]})
    return tree(out)


def test_out_holding_another_experiment_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    before = earlier_experiment(out, "first")
    code = main(["search", "--out", str(out), "--name", "second", "--tracking-uri", "none", *TINY])
    one_error_line(capsys.readouterr().err, "holds another experiment ('first')")
    assert code == 2 and not ray.is_initialized()
    assert tree(out) == before  # summary.json and experiment.json of the first experiment are intact
    # a file in the way of --out is refused the same way
    assert main(["search", "--out", str(out / "summary.json"), "--tracking-uri", "none", *TINY]) == 2
    one_error_line(capsys.readouterr().err, "is a file, not a directory")
    assert tree(out) == before


def test_out_holding_a_run_without_state_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "ray_results").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    assert main(["search", "--out", str(out), "--tracking-uri", "none", *TINY]) == 2
    one_error_line(capsys.readouterr().err, "holds the results of another run")


def test_the_cluster_checks_empty_results_directory_is_not_another_run(tmp_path):
    """``check_cluster`` creates ``OUT/ray_results`` for its marker files and removes the markers: the
    second output check (under the lock) must not take that for a run's results."""
    from raynas.outdir import check_output
    out = tmp_path / "out"
    (out / "ray_results").mkdir(parents=True)
    (out / "ray_results" / ".raynas-shared-abc").write_text("marker")
    check_output(out, {"name": "x"})
    (out / "ray_results" / "x").mkdir()
    with pytest.raises(Exception, match="holds the results of another run"):
        check_output(out, {"name": "x"})


@pytest.mark.parametrize("name", ["../../escaped", "", "/abs/path", "a/b", ".hidden", "x" * 101])
def test_unsafe_experiment_names_are_refused(tmp_path, capsys, name):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: {json.dumps(name)}\n")
    code = main(["run", str(exp), "--out", str(tmp_path / "a" / "b" / "out"), "--tracking-uri", "none"])
    one_error_line(capsys.readouterr().err, "name must be 1-100 letters")
    assert code == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]
    assert main(["search", "--name", name, "--out", str(tmp_path / "o"), "--tracking-uri", "none"]) == 2
    assert not (tmp_path / "o").exists() and not ray.is_initialized()


def test_refused_out_creates_no_mlflow_run(tmp_path, capsys):
    """``--out`` is an existing file: refused before the experiment's parent run exists (on main the parent
    was created, then the run died with a traceback, leaving it RUNNING)."""
    db = tmp_path / "mlflow.db"
    (tmp_path / "taken").write_text("a file\n")
    code = main(["search", "--out", str(tmp_path / "taken"), "--name", "refused", "--tracking-uri",
                 f"sqlite:///{db}", *TINY])
    one_error_line(capsys.readouterr().err, "is a file, not a directory")
    assert code == 2 and not ray.is_initialized()
    if db.exists():  # nothing at all is better; an empty store is acceptable
        assert MlflowClient(f"sqlite:///{db}").get_experiment_by_name("refused") is None


def test_live_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path, capsys):
    """The lock is the kernel's (flock): refused while held by another process, free once it exits."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from raynas.outdir import claim\n"
                               f"with claim({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["search", "--out", str(out), "--tracking-uri", "none", *TINY])
        one_error_line(capsys.readouterr().err, f"is in use by another raynas run (pid {holder.pid})")
        assert code == 2 and not ray.is_initialized() and not (out / "experiment.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with claim(out):  # SIGKILL of the holder released it
        with pytest.raises(OutputError, match="in use"):
            with claim(out):
                pass
    assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_on_out_is_one_line_and_nothing_half_written(tmp_path):
    """Writes past RLIMIT_FSIZE fail with EFBIG like a full disk with ENOSPC: one line naming the file,
    no experiment.json (nor its temporary file) left for ``resume`` to trust."""
    p = raynas("search", "--out", tmp_path / "out", "--tracking-uri", "none", *TINY, cwd=tmp_path,
               preexec_fn=_file_size_limit(300))
    assert p.returncode == 2, p.stderr[-3000:]
    one_error_line(p.stderr, f"{tmp_path / 'out' / 'experiment.json'}: is full")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_FILE]


def test_summary_is_replaced_whole_or_not_at_all(tmp_path):
    """A summary that does not fit leaves the previous one intact (temp file + rename), with one line."""
    path = tmp_path / "summary.json"
    write_json(path, {"trials": [1]})
    code = ("import sys\nfrom raynas.outdir import OutputError, write_json\n"
            f"try:\n    write_json({str(path)!r}, {{'trials': list(range(5000))}})\n"
            "except OutputError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                       preexec_fn=_file_size_limit(4096))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "summary.json: is full" in p.stderr, p.stderr
    assert json.loads(path.read_text()) == {"trials": [1]}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.slow
def test_two_runs_on_one_out_second_refused_then_force_replaces(tmp_path):
    """Two searches started on one ``--out``: the second is refused while the first runs (on main both
    exited 0 and summary.json held one of them); a different experiment then needs --force."""
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "raynas.cli", "search", "--out", str(out), "--name", "first",
                              "--tracking-uri", "none", *TINY, "--epochs", "3"], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.time() + 300
        while not (out / "experiment.json").exists() and time.time() < end and first.poll() is None:
            time.sleep(0.2)
        second = raynas("search", "--out", out, "--name", "first", "--tracking-uri", "none", *TINY, "--epochs", "3",
                        cwd=tmp_path)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        one_error_line(second.stderr, "is in use by another raynas run")
        log, _ = first.communicate(timeout=600)
        assert first.returncode == 0, log[-3000:]
    finally:
        first.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "first" and len(summary["trials"]) == 1
    other = raynas("search", "--out", out, "--name", "other", "--tracking-uri", "none", *TINY, cwd=tmp_path)
    assert other.returncode == 2
    one_error_line(other.stderr, "holds another experiment ('first')")
    forced = raynas("search", "--out", out, "--name", "other", "--tracking-uri", "none", *TINY, "--force",
                    cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout[-2000:] + forced.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["experiment"] == "other"
    assert sorted(p.name for p in (out / "ray_results").iterdir()) == ["other"]  # the replaced run's are gone


def _ray_pids_of_session(pgid: int) -> list[int]:
    """Processes still in the killed driver's process group (its local Ray: gcs_server, raylet, workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


@pytest.mark.slow
def test_resume_after_driver_sigkill_while_its_ray_processes_live_on(tmp_path):
    """SIGKILL of the driver alone leaves its local Ray (gcs, raylet) running; ``raynas resume`` starts its
    own and finishes the experiment anyway, with the output directory's lock free again."""
    import signal

    exp = tmp_path / "orphans.yaml"
    exp.write_text("name: orphans\ngrid: {seed: [0, 1]}\nmax_concurrent_trials: 1\nfixed: "
                   '{"epochs": 4, "model": {"C": 4, "layers": 1}, "eval_batches": 1, "max_steps_per_epoch": 3}\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "raynas.cli", "run", str(exp), "--out", str(out),
                             "--tracking-uri", "none"], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.time() + 400
        while time.time() < end and not list((out / "ray_results" / "orphans").glob("*/checkpoint_*")):
            time.sleep(0.5)
        assert list((out / "ray_results" / "orphans").glob("*/checkpoint_*")), "no checkpoint before the kill"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its Ray processes live on
        proc.wait(timeout=60)
        assert [p for p in _ray_pids_of_session(proc.pid) if p != proc.pid]  # orphans are there
        p = raynas("resume", out, cwd=tmp_path, timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        trials = json.loads((out / "summary.json").read_text())["trials"]
        assert sorted(t["seed"] for t in trials) == [0, 1] and all(t["status"] == "completed" for t in trials)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def small_tmpfs(mount_tmpfs):
    """A 2 MiB tmpfs."""
    return mount_tmpfs("2m")


def test_full_filesystem_is_refused_before_anything_starts(small_tmpfs, capsys):
    """``--out`` on a (nearly) full filesystem: one line saying so, no MLflow run, no Ray, nothing written."""
    (small_tmpfs / "filler").write_bytes(bytes(1_500_000))
    out = small_tmpfs / "out"
    code = main(["search", "--out", str(out), "--tracking-uri", "none", *TINY])
    one_error_line(capsys.readouterr().err, f"--out {out}: its filesystem is full")
    assert code == 2 and not out.exists() and not ray.is_initialized()


def test_write_on_a_filling_filesystem_is_one_line_and_keeps_the_old_file(small_tmpfs):
    """ENOSPC itself (not a size limit): the summary written over a good one fails whole, naming the file."""
    path = small_tmpfs / "summary.json"
    write_json(path, {"trials": [1]})
    (small_tmpfs / "filler").write_bytes(bytes(1_900_000))
    with pytest.raises(OutputError, match=r"summary.json: is full \(No space left on device\)"):
        write_json(path, {"trials": list(range(200_000))})
    assert json.loads(path.read_text()) == {"trials": [1]}
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "summary.json"]


# ---------------------------------------------------------------- study files and `bench nb201 simulate --out`

@pytest.fixture
def study_file(tmp_path):
    """A study (searcher comparison) on a small synthetic NB-201 table."""
    from tests.test_searchers import synthetic_frame

    table = tmp_path / "t.csv"
    synthetic_frame().to_csv(table, index=False)
    path = tmp_path / "study.yaml"
    path.write_text(f"name: st\nbench: {{table: {table}, searchers: [random], seeds: [0], budget: 8, "
                    "budgets: [4, 8]}\n")
    return path


def test_study_file_run_refuses_an_out_of_another_experiment_and_a_live_one(study_file, tmp_path, capsys):
    """``raynas run STUDY --out DIR``: the same refusals as a search experiment, before Ray starts."""
    out = tmp_path / "out"
    before = earlier_experiment(out, "first")
    code = main(["run", str(study_file), "--out", str(out), "--tracking-uri", "none"])
    one_error_line(capsys.readouterr().err, f"--out {out} holds another experiment ('first')")
    assert code == 2 and tree(out) == before and not ray.is_initialized()
    live = tmp_path / "live"
    with claim(live):
        code = main(["run", str(study_file), "--out", str(live), "--tracking-uri", "none"])
        one_error_line(capsys.readouterr().err, f"--out {live} is in use by another raynas run (pid {os.getpid()})")
    assert code == 2 and sorted(p.name for p in live.iterdir()) == [LOCK_FILE] and not ray.is_initialized()


def test_bench_simulate_out_is_refused_when_it_holds_results_then_forced(study_file, tmp_path, capsys):
    """``bench nb201 simulate --out``: bench.json there; a second study on it is refused (one line, the
    first record untouched) unless --force, which replaces it."""
    out = tmp_path / "out"
    argv = ["bench", "nb201", "simulate", str(study_file), "--out", str(out), "--tracking-uri", "none"]
    assert main(argv) == 0
    first = (out / "bench.json").read_bytes()
    assert len(json.loads(first)["runs"]) == 1
    capsys.readouterr()
    assert main([*argv, "--seeds", "0,1"]) == 2
    one_error_line(capsys.readouterr().err, f"--out {out} holds the results of another run")
    assert (out / "bench.json").read_bytes() == first
    with claim(out):
        assert main([*argv, "--force"]) == 2
        one_error_line(capsys.readouterr().err, "is in use by another raynas run")
    assert main([*argv, "--seeds", "0,1", "--force"]) == 0
    assert len(json.loads((out / "bench.json").read_text())["runs"]) == 2
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "bench.json"]
