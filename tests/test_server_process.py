"""``raynas server``: bad ports are refused before a database exists; SIGTERM leaves no process behind."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raynas.cli import main
from raynas.commands.server import _alive, descendants

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_port_out_of_range_writes_no_database(tmp_path, capsys, port):
    assert main(["server", "--port", port, "--backend-store", str(tmp_path / "srv.db"),
                 "--artifacts", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port must be in 1..65535" in err, err
    assert list(tmp_path.iterdir()) == []


def test_port_in_use_writes_no_database(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["server", "--port", str(port), "--backend-store", str(tmp_path / "srv.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_stops_mlflow_and_all_its_workers(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "raynas.cli", "server", "--port", str(port), "--backend-store",
                             str(tmp_path / "srv.db"), "--artifacts", str(tmp_path / "art")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[int] = []
    try:
        end = time.time() + 240
        while time.time() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("mlflow server did not start")
        children = descendants(proc.pid)
        assert children  # mlflow server and its uvicorn worker(s)
        os.kill(proc.pid, signal.SIGTERM)  # the raynas process only, as a service manager would
        assert proc.wait(timeout=60) == 0
        time.sleep(1)
        left = [p for p in children if _alive(p)]
        assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        for pid in [proc.pid, *children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
