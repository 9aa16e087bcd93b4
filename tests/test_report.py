"""Study reports: known numbers from a synthetic experiment, the paired test, html, MLflow, end to end."""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from raynas.config import ConfigError
from raynas.commands.report import register
from raynas.report import attach_to_mlflow, build_report, paired_test, parse_rule

BIN = Path(sys.executable).parent
B_ACC = [90.0, 91.0, 92.5, 93.5]  # "darts" cifar10_test per seed; "drnas" = darts + 1.0 on every seed
SKIPS = {"darts": [4, 5, 6, 2], "drnas": [0, 1, 4, 2]}  # collapse (skip_count>=4): darts 3/4, drnas 1/4
PARAMS = {"darts": [0.3, 0.3, 0.2, 0.6], "drnas": [1.0, 1.2, 0.8, 1.0]}
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def nb201_genotype(skips: int) -> str:
    ops = ["skip_connect"] * skips + ["nor_conv_3x3"] * (6 - skips)
    return f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"


def write_experiment(root: Path, name: str, trials: list[dict], histories: dict[str, list[dict]],
                     resources=None, moved=()) -> Path:
    """summary.json + experiment.json + per-trial result.json, as raynas run writes them."""
    root.mkdir(parents=True, exist_ok=True)
    for t in trials:
        trial_dir = root / "ray_results" / name / f"SearchTrainable_{t['trial_id']}"
        trial_dir.mkdir(parents=True)
        (trial_dir / "result.json").write_text("".join(json.dumps(h) + "\n" for h in histories[t["trial_id"]]))
        # a moved experiment: the recorded path no longer exists, the file is found under ray_results
        t["path"] = str(Path("/nonexistent") / trial_dir.name) if t["trial_id"] in moved else str(trial_dir)
    summary = {"experiment": name, "objective": {"metric": "valid_acc", "mode": "max"}, "trials": trials}
    (root / "summary.json").write_text(json.dumps(summary))
    exp = {"experiment": {"name": name, "resources": resources or {"cpu": 2.0, "gpu": 0.5}, "tracking_uri": None}}
    (root / "experiment.json").write_text(json.dumps(exp))
    return root


def synthetic(root: Path, hessian: bool = True) -> Path:
    trials, histories = [], {}
    for method, offset in (("darts", 0.0), ("drnas", 1.0)):
        for seed, acc in enumerate(B_ACC):
            tid = f"{method}_{seed:05d}"
            skips = SKIPS[method][seed]
            row = {"arch": nb201_genotype(skips), "cifar10_test": acc + offset, "cifar10_valid": acc - 1,
                   "params": PARAMS[method][seed]}
            trials.append({"trial_id": tid, "method": method, "space": "nb201", "dataset": "cifar10", "seed": seed,
                           "status": "completed", "epochs": 3, "genotype": nb201_genotype(skips),
                           "final": {"train_acc": 50.0, "valid_acc": 60.0 + seed, "nb201": row},
                           "checkpoint": None, "skip_count": skips, "config": {}})
            histories[tid] = [
                {"epoch": e, "valid_acc": 50.0 + e, "skip_count": skips, "alpha_entropy": 1.6 - 0.1 * e,
                 "epoch_time": 360.0, "nb201": row,
                 "alpha": {"cell": {"1<-0": {op: (0.2 + 0.05 * e if op == "skip_connect" else 0.2 - 0.0125 * e)
                                             for op in OPS}}},
                 **({"hessian_eigenvalue": 0.1 * e * (seed + 1)} if hessian and method == "drnas" else {})}
                for e in (1, 2, 3)]
    return write_experiment(root, "study", trials, histories, moved={"darts_00001", "drnas_00002"})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = synthetic(tmp_path_factory.mktemp("study") / "exp")
    return root, build_report([root], root / "report")


def group(report, method):
    return next(g for g in report["groups"] if g["method"] == method)


def test_group_statistics(study):
    _, report = study
    for method, offset in (("darts", 0.0), ("drnas", 1.0)):
        g, acc = group(report, method), [a + offset for a in B_ACC]
        assert g["objective_name"] == "cifar10_test"  # the nb201 row of the searched dataset, not valid_acc
        assert g["n"] == g["k"] == 4 and g["seeds"] == [0, 1, 2, 3]
        assert g["mean"] == pytest.approx(statistics.mean(acc))
        assert g["std"] == pytest.approx(statistics.stdev(acc))  # ddof=1: 1.5546
        assert g["std"] == pytest.approx(1.5545631, abs=1e-6)
        assert g["best_of_k"] == max(acc) and g["worst"] == min(acc)
        assert g["params_m"] == pytest.approx(statistics.mean(PARAMS[method]))
        assert g["cpu_hours"] == pytest.approx(4 * 3 * 360 * 2.0 / 3600)  # 2.4: also for the moved trials
        assert g["gpu_hours"] == pytest.approx(4 * 3 * 360 * 0.5 / 3600)
    assert group(report, "darts")["collapse_share"] == 0.75 and group(report, "drnas")["collapse_share"] == 0.25
    assert report["ranks"] == {"nb201/cifar10": {"darts": 2.0, "drnas": 1.0}}
    assert report["mean_rank"] == {"darts": 2.0, "drnas": 1.0}


def test_paired_test_on_constructed_difference(study):
    _, report = study
    (t,) = report["tests"]
    assert (t["a"], t["b"], t["n"]) == ("darts", "drnas", 4)
    assert t["mean_diff"] == pytest.approx(-1.0)
    assert t["p_wilcoxon"] == pytest.approx(0.125)  # n=4, all of one sign: 2 / 2**4
    lo, hi = t["ci95"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(-1.0) and not lo <= 0 <= hi
    # 4 pairs of one sign: the smallest p 4 pairs can give, still above 0.05, so no verdict either way
    assert t["min_pairs"] == 6 and t["verdict"].startswith("n too small to test")


def test_paired_test_noise_and_few_pairs():
    noise = paired_test({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, {0: 2.0, 1: 1.0, 2: 4.0, 3: 3.0})
    assert noise["mean_diff"] == 0.0 and noise["p_wilcoxon"] == pytest.approx(1.0)
    assert noise["verdict"].startswith("n too small to test") and noise["ci95"][0] < 0 < noise["ci95"][1]
    assert paired_test({0: 1.0}, {0: 0.0, 1: 2.0})["p_wilcoxon"] is None  # one shared seed: no test
    big = paired_test({s: s + 1.0 for s in range(8)}, {s: float(s) for s in range(8)})
    assert big["p_wilcoxon"] == pytest.approx(2 / 2**8) and big["verdict"].startswith("differ")
    mixed = paired_test({s: float(s % 2) for s in range(8)}, {s: 0.5 for s in range(8)})
    assert mixed["p_wilcoxon"] == pytest.approx(1.0) and mixed["verdict"].startswith("no difference shown")


@pytest.mark.parametrize("n, verdict", [(2, "n too small"), (5, "n too small"), (6, "differ"), (7, "differ")])
def test_no_verdict_below_the_sample_size_the_test_needs(n, verdict):
    """Five pairs of one sign give the smallest p five pairs can (2/32 = 0.0625): still no verdict."""
    from raynas.report.analysis import min_pairs

    assert min_pairs(0.05) == 6 and min_pairs(0.01) == 8 and 2 / 2 ** min_pairs(0.05) < 0.05 <= 2 / 2 ** 5
    t = paired_test({s: s + 1.0 + 0.1 * s for s in range(n)}, {s: float(s) for s in range(n)})
    assert t["verdict"].startswith(verdict) and t["ci95"] is not None
    assert t["p_wilcoxon"] == pytest.approx(2 / 2**n)
    zeros = paired_test({s: 1.0 if s < 5 else 0.0 for s in range(8)}, {s: 0.0 for s in range(8)})
    assert zeros["verdict"].startswith("n too small") and "3 of 8 differences are 0" in zeros["verdict"]


def test_outputs_md_html_json(study):
    root, report = study
    out = root / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<style>" in page
    assert "src='http" not in page and "<link" not in page and "<script" not in page  # self-contained
    rows = page.split("<h2>Trials</h2>")[1]
    for method in ("darts", "drnas"):
        for seed in range(4):
            assert f"<td>{method}_{seed:05d}</td>" in rows
            assert f"<td>{method}</td><td>nb201</td><td>cifar10</td><td>{seed}</td>" in rows
    assert "92.75 ± 1.55" in md and "3/4 (75%)" in md and "0.125" in md
    assert "\\|skip_connect~0\\|" in md  # NB201 genotypes escaped inside markdown tables
    assert set(report["plots"]) == {"alpha evolution (first edge)", "accuracy distribution", "Hessian eigenvalue"}
    assert all(Path(p).is_file() and Path(p).read_bytes()[:4] == b"\x89PNG" for p in report["plots"].values())
    assert json.loads((out / "report.json").read_text())["tests"][0]["p_wilcoxon"] == pytest.approx(0.125)


def test_hessian_plot_skipped_when_absent(tmp_path):
    root = synthetic(tmp_path / "exp", hessian=False)
    report = build_report([root], tmp_path / "out", formats=("md",))
    assert "Hessian eigenvalue" not in report["plots"] and any("hessian_every" in n for n in report["notes"])
    assert (tmp_path / "out" / "report.md").is_file() and not (tmp_path / "out" / "report.html").exists()


def test_explicit_objective_and_rule(tmp_path):
    root = synthetic(tmp_path / "exp")
    report = build_report([root], tmp_path / "out", collapse_rule="param_free_count > 4", objective="valid_acc")
    g = group(report, "darts")
    assert g["objective_name"] == "valid_acc" and g["mean"] == pytest.approx(61.5)
    assert g["collapse_share"] == 0.5  # the 5- and 6-skip genotypes have > 4 parameter-free ops
    assert report["tests"][0]["p_wilcoxon"] == pytest.approx(1.0)  # identical valid_acc per seed


@pytest.mark.parametrize("rule", ["skip_count=>4", "__import__('os').system('x')>1", "flops>=1", "skip_count>=x",
                                  "skip_count>=4; 1"])
def test_bad_collapse_rule(rule):
    with pytest.raises(ConfigError, match="collapse rule"):
        parse_rule(rule)


def test_rule_ops():
    stats = {"skip_count": 4, "param_free_count": 5}
    assert parse_rule("skip_count>=4")(stats) and not parse_rule("skip_count>4")(stats)
    assert parse_rule("param_free_count<=5")(stats) and parse_rule("param_free_count == 5")(stats)
    assert not parse_rule("skip_count<4")(stats) and parse_rule("skip_count_reduce>=1")(stats) is None


def test_darts_genotype_collapse_uses_normal_cell_and_params(tmp_path):
    darts_eval = pytest.importorskip("search_spaces.darts_eval")
    from search_spaces.darts import Genotype, format_genotype, parse_genotype

    sep = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4
    skip = [("skip_connect", 0), ("skip_connect", 1)] * 4
    genos = {"normal_skips": Genotype(skip, [2, 3, 4, 5], sep, [2, 3, 4, 5]),
             "reduce_skips": Genotype(sep, [2, 3, 4, 5], skip, [2, 3, 4, 5])}
    trials = [{"trial_id": name, "method": "darts", "space": "darts", "dataset": "cifar10", "seed": i,
               "status": "completed", "epochs": 1, "genotype": format_genotype(g),
               "final": {"train_acc": 1.0, "valid_acc": 50.0 + i, "nb201": None}, "config": {}}
              for i, (name, g) in enumerate(genos.items())]
    root = write_experiment(tmp_path / "exp", "d", trials, {t["trial_id"]: [] for t in trials})
    report = build_report([root], tmp_path / "out")
    by_id = {t["trial_id"]: t for t in report["trials"]}
    assert by_id["normal_skips"]["collapsed"] is True and by_id["reduce_skips"]["collapsed"] is False
    net = darts_eval.DartsNetwork(parse_genotype(trials[0]["genotype"]), C=36, layers=20, num_classes=10,
                                  auxiliary=False)
    assert by_id["normal_skips"]["params_m"] == pytest.approx(darts_eval.count_params(net) / 1e6)
    assert by_id["reduce_skips"]["params_m"] > by_id["normal_skips"]["params_m"] > 0
    assert by_id["normal_skips"]["cpu_hours"] is None  # no history: no search cost


def test_not_an_experiment(tmp_path):
    with pytest.raises(ConfigError, match="is not a raynas experiment \\(no summary.json\\)"):
        build_report([tmp_path], tmp_path / "out")


def test_cli_register(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./mlflow.db here and no $MLFLOW_TRACKING_URI: nothing to attach to
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = synthetic(tmp_path / "exp")
    parser = argparse.ArgumentParser(prog="raynas")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(root), str(root), "--format", "html", "--out", str(tmp_path / "r"),
                              "--collapse-rule", "skip_count>=5"])
    assert args.func(args) == 0
    assert (tmp_path / "r" / "report.html").is_file() and not (tmp_path / "r" / "report.md").exists()
    assert "html:" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="formats"):
        args.func(parser.parse_args(["report", str(root), "--format", "pdf"]))


def report_cli(*argv):
    parser = argparse.ArgumentParser(prog="raynas")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *map(str, argv), "--tracking-uri", "none"])
    return args.func(args)


def test_report_prints_its_progress_and_quiet_silences_it(tmp_path, capsys, monkeypatch):
    """In a pipe: a line per trial read, figure drawn and file written (``RAYNAS_PROGRESS_S=0``), in that
    order and before the summary line; by default only each stage's first and last; ``--quiet``: none."""
    monkeypatch.delenv("RAYNAS_CONSOLE", raising=False)
    monkeypatch.setenv("RAYNAS_PROGRESS_S", "0")
    root = synthetic(tmp_path / "exp")
    ids = [f"{m}_{s:05d}" for m in ("darts", "drnas") for s in range(4)]
    assert report_cli(root, "--out", tmp_path / "r") == 0
    lines = capsys.readouterr().out.splitlines()
    progress = [ln for ln in lines if re.match(r"report: [a-z ]+ \d+/\d+ \(", ln)]
    assert progress == ([f"report: reading trials {i}/8 (study/{t})" for i, t in enumerate(ids, 1)]
                        + ["report: figures 1/3 (alpha evolution (first edge))", "report: figures 2/3 (accuracy "
                           "distribution)", "report: figures 3/3 (Hessian eigenvalue)"]
                        + [f"report: writing {i}/3 (report.{k})" for i, k in enumerate(("md", "html", "json"), 1)])
    summary = next(i for i, ln in enumerate(lines) if ln.startswith("report: 8 trials, 3 plots in "))
    assert lines.index(progress[-1]) < summary and lines[summary + 1:] == [
        f"{k}: {tmp_path / 'r' / f'report.{k}'}" for k in ("json", "md", "html")]

    monkeypatch.delenv("RAYNAS_PROGRESS_S")  # default: a line at each stage's first and last item
    assert report_cli(root, "--out", tmp_path / "r", "--format", "html") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if " 1/" in ln or " 2/" in ln or " 8/" in ln or " 3/" in ln] == [
        "report: reading trials 1/8 (study/darts_00000)", "report: reading trials 8/8 (study/drnas_00003)",
        "report: figures 1/3 (alpha evolution (first edge))", "report: figures 3/3 (Hessian eigenvalue)",
        "report: writing 1/2 (report.html)", "report: writing 2/2 (report.json)"]

    assert report_cli(root, "--out", tmp_path / "q", "--quiet") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("report: 8 trials, 3 plots in ") and len(lines) == 4, lines  # the files only


def test_stage_progress_redraws_one_line_on_a_terminal(monkeypatch):
    import io

    from raynas.console import StageProgress

    monkeypatch.setenv("COLUMNS", "40")  # a StringIO has no terminal: the width comes from $COLUMNS
    out = io.StringIO()
    progress = StageProgress("report", out, tty=True)
    progress("figures", 1, 2, "alpha evolution (first edge)")
    progress("figures", 2, 2, "accuracy")
    progress.close()
    assert out.getvalue() == ("\r\x1b[Kreport: figures 1/2 (alpha evolution (f"  # cut: a wrapped line stays
                              "\r\x1b[Kreport: figures 2/2 (accuracy)\r\x1b[K")
    quiet = io.StringIO()
    StageProgress("report", quiet, quiet=True, tty=True)("figures", 1, 2)
    assert quiet.getvalue() == ""


def test_attach_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    root = synthetic(tmp_path / "exp")
    build_report([root], root / "report")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("study", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_run(exp_id, tags={"raynas.parent": "false"})
    assert attach_to_mlflow(root / "report", uri, "study") is None  # no parent run: nothing attached
    parent = client.create_run(exp_id, tags={"raynas.parent": "true"}).info.run_id
    assert attach_to_mlflow(root / "report", uri, "study") == parent
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/report.json", "report/plots"} <= names
    assert {a.path for a in client.list_artifacts(parent, "report/plots")} >= {"report/plots/accuracy.png"}
    assert attach_to_mlflow(root / "report", uri, "other") is None
    assert attach_to_mlflow(root / "report", f"sqlite:///{tmp_path / 'none.db'}", "study") is None
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_end_to_end_study(tmp_path, capsys):
    """raynas run: 2 methods x 2 seeds x 1 epoch on digits; the report lists all 4 trials and is attached
    to the experiment's MLflow parent run (a store in tmp_path, not the repository's ./mlflow.db)."""
    fixed = {"epochs": 1, "model": {"C": 4, "layers": 1}, "max_steps_per_epoch": 2, "eval_batches": 1,
             "batch_size": 16}
    grid = {"method": ["darts", "drnas"], "space": ["nb201"], "dataset": ["digits"], "seed": [0, 1]}
    exp = tmp_path / "smoke.yaml"
    exp.write_text(f"name: smoke\ngrid: {json.dumps(grid)}\nfixed: {json.dumps(fixed)}\n"
                   "resources: {cpu: 1, gpu: 0}\n")
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([str(BIN / "raynas"), "run", str(exp), "--out", str(out)], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    parser = argparse.ArgumentParser(prog="raynas")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(out), "--out", str(tmp_path / "report"), "--tracking-uri", uri])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    page = (tmp_path / "report" / "report.html").read_text()
    trials = page.split("<h2>Trials</h2>")[1]
    assert len(summary["trials"]) == 4
    for t in summary["trials"]:
        assert f"<td>{t['trial_id']}</td>" in trials
    assert {(g["method"], g["n"]) for g in report["groups"]} == {("darts", 2), ("drnas", 2)}
    assert all(g["objective_name"] == "valid_acc" and g["cpu_hours"] > 0 for g in report["groups"])
    assert "alpha evolution (first edge)" in report["plots"] and "data:image/png;base64," in page
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                   filter_string="tags.`raynas.parent` = 'true'")
    printed = capsys.readouterr().out.splitlines()
    assert f"attached to MLflow run {parent.info.run_id} (smoke)" in printed
    trial = re.compile(r"report: reading trials ([1-4])/4 \(smoke/\S+\)$")
    assert [trial.match(ln)[1] for ln in printed if trial.match(ln)] == ["1", "4"]  # a pipe: first and last
    assert "report: attaching to MLflow 1/1 (smoke)" in printed
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def test_params_degenerate_and_retrain_join(tmp_path, monkeypatch):
    """Without an NB201 table the params come from the genotype (as `raynas genotype` counts them); a degenerate
    final cell is flagged with its reason; a retrain directory among the sources adds retrained test accuracy."""
    from raynas.genotype_info import describe

    sound, dead = nb201_genotype(2), "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    trials = [{"trial_id": f"t{i}", "method": "darts", "space": "nb201", "dataset": "cifar10", "seed": i,
               "status": "completed", "epochs": 1, "genotype": g, "config": {},
               "final": {"train_acc": 1.0, "valid_acc": 50.0 + i, "nb201": None}} for i, g in enumerate([sound, dead])]
    root = write_experiment(tmp_path / "exp", "e", trials, {t["trial_id"]: [] for t in trials})
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    search = {"trial_id": "t0", "summary": str((root / "summary.json").resolve())}
    entries = [{"space": "nb201", "dataset": "cifar10", "genotype": sound, "seed": s, "status": "completed",
                "test_acc": acc, "search": search} for s, acc in ((0, 91.0), (1, 93.0))]
    entries.append({"space": "nb201", "dataset": "cifar10", "genotype": sound, "seed": 2, "status": "error",
                    "test_acc": None, "search": search})
    (retrain / "retrain_summary.json").write_text(json.dumps({"experiment": "retrain", "trials": entries}))
    report = build_report([root, retrain], tmp_path / "out")
    by_id = {t["trial_id"]: t for t in report["trials"]}
    assert by_id["t0"]["params_m"] > 0
    assert by_id["t0"]["params_m"] == pytest.approx(describe("nb201", sound)["params_m"])
    assert by_id["t1"]["params_m"] == pytest.approx(describe("nb201", dead)["params_m"])
    assert by_id["t0"]["degenerate_reason"] is None
    assert by_id["t1"]["degenerate_reason"] == "NB201 cell: the output is unreachable from the input"
    assert by_id["t0"]["retrain_test_acc"] == 92.0 and by_id["t0"]["retrain_seeds"] == 2  # the errored seed left out
    assert by_id["t1"]["retrain_test_acc"] is None
    (g,) = report["groups"]
    assert g["degenerate"] == 1 and g["retrain_test_acc"] == 92.0 and g["retrain_n"] == 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert "92.00 (1 of 2 trials)" in md and "92.00 (2 seeds)" in md and "| 1/2 |" in md
    lines = md.split("## Trials")[1].splitlines()
    header = lines[2].strip("| ").split(" | ")
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| e |")]
    assert len(rows) == 2 and all(r[header.index("params (M)")] != "–" for r in rows)  # params in every row
    assert any("degenerate cell: NB201 cell: the output is unreachable" in n for n in report["notes"])
    with pytest.raises(ConfigError, match="retrain directories need the experiment"):
        build_report([retrain], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    monkeypatch.chdir(tmp_path)  # the command, with the retrain directory among its sources (never attached)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    parser = argparse.ArgumentParser(prog="raynas")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(root), str(retrain), "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0 and "92.00 (2 seeds)" in (tmp_path / "cli" / "report.md").read_text()
