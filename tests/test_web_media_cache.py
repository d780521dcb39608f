"""What /media keeps between requests (aigen.web.media.MediaGrants, the decoded session cookie) never outlives
what it was kept for: a session ended anywhere, a deleted generation, another user, the TTL. And the file sent
with os.sendfile under waitress is byte for byte the range asked for. Correctness, not timing."""

from __future__ import annotations

import hashlib
import http.client
import re
from datetime import datetime, timezone

import pytest
from fakes.web import Clock, WsgiClient, events, open_backend, open_home, path_of, seed_generation, video_bytes

from aigen.web import access
from aigen.web.app import WebSettings, make_app
from aigen.web.media import MediaGrants

CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def gallery_env(h, store):
    """The gallery app on `store`, with a clock of its own (started at the real time: the CLI uses it)."""
    clock = Clock(datetime.now(timezone.utc).replace(microsecond=0))

    class Env:
        pass

    e = Env()
    e.home, e.store, e.clock = h, store, clock
    e.app = make_app(WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic))
    e.grants = e.app.gallery.grants
    e.client = lambda **kw: WsgiClient(e.app, **kw)
    return e


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, home, monkeypatch):
    return gallery_env(*open_backend(request, home, monkeypatch, request.param))


@pytest.fixture
def sqlite_env(home):
    return gallery_env(*open_home(home))


def video_ids(store, gid):
    return [a["id"] for a in store.assets(gid) if a["kind"] == "video"]


def warm(c, vid, gid, idx=1):
    """Fetch a video twice (the second from the grant) and check the bytes."""
    for rng in ("bytes=0-99", "bytes=100-"):
        r = c.get(f"/media/{vid}", headers={"Range": rng})
        assert r.status == 206, r.status
    assert c.get(f"/media/{vid}").body == video_bytes(gid, idx)


def page_token(c, path="/"):
    return CSRF_RE.search(c.get(path).text).group(1)


def count_ownership_lookups(monkeypatch, store) -> list:
    seen = []
    real = store.query_one

    def counting(sql, *a, **kw):
        if "FROM assets a JOIN generations g" in sql:
            seen.append(sql)
        return real(sql, *a, **kw)

    monkeypatch.setattr(store, "query_one", counting)
    return seen


# -- the grant is used, and only while it may be --------------------------------------------------------------


def test_a_videos_range_requests_look_the_asset_up_once_and_log_one_view(sqlite_env, monkeypatch):
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    lookups = count_ownership_lookups(monkeypatch, env.store)
    for start in range(0, 50_000, 10_000):
        r = c.get(f"/media/{vid}", headers={"Range": f"bytes={start}-{start + 9_999}"})
        assert r.status == 206 and r.body == video_bytes(gid, 1)[start:start + 10_000]
    assert len(lookups) == 1
    assert [e["asset_id"] for e in events(env.store, kind="asset_view")] == [vid]
    # Another session of the same user is another view, and its own lookup.
    other = env.client()
    other.login("alice")
    assert other.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 206
    assert len(lookups) == 2 and len(events(env.store, kind="asset_view")) == 2


def test_a_grant_lives_at_most_its_ttl(sqlite_env, monkeypatch):
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    lookups = count_ownership_lookups(monkeypatch, env.store)
    assert c.get(f"/media/{vid}").status == 200
    env.clock.advance(MediaGrants.TTL_S - 0.5)
    assert c.get(f"/media/{vid}").status == 200 and len(lookups) == 1
    # A change another process made to the row (here: the file is no longer done) is seen after the TTL.
    env.store.db.conn.execute("UPDATE assets SET status = 'failed' WHERE id = ?", (vid,))
    env.clock.advance(1)
    assert c.get(f"/media/{vid}").status == 404 and len(lookups) == 2


def test_grants_are_bounded():
    clock = Clock()
    grants = MediaGrants(clock.monotonic, ttl_s=5, size=3)
    from aigen.web.media import Grant

    for i in range(5):
        grants.put("s", i, None, Grant({"generation_id": "g", "user_id": "u"}, "x"))
    assert len(grants) == 3 and grants.get("s", 0, None) is None and grants.get("s", 4, None) is not None
    clock.advance(5)
    assert grants.get("s", 4, None) is None


# -- a session ended anywhere fetches nothing more, warm grant or not ------------------------------------------


def test_logout_ends_what_the_session_may_fetch_at_once(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    warm(c, vid, gid)
    old = dict(c.cookies)
    assert len(env.grants) == 1
    assert c.post("/logout", {"csrf_token": page_token(c)}).status == 303
    assert len(env.grants) == 0
    thief = env.client()
    thief.cookies = old  # the cookie as it was before logout: signed, unexpired, and decoded before
    assert thief.get(f"/media/{vid}", headers={"Range": "bytes=0-99"}).status == 401
    assert thief.get(f"/media/{vid}/poster").status == 401


def test_a_session_revoked_by_another_process_fetches_nothing_more(env, cli):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    bob = env.client()
    bob.login("bob")
    warm(c, vid, gid)
    r = cli("user", "sessions", "alice", "--revoke-all")
    assert r.exit_code == 0, r.output
    # The grant is still in this process's memory: the session check before it refuses.
    assert len(env.grants) == 1
    assert c.get(f"/media/{vid}", headers={"Range": "bytes=100-199"}).status == 401
    assert len(env.grants) == 0  # and the ended session's grants are dropped when it is found ended
    assert bob.get("/").status == 200


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_user_code_revoke_or_rotate_ends_media_access_at_once(env, cli, how):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    code = access.set_code(env.store, "alice")
    # Off loopback, by code, and on loopback by user_id: both sessions end.
    remote = WsgiClient(make_app(WebSettings(home=env.home, store=env.store, clock=env.clock, host="0.0.0.0",
                                             monotonic=env.clock.monotonic)),
                        remote_addr="192.0.2.10", host="gallery.example:8000")
    remote.login("alice", code)
    local = env.client()
    local.login("alice")
    warm(remote, vid, gid)
    warm(local, vid, gid)
    r = cli("user", "code", "alice", f"--{how}")
    assert r.exit_code == 0, r.output
    assert remote.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 401
    assert local.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 401


def test_an_expired_session_cookie_is_refused_though_it_was_decoded_before(sqlite_env):
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    warm(c, vid, gid)
    env.clock.advance(24 * 3600 + 1)
    assert c.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 401


# -- a deleted generation's files: 404 at once ------------------------------------------------------------------


def test_deleted_from_the_gallery_its_media_is_404_at_once_for_every_session(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    other_tab = env.client()
    other_tab.login("alice")
    warm(c, vid, gid)
    warm(other_tab, vid, gid)
    assert len(env.grants) == 2
    token = CSRF_RE.search(c.get(f"/g/{gid}/delete").text).group(1)
    assert c.post(f"/g/{gid}/delete", {"csrf_token": token}).status == 303
    assert len(env.grants) == 0
    for client in (c, other_tab):
        assert client.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 404
        assert client.get(f"/media/{vid}/poster").status == 404


def test_deleted_by_aigen_delete_in_another_process_its_media_is_404_at_once(env, cli):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    warm(c, vid, gid)
    assert c.get(f"/media/{vid}/poster").status == 200
    r = cli("delete", gid, "--yes")
    assert r.exit_code == 0, r.output
    assert len(env.grants) == 2  # this process was not told: its grants are still there...
    # ...and still nothing is served: the files went before the rows, and each request opens its file.
    assert c.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 404
    assert c.get(f"/media/{vid}/poster").status == 404
    assert len(env.grants) == 0


def test_a_file_removed_under_a_warm_grant_is_404_not_a_500(sqlite_env):
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    warm(c, vid, gid)
    path = path_of(env.store, env.home, vid)
    path.unlink()
    assert c.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 404
    path.mkdir()  # not a regular file either
    assert c.get(f"/media/{vid}").status == 404


# -- another user: the same 404 as a missing asset, warm cache or not ------------------------------------------


def test_another_users_asset_is_404_with_a_warm_cache(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    alice = env.client()
    alice.login("alice")
    warm(alice, vid, gid)
    bob = env.client()
    bob.login("bob")
    for path in (f"/media/{vid}", f"/media/{vid}/poster", f"/media/{vid}/thumb"):
        assert bob.get(path, headers={"Range": "bytes=0-9"}).status == 404, path
    # The same browser logging in as bob over alice's session: her grants go with her session.
    alice.login("bob")
    assert len(env.grants) == 0
    assert alice.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 404
    assert env.client().get(f"/media/{vid}").status == 401


# -- os.sendfile under waitress --------------------------------------------------------------------------------


def serve_ranges(app, cookie, path, ranges):
    from aigen.web.server import GalleryServer

    out = []
    with GalleryServer(app, "127.0.0.1", 0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for rng in ranges:
            conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1", "Range": rng})
            resp = conn.getresponse()
            out.append((resp.status, resp.read()))
        conn.close()
    return out


@pytest.mark.parametrize("sendfile", ["sendfile", "no_sendfile_support", "sendfile_off"])
def test_ranges_over_a_real_socket_are_exact_with_or_without_sendfile(sqlite_env, monkeypatch, sendfile):
    import errno
    import os

    from aigen.web import server as server_mod

    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(200_000))  # 6.4 MB
    path = path_of(env.store, env.home, vid)
    path.write_bytes(data)
    env.store.db.conn.execute("UPDATE assets SET bytes = ?, sha256 = ? WHERE id = ?",
                              (len(data), hashlib.sha256(data).hexdigest(), vid))
    calls = []
    real = os.sendfile

    def fake_sendfile(*a):
        calls.append(a)
        if sendfile == "no_sendfile_support":
            raise OSError(errno.EINVAL, "not here")  # a file system without it: waitress's own way
        return real(*a)

    monkeypatch.setattr(os, "sendfile", fake_sendfile)
    monkeypatch.setattr(server_mod, "SENDFILE", sendfile != "sendfile_off")
    c = env.client()
    c.login("alice")
    cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    ranges = ["bytes=0-99", "bytes=1000000-3099999", "bytes=-5", f"bytes={len(data) - 1}-", "bytes=0-"]
    got = serve_ranges(env.app, cookie, f"/media/{vid}", ranges)
    assert [s for s, _ in got] == [206] * 5
    assert got[0][1] == data[:100] and got[1][1] == data[1_000_000:3_100_000]
    assert got[2][1] == data[-5:] and got[3][1] == data[-1:] and got[4][1] == data
    assert bool(calls) == (sendfile != "sendfile_off")
    assert len(events(env.store, kind="asset_view")) == 1


def test_a_file_cut_short_while_it_is_sent_closes_the_connection(sqlite_env, monkeypatch):
    """Content-Length promised more than the file now has: the response cannot be completed, so the connection
    is closed (the client sees a short body), never left hanging."""
    from aigen.web import server as server_mod

    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    path = path_of(env.store, env.home, vid)
    real = server_mod._sendfile_source

    def cut_then_send(outbuf):
        fd = real(outbuf)
        if fd is not None:
            path.write_bytes(b"")  # truncated after it was opened and its size announced
        return fd

    monkeypatch.setattr(server_mod, "_sendfile_source", cut_then_send)
    c = env.client()
    c.login("alice")
    cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    from aigen.web.server import GalleryServer

    with GalleryServer(env.app, "127.0.0.1", 0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/media/{vid}", headers={"Cookie": cookie, "Host": "127.0.0.1"})
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
        conn.close()


def test_session_cookies_are_decoded_once_per_cookie(sqlite_env, monkeypatch):
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    codec = env.app.gallery.codec
    calls = []
    real = codec._signer.loads
    monkeypatch.setattr(codec._signer, "loads", lambda text: calls.append(text) or real(text))
    for _ in range(5):
        assert c.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 206
    assert len(calls) <= 1
    # A tampered cookie is checked (and refused) like any other.
    bad = env.client()
    bad.cookies = {k: v[:-2] + ("AA" if not v.endswith("AA") else "BB") for k, v in c.cookies.items()}
    assert bad.get(f"/media/{vid}").status == 401


def test_the_provider_filter_follows_new_generations(sqlite_env):
    env = sqlite_env
    seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    assert '<option value="runway"' not in c.get("/").text
    gid = seed_generation(env.store, env.home, "alice")
    env.store.db.conn.execute("UPDATE generations SET video_provider = 'runway' WHERE id = ?", (gid,))
    page = c.get("/").text
    assert re.search(r'<option value="runway"', page), "a provider used by a new generation is offered at once"


# -- the fast lane (Gallery.media_fast) and the worker's send ---------------------------------------------------


def test_the_fast_lane_answers_exactly_as_the_route_does(sqlite_env, monkeypatch):
    """Every request the fast lane may take gets the same status, headers and bytes as through bottle's route,
    and whatever it may not take (no grant yet, a query, HEAD, Basic auth, a variant, a logged-out session)
    goes the usual way."""
    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    g = env.app.gallery
    used = []
    real = type(g).media_fast

    def spy(self, environ):
        out = real(self, environ)
        used.append(out is not None)
        return out

    monkeypatch.setattr(type(g), "media_fast", spy)
    c = env.client()
    c.login("alice")
    etag = c.get(f"/media/{vid}", headers={"Range": "bytes=0-0"}).headers["etag"]
    asks = [{"Range": "bytes=0-99"}, {"Range": "bytes=100-"}, {"Range": "bytes=-7"}, {},
            {"If-None-Match": etag}, {"Range": "bytes=5-9", "If-Range": etag},
            {"Range": "bytes=5-9", "If-Range": '"other"'}, {"Range": "bytes=999999999-"},
            {"Range": "bytes=0-1,5-6"}]

    def answers():
        out = []
        for h in asks:
            r = c.get(f"/media/{vid}", headers=h)
            headers = {k: v for k, v in r.headers.items() if k.lower() != "date"}
            out.append((r.status, headers, r.body))
        return out

    used.clear()
    fast = answers()
    assert all(used)
    monkeypatch.setattr(g, "fast_media", False)
    used.clear()
    routed = answers()
    assert not used
    for a, b in zip(fast, routed):
        assert a == b, (sorted(set(a[1].items()) ^ set(b[1].items())), a[0], b[0])
    assert [s for s, _, _ in fast] == [206, 206, 206, 200, 304, 206, 200, 416, 200]
    monkeypatch.setattr(g, "fast_media", True)
    used.clear()
    assert c.get(f"/media/{vid}?download=1").status == 200
    assert c.get(f"/media/{vid}/poster").status in (200, 404)
    assert c.request("HEAD", f"/media/{vid}").status == 200
    assert not any(used)
    # Another session has no grant yet: the route finds the asset (and keeps the grant), then the lane.
    other = env.client()
    other.login("alice")
    used.clear()
    assert other.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 206
    assert other.get(f"/media/{vid}", headers={"Range": "bytes=10-19"}).status == 206
    assert used == [False, True]
    # Logged out: the lane does not answer, the route says 401. Views logged: one per session and purpose
    # (the first session's view and its download, the second's view).
    token = page_token(c)
    assert c.post("/logout", {"csrf_token": token}).status == 303
    used.clear()
    assert c.get(f"/media/{vid}", headers={"Range": "bytes=0-9"}).status == 401
    assert used == [False]
    assert sorted(e["detail"].split()[0] for e in events(env.store, kind="asset_view")) == ["download", "view", "view"]


def test_a_slow_reader_is_left_to_the_io_loop_and_gets_every_byte(sqlite_env, monkeypatch):
    """A worker sends a file on the socket made blocking, for at most WORKER_SEND_S per response: a client that
    does not read holds it no longer than that (another client is answered meanwhile), and when it reads it
    gets the whole range, from the I/O loop."""
    import socket
    import threading

    from aigen.web import server as server_mod
    from aigen.web.server import GalleryServer

    env = sqlite_env
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    import os

    data = os.urandom(48 << 20)  # more than the socket buffers on both sides take
    path = path_of(env.store, env.home, vid)
    path.write_bytes(data)
    env.store.db.conn.execute("UPDATE assets SET bytes = ?, sha256 = ? WHERE id = ?",
                              (len(data), hashlib.sha256(data).hexdigest(), vid))
    monkeypatch.setattr(server_mod, "WORKER_SEND_S", 0.05)
    c = env.client()
    c.login("alice")
    cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    with GalleryServer(env.app, "127.0.0.1", 0, threads=1) as server:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(f"GET /media/{vid} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
        # The only worker thread gave the slow client up after WORKER_SEND_S: a second client is answered
        # while the first has read nothing.
        done = threading.Event()
        result = {}

        def second():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", f"/media/{vid}", headers={"Cookie": cookie, "Host": "127.0.0.1",
                                                          "Range": "bytes=0-99"})
            resp = conn.getresponse()
            result["second"] = (resp.status, resp.read())
            conn.close()
            done.set()

        t = threading.Thread(target=second)
        t.start()
        assert done.wait(10), "a client that does not read held the only worker"
        t.join()
        assert result["second"] == (206, data[:100])
        got = b""
        while b"\r\n\r\n" not in got:
            got += slow.recv(65536)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < len(data):
            chunk = slow.recv(1 << 20)
            assert chunk, "the connection closed early"
            body += chunk
        slow.close()
    assert body == data


# -- congestion control on loopback (aigen.web.server.loopback_congestion) -------------------------------------
def _congestion(sock) -> bytes:
    import socket

    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")


def _pair_with(algorithm: bytes, family: str = "127.0.0.1"):
    """A connected TCP pair over `family`'s loopback whose accepted end uses `algorithm` (skip when the
    kernel will not)."""
    import socket

    if not hasattr(socket, "TCP_CONGESTION"):
        pytest.skip("no TCP_CONGESTION on this platform")
    fam = socket.AF_INET6 if ":" in family else socket.AF_INET
    try:
        listener = socket.socket(fam, socket.SOCK_STREAM)
        listener.bind((family, 0))
    except OSError:
        pytest.skip(f"no {family} here")
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    served, peer = listener.accept()
    listener.close()
    try:
        served.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, algorithm)
    except OSError:
        client.close()
        served.close()
        pytest.skip(f"this kernel does not let us choose {algorithm.decode()}")
    return client, served, peer


@pytest.mark.parametrize("family", ["127.0.0.1", "::1"])
def test_a_loopback_connection_under_bbr_is_given_reno(family):
    from aigen.web.server import LOOPBACK_CONGESTION, loopback_congestion

    client, served, peer = _pair_with(b"bbr", family)
    with client, served:
        assert loopback_congestion(served, peer) is True
        assert _congestion(served) == LOOPBACK_CONGESTION == b"reno"


def test_other_connections_keep_their_congestion_control():
    from aigen.web.server import loopback_congestion

    # From another machine (the address is what decides): BBR stays.
    client, served, _ = _pair_with(b"bbr")
    with client, served:
        for addr in [("192.0.2.7", 40000), ("2001:db8::7", 40000, 0, 0), ("::ffff:192.0.2.7", 40000, 0, 0),
                     "/run/aigen.sock", (), (None, 1)]:
            assert loopback_congestion(served, addr) is False
            assert _congestion(served) == b"bbr"
        # An IPv4 loopback client seen through an IPv6 socket is loopback too.
        assert loopback_congestion(served, ("::ffff:127.0.0.1", 40000, 0, 0)) is True
        assert _congestion(served) == b"reno"
    # A loopback connection under anything but BBR (cubic here) is left alone.
    client, served, peer = _pair_with(b"cubic")
    with client, served:
        assert loopback_congestion(served, peer) is False
        assert _congestion(served) == b"cubic"


def test_the_gallery_gives_its_loopback_connections_reno(sqlite_env):
    import socket

    from aigen.web.server import GalleryServer

    env = sqlite_env
    with GalleryServer(env.app, "127.0.0.1", 0) as server:
        listener = server._listeners()[0].socket
        try:
            # Accepted connections inherit the listener's choice: BBR, as on a machine where it is the default.
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
        except (AttributeError, OSError):
            pytest.skip("this kernel does not let us choose bbr")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/login", headers={"Host": "127.0.0.1"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        channels = server._channels()
        assert len(channels) == 1
        assert _congestion(channels[0].socket) == b"reno"
        conn.close()
