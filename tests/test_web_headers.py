"""Malformed request headers and query values never give a 500: a table of bad values against every route
that reads them, at the WSGI level and over a real waitress socket. Bad ones are ignored, or get 400/416."""

from __future__ import annotations

import logging
import socket
import urllib.parse

import pytest
from fakes.web import Clock, WsgiClient, events, open_home, seed_generation, video_bytes

from aigen.web.app import WebSettings, make_app

DIGITS = "9" * 5000
BAD_DATES = [
    "Mon, 01 Dec 99999 00:00:00 GMT",                   # year 99999 (email.utils: ValueError)
    "Mon, 01 Dec 999999999999999999999 00:00:00 GMT",   # (email.utils: OverflowError)
    "Mon, 32 Dec 2026 00:00:00 GMT",                    # day 32 (email.utils: quietly 1 Jan)
    "Mon, 31 Nov 2026 00:00:00 GMT",
    "Mon, 01 Foo 2026 00:00:00 GMT",                    # month 13 has no name either
    "Mon, 01 Dec 2026 25:61:00 GMT",
    "Mon, 01 Dec 2026 00:00:00 +99999999999999999999",
    DIGITS, "", " ", "yesterday", "\x7f",
]
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


@pytest.fixture
def env(home):
    h, store = open_home(home)
    clock = Clock()

    class Env:
        pass

    e = Env()
    e.home, e.store = h, store
    e.app = make_app(WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic))
    e.gid = seed_generation(store, h, "alice")
    e.vid = next(a["id"] for a in store.assets(e.gid) if a["kind"] == "video")
    e.full = video_bytes(e.gid, 1)
    e.client = WsgiClient(e.app)
    e.client.login("alice")
    return e


# (header value, expected status, expected body) for GET /media/VIDEO.
RANGES = [
    ("bytes=" + DIGITS + "-", 416, None),       # starts past any end
    ("bytes=0-" + DIGITS, 206, "all"),           # ends past the end: clipped
    ("bytes=-" + DIGITS, 206, "all"),            # a suffix longer than the file: all of it
    ("bytes=-5-10", 200, "all"),                 # negative: not a range, ignored
    ("bytes=0-1,5-9", 200, "all"),               # several ranges: the whole file
    ("bytes=5-1", 200, "all"),                   # reversed: ignored
    ("garbage", 200, "all"),
    ("bytes=", 200, "all"),
    ("bytes=-", 200, "all"),
    ("items=0-5", 200, "all"),                   # another unit
    ("bytes=\u0661-\u0662", 200, "all"),         # Arabic-Indic digits are not DIGIT
    ("bytes=0-99\n", 200, "all"),                # a full match, not a "$" that lets a newline through
    ("bytes=0-99", 206, (0, 99)),                # and the good ones still work
    ("bytes=-0", 416, None),
]


@pytest.mark.parametrize("value,status,body", RANGES, ids=[r[0][:16] for r in RANGES])
def test_bad_range_headers_are_ignored_or_416_never_500(env, value, status, body):
    r = env.client.get(f"/media/{env.vid}", headers={"Range": value})
    assert r.status == status, r.text[:200]
    if body == "all":
        assert r.body == env.full
    elif body:
        assert r.body == env.full[body[0]:body[1] + 1]
    else:
        assert r.header("content-range") == f"bytes */{len(env.full)}"


@pytest.mark.parametrize("value", BAD_DATES, ids=[d[:20] or "empty" for d in BAD_DATES])
def test_impossible_dates_in_conditional_headers_are_ignored(env, value):
    for path in (f"/media/{env.vid}", f"/media/{env.vid}/poster"):
        # If-Modified-Since that is not a date: as if absent, the file is sent.
        r = env.client.get(path, headers={"If-Modified-Since": value})
        assert r.status == 200, (path, r.status)
        # If-Range that is not a date (nor an ETag) validates nothing: the whole file, not the range.
        r = env.client.get(path, headers={"If-Range": value, "Range": "bytes=0-9"})
        if value.strip():
            assert r.status == 200 and r.header("content-range") is None, (path, r.status)
        else:  # an empty If-Range is no If-Range
            assert r.status == 206, (path, r.status)


def test_valid_dates_still_work_in_all_three_forms(env):
    r = env.client.get(f"/media/{env.vid}")
    last_modified, etag = r.header("last-modified"), r.header("etag")
    from aigen.web.media import parse_http_date

    t = parse_http_date(last_modified)
    assert t is not None
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777
    for value in BAD_DATES:
        assert parse_http_date(value) is None, value
    assert env.client.get(f"/media/{env.vid}", headers={"If-Modified-Since": last_modified}).status == 304
    assert env.client.get(f"/media/{env.vid}", headers={"If-Modified-Since": FUTURE}).status == 304
    r = env.client.get(f"/media/{env.vid}", headers={"If-Range": last_modified, "Range": "bytes=0-9"})
    assert r.status == 206 and r.body == env.full[:10]
    r = env.client.get(f"/media/{env.vid}", headers={"If-Range": etag, "Range": "bytes=0-9"})
    assert r.status == 206
    r = env.client.get(f"/media/{env.vid}", headers={"If-Range": "W/" + etag, "Range": "bytes=0-9"})
    assert r.status == 200  # a weak tag never validates a range


BAD_NEXT = ["/\n", "/\r", "/%0A", "/g/abcd\n", "//evil.com", "/\\evil.com", "\\\\evil.com", "http://evil.com/",
            "https:evil.com", "/" + "a" * 10_000, "/g/" + "a" * 5000, "/g/abcd/../../x", "", " /", "/\x00",
            "javascript:alert(1)"]


@pytest.mark.parametrize("value", BAD_NEXT, ids=[repr(v[:12]) for v in BAD_NEXT])
def test_a_bad_next_falls_back_to_the_gallery_and_the_login_is_logged_once(env, value):
    c = WsgiClient(env.app)
    before = len(events(env.store, kind="login_ok"))
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "bob", "next": value})
    assert r.status == 303 and r.location == "/", (r.status, r.text[:200])
    assert len(events(env.store, kind="login_ok")) == before + 1
    # Logged in, /login?next=... sends the user on: to the gallery, never elsewhere.
    r = c.get("/login?next=" + urllib.parse.quote(value))
    assert r.status == 303 and r.location == "/"
    # Logged out, the form keeps only a good next.
    r = WsgiClient(env.app).get("/login?next=" + urllib.parse.quote(value))
    assert r.status == 200 and 'name="next" value="/"' in r.text


def test_a_good_next_is_kept(env):
    c = WsgiClient(env.app)
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice", "next": f"/g/{env.gid}"})
    assert r.status == 303 and r.location == f"/g/{env.gid}"


OTHER = [
    ("/", {"Cookie": "aigen_session=" + "x" * 5000}), ("/", {"Cookie": "=;=;;"}), ("/", {"Cookie": 'a="'}),
    ("/?page=" + DIGITS, {}), ("/?page=-5", {}), ("/?page=%FF", {}), ("/api/generations?page=" + DIGITS, {}),
    ("/api/generations?page=1e5", {}), ("/api/generations", {"Authorization": "Basic " + "A" * 5000}),
    ("/api/generations", {"Authorization": "Basic !!!"}), ("/api/generations", {"Authorization": "Basic /w=="}),
    ("/", {"Host": "a" * 5000}), ("/", {"Host": "["}), ("/", {"Host": "127.0.0.1:" + DIGITS}),
    ("/static/style.css", {"If-None-Match": '"' * 5000}), (f"/media/1?download={DIGITS}", {}),
    ("/", {"User-Agent": "x" * 100_000}), ("/", {"X-Forwarded-Host": "a" * 5000}),
    ("/", {"Content-Type": ";;;"}), ("/", {"Content-Length": "abc"}),
    ("/login/link/" + "a" * 5000, {}), ("/login/link/a.b.c", {}), ("/login/link/%FF%FE", {}),
    ("/api/generations", {"X-Forwarded-Proto": "x" * 5000}), ("/api/generations", {"X-Forwarded-Host": "a b"}),
    ("/", {"Forwarded": 'for="[::1'}), ("/", {"Accept": "a" * 10_000}),
]


@pytest.mark.parametrize("path,headers", OTHER, ids=[f"{p[:20]}-{list(h)[:1]}" for p, h in OTHER])
def test_other_bad_values_never_give_a_500(env, path, headers):
    assert env.client.get(path, headers=headers).status < 500
    assert WsgiClient(env.app).get(path, headers=headers).status < 500


BAD_CTYPES = [";;;", "a" * 5000, "multipart/form-data", "multipart/form-data; boundary=",
              'multipart/form-data; boundary="']


@pytest.mark.parametrize("ctype", BAD_CTYPES, ids=[c[:24] for c in BAD_CTYPES])
@pytest.mark.parametrize("path", ["/login", "/logout"])
def test_bad_form_content_types_are_400_or_refused_never_500(env, path, ctype):
    c = WsgiClient(env.app)
    r = c.request("POST", path, data={"user_id": "bob", "csrf_token": c.csrf()}, headers={"Content-Type": ctype})
    assert r.status in (400, 403), r.status
    assert not events(env.store, kind="login_ok", user_id="bob")


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


def test_the_same_over_a_real_server_never_gives_a_500(env, caplog):
    from aigen.web.server import GalleryServer

    cookie = "; ".join(f"{k}={v}" for k, v in env.client.cookies.items())
    media = f"/media/{env.vid}"
    cases = [(media, f"Range: {v}") for v, _, _ in RANGES if "\n" not in v and v.isascii()]
    cases += [(media, f"If-Modified-Since: {d}") for d in BAD_DATES if d.strip()]
    cases += [(media, f"If-Range: {d}\r\nRange: bytes=0-9") for d in BAD_DATES if d.strip()]
    cases += [("/login?next=" + urllib.parse.quote(v, safe=""), "X-A: b") for v in BAD_NEXT]
    cases += [("/", "Content-Length: abc"), ("/", "Content-Length: -1"), ("/", f"Content-Length: {DIGITS}"),
              ("/", "Transfer-Encoding: gzip"), ("/", "X-Folded: a\r\n b"), ("/", "X-Nul: a\x00b"),
              ("/", "X-Bin: \xff\xfe"), ("/", "Bad Header Name: x"), ("/", "X-Huge: " + "a" * 100_000),
              ("/", "Content-Type: ;;;"), ("/%ZZ%00", "X-A: b"), ("/" + "a" * 20_000, "X-A: b")]
    with GalleryServer(env.app, "127.0.0.1", 0) as server:
        for path, header in cases:
            req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nCookie: {cookie}\r\n{header}\r\n"
                   f"Connection: close\r\n\r\n").encode("latin-1")
            out = raw(server.port, req)
            status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else None
            # 501 only for a transfer coding waitress does not implement, as RFC 9112 6.1 says.
            allowed = status is not None and (status < 500 or (status == 501 and "Transfer-Encoding" in header))
            assert allowed, (path[:40], header[:60], out[:120])
        # ...and the server still answers.
        out = raw(server.port, f"GET {media} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                               f"Range: bytes=0-9\r\nConnection: close\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 206") and out.endswith(env.full[:10])
    # Nor a connection dropped with an error in the log (waitress and int() of 5000 digits).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]
