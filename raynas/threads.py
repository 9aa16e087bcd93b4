"""Torch threads per trial, and the warning when trials at once x threads exceed the cores.

One thread per trial unless asked (``--threads`` / ``resources.threads``, or more ``--cpus`` per trial):
on a shared or small machine more threads per trial are often slower, not faster (one digits epoch took
96 s with 2 threads and 6 s with 1 on a busy 2-core box), and results depend on the thread count, so a
default that followed the machine's core count would give different genotypes on different machines.
"""

from __future__ import annotations

import math
import os
import sys


def threads_per_trial(cpus: float, threads: int | None = None) -> int:
    """``threads`` when given, else the whole CPUs a trial holds (at least one)."""
    return threads if threads else max(1, int(cpus))


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def concurrent_trials(n_trials: int, cpus: float, max_concurrent: int | None, total_cpus: float) -> int:
    """How many trials Ray runs at once: bounded by the trials, the limit and the CPUs it can hand out."""
    fit = math.floor(total_cpus / cpus + 1e-9) if cpus > 0 else n_trials
    return max(1, min(n_trials, fit, max_concurrent or n_trials))


def oversubscription(n_trials: int, cpus: float, threads: int, max_concurrent: int | None,
                     total_cpus: float, machine_cores: int) -> str | None:
    """The warning when the trials Ray runs at once would use more threads than ``machine_cores``."""
    at_once = concurrent_trials(n_trials, cpus, max_concurrent, total_cpus)
    if at_once * threads <= machine_cores:
        return None
    return (f"raynas: warning: {at_once} trials at once x {threads} torch threads = {at_once * threads} threads on "
            f"{machine_cores} cores; they will slow each other down (lower --threads / resources.threads, "
            f"raise --cpus per trial or set max_concurrent_trials)")


def warn_oversubscribed(n_trials: int, cpus: float, threads: int, max_concurrent: int | None,
                        address: str | None) -> None:
    """Print the warning (Ray must be up): cores are this machine's for a local instance, the cluster's CPUs
    when joining one."""
    import ray

    total = float(ray.cluster_resources().get("CPU", cores()))
    machine = cores() if not address else int(total)
    message = oversubscription(n_trials, cpus, threads, max_concurrent, total, machine)
    if message:
        print(message, file=sys.stderr, flush=True)
