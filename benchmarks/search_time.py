"""Wall time of a whole search run directly on the engine (``trials.bilevel.Search``, no Ray), epoch by epoch.

For a GPU box without Ray, and as the direct half of ``tune_overhead.py``:

    python benchmarks/search_time.py --set method=darts --set space=nb201 --set dataset=cifar10 \
        --set data_dir=/data --set epochs=50 [--set nb201_table=nb201.csv.gz] [--out DIR]

One line per epoch (time, images/s, valid acc, skip count, NB201 lookup); the last line is one JSON
object with the config, total and per-epoch seconds, peak memory, the genotype and its NB201 lookup.
``--out DIR`` also saves a checkpoint after every epoch and resumes from it when present.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mib  # noqa: E402

from raynas.config import parse_set, resolve  # noqa: E402
from raynas.data import load_dataset  # noqa: E402
from trials.bilevel import Search  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="checkpoint here every epoch; resume from it")
    p.add_argument("--max-seconds", type=float, help="stop after the epoch that passes this wall time")
    a = p.parse_args()
    cfg = resolve(parse_set(a.set))
    t_start = time.perf_counter()
    if torch.cuda.is_available() and cfg.device != "cpu":
        torch.backends.cudnn.benchmark = True
    s = Search(cfg, load_dataset(cfg.dataset, cfg.data_dir, cfg.download))
    ckpt = Path(a.out, "search.pt") if a.out else None
    if ckpt and ckpt.exists():
        s.load(ckpt)
        print(f"# resumed at epoch {s.epoch}", flush=True)
    setup = time.perf_counter() - t_start
    print(f"# {machine()}; {cfg.method} on {cfg.space}/{cfg.dataset}, seed {cfg.seed}, batch {cfg.batch_size}, "
          f"{s.w_stream.n}/{s.a_stream.n} images; setup {setup:.1f} s", flush=True)
    epoch_times = []
    while s.epoch < cfg.epochs:
        t0 = time.perf_counter()
        m = s.run_epoch()
        epoch_times.append(time.perf_counter() - t0)
        nb = m.get("nb201") or {}
        print(f"epoch {m['epoch']:>3} {epoch_times[-1]:7.1f} s {m['images_per_s']:8.0f} img/s  valid "
              f"{m['valid_acc'] or 0:6.2f}  skips {m.get('skip_count', '-')}  nb201 {nb.get('cifar10_test', '-')}  "
              f"{m['genotype']}", flush=True)
        if ckpt:
            s.save(ckpt)
        if a.max_seconds and time.perf_counter() - t_start > a.max_seconds:
            print(f"# stopped after epoch {s.epoch}: --max-seconds {a.max_seconds}", flush=True)
            break
    r = s.result()
    print(json.dumps({"method": cfg.method, "space": cfg.space, "dataset": cfg.dataset, "seed": cfg.seed,
                      "epochs_run": len(epoch_times), "epoch": s.epoch, "setup_s": setup,
                      "search_s": sum(epoch_times), "epoch_s": epoch_times, "peak_mib": peak_mib(s.device),
                      "genotype": r.genotype, "nb201": r.final.get("nb201"), "valid_acc": r.final.get("valid_acc"),
                      "machine": machine()}))


if __name__ == "__main__":
    main()
