"""Entry point for `ray submit cluster.yaml run.py -- EXPERIMENT.yaml [--set key=value ...]`.

On the head node of a running Ray cluster this joins it (``ray.init(address="auto")``); anywhere
else it starts a local Ray instance. Everything after the experiment file is passed to `raynas run`.
"""

import os
import sys
from pathlib import Path


def cluster_running() -> bool:
    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").is_file()


if __name__ == "__main__":
    from raynas.cli import main

    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: ray submit cluster.yaml run.py -- EXPERIMENT.yaml [--out DIR] [--set key=value ...]",
              file=sys.stderr)
        sys.exit(2)
    if cluster_running() and "--address" not in args:
        args += ["--address", "auto"]
    sys.exit(main(["run", *args]))
