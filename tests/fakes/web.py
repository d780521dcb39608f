"""Helpers for the gallery tests: a WSGI client with a cookie jar, a clock the
test moves by hand, and ways to put generations in a home (fake files for the
WSGI tests, the real pipeline for the browser tests)."""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from aigen.config import Home, resolve_home
from aigen.store import Store

T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=timezone.utc)


class Clock:
    """Wall clock and monotonic clock in one, moved only by the test."""

    def __init__(self, start: datetime = T0):
        self.now = start
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def location(self) -> str | None:
        return self.header("location")


@dataclass
class WsgiClient:
    """Calls the app the way a WSGI server would, keeping cookies like a browser.

    `path` is what the server puts in PATH_INFO, i.e. already percent-decoded;
    pass raw=True to send it exactly as given.
    """

    app: object
    host: str = "127.0.0.1:8000"
    remote_addr: str = "127.0.0.1"
    user_agent: str = "aigen-tests/1.0"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, *, data: dict | None = None, headers: dict | None = None,
                raw: bool = False) -> Resp:
        from urllib.parse import unquote

        parts = urlsplit(path) if not raw else None
        path_info = path if raw else unquote(parts.path)
        query = "" if raw else parts.query
        body = urlencode(data).encode() if data is not None else b""
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            # PEP 3333: PATH_INFO is bytes decoded as latin-1.
            "PATH_INFO": path_info.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr,
            "HTTP_HOST": self.host,
            "HTTP_USER_AGENT": self.user_agent,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        if data is not None:
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for k, v in (headers or {}).items():
            key = k.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = v
            else:
                environ["HTTP_" + key] = v
        captured = {}

        def start_response(status, header_list, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = header_list

        chunks = self.app(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        header_list = captured["headers"]
        for k, v in header_list:
            if k.lower() == "set-cookie":
                c = SimpleCookie()
                c.load(v)
                for name, morsel in c.items():
                    if morsel["max-age"] == "0" or morsel.value == "":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
        headers = {}
        for k, v in header_list:
            headers[k.lower()] = v
        return Resp(captured["status"], headers, header_list, out)

    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: dict | None = None, **kw) -> Resp:
        return self.request("POST", path, data=data or {}, **kw)

    def csrf(self, path: str = "/login") -> str:
        page = self.get(path)
        if page.status == 303:  # already logged in: /login sends you on; the token is on every page
            page = self.get(page.location)
        m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert m, f"no CSRF token on {path}: {page.status} {page.text[:300]}"
        return m.group(1)

    def login(self, user_id: str, code: str | None = None, *, expect: int = 303) -> Resp:
        data = {"csrf_token": self.csrf(), "user_id": user_id, "next": "/"}
        if code is not None:
            data["access_code"] = code
        r = self.post("/login", data)
        assert r.status == expect, (r.status, r.text[:500])
        return r


def open_home(home_dir) -> tuple[Home, Store]:
    home = resolve_home(home_dir)
    home.ensure()
    return home, Store(home.db_path)


def open_backend(request, home_dir, monkeypatch, backend: str):
    """The home and its store on `backend` ("sqlite", or "postgresql": cluster mode, which the CLI then reads
    through AIGEN_DATABASE_URL; the store is closed when the test ends)."""
    if backend == "sqlite":
        return open_home(home_dir)
    from aigen.store.pg import PgStore

    url = request.getfixturevalue("pg_database")
    monkeypatch.setenv("AIGEN_DATABASE_URL", url)
    home = resolve_home(home_dir)
    home.ensure()
    store = PgStore(url)
    request.addfinalizer(store.close_all)
    return home, store


def video_bytes(gid: str, idx: int, size: int = 50_000) -> bytes:
    """Deterministic bytes standing in for a video: Range answers can be checked byte for byte."""
    seed = f"{gid}:{idx}:".encode()
    out = bytearray()
    n = 0
    while len(out) < size:
        out += seed + n.to_bytes(4, "big")
        n += 1
    return bytes(out[:size])


def tiny_png_bytes(width: int = 8, height: int = 8, colour=(200, 80, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def seed_generation(store: Store, home: Home, user_id: str, prompt: str = "a red fox at dawn", *, images: int = 5,
                    videos: int = 5, fail: tuple = (), finish: bool = True, now: datetime | None = None) -> str:
    """A generation with files written straight to disk (not real media: fast, for WSGI tests).

    `fail` lists ("image", 2)-style assets to mark failed with a reason;
    finish=False leaves the generation Processing with nothing made.
    """
    import hashlib

    assets = [{"kind": "image", "idx": i, "provider": "local", "model": "procedural-v1", "seed": i, "width": 8,
               "height": 8} for i in range(1, images + 1)]
    assets += [{"kind": "video", "idx": i, "provider": "local", "model": "procedural-v1", "seed": 100 + i,
                "width": 320, "height": 240, "duration": 1.5, "fps": 24} for i in range(1, videos + 1)]
    gen = {"user_id": user_id, "prompt": prompt, "image_provider": "local", "video_provider": "local",
           "image_model": "procedural-v1", "video_model": "procedural-v1", "image_count": images,
           "video_count": videos, "seed": 7, "options": {}}
    gid = store.create_generation(gen, assets, now=now)
    if not finish:
        return gid
    directory = home.content_dir / user_id / gid
    directory.mkdir(parents=True, exist_ok=True)
    for a in store.assets(gid):
        if (a["kind"], a["idx"]) in fail:
            store.fail_asset(a["id"], f"provider said no to {a['kind']} {a['idx']}", code="http_500", now=now)
            continue
        if a["kind"] == "image":
            data = tiny_png_bytes(colour=(a["idx"] * 40, 80, 40))
            path = directory / f"image_{a['idx']}.png"
            path.write_bytes(data)
            info = {"width": 8, "height": 8}
        else:
            data = video_bytes(gid, a["idx"])
            path = directory / f"video_{a['idx']}.mp4"
            path.write_bytes(data)
            poster = directory / f"video_{a['idx']}.poster.jpg"
            poster.write_bytes(b"\xff\xd8\xff\xe0 poster " + gid.encode())
            info = {"width": 320, "height": 240, "duration": 1.5, "fps": 24,
                    "poster_path": poster.relative_to(home.path).as_posix()}
        info.update(path=path.relative_to(home.path).as_posix(), bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest())
        store.complete_asset(a["id"], info, now=now)
    store.finalize_generation(gid, now=now)
    return gid


def real_generation(home: Home, store: Store, user_id: str, prompt: str, *, images: int = 5, videos: int = 5,
                    run: bool = True, now: datetime | None = None) -> str:
    """A generation made by the real pipeline and the `local` provider, at small sizes."""
    from aigen.pipeline.plan import RequestSpec, prepare
    from aigen.pipeline.run import Runner

    spec = RequestSpec(user_id=user_id, prompt=prompt, images=images, videos=videos, image_provider="local",
                       video_provider="local", image_size="256x256", video_size="320x240", duration=1.5, fps=24,
                       seed=11)
    gen, assets = prepare(spec, home=home.path)
    gid = store.create_generation(gen, assets, now=now)
    if run:
        result = Runner(store, home).run(gid)
        assert result.generation["status"] == "Completed", result.generation.get("error")
    return gid


def events(store: Store, **where) -> list[dict]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "1"
    return store.query(f"SELECT * FROM events WHERE {clause} ORDER BY id", list(where.values()))


def kinds(store: Store) -> dict[str, int]:
    return {r["kind"]: r["n"] for r in store.query("SELECT kind, count(*) AS n FROM events GROUP BY kind")}


def path_of(store: Store, home: Home, asset_id: int) -> Path:
    return home.path / store.get_asset(asset_id)["path"]
