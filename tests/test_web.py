"""The gallery at the WSGI level: every route, login and exposure rules,
ownership, escaping, media with Range, and the events each action writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
from datetime import timedelta

import pytest
from fakes.web import (
    Clock,
    WsgiClient,
    events,
    kinds,
    open_home,
    path_of,
    seed_generation,
    video_bytes,
)

from aigen.web import access, links
from aigen.web.app import WebSettings, make_app
from aigen.web.views import PROCESSING_MESSAGE

XSS = "<script>alert(1)</script>"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def env(home, clock):
    h, store = open_home(home)

    class Env:
        pass

    e = Env()
    e.home, e.store, e.clock = h, store, clock

    def app(**kw):
        kw.setdefault("page_size", 10)
        settings = WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic, **kw)
        return make_app(settings)

    def client(app_=None, **kw):
        return WsgiClient(app_ or e.app, **kw)

    e.make_app = app
    e.app = app()
    e.client = client
    return e


def video_ids(store, gid):
    return [a["id"] for a in store.assets(gid) if a["kind"] == "video"]


def image_ids(store, gid):
    return [a["id"] for a in store.assets(gid) if a["kind"] == "image"]


# -- login, sessions, logout -----------------------------------------------------------------------


def test_login_by_user_id_on_loopback_then_gallery_then_logout(env):
    gid = seed_generation(env.store, env.home, "alice", "a red fox at dawn")
    c = env.client()
    r = c.get("/")
    assert r.status == 303 and r.location == "/login"
    page = c.get("/login")
    assert page.status == 200
    assert 'name="user_id"' in page.text and 'name="csrf_token"' in page.text
    assert 'name="access_code"' not in page.text  # loopback: a user_id is enough

    r = c.login("alice")
    assert r.location == "/"
    cookie = next(v for k, v in r.header_list if k.lower() == "set-cookie")
    assert "HttpOnly" in cookie and re.search(r"SameSite=lax", cookie, re.I) and "Max-Age=86400" in cookie
    assert "Path=/" in cookie

    g = c.get("/")
    assert g.status == 200
    assert "a red fox at dawn" in g.text and f'id="g-{gid}"' in g.text
    # A gallery page fetches no video until one is played: its tile is a preview that links to the file.
    assert g.text.count('<video') == 0 and g.text.count('data-video="/media/') == 5
    assert g.text.count('<a class="tile" href="/media/') == 10  # 5 images, 5 videos
    assert "Logged in as <strong>alice</strong>" in g.text
    assert g.header("cache-control") == "no-store"

    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', g.text).group(1)
    r = c.post("/logout", {"csrf_token": csrf})
    assert r.status == 303 and r.location == "/login?bye=1"
    assert "You are logged out." in c.get("/login?bye=1").text
    assert c.get("/").status == 303

    ev = events(env.store)
    assert [e["kind"] for e in ev] == ["login_ok", "gallery_view", "logout"]
    ok = ev[0]
    assert (ok["user_id"], ok["ok"], ok["address"], ok["user_agent"]) == ("alice", 1, "127.0.0.1", "aigen-tests/1.0")
    assert ok["session_id"] and ev[1]["session_id"] == ok["session_id"]
    assert env.store.get_user("alice")["last_login_at"]


def test_secret_is_created_once_with_mode_0600(env):
    path = env.home.path / links.SECRET_FILE
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    env.make_app()
    assert path.read_bytes() == before


def test_invalid_user_id_is_refused_with_a_message(env):
    c = env.client()
    for bad in ("../etc", "a b", "-leading", "x" * 65, '"><script>alert(1)</script>'):
        r = c.post("/login", {"csrf_token": c.csrf(), "user_id": bad})
        assert r.status == 400, bad
        assert "invalid user_id" in r.text and "letters, digits" in r.text
        assert "<script>alert(1)</script>" not in r.text
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "  "})
    assert r.status == 400 and "Enter your user_id." in r.text
    assert c.get("/").status == 303  # not logged in
    failed = events(env.store, kind="login_failed")
    assert len(failed) == 6 and {e["reason"] for e in failed} == {"invalid_user_id"}
    assert all(e["user_id"] is None for e in failed)
    assert "'../etc'" in failed[0]["detail"]


def test_valid_user_with_no_content_gets_an_empty_page_saying_how_to_make_some(env):
    c = env.client()
    c.login("newcomer")
    r = c.get("/")
    assert r.status == 200
    assert "Nothing here yet" in r.text
    assert 'aigen generate "a red fox at dawn in a misty forest" --user newcomer' in r.text


def test_post_without_csrf_token_is_refused(env):
    c = env.client()
    c.get("/login")
    r = c.post("/login", {"user_id": "alice"})
    assert r.status == 403 and "did not come from this page" in r.text
    r = c.post("/login", {"user_id": "alice", "csrf_token": "0" * 64})
    assert r.status == 403
    fresh = env.client()  # no cookie at all
    assert fresh.post("/login", {"user_id": "alice", "csrf_token": c.csrf()}).status == 403
    assert c.get("/").status == 303
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == ["csrf", "csrf", "csrf"]

    c.login("alice")
    r = c.post("/logout", {})
    assert r.status == 403
    assert c.get("/").status == 200  # still logged in
    assert not events(env.store, kind="logout")


def test_session_expires(env):
    c = env.client()
    c.login("alice")
    assert c.get("/").status == 200
    env.clock.advance(timedelta(hours=23).total_seconds())
    assert c.get("/").status == 200
    env.clock.advance(timedelta(hours=2).total_seconds())
    assert c.get("/").status == 303


def test_tampered_session_cookie_is_ignored(env):
    c = env.client()
    c.login("alice")
    value = c.cookies["aigen_session"]
    c.cookies["aigen_session"] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert c.get("/").status == 303


def test_login_keeps_where_the_user_was_going(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    r = c.get(f"/g/{gid}")
    assert r.status == 303 and r.location == f"/login?next=/g/{gid}"
    assert f'name="next" value="/g/{gid}"' in c.get(r.location).text
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice", "next": f"/g/{gid}"})
    assert r.location == f"/g/{gid}"
    # Never an open redirect:
    r = env.client()
    r2 = r.post("/login", {"csrf_token": r.csrf(), "user_id": "alice", "next": "https://evil.example/"})
    assert r2.location == "/"


# -- exposure: loopback vs other addresses ---------------------------------------------------------


def test_off_loopback_a_user_id_alone_is_not_enough(env):
    seed_generation(env.store, env.home, "alice")
    app = env.make_app(host="0.0.0.0")
    c = env.client(app, remote_addr="192.0.2.10", host="gallery.example:8000")
    page = c.get("/login")
    assert 'name="access_code"' in page.text and "aigen user code" in page.text

    r = c.login("alice", expect=401)
    assert "enter your access code" in r.text
    r = c.login("alice", "AAAA-BBBB-CCCC", expect=403)  # alice has no code yet
    msg = "That user_id and access code do not match"
    assert msg in r.text
    code = access.set_code(env.store, "alice")
    r = c.login("alice", "0000-0000-0000", expect=403)
    assert msg in r.text
    r = c.login("nobody", code, expect=403)
    assert msg in r.text  # same words whether the user exists or not
    assert c.get("/").status == 303

    # What a person types: lower case, no dashes, look-alike letters.
    typed = code.lower().replace("-", "").replace("0", "o").replace("1", "l")
    c.login("alice", typed)
    assert c.get("/").status == 200
    reasons = [e["reason"] for e in events(env.store, kind="login_failed")]
    assert reasons == ["code_required", "no_access_code", "bad_access_code", "no_access_code"]
    assert events(env.store, kind="login_ok")[0]["detail"] == "by access code"
    # Only a salted hash is kept.
    row = env.store.query_one("SELECT access_code_hash FROM users WHERE user_id = 'alice'")
    assert code not in row["access_code_hash"] and row["access_code_hash"].startswith("scrypt$")
    assert code.replace("-", "") not in json.dumps(env.store.query("SELECT * FROM users"))

    # Rotating the code ends the sessions opened with the old one.
    access.set_code(env.store, "alice", rotate=True)
    assert c.get("/").status == 303


def test_rotate_is_required_to_replace_a_code(env):
    access.set_code(env.store, "alice")
    from aigen.errors import BadInput

    with pytest.raises(BadInput, match="cannot be shown again") as exc:
        access.set_code(env.store, "alice")
    assert "aigen user code alice --rotate" in exc.value.hint
    assert access.revoke_code(env.store, "alice") is True
    assert not access.has_code(env.store, "alice")


def test_a_loopback_session_does_not_count_when_the_home_is_served_beyond(env):
    seed_generation(env.store, env.home, "alice")
    local = env.client()
    local.login("alice")
    assert local.get("/").status == 200
    remote = env.client(env.make_app(host="0.0.0.0"), remote_addr="192.0.2.10", host="gallery.example")
    remote.cookies = dict(local.cookies)
    assert remote.get("/").status == 303


def test_a_proxy_in_front_of_a_loopback_server_means_a_code_is_needed(env):
    c = env.client()
    page = c.get("/login", headers={"X-Forwarded-For": "198.51.100.7"})
    assert 'name="access_code"' in page.text
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice"}, headers={"X-Forwarded-For": "198.51.100.7"})
    assert r.status == 401
    # the address logged is the peer's, never the header's
    assert events(env.store, kind="login_failed")[0]["address"] == "127.0.0.1"


def test_a_loopback_server_answers_only_to_loopback_names(env):
    c = env.client(host="attacker.example:8000")
    r = c.get("/login")
    assert r.status == 400 and "Host header" in r.text
    for good in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert env.client(host=good).get("/login").status == 200


# -- magic links -----------------------------------------------------------------------------------


def test_magic_link_logs_straight_into_its_generation(env):
    gid = seed_generation(env.store, env.home, "alice")
    url = links.magic_link(env.home.path, "alice", gid, base_url="http://gallery.example:8000", now=env.clock())
    assert url.startswith("http://gallery.example:8000/login/link/")
    path = url.split("gallery.example:8000", 1)[1]
    # Works where a user_id alone would not.
    app = env.make_app(host="0.0.0.0")
    c = env.client(app, remote_addr="192.0.2.10", host="gallery.example:8000")
    env.clock.advance(6 * 86400)
    landing = c.get(path)  # a page with a button: fetching the link does not log in
    assert landing.status == 200 and "Log in as alice" in landing.text and c.get("/").status == 303
    r = c.post(path, {"csrf_token": c.csrf(path)})
    assert r.status == 303 and r.location == f"/g/{gid}"
    page = c.get(f"/g/{gid}")
    assert page.status == 200 and "a red fox at dawn" in page.text
    ev = events(env.store, kind="magic_link_login")
    assert len(ev) == 1 and ev[0]["user_id"] == "alice" and ev[0]["generation_id"] == gid


def test_expired_or_tampered_magic_links_are_refused_and_logged(env):
    gid = seed_generation(env.store, env.home, "alice")
    url = links.magic_link(env.home.path, "alice", gid, now=env.clock())
    path = "/login/link/" + url.rsplit("/", 1)[1]
    env.clock.advance(7 * 86400 + 1)
    c = env.client()
    r = c.get(path)
    assert r.status == 403 and "expired" in r.text
    r = c.get(path[:-3] + "abc")
    assert r.status == 403 and "not valid" in r.text
    assert c.get("/").status == 303
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == ["expired_link", "bad_link"]


def test_magic_link_to_someone_elses_generation_lands_on_the_gallery(env):
    gid_b = seed_generation(env.store, env.home, "bob")
    url = links.magic_link(env.home.path, "alice", gid_b, now=env.clock())
    c = env.client()
    path = "/login/link/" + url.rsplit("/", 1)[1]
    r = c.post(path, {"csrf_token": c.csrf(path)})
    assert r.status == 303 and r.location == "/"
    assert c.get(f"/g/{gid_b}").status == 404


def test_magic_link_base_url_is_the_address_last_served(env, monkeypatch):
    monkeypatch.delenv("AIGEN_PUBLIC_URL", raising=False)
    assert links.magic_link(env.home, "alice").startswith("http://127.0.0.1:8000/login/link/")
    links.record_served_url(env.home, "http://127.0.0.1:8123")
    assert links.magic_link(env.home, "alice").startswith("http://127.0.0.1:8123/login/link/")
    monkeypatch.setenv("AIGEN_PUBLIC_URL", "https://gallery.example/")
    assert links.magic_link(env.home, "alice").startswith("https://gallery.example/login/link/")


# -- the gallery: statuses, escaping, pages --------------------------------------------------------


def test_prompt_is_escaped_everywhere(env):
    gid = seed_generation(env.store, env.home, "alice", f"a fox {XSS} & \"friends\"")
    pid = seed_generation(env.store, env.home, "alice", f"still going {XSS}", finish=False)
    c = env.client()
    c.login("alice")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ("/", f"/g/{gid}", f"/g/{pid}", f"/g/{gid}/section", f"/g/{pid}/section"):
        r = c.get(path)
        assert r.status == 200, path
        assert XSS not in r.text, path
        assert escaped in r.text, path
    api = c.get(f"/api/generations/{gid}")
    assert api.header("content-type").startswith("application/json")
    assert api.json()["prompt"] == f"a fox {XSS} & \"friends\""


def test_templates_never_print_raw_values():
    from aigen.web.app import TEMPLATE_DIR

    for tpl in TEMPLATE_DIR.glob("*.tpl"):
        raw = re.findall(r"\{\{!\s*([^}]*)\}\}", tpl.read_text())
        # `base` is the page body and `html` a section rendered from section.tpl
        # (cached): both were produced by templates that escape every value.
        assert raw in ([], ["base"], ["html"]), (tpl.name, raw)


def test_processing_generation_shows_the_message_and_progress(env):
    from fakes.web import tiny_png_bytes

    gid = seed_generation(env.store, env.home, "alice", "slow work", finish=False)
    first = env.store.assets(gid)[0]
    target = env.home.content_dir / "alice" / gid / "image_1.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_png_bytes())
    env.store.complete_asset(first["id"], {"path": target.relative_to(env.home.path).as_posix(), "width": 8,
                                           "height": 8})
    c = env.client()
    c.login("alice")
    from aigen.pipeline.run import run_lock

    with run_lock(env.home, gid):  # as a running `aigen generate` holds it
        for path in ("/", f"/g/{gid}"):
            r = c.get(path)
            assert PROCESSING_MESSAGE == "Your content is being generated. Please check back later."
            assert PROCESSING_MESSAGE in r.text
            assert '<progress max="10" value="1">' in r.text and "1 of 10" in r.text
            assert 'data-status="Processing"' in r.text and 'data-state="running"' in r.text
            assert "badge-processing" in r.text and "Stalled" not in r.text and "Resume" not in r.text
            # The made file shows at once, the others as placeholders.
            assert f'data-asset="{first["id"]}"' in r.text and r.text.count("data-pending=") == 9
            # Without JavaScript the page refreshes itself; gallery.js polls instead.
            assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in r.text
    for path in ("/", f"/g/{gid}"):
        r = c.get(path)
        # Nobody holds its run lock: Stalled, with a Resume button and the command.
        assert 'data-state="stalled"' in r.text and '<span class="badge badge-stalled">Stalled</span>' in r.text
        assert f'action="/g/{gid}/retry"' in r.text and ">Resume</button>" in r.text
        assert f"aigen retry {gid}" in r.text
    st = c.get(f"/api/generations/{gid}/status").json()
    assert st == {"id": gid, "status": "Processing", "done": 1, "total": 10}
    # A finished page does not refresh.
    done = seed_generation(env.store, env.home, "bob")
    b = env.client()
    b.login("bob")
    assert "http-equiv=\"refresh\"" not in b.get("/").text
    assert "http-equiv=\"refresh\"" not in b.get(f"/g/{done}").text


def test_failed_generation_shows_what_was_made_what_failed_and_the_retry_command(env):
    gid = seed_generation(env.store, env.home, "alice", "half done", fail=(("video", 2), ("image", 4)))
    c = env.client()
    c.login("alice")
    r = c.get("/")
    assert "badge-failed" in r.text
    assert "8 of 10 made; 2 failed." in r.text
    assert "Video 2: provider said no to video 2" in r.text
    assert "Image 4: provider said no to image 4" in r.text
    assert f"aigen retry {gid}" in r.text
    assert r.text.count('<figure class="video" data-live-key=') == 4 and r.text.count('<figure class="image" data-live-key=') == 4


def test_a_cached_section_is_replaced_when_a_retry_finishes_the_generation(env):
    from fakes.web import tiny_png_bytes

    gid = seed_generation(env.store, env.home, "alice", "half done", fail=(("image", 4),))
    c = env.client()
    c.login("alice")
    for _ in range(2):  # the second page view comes from the section cache
        r = c.get("/")
        assert "badge-failed" in r.text and "9 of 10 made; 1 failed." in r.text
    # `aigen retry` reopens the generation, makes the image and finalizes it.
    env.store.reopen_generation(gid)
    from aigen.pipeline.run import run_lock

    with run_lock(env.home, gid):
        assert "badge-processing" in c.get("/").text
    a4 = [a for a in env.store.assets(gid) if a["kind"] == "image" and a["idx"] == 4][0]
    path = env.home.content_dir / "alice" / gid / "image_4.png"
    path.write_bytes(tiny_png_bytes(colour=(1, 2, 3)))
    env.store.complete_asset(a4["id"], {"path": path.relative_to(env.home.path).as_posix(), "bytes": 1,
                                        "sha256": "0" * 64, "width": 8, "height": 8})
    assert env.store.finalize_generation(gid) == "Completed"
    r = c.get("/")
    assert "badge-completed" in r.text and "badge-failed" not in r.text
    assert r.text.count('<figure class="image" data-live-key=') == 5


def test_completed_generation_has_videos_with_posters_images_and_downloads(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    r = c.get(f"/g/{gid}")
    assert r.status == 200
    for vid in video_ids(env.store, gid):
        # The tile shows the video's previews (made from its poster frame) and links to the file.
        assert (f'<a class="tile" href="/media/{vid}" data-video="/media/{vid}" data-label="Video ') in r.text
        assert f'<img src="/media/{vid}/thumb" srcset="/media/{vid}/thumb 1x, /media/{vid}/thumb2x 2x"' in r.text
        assert f'href="/media/{vid}?download=1" download>Download<span class="vh"> video ' in r.text
    for iid in image_ids(env.store, gid):
        # The tile shows the previews (1x, 2x) and opens the file itself.
        assert (f'<a class="tile" href="/media/{iid}" title="Open full size"><img src="/media/{iid}/thumb" '
                f'srcset="/media/{iid}/thumb 1x, /media/{iid}/thumb2x 2x"') in r.text
        assert f'href="/media/{iid}?download=1" download>Download<span class="vh"> image ' in r.text
    assert "Requested" in r.text and "Finished" in r.text
    assert events(env.store, kind="generation_view")[0]["generation_id"] == gid


def test_gallery_is_newest_first_paginated_and_costs_the_same_queries_for_1_or_25(env):
    from datetime import datetime, timezone

    c = env.client()
    c.login("alice")

    def count_queries(path):
        statements = []
        env.store.db.conn.set_trace_callback(statements.append)
        try:
            r = c.get(path)
        finally:
            env.store.db.conn.set_trace_callback(None)
        assert r.status == 200
        return r, len([s for s in statements if s.lstrip().upper().startswith("SELECT")])

    ids = [seed_generation(env.store, env.home, "alice", f"prompt number {i}",
                           now=datetime(2026, 1, 1, 0, i, tzinfo=timezone.utc)) for i in range(1)]
    _, one = count_queries("/")
    ids += [seed_generation(env.store, env.home, "alice", f"prompt number {i}",
                            now=datetime(2026, 1, 1, 0, i, tzinfo=timezone.utc)) for i in range(1, 25)]
    first, many = count_queries("/")
    assert one == many, "one page must cost a fixed number of queries (no N+1)"
    shown = re.findall(r'<section class="generation [^"]*" id="g-([0-9a-f]+)"', first.text)
    assert shown == list(reversed(ids))[:10]
    assert "Page 1 of 3" in first.text and 'href="/?page=2"' in first.text
    second = c.get("/?page=2")
    assert re.findall(r'id="g-([0-9a-f]+)"', second.text) == list(reversed(ids))[10:20]
    last = c.get("/?page=99")
    assert "Page 3 of 3" in last.text
    assert len(re.findall(r'id="g-([0-9a-f]+)"', last.text)) == 5
    assert c.get("/?page=abc").status == 200
    views = events(env.store, kind="gallery_view")
    assert [v["detail"] for v in views][-4:] == ["page 1 of 3", "page 2 of 3", "page 3 of 3", "page 1 of 3"]


# -- ownership -------------------------------------------------------------------------------------


def test_another_users_assets_pages_and_api_ids_are_404(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    iid = image_ids(env.store, gid)[0]
    bob = env.client()
    bob.login("bob")
    paths = [f"/media/{vid}", f"/media/{iid}", f"/media/{vid}/poster", f"/media/{vid}?download=1", f"/g/{gid}",
             f"/g/{gid}/section", f"/api/generations/{gid}", f"/api/generations/{gid}/status"]
    missing = ["/media/999999", "/g/abcdef123456", "/api/generations/abcdef123456"]
    for path in paths + missing:
        r = bob.get(path)
        assert r.status == 404, path
        assert b"\x00" not in r.body and video_bytes(gid, 1)[:20] not in r.body
    # The owner gets them all.
    alice = env.client()
    alice.login("alice")
    for path in paths:
        assert alice.get(path).status == 200, path
    # Nobody logged in: asked to log in, nothing served.
    anon = env.client()
    assert anon.get(f"/media/{vid}").status == 401
    r = anon.get(f"/api/generations/{gid}")
    assert r.status == 401 and r.json()["error"] == "401 Unauthorized"
    assert anon.get(f"/g/{gid}/section").status == 401
    assert not [e for e in events(env.store, user_id="bob") if e["kind"] in ("asset_view", "api_view")]


def test_a_row_pointing_outside_the_home_is_never_served(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid, iid = video_ids(env.store, gid)[0], image_ids(env.store, gid)[0]
    (env.home.path.parent / "outside.txt").write_text("secret")
    with env.store.transaction() as db:
        db.conn.execute("UPDATE assets SET path = '../outside.txt' WHERE id = ?", (vid,))
        db.conn.execute("UPDATE assets SET path = ? WHERE id = ?", (str(env.home.db_path), iid))
    c = env.client()
    c.login("alice")
    assert c.get(f"/media/{vid}").status == 404
    assert c.get(f"/media/{iid}").status == 404
    # A done asset whose file has gone: 404, not a crash.
    other = image_ids(env.store, gid)[1]
    path_of(env.store, env.home, other).unlink()
    assert c.get(f"/media/{other}").status == 404


TRAVERSALS = [
    "/media/../../aigen.db",
    "/media/../aigen.db",
    "/media/..%2f..%2faigen.db",
    "/media/%2e%2e/%2e%2e/aigen.db",
    "/media/%252e%252e%252faigen.db",
    "/media/....//....//aigen.db",
    "/media/..\\..\\aigen.db",
    "/media//etc/passwd",
    "/media/%2fetc%2fpasswd",
    "/media/1/../../aigen.db",
    "/media/1/poster/../../../aigen.db",
    "/media/-1",
    "/media/1.0",
    "/static/../aigen.db",
    "/static/..%2f..%2faigen.db",
    "/static/%2e%2e%2fapp.py",
    "/static/app.py",
    "/static//etc/passwd",
    "/g/../aigen.db",
    "/api/generations/../../aigen.db",
    "/aigen.db",
    "/secret.key",
    "/generated_content/alice",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_gets_404(env, path):
    seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    # Both as a server would decode it, and exactly as written.
    for r in (c.get(path), c.request("GET", path, raw=True)):
        assert r.status == 404, (path, r.status)
        assert b"SQLite format 3" not in r.body and b"root:" not in r.body


def test_path_traversal_over_a_real_socket_gets_404(env):
    from aigen.web.server import GalleryServer

    seed_generation(env.store, env.home, "alice")
    with GalleryServer(env.app, "127.0.0.1", 0) as server:
        for path in TRAVERSALS + ["/media/%00", "/media/1%00.png"]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            status = int(data.split(b" ", 2)[1])
            # 401 for /media/<n> routes hit without a session is fine too: nothing is served.
            assert status in (400, 401, 404), (path, data[:200])
            assert b"SQLite format 3" not in data


# -- media: Range, ETag, types, views --------------------------------------------------------------


def test_range_requests_give_206_with_the_right_bytes(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    full = video_bytes(gid, 1)
    size = len(full)
    c = env.client()
    c.login("alice")

    r = c.get(f"/media/{vid}")
    assert r.status == 200 and r.body == full
    last_modified = r.header("last-modified")
    assert r.header("content-type") == "video/mp4" and r.header("accept-ranges") == "bytes"
    assert r.header("content-length") == str(size)
    etag = r.header("etag")
    assert etag == '"' + hashlib.sha256(full).hexdigest()[:32] + '"'
    assert r.header("last-modified").endswith("GMT")

    for rng, start, end in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1), ("bytes=-50", size - 50, size - 1),
                            ("bytes=1000-1000", 1000, 1000), (f"bytes=40000-{size + 500}", 40000, size - 1)):
        r = c.get(f"/media/{vid}", headers={"Range": rng})
        assert r.status == 206, rng
        assert r.body == full[start:end + 1], rng
        assert r.header("content-range") == f"bytes {start}-{end}/{size}"
        assert r.header("content-length") == str(end - start + 1)

    r = c.get(f"/media/{vid}", headers={"Range": f"bytes={size}-"})
    assert r.status == 416 and r.header("content-range") == f"bytes */{size}"
    r = c.get(f"/media/{vid}", headers={"Range": "bytes=0-1,5-6"})
    assert r.status == 200 and r.body == full  # several ranges: the whole file
    r = c.get(f"/media/{vid}", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status == 200 and r.body == full
    r = c.get(f"/media/{vid}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status == 206 and r.body == full[:10]
    r = c.get(f"/media/{vid}", headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b""
    r = c.get(f"/media/{vid}", headers={"If-Modified-Since": last_modified})
    assert r.status == 304
    r = c.request("HEAD", f"/media/{vid}")
    assert r.status == 200 and r.body == b"" and r.header("content-length") == str(size)

    img = image_ids(env.store, gid)[0]
    r = c.get(f"/media/{img}")
    assert r.status == 200 and r.header("content-type") == "image/png" and r.body.startswith(b"\x89PNG")
    r = c.get(f"/media/{vid}/poster")
    assert r.status == 200 and r.header("content-type") == "image/jpeg"
    r = c.get(f"/media/{vid}?download=1")
    assert r.header("content-disposition") == f'attachment; filename="{gid}-video_1.mp4"'
    assert r.header("x-content-type-options") == "nosniff"


def test_a_video_fetched_in_many_ranges_is_one_view_per_session(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    for start in range(0, 50_000, 5_000):
        assert c.get(f"/media/{vid}", headers={"Range": f"bytes={start}-{start + 4999}"}).status == 206
    c.get(f"/media/{vid}/poster")
    c.get(f"/media/{vid}", headers={"If-None-Match": '"x"'})
    views = events(env.store, kind="asset_view")
    assert len(views) == 1
    v = views[0]
    assert (v["user_id"], v["asset_id"], v["generation_id"], v["detail"]) == ("alice", vid, gid, "view video 1")

    # A download is counted apart from watching, once too.
    c.get(f"/media/{vid}?download=1")
    c.get(f"/media/{vid}?download=1", headers={"Range": "bytes=10-"})
    assert [e["detail"] for e in events(env.store, kind="asset_view")] == ["view video 1", "download video 1"]

    # A new session (a new login) is a new view; the same session after a
    # server restart is not.
    restarted = env.client(env.make_app())
    restarted.cookies = dict(c.cookies)
    restarted.get(f"/media/{vid}", headers={"Range": "bytes=0-1"})
    assert len(events(env.store, kind="asset_view")) == 2
    c.login("alice")
    c.get(f"/media/{vid}", headers={"Range": "bytes=0-1"})
    assert len(events(env.store, kind="asset_view")) == 3


def test_static_files_come_from_a_fixed_list(env):
    c = env.client()
    r = c.get("/static/style.css")
    assert r.status == 200 and r.header("content-type").startswith("text/css") and b"--bg" in r.body
    r2 = c.get("/static/style.css", headers={"If-None-Match": r.header("etag")})
    assert r2.status == 304
    assert c.get("/static/gallery.js").header("content-type").startswith("text/javascript")
    assert c.get("/static/favicon.svg").status == 200
    for name in ("app.py", "templates", "base.tpl", "style.css.bak", ".."):
        assert c.get(f"/static/{name}").status == 404
    page = c.get("/login").text
    # Nothing from the internet: every src and href is local.
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith("/"), url


# -- headers, API ----------------------------------------------------------------------------------


def test_every_response_has_the_security_headers(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    responses = [c.get(p) for p in ("/", "/login", f"/g/{gid}", f"/media/{vid}", "/static/style.css", "/nope",
                                    f"/api/generations/{gid}", "/api/generations/ffffff")]
    responses.append(env.client(host="evil.example").get("/"))
    responses.append(c.request("DELETE", "/"))
    statuses = set()
    for r in responses:
        statuses.add(r.status)
        csp = r.header("content-security-policy")
        assert csp and "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.header("x-content-type-options") == "nosniff"
        assert r.header("x-frame-options") == "DENY"
    assert {200, 400, 404, 405} <= statuses


def test_an_internal_error_is_a_500_page_with_the_headers_and_no_traceback(env, monkeypatch, capsys):
    gallery = env.app.gallery

    def broken(*a, **kw):
        raise RuntimeError("database exploded at /secret/path")

    monkeypatch.setattr(gallery.store, "count_generations", broken)
    c = env.client()
    c.login("alice")
    r = c.get("/")
    assert r.status == 500
    assert "Something went wrong" in r.text and "/secret/path" not in r.text
    assert r.header("content-security-policy")


def test_generation_api_for_scripts(env):
    gid = seed_generation(env.store, env.home, "alice", "api prompt", fail=(("image", 5),))
    c = env.client()
    c.login("alice")
    d = c.get(f"/api/generations/{gid}").json()
    assert d["id"] == gid and d["status"] == "Failed" and d["prompt"] == "api prompt"
    assert d["progress"] == {"done": 9, "total": 10}
    assert len(d["videos"]) == 5 and len(d["images"]) == 4 and len(d["assets"]) == 10
    assert d["retry_command"] == f"aigen retry {gid}"
    v = d["videos"][0]
    assert v["url"] == f"http://127.0.0.1:8000/media/{v['id']}" and v["poster_url"].endswith("/poster")
    assert str(env.home.path) not in json.dumps(d)  # no file-system paths
    lst = c.get("/api/generations").json()
    assert lst["total"] == 1 and lst["counts"]["Failed"] == 1 and lst["generations"][0]["id"] == gid
    assert c.get("/api/generations?page=x").status == 400
    api = events(env.store, kind="api_view")
    assert [e["generation_id"] for e in api] == [gid, None]
    # Polling the status is not a view.
    c.get(f"/api/generations/{gid}/status")
    assert len(events(env.store, kind="api_view")) == 2


def test_scripts_can_use_http_basic_with_user_id_and_access_code(env):
    import base64

    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]

    def basic(user, code):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{code}".encode()).decode()}

    # Loopback: a user_id alone, as for the form.
    c = env.client()
    assert c.get(f"/api/generations/{gid}", headers=basic("alice", "")).status == 200
    remote = env.client(env.make_app(host="0.0.0.0"), remote_addr="192.0.2.9", host="gallery.example")
    assert remote.get(f"/api/generations/{gid}", headers=basic("alice", "")).status == 401
    code = access.set_code(env.store, "alice")
    r = remote.get(f"/api/generations/{gid}", headers=basic("alice", code))
    assert r.status == 200 and r.json()["id"] == gid
    r = remote.get(f"/media/{vid}", headers={**basic("alice", code), "Range": "bytes=0-9"})
    assert r.status == 206 and r.body == video_bytes(gid, 1)[:10]
    remote.get(f"/media/{vid}", headers={**basic("alice", code), "Range": "bytes=10-19"})
    assert remote.get(f"/api/generations/{gid}", headers=basic("bob", code)).status == 401
    assert remote.get(f"/media/{vid}", headers=basic("alice", "WRONG")).status == 401
    # The start of a download is a view; its later ranges are not.
    assert len(events(env.store, kind="asset_view")) == 1
    assert [e["reason"] for e in events(env.store, kind="login_failed")] == [
        "code_required", "no_access_code", "bad_access_code"]


# -- rate limit ------------------------------------------------------------------------------------


def test_failed_logins_are_limited_per_address_and_still_logged(env):
    c = env.client(remote_addr="127.0.0.5")
    for _ in range(10):
        assert c.post("/login", {"csrf_token": c.csrf(), "user_id": "bad id"}).status == 400
    r = c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice"})
    assert r.status == 429 and "Too many failed logins" in r.text
    assert int(r.header("retry-after")) == 60
    # Blocked for the magic link and HTTP Basic too.
    assert c.get("/login/link/whatever").status == 429
    # Another address is not affected.
    env.client(remote_addr="127.0.0.6").login("alice")
    env.clock.advance(30)
    assert c.post("/login", {"csrf_token": c.csrf(), "user_id": "alice"}).status == 429
    env.clock.advance(31)
    c.login("alice")
    failed = events(env.store, kind="login_failed")
    assert [e["reason"] for e in failed].count("invalid_user_id") == 10
    assert [e["reason"] for e in failed].count("rate_limited") == 3
    assert all(e["address"] == "127.0.0.5" for e in failed)
    assert kinds(env.store)["login_ok"] == 2


# -- events ----------------------------------------------------------------------------------------


def test_events_are_written_with_the_right_kinds_and_counts(env):
    gid = seed_generation(env.store, env.home, "alice")
    vids, imgs = video_ids(env.store, gid), image_ids(env.store, gid)
    c = env.client(user_agent="Mozilla/5.0 test")
    c.post("/login", {"csrf_token": c.csrf(), "user_id": "no good"})
    c.login("alice")
    c.get("/")
    c.get("/?page=1")
    c.get(f"/g/{gid}")
    for i in imgs:
        c.get(f"/media/{i}")
        c.get(f"/media/{i}")
    for v in vids[:2]:
        for part in ("bytes=0-", "bytes=100-200", "bytes=300-"):
            c.get(f"/media/{v}", headers={"Range": part})
    c.get(f"/api/generations/{gid}")
    assert kinds(env.store) == {"login_failed": 1, "login_ok": 1, "gallery_view": 2, "generation_view": 1,
                                "asset_view": 7, "api_view": 1}
    for e in events(env.store):
        assert e["address"] == "127.0.0.1" and e["user_agent"] == "Mozilla/5.0 test" and e["at"]
    assert sorted(e["asset_id"] for e in events(env.store, kind="asset_view")) == sorted(imgs + vids[:2])


def test_events_cli_lists_them(env, cli):
    c = env.client()
    c.login("alice")
    c.post("/login", {"csrf_token": c.csrf(), "user_id": "x y"})
    env.client().login("bob")
    r = cli("events", "--json")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert [e["kind"] for e in data["events"]] == ["login_ok", "login_failed", "gallery_view", "login_ok"]
    assert data["events"][1]["ok"] is False and data["events"][1]["reason"] == "invalid_user_id"
    r = cli("events", "--user", "alice", "--json")
    assert [e["user_id"] for e in json.loads(r.output)["events"]] == ["alice", "alice"]
    r = cli("events", "--failed")
    assert r.exit_code == 0 and "login_failed" in r.output and "invalid_user" in r.output
    assert "login_ok" not in r.output
    r = cli("events")
    assert "alice" in r.output and "bob" in r.output
    for bad in (["--user", "a b"], ["--limit", "0"], ["--kind", "DROP TABLE"]):
        r = cli("events", *bad)
        assert r.exit_code == 2, bad


def test_events_cli_on_a_fresh_home_writes_nothing(cli, home):
    r = cli("events")
    assert r.exit_code == 0 and "No events" in r.output
    assert not os.path.exists(os.path.join(home, "aigen.db"))


def test_user_code_cli(cli, home):
    r = cli("user", "code", "alice", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.output)
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", first["code"]) and first["user_id"] == "alice"
    r = cli("user", "code", "alice")
    assert r.exit_code == 2 and "--rotate" in r.output and first["code"] not in r.output
    r = cli("user", "code", "alice", "--rotate")
    assert r.exit_code == 0 and "Access code for alice:" in r.output
    second = re.search(r"([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})", r.output).group(1)
    assert second != first["code"]
    _, store = open_home(home)
    stored = store.get_user("alice")["access_code_hash"]
    assert access.check_code(second, stored) and not access.check_code(first["code"], stored)
    r = cli("user", "code", "alice", "--revoke", "--json")
    assert json.loads(r.output) == {"user_id": "alice", "revoked": True, "sessions_ended": 0}
    assert cli("user", "code", "bad id").exit_code == 2
    assert cli("user", "code", "alice", "--rotate", "--revoke").exit_code == 2
    assert cli("user", "code", "ghost", "--revoke").exit_code == 2


def test_serve_refuses_bad_options(cli):
    for args in (["--port", "70000"], ["--port", "-1"], ["--host", "bad host"]):
        r = cli("serve", *args)
        assert r.exit_code == 2, (args, r.output)


def test_serve_reports_a_port_in_use(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--port", port)
    assert r.exit_code == 2 and "already in use" in r.output


def test_aigen_serve_prints_its_url_serves_and_stops_cleanly_on_ctrl_c(home):
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "aigen", "serve", "--port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
            if line.startswith("}"):
                break
        info = json.loads("".join(lines))
        assert info["url"].startswith("http://127.0.0.1:") and info["access_code_required"] is False
        with urllib.request.urlopen(info["url"] + "/login", timeout=10) as resp:
            assert resp.status == 200 and b"Log in to your gallery" in resp.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # --port 0: the system picked the port, which dies with the server, so it is not remembered for links.
    assert not (open_home(home)[0].path / "gallery.url").exists()


def test_serve_open_opens_the_browser_at_the_printed_url(cli, home, monkeypatch):
    import threading
    import webbrowser

    from aigen.web import server as server_mod

    opened = threading.Event()
    urls = []

    def fake_open(url, *a, **kw):
        urls.append(url)
        opened.set()
        return True

    def run_until_opened(self):
        # Stands in for serving forever: return once the browser was asked for.
        assert opened.wait(30)

    monkeypatch.setattr(webbrowser, "open", fake_open)
    monkeypatch.setattr(server_mod.GalleryServer, "run", run_until_opened)
    r = cli("serve", "--port", "0", "--open")
    assert r.exit_code == 0, r.output
    assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:")
    assert urls[0] in r.output and "Gallery stopped." in r.output


def test_serve_beyond_loopback_says_a_code_is_needed(cli, monkeypatch):
    from aigen.web import server as server_mod

    monkeypatch.setattr(server_mod.GalleryServer, "run", lambda self: None)
    r = cli("serve", "--host", "0.0.0.0", "--port", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["access_code_required"] is True


def test_head_requests_are_not_views(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    for path in ("/", f"/g/{gid}", f"/media/{video_ids(env.store, gid)[0]}"):
        r = c.request("HEAD", path)
        assert r.status == 200 and r.body == b"", path
    assert set(kinds(env.store)) == {"login_ok"}


def test_range_requests_over_waitress_send_exactly_the_range(env):
    """Under waitress the file itself is handed to the server (wsgi.file_wrapper): check it stops at the range."""
    import http.client

    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    full = video_bytes(gid, 1)
    size = len(full)
    c = env.client()
    c.login("alice")
    cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    from aigen.web.server import GalleryServer

    with GalleryServer(env.app, "127.0.0.1", 0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        # Several requests on one keep-alive connection: a response that sent
        # more than its Content-Length would corrupt the next one.
        for rng, start, end in (("bytes=0-99", 0, 99), ("bytes=1000-", 1000, size - 1),
                                ("bytes=-7", size - 7, size - 1), (None, 0, size - 1), ("bytes=5-5", 5, 5)):
            headers = {"Cookie": cookie, "Host": "127.0.0.1"}
            if rng:
                headers["Range"] = rng
            conn.request("GET", f"/media/{vid}", headers=headers)
            r = conn.getresponse()
            body = r.read()
            assert r.status == (206 if rng else 200), rng
            assert body == full[start:end + 1], rng
            assert int(r.getheader("content-length")) == end - start + 1
        conn.close()


# -- review fixes: serve refusals write nothing, big ids, --kind, links, view logging -------------------


@pytest.mark.parametrize("host", ["999.1.1.1", "nosuch.invalid", "0.0.0.0:1", "8.8.8.8"])
@pytest.mark.parametrize("as_json", [False, True])
def test_serve_refuses_a_host_it_cannot_use_and_writes_nothing(cli, home, host, as_json):
    r = cli("serve", "--host", host, "--port", "0", *(["--json"] if as_json else []))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and f"invalid --host '{host}'" in r.output
    if as_json:
        data = json.loads(r.output)
        assert data["error"] == "bad_input" and host in data["message"]
    assert not home.exists(), sorted(os.listdir(home))


def test_serve_with_a_port_in_use_writes_nothing(cli, home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--port", port, "--json")
    assert r.exit_code == 2
    assert "already in use" in json.loads(r.output)["message"]
    assert not home.exists()


def test_serve_on_a_port_the_system_picked_is_not_remembered_for_links(cli, home, monkeypatch):
    from aigen.web import server as server_mod

    monkeypatch.delenv("AIGEN_PUBLIC_URL", raising=False)
    monkeypatch.setattr(server_mod.GalleryServer, "run", lambda self: None)
    r = cli("serve", "--port", "0", "--json")
    assert r.exit_code == 0, r.output
    h = open_home(home)[0]
    assert not (h.path / "gallery.url").exists()
    assert links.magic_link(h, "alice").startswith("http://127.0.0.1:8000/login/link/")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("serve", "--port", port, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["port"] == port
    assert (h.path / "gallery.url").read_text().strip() == f"http://127.0.0.1:{port}"
    assert links.magic_link(h, "alice").startswith(f"http://127.0.0.1:{port}/login/link/")


def test_a_server_bound_before_its_app_answers_503_until_the_app_is_set(env):
    import urllib.error
    import urllib.request

    from aigen.web.server import GalleryServer

    with GalleryServer(None, "127.0.0.1", 0) as server:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/login", timeout=10)
        assert err.value.code == 503 and err.value.headers["Retry-After"] == "1"
        server.app = env.app
        with urllib.request.urlopen(server.url + "/login", timeout=10) as resp:
            assert resp.status == 200


def test_media_ids_too_big_for_sqlite_are_404(env):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    for big in ("99999999999999999999999", str(2**63), "999999999999999999"):
        for path in (f"/media/{big}", f"/media/{big}/poster"):
            r = c.get(path)
            assert r.status == 404, (path, r.status)
            assert "nothing here" in r.text
    # Still a number: leading zeros name the same asset.
    assert c.get(f"/media/{vid:018d}").body == video_bytes(gid, 1)
    assert c.get(f"/media/{vid:018d}/poster").status == 200


def test_events_cli_refuses_an_unknown_kind_and_lists_the_known_ones(cli, home):
    from aigen.web import EVENT_KINDS

    r = cli("events", "--kind", "bogus")
    assert r.exit_code == 2
    assert "invalid --kind 'bogus'" in r.output and all(k in r.output for k in EVENT_KINDS)
    r = cli("events", "--kind", "bogus", "--json")
    assert r.exit_code == 2 and json.loads(r.output)["error"] == "bad_input"
    for k in EVENT_KINDS:
        assert cli("events", "--kind", k).exit_code == 0, k
    assert not (home / "aigen.db").exists()


def test_every_event_kind_the_gallery_writes_is_a_known_kind():
    import aigen.web.actions as actions_mod
    import aigen.web.app as app_mod
    from aigen.web import EVENT_KINDS

    source = "".join(open(m.__file__, encoding="utf-8").read() for m in (app_mod, actions_mod))
    written = set(re.findall(r'(?:self|g)\.event\(\s*"([a-z_]+)"', source))
    assert written == set(EVENT_KINDS)


def test_refused_user_code_and_events_on_a_fresh_home_write_nothing(cli, home):
    for args in (["user", "code", "bad id"], ["user", "code", "alice", "--rotate", "--revoke"],
                 ["user", "code", "ghost", "--revoke"], ["events", "--kind", "bogus"], ["events", "--limit", "0"],
                 ["events", "--user", "a b"], ["events", "--failed", "--kind", "logout"]):
        for extra in ([], ["--json"]):
            r = cli(*args, *extra)
            assert r.exit_code == 2, (args, extra, r.output)
            if extra:
                assert json.loads(r.output)["error"] in ("bad_input", "not_found")
            assert not home.exists(), (args, sorted(os.listdir(home)))


def test_a_view_that_cannot_be_logged_still_serves_the_file(env, monkeypatch, caplog):
    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    real = env.store.query_one

    def failing(sql, *a, **kw):
        if "FROM events" in sql:
            raise RuntimeError("database is locked")
        return real(sql, *a, **kw)

    monkeypatch.setattr(env.store, "query_one", failing)
    with caplog.at_level("WARNING", logger="aigen.web"):
        r = c.get(f"/media/{vid}")
    assert r.status == 200 and r.body == video_bytes(gid, 1)
    assert any("could not check whether the view of asset" in rec.getMessage() for rec in caplog.records)
    assert kinds(env.store).get("asset_view") is None
    # Not remembered as logged: once the store works again, the view is written.
    monkeypatch.setattr(env.store, "query_one", real)
    assert c.get(f"/media/{vid}").status == 200
    assert [e["asset_id"] for e in events(env.store, kind="asset_view")] == [vid]


def test_the_open_file_is_closed_when_the_media_response_fails(env, monkeypatch):
    import aigen.web.app as app_mod
    import aigen.web.media as media_mod

    gid = seed_generation(env.store, env.home, "alice")
    vid = video_ids(env.store, gid)[0]
    c = env.client()
    c.login("alice")
    bodies = []
    real_file_response = app_mod.file_response

    def capturing(*a, **kw):
        res, rng = real_file_response(*a, **kw)
        bodies.append(res.body)  # kept alive here, so only an explicit close() closes it
        return res, rng

    # As under waitress: the response body is the open file.
    monkeypatch.setattr(media_mod, "_server_sends_files", lambda environ: True)
    monkeypatch.setattr(app_mod, "file_response", capturing)

    def broken(*a, **kw):
        raise RuntimeError("logging exploded")

    monkeypatch.setattr(env.app.gallery, "log_asset_view", broken)
    r = c.get(f"/media/{vid}")
    assert r.status == 500
    assert len(bodies) == 1 and hasattr(bodies[0], "closed") and bodies[0].closed


def test_a_generation_whose_missing_assets_were_all_refused_suggests_include_refused(env):
    # A plain `aigen retry ID` refuses to start then: the page says the assets were refused instead.
    gid = seed_generation(env.store, env.home, "alice", "half refused", fail=(("image", 4),))
    [a] = [a for a in env.store.assets(gid) if (a["kind"], a["idx"]) == ("image", 4)]
    env.store.fail_asset(a["id"], "refused by openai: blocked", code="moderation_blocked", refused=True)
    c = env.client()
    c.login("alice")
    r = c.get(f"/g/{gid}")
    assert "refused every missing one" in r.text
    assert f"aigen retry {gid} --include-refused" in r.text
    assert "Make only the missing ones" not in r.text


def test_a_render_leaves_no_reference_cycles_behind(tmp_path):
    """bottle's templates run in namespaces that refer to themselves; the gallery's templates empty them
    once the page is rendered, so a page is freed at once instead of piling up for the garbage collector
    (whose full collections stopped every request for 13-16 ms under load). The same templates rendered
    by plain SimpleTemplate leave cycles: the check can fail."""
    import gc

    from bottle import SimpleTemplate

    from aigen.web.app import Templates

    (tmp_path / "base.tpl").write_text("<main>{{!base}}</main>{{title}}")
    (tmp_path / "part.tpl").write_text("<li>{{x}}</li>")
    (tmp_path / "page.tpl").write_text(
        "% rebase('base', title=title)\n% for x in rows:\n% include('part', x=x)\n% end\n")
    rows = [{"n": i} for i in range(3)]

    def garbage_after(render) -> tuple[str, int]:
        gc.collect()
        gc.disable()
        try:
            html = render()
            return html, gc.collect()
        finally:
            gc.enable()

    html, left = garbage_after(lambda: Templates(tmp_path).render("page", title="<T>", rows=rows))
    assert html == "<main><li>{&#039;n&#039;: 0}</li><li>{&#039;n&#039;: 1}</li><li>{&#039;n&#039;: 2}</li></main>&lt;T&gt;"
    assert left == 0
    plain, plain_left = garbage_after(
        lambda: SimpleTemplate(name="page", lookup=[str(tmp_path)]).render(title="<T>", rows=rows))
    assert plain == html and plain_left > 0
    # Twice more through the same cached templates: still nothing left, still the same page.
    t = Templates(tmp_path)
    for _ in range(2):
        again, left = garbage_after(lambda: t.render("page", title="<T>", rows=rows))
        assert again == html and left == 0
