"""Wall and CPU time of ``make demo``'s search (install excluded), with the CPU of Ray's processes counted.

``/usr/bin/time`` only sees the driver: the trial runs in a Ray worker, a child of the raylet, which nobody
waits for. This script runs the demo's command from the Makefile in a temp directory and samples every
descendant's user+system time in ``/proc`` (Linux) until it exits; the last sample of each process is its
CPU time (so a process that lives under one sampling period is missed: the total is a lower bound).

    python benchmarks/demo_time.py            # prints wall, driver CPU, all-process CPU, load average
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def demo_argv() -> list[str]:
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines()
                if ln.strip().startswith("$(BIN)/raynas search"))
    return [sys.executable, "-m", "raynas.cli", *line.split()[1:]]


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system seconds) of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def descendants_cpu(root: int, seen: dict[int, float]) -> None:
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    for pid in family - {root}:
        if pid in stats:
            seen[pid] = max(seen.get(pid, 0.0), stats[pid][1])


def main() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.Popen(demo_argv(), cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        seen: dict[int, float] = {}
        driver = 0.0
        while proc.poll() is None:
            if (s := _stat(proc.pid)) is not None:
                driver = max(driver, s[1])
            descendants_cpu(proc.pid, seen)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{out}")
    print(" ".join(demo_argv()[3:]))
    print(f"wall {wall:.1f} s; CPU: driver >= {driver:.1f} s, Ray processes >= {sum(seen.values()):.1f} s "
          f"({len(seen)} processes), total >= {driver + sum(seen.values()):.1f} s; "
          f"load average before/after: {load0:.2f}/{os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    print("last lines:\n" + "\n".join(out.splitlines()[-3:]))


if __name__ == "__main__":
    main()
