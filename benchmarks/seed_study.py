"""Wall time of a seed-robust Optuna study through ``raynas run``: N trials x k seeds, each seed a
search followed by its proxy retrain, on digits (the CPU demo) or any dataset and device.

    python benchmarks/seed_study.py [--trials 4] [--seeds 2] [--epochs 1] [--proxy-epochs 1] \
        [--dataset digits] [--space nb201] [--cpu 0.5] [--gpu 0] [--concurrent 2] [--tiny] \
        [--set key=value ...]

``--tiny`` caps every epoch at 2 steps (the test suite's shapes). Printed: the command's wall time,
Tune's tuning-loop time, the per-trial times (``time_total_s``) and the Optuna values; the last line
is one JSON object with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def experiment(a: argparse.Namespace) -> str:
    fixed = {"epochs": a.epochs, "device": "cuda" if a.gpu > 0 else "cpu"}
    proxy = {"epochs": a.proxy_epochs}
    if a.tiny:
        fixed.update({"batch_size": 16, "max_steps_per_epoch": 2, "eval_batches": 1, "model": {"C": 4, "layers": 1}})
        proxy.update({"channels": 4, "layers": 1, "batch": 32, "max_steps_per_epoch": 2, "eval_batches": 2})
    return f"""name: seed_study_bench
grid: {{method: [darts], space: [{a.space}], dataset: [{a.dataset}], seed: [0]}}
fixed: {json.dumps(fixed)}
proxy: {json.dumps(proxy)}
tune:
  metric: proxy_acc
  num_samples: {a.trials}
  max_concurrent_trials: {a.concurrent}
  seeds_per_trial: {a.seeds}
  space:
    arch.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
resources: {{cpu: {a.cpu}, gpu: {a.gpu}}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--proxy-epochs", dest="proxy_epochs", type=int, default=1)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--space", default="nb201")
    p.add_argument("--cpu", type=float, default=0.5)
    p.add_argument("--gpu", type=float, default=0.0)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="raynas-seed-bench-") as d:
        (Path(d) / "exp.yaml").write_text(experiment(a))
        cmd = [sys.executable, "-m", "raynas.cli", "run", str(Path(d) / "exp.yaml"), "--out", str(Path(d) / "out"),
               "--tracking-uri", f"sqlite:///{Path(d) / 'mlflow.db'}", *[x for s in a.set for x in ("--set", s)]]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=d)
        wall = time.perf_counter() - t0
        if out.returncode:
            sys.exit(f"raynas run failed ({out.returncode}): {out.stderr.strip().splitlines()[-3:]}")
        lines = out.stderr.splitlines() + out.stdout.splitlines()
        loop = next((float(line.split("(")[1].split(" seconds")[0]) for line in lines
                     if "seconds for the tuning loop" in line), None)
        import optuna

        study = optuna.load_study(study_name="seed_study_bench", storage=f"sqlite:///{Path(d) / 'out' / 'optuna.db'}")
        values = [t.value for t in study.trials]
        per_trial = []
        for f in (Path(d) / "out" / "ray_results" / "seed_study_bench").glob("*/result.json"):
            lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            per_trial.append(round(lines[-1]["time_total_s"], 1))
    print(f"{a.trials} trials x {a.seeds} seeds ({a.epochs} search + {a.proxy_epochs} proxy epochs, {a.dataset}, "
          f"{a.space}, {a.cpu} CPU / {a.gpu} GPU per seed, {a.concurrent} concurrent)")
    print(f"raynas run wall {wall:.1f} s; tuning loop {loop} s; per trial {sorted(per_trial)} s")
    print(f"Optuna values {values}")
    print(json.dumps({"wall_s": round(wall, 1), "loop_s": loop, "trial_s": sorted(per_trial), "values": values,
                      "trials": a.trials, "seeds": a.seeds, "nproc": os.cpu_count()}))


if __name__ == "__main__":
    main()
