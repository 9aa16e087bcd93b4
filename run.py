"""Entry point for `ray submit cluster.yaml run.py -- EXPERIMENT.yaml [--set key=value ...]`.

On the head node of a running Ray cluster this joins it (``--address auto``); anywhere else it starts a
local Ray instance. Everything after the experiment file is passed to `raynas run`.

`ray submit` uploads this file alone to ``~/run.py``; the project itself is where cluster.yaml's
``file_mounts`` put it, ``~/raynas``. Relative paths (the experiment file, ``--out``) are read there, as
they would be in a checkout, so the submit line needs no paths that only the head can expand.
"""

import os
import sys
from pathlib import Path

#: where cluster.yaml's file_mounts put the project on every node
PROJECT_ON_NODE = Path.home() / "raynas"


def cluster_running() -> bool:
    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").is_file()


def uploaded() -> bool:
    """True for the copy `ray submit` uploaded (no project beside it), False in a checkout."""
    return not (Path(__file__).resolve().parent / "raynas" / "cli.py").is_file()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: ray submit cluster.yaml run.py -- EXPERIMENT.yaml [--out DIR] [--set key=value ...]",
              file=sys.stderr)
        sys.exit(2)
    if uploaded():  # ~/run.py: ~ also holds the project directory `raynas`, which would shadow the package
        os.chdir(PROJECT_ON_NODE)
        sys.path[0] = str(PROJECT_ON_NODE)
    from raynas.cli import main

    if cluster_running() and "--address" not in args:
        args += ["--address", "auto"]
    sys.exit(main(["run", *args]))
