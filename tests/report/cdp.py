"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (``--remote-debugging-pipe``): load a
page, collect its console errors, uncaught exceptions and failed resource loads, and take a full-page screenshot.
No dependency beyond the ``chromium`` binary."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


class _Pipe:
    def __init__(self, binary: str, user_data_dir: str) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def child_fds():  # chromium reads commands on fd 3 and writes replies on fd 4
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        # close_fds=False: the fds 3 and 4 made in the child must survive until exec
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     close_fds=False, preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            for m in self._read(deadline):
                if m.get("id") == want:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for k, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(k)
            self.events += list(self._read(deadline))

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events += list(self._read(deadline))
        except TimeoutError:
            pass

    def _read(self, deadline: float):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply from chromium")
        ready, _, _ = select.select([self._from_r], [], [], left)
        if not ready:
            raise TimeoutError("no reply from chromium")
        chunk = os.read(self._from_r, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed the DevTools pipe")
        self._buf += chunk
        *complete, self._buf = self._buf.split(b"\0")
        return [json.loads(c) for c in complete if c]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass


def render(html_file: str | os.PathLike, screenshot: str | os.PathLike, width: int = 1280,
           binary: str | None = None) -> list[str]:
    """Load ``html_file`` in headless Chromium, write a full-page PNG to ``screenshot`` and return the page's
    errors: console errors/asserts, uncaught exceptions, and error log entries (e.g. resources that failed)."""
    binary = binary or chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="medclass-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.send("Page.navigate", {"url": Path(html_file).resolve().as_uri()}, session=session)
            pipe.wait_event("Page.loadEventFired")
            pipe.drain(0.5)
            size = pipe.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = pipe.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(int(size["height"]), 16000), "scale": 1}},
                session=session)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            errors = []
            for ev in pipe.events:
                method, params = ev.get("method"), ev.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                          for a in params.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    d = params.get("exceptionDetails", {})
                    errors.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
                elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    e = params["entry"]
                    errors.append(f"log: {e.get('text')} {e.get('url', '')}".strip())
            return errors
        finally:
            pipe.close()
