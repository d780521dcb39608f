"""Gallery sessions on the server (logout, code rotation and revocation end them,
`aigen user sessions`), magic links spent once by a POST, one scrypt per
refused code, and cross-site posts that cannot lock a user out."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fakes.web import Clock, WsgiClient, events, open_backend, seed_generation

from aigen.web import access, links
from aigen.web.app import WebSettings, make_app

CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, home, monkeypatch):
    # The CLI uses the real clock: start the gallery's clock there too.
    clock = Clock(datetime.now(timezone.utc).replace(microsecond=0))
    h, store = open_backend(request, home, monkeypatch, request.param)

    class Env:
        pass

    e = Env()
    e.home, e.store, e.clock = h, store, clock

    def app(**kw):
        settings = WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic, **kw)
        return make_app(settings)

    e.make_app = app
    e.app = app()
    e.client = lambda app_=None, **kw: WsgiClient(app_ or e.app, **kw)
    return e


def remote(env, app=None, **kw):
    kw.setdefault("remote_addr", "192.0.2.10")
    kw.setdefault("host", "gallery.example:8000")
    return env.client(app or env.make_app(host="0.0.0.0"), **kw)


def link_path(env, user_id, gid=None):
    url = links.magic_link(env.home.path, user_id, gid, now=env.clock())
    return "/login/link/" + url.rsplit("/", 1)[1]


def spend(c, path, **kw):
    return c.post(path, {"csrf_token": c.csrf(path)}, **kw)


def token_of(page_text):
    return CSRF_RE.search(page_text).group(1)


def session_rows(store, user_id=None):
    where, params = ("WHERE user_id = ?", (user_id,)) if user_id else ("", ())
    return store.query(f"SELECT * FROM sessions {where} ORDER BY created_at, id", params)


# -- sessions are rows -----------------------------------------------------------------------------


def test_logout_ends_the_session_on_the_server_and_a_replayed_cookie_is_refused(env):
    c = env.client(user_agent="Firefox test")
    c.login("alice")
    old = dict(c.cookies)
    [row] = session_rows(env.store, "alice")
    assert (row["kind"], row["address"], row["user_agent"]) == ("loopback", "127.0.0.1", "Firefox test")
    assert row["revoked_at"] is None and row["expires_at"] > row["created_at"]
    # Only a hash of the session id is kept; events name the session by that hash too.
    assert events(env.store, kind="login_ok")[0]["session_id"] == row["id"]
    page = c.get("/")
    assert page.status == 200
    assert c.post("/logout", {"csrf_token": token_of(page.text)}).status == 303
    row = session_rows(env.store, "alice")[0]
    assert row["revoked_at"] and row["revoked_why"] == "logout"

    thief = env.client()
    thief.cookies = old  # the cookie as it was before logout, still signed and unexpired
    assert thief.get("/").status == 303
    assert thief.get("/api/generations").status == 401


def test_a_new_login_in_the_same_browser_ends_the_session_it_replaces(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("bob")
    bobs = dict(c.cookies)
    assert spend(c, link_path(env, "alice", gid)).status == 303  # alice's link opened in bob's browser
    c.login("alice")  # and a login over it
    rows = session_rows(env.store)
    assert len(rows) == 3
    assert [r["user_id"] for r in rows if not r["revoked_at"]] == ["alice"]
    assert sorted((r["user_id"], r["revoked_why"]) for r in rows if r["revoked_at"]) == [
        ("alice", "replaced by a new login"), ("bob", "replaced by a new login")]
    thief = env.client()
    thief.cookies = bobs
    assert thief.get("/").status == 303 and c.get(f"/g/{gid}").status == 200


def test_a_revoked_row_ends_the_session_at_once_and_last_seen_moves_at_most_once_a_minute(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    first = session_rows(env.store, "alice")[0]["last_seen"]
    env.clock.advance(30)
    assert c.get("/").status == 200 and c.get(f"/g/{gid}").status == 200
    assert session_rows(env.store, "alice")[0]["last_seen"] == first  # no write for every request
    env.clock.advance(31)
    assert c.get("/").status == 200
    later = session_rows(env.store, "alice")[0]["last_seen"]
    assert later > first
    env.store.db.conn.execute("UPDATE sessions SET revoked_at = last_seen")
    assert c.get("/").status == 303


def test_rotate_and_revoke_end_every_session_of_the_user_magic_link_ones_included(env, cli):
    gid = seed_generation(env.store, env.home, "alice")
    code = access.set_code(env.store, "alice")
    by_code = remote(env)
    by_code.login("alice", code)
    by_link = remote(env)
    assert spend(by_link, link_path(env, "alice", gid)).status == 303
    local = env.client()
    local.login("alice")
    bob = env.client()
    bob.login("bob")
    for c in (by_code, by_link, local, bob):
        assert c.get("/").status == 200

    r = cli("user", "code", "alice", "--rotate", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rotated"] is True and out["sessions_ended"] == 3
    for c in (by_code, by_link, local):
        assert c.get("/").status == 303
    assert bob.get("/").status == 200
    assert {r["revoked_why"] for r in session_rows(env.store, "alice")} == {"code rotated"}

    by_link2 = remote(env)
    env.clock.now = datetime.now(timezone.utc) + timedelta(seconds=1)  # a link made after the rotation
    assert spend(by_link2, link_path(env, "alice", gid)).status == 303
    r = cli("user", "code", "alice", "--revoke")
    assert r.exit_code == 0 and "1 gallery session ended" in r.output
    assert by_link2.get("/").status == 303 and bob.get("/").status == 200


@pytest.mark.parametrize("command", [["user", "code", "alice", "--rotate"], ["user", "code", "alice", "--revoke"],
                                     ["user", "sessions", "alice", "--revoke-all"]], ids=["rotate", "revoke", "revoke_all"])
def test_a_magic_link_made_before_the_sessions_were_ended_is_cancelled_with_them(env, cli, command):
    """A link still waiting in a mailbox when the user's access is taken back must not open a new session."""
    gid = seed_generation(env.store, env.home, "alice")
    access.set_code(env.store, "alice")
    env.clock.now = datetime.now(timezone.utc) - timedelta(seconds=5)
    old = link_path(env, "alice", gid)
    bobs = link_path(env, "bob")
    r = cli(*command)
    assert r.exit_code == 0, r.output
    if command[-1] == "--revoke-all":  # no live session, but the links are cancelled all the same
        assert "had no live gallery session; magic links made until now no longer work" in " ".join(r.output.split())
    env.clock.now = datetime.now(timezone.utc) + timedelta(seconds=1)

    c = remote(env)
    page = c.get(old)
    assert page.status == 403 and "This link was cancelled" in page.text
    r = c.post(old, {"csrf_token": token_of(page.text)})
    assert r.status == 403 and "This link was cancelled" in r.text
    assert c.get("/").status == 303
    assert session_rows(env.store, "alice") == []  # no session was opened by the cancelled link
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == ["revoked_link", "revoked_link"]
    # Another user's link, and a link made afterwards, still work.
    assert spend(remote(env), bobs).status == 303
    fresh = remote(env)
    assert spend(fresh, link_path(env, "alice", gid)).status == 303 and fresh.get(f"/g/{gid}").status == 200


def test_user_sessions_lists_and_revokes_all(env, cli):
    c1 = env.client(user_agent="Firefox on the desk")
    c1.login("alice")
    c2 = env.client(user_agent="Phone browser")
    c2.login("alice")
    env.client().login("bob")
    r = cli("user", "sessions", "alice", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["user_id"] == "alice" and len(data["sessions"]) == 2
    s = data["sessions"][0]
    assert s["kind"] == "loopback" and s["state"] == "active" and s["address"] == "127.0.0.1"
    assert {x["user_agent"] for x in data["sessions"]} == {"Firefox on the desk", "Phone browser"}
    assert len(s["id"]) == 16
    table = cli("user", "sessions", "alice").output
    assert "loopback" in table and "active" in table and "Firefox" in table

    r = cli("user", "sessions", "alice", "--revoke-all")
    assert r.exit_code == 0 and "2 sessions of alice ended" in r.output
    assert c1.get("/").status == 303 and c2.get("/").status == 303
    assert "no live gallery sessions" in cli("user", "sessions", "alice").output
    ended = json.loads(cli("user", "sessions", "alice", "--all", "--json").output)["sessions"]
    assert [x["state"] for x in ended] == ["revoked", "revoked"]
    assert ended[0]["revoked_why"] == "revoked by admin"
    assert len(json.loads(cli("user", "sessions", "bob", "--json").output)["sessions"]) == 1
    r = cli("user", "sessions", "alice", "--revoke-all", "--json")
    assert json.loads(r.output)["revoked"] == 0
    assert cli("user", "sessions", "bad id").exit_code == 2


def test_user_sessions_on_a_fresh_home_writes_nothing(cli, home):
    r = cli("user", "sessions", "alice")
    assert r.exit_code == 0 and "no live gallery sessions" in r.output
    assert not home.exists()


# -- magic links: a landing page, spent once by a POST ---------------------------------------------


def test_fetching_a_magic_link_does_not_spend_it_and_a_post_spends_it_once(env):
    gid = seed_generation(env.store, env.home, "alice")
    path = link_path(env, "alice", gid)
    scanner = env.client(user_agent="MailScanner/2.0")
    for _ in range(3):
        page = scanner.get(path)
        assert page.status == 200 and "Log in as alice" in page.text and gid in page.text
        assert '<form method="post"' in page.text
    assert scanner.get("/").status == 303
    assert not session_rows(env.store)

    user = remote(env)
    r = spend(user, path)
    assert r.status == 303 and r.location == f"/g/{gid}"
    assert user.get(f"/g/{gid}").status == 200
    [row] = session_rows(env.store, "alice")
    assert row["kind"] == "magic"
    # The same browser following the link again just goes on in.
    assert user.get(path).status == 303

    other = remote(env)
    page = other.get(path)
    assert page.status == 403 and "already used" in page.text
    r = other.post(path, {"csrf_token": token_of(page.text)})
    assert r.status == 403 and "already used" in r.text
    assert other.get("/").status == 303
    assert len(session_rows(env.store, "alice")) == 1
    reasons = [e["reason"] for e in events(env.store, kind="login_failed")]
    assert reasons == ["spent_link", "spent_link"]
    assert len(events(env.store, kind="magic_link_login")) == 1


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)  # a read-only copy of the home is a copy of aigen.db
def test_a_link_spent_on_the_home_stays_spent_on_a_read_only_copy_of_it(env, tmp_path):
    """The gallery of a read-only copy keeps its own sessions and spent links in a scratch store; a link spent
    on the home it was copied from must not open a session there, while an unspent one still works."""
    import shutil
    import sqlite3

    from aigen.config import resolve_home
    from aigen.store import Store

    gid = seed_generation(env.store, env.home, "alice")
    spent, unspent = link_path(env, "alice", gid), link_path(env, "alice", gid)
    assert spend(remote(env), spent).status == 303
    copy = tmp_path / "backup"
    copy.mkdir()
    shutil.copy2(env.home.path / "secret.key", copy / "secret.key")
    with sqlite3.connect(env.home.db_path) as src, sqlite3.connect(copy / "aigen.db") as dst:
        src.backup(dst)
    ro = Store(copy / "aigen.db", readonly=True)
    app = make_app(WebSettings(home=resolve_home(copy), store=ro, host="0.0.0.0", clock=env.clock,
                               monotonic=env.clock.monotonic))
    c = remote(env, app)
    page = c.get(spent)
    assert page.status == 403 and "already used" in page.text
    r = c.post(spent, {"csrf_token": token_of(page.text)})
    assert r.status == 403 and "already used" in r.text and c.get("/").status == 303
    assert spend(c, unspent).status == 303 and c.get(f"/g/{gid}").status == 200


def test_a_magic_link_post_without_a_csrf_token_is_refused_and_leaves_the_link_usable(env):
    path = link_path(env, "alice")
    c = env.client()
    c.get(path)
    assert c.post(path, {}).status == 403
    assert c.post(path, {"csrf_token": "0" * 64}).status == 403
    assert env.client().post(path, {"csrf_token": c.csrf(path)}).status == 403  # token of another browser
    assert c.get("/").status == 303
    assert spend(c, path).status == 303 and c.get("/").status == 200


def test_two_posts_of_one_link_at_once_open_one_session(env):
    path = link_path(env, "alice")
    clients = [env.client() for _ in range(4)]
    forms = [{"csrf_token": c.csrf(path)} for c in clients]
    barrier = threading.Barrier(len(clients))
    statuses = []

    def go(c, form):
        barrier.wait()
        statuses.append(c.post(path, form).status)

    threads = [threading.Thread(target=go, args=cf) for cf in zip(clients, forms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(statuses) == [303, 403, 403, 403]
    assert len(session_rows(env.store, "alice")) == 1


def test_bad_magic_links_fetched_by_another_site_do_not_count_toward_the_limit(env):
    c = env.client()
    for i in range(15):  # e.g. <img src=".../login/link/junk"> on another site
        assert c.get(f"/login/link/junk{i}").status == 403
    c.login("alice")
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == ["bad_link"] * 15


# -- equal-time refusals -----------------------------------------------------------------------------


def test_a_wrong_code_costs_one_scrypt_whether_the_user_has_a_code_none_or_does_not_exist(env, monkeypatch):
    access.set_code(env.store, "hascode")
    env.store.ensure_user("nocode")
    calls = []
    real = hashlib.scrypt

    def counting(*a, **kw):
        calls.append(kw.get("n"))
        return real(*a, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    app = env.make_app(host="0.0.0.0", login_limit=1000)
    c = remote(env, app)
    for user in ("hascode", "nocode", "ghost"):
        calls.clear()
        c.login(user, "AAAA-BBBB-CCCC", expect=403)
        assert calls == [access.SCRYPT_N], user
        calls.clear()
        basic = base64.b64encode(f"{user}:AAAA-BBBB-CCCC".encode()).decode()
        r = c.get("/api/generations", headers={"Authorization": "Basic " + basic})
        assert r.status == 401 and calls == [access.SCRYPT_N], user
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == [
        "bad_access_code", "bad_access_code", "no_access_code", "no_access_code", "no_access_code",
        "no_access_code"]

    # And a generous check on the clock: before, a user without a code was refused 20x faster.
    monkeypatch.setattr(hashlib, "scrypt", real)
    form = {"access_code": "AAAA-BBBB-CCCC", "next": "/"}
    took = {}
    for user in ("hascode", "nocode", "ghost"):
        samples = []
        for _ in range(3):
            data = dict(form, user_id=user, csrf_token=c.csrf())
            t = time.perf_counter()
            assert c.post("/login", data).status == 403
            samples.append(time.perf_counter() - t)
        took[user] = statistics.median(samples)
    assert max(took.values()) < 4 * min(took.values()), took


# -- cross-site posts ----------------------------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_do_not_count_toward_the_login_limit(env):
    c = env.client(remote_addr="127.0.0.9")
    c.get("/login")
    for _ in range(25):
        assert c.post("/login", {"user_id": "alice", "csrf_token": "f" * 64}).status == 403
    for _ in range(25):
        assert env.client(remote_addr="127.0.0.9").post("/login", {"user_id": "alice"}).status == 403
    c.login("alice")  # not 429
    reasons = [e["reason"] for e in events(env.store, kind="login_failed")]
    assert reasons == ["csrf"] * 50 and "rate_limited" not in reasons


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "http://evil.example"},
    {"Origin": "http://127.0.0.1:9999"},
    {"Origin": "null"},
])
def test_cross_site_posts_are_refused_and_not_counted(env, headers):
    c = env.client()
    for _ in range(15):
        r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice"}, headers=headers)
        assert r.status == 403 and "sent from another site" in r.text
    assert c.get("/").status == 303
    path = link_path(env, "alice")
    r = c.post(path, {"csrf_token": c.csrf(path)}, headers=headers)
    assert r.status == 403 and c.get("/").status == 303
    assert not env.store.query("SELECT * FROM spent_links")
    c.login("alice")  # neither counted toward the limit
    page = c.get("/")
    assert c.post("/logout", {"csrf_token": token_of(page.text)}, headers=headers).status == 403
    assert c.get("/").status == 200  # still logged in
    reasons = [e["reason"] for e in events(env.store, kind="login_failed")]
    assert reasons == ["cross_site"] * 16


def test_same_origin_posts_pass_the_origin_check(env):
    c = env.client()
    ok = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
    assert c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice"}, headers=ok).status == 303
    # [::1] and a default port.
    v6 = env.client(host="[::1]:8000")
    assert v6.post("/login", {"csrf_token": v6.csrf(), "user_id": "alice"},
                   headers={"Origin": "http://[::1]:8000"}).status == 303
    bare = env.client(host="localhost")
    assert bare.post("/login", {"csrf_token": bare.csrf(), "user_id": "alice"},
                     headers={"Origin": "http://localhost", "Sec-Fetch-Site": "none"}).status == 303
    # Behind a TLS proxy: the Origin is the public URL, not what the server saw.
    app = env.make_app(host="0.0.0.0", public_url="https://gallery.example")
    code = access.set_code(env.store, "bob")
    p = env.client(app, remote_addr="192.0.2.10", host="10.0.0.5:8000")
    r = p.post("/login", {"csrf_token": p.csrf(), "user_id": "bob", "access_code": code},
               headers={"Origin": "https://gallery.example"})
    assert r.status == 303
