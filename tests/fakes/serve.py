"""A real `aigen serve` in a subprocess on 127.0.0.1 (port 0), and a browser-like HTTP client for it."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Served:
    proc: subprocess.Popen
    info: dict
    stderr: str = ""

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def aigen_serve(*args: str, env: dict | None = None, timeout: float = 30):
    """Start `aigen serve --port 0 --json ARGS`, yield it once listening, then stop it with Ctrl-C.

    The home is the caller's AIGEN_HOME (the `home` fixture). After the block
    `served.stderr` holds everything the server printed there.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "aigen", "serve", "--port", "0", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    served = None
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"aigen serve ended before listening: {proc.stderr.read()}")
            lines.append(line)
            if line.startswith("}"):
                break
        served = Served(proc, json.loads("".join(lines)))
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        if served is not None:
            served.stderr = err


@dataclass
class Browser:
    """urllib with a cookie jar: logs in through the form like a person would."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self):
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path)
        with self.opener.open(req, timeout=timeout) as r:
            return r.status, r.read()

    def login(self, user_id: str) -> None:
        _, page = self.get("/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
        data = urllib.parse.urlencode({"csrf_token": token, "user_id": user_id, "next": "/"}).encode()
        req = urllib.request.Request(self.base + "/login", data=data, headers={"Origin": self.base})
        with self.opener.open(req, timeout=10) as r:
            assert r.status == 200 and r.url.rstrip("/") == self.base, (r.status, r.url)

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)
