"""Start and stop a real MONAI Label server on medclass bundles from Python (tutorial, tests, scripts).

It runs exactly ``monailabel start_server --app APP --studies STUDIES --conf bundles A,B --uvicorn_app
medclass.label.server:app --host HOST --port PORT`` (as ``python -m monailabel.main``, which is what the
``monailabel`` script executes, with this interpreter).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["free_port", "server_command", "start_server", "wait_until_ready", "stop_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(app: str | os.PathLike, studies: str | os.PathLike, bundles: Sequence[str | os.PathLike],
                   host: str = "127.0.0.1", port: int = 8000, extra_conf: dict | None = None,
                   executable: str | None = None) -> list[str]:
    """The ``monailabel start_server`` command line (as ``python -m monailabel.main``)."""
    cmd = [executable or sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app),
           "--studies", str(studies), "--conf", "bundles", ",".join(str(b) for b in bundles)]
    for key, value in (extra_conf or {}).items():
        cmd += ["--conf", key, value if isinstance(value, str) else json.dumps(value)]
    return cmd + ["--uvicorn_app", "medclass.label.server:app", "--host", host, "--port", str(port)]


def start_server(app: str | os.PathLike, studies: str | os.PathLike, bundles: Sequence[str | os.PathLike],
                 log_file: str | os.PathLike, host: str = "127.0.0.1", port: int | None = None,
                 extra_conf: dict | None = None, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a MONAI Label server in the background.

    Args:
        app: the app folder (``medclass label-app [DIR]``).
        studies: the studies (datastore) folder.
        bundles: medclass bundle folders to serve.
        log_file: where the server's output goes.
        host, port: address (``port=None``: a free port).
        extra_conf: more ``--conf`` pairs (e.g. ``{"bundle_overrides": {"num_threads": 2}}``).
        env: environment of the server (default: this process's).

    Returns:
        ``(process, base_url)``; stop it with :func:`stop_server`.
    """
    port = port or free_port(host)
    cmd = server_command(app, studies, bundles, host, port, extra_conf)
    log = open(log_file, "w")
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(Path(app)))
    log.close()
    return proc, f"http://{host}:{port}"


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0, log_file: str | None = None) -> float:
    """Poll ``GET url/info/`` until it answers 200; returns the seconds waited.

    Raises:
        RuntimeError: the server process ended or did not answer within ``timeout`` (with the log's tail).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    tail = Path(log_file).read_text()[-4000:] if log_file and Path(log_file).exists() else ""
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"no answer after {timeout:.0f} s"
    raise RuntimeError(f"MONAI Label server at {url}: {state}\n{tail}")


def wait_for_training(url: str, timeout: float = 300.0, poll: float = 1.0) -> dict:
    """Poll ``GET <url>/train/`` until the training run is no longer SUBMITTED/RUNNING (or ``timeout`` seconds
    pass); returns the last status (``status``, ``details``, ...)."""
    t0 = time.monotonic()
    while True:
        with urllib.request.urlopen(f"{url}/train/", timeout=30) as res:
            status = json.loads(res.read())
        if status.get("status") not in ("SUBMITTED", "RUNNING") or time.monotonic() - t0 > timeout:
            return status
        time.sleep(poll)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop the server started by :func:`start_server` (by its process id), killing it if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
