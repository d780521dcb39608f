"""The gallery's live routes at the WSGI level: GET /api/live (what the page polls) and POST /g/ID/retry
(Resume a stalled run, Retry a failed one): login, CSRF, ownership, the refusals and the events."""

from __future__ import annotations

import re

import pytest
from fakes.web import Clock, WsgiClient, events, open_home, real_generation, seed_generation

from aigen.pipeline.run import run_lock, wait_for
from aigen.store.core import utcnow
from aigen.web.app import WebSettings, make_app


@pytest.fixture
def env(home):
    h, store = open_home(home)

    class Env:
        pass

    e = Env()
    e.home, e.store = h, store
    # The clock of the gallery: now, and held still (a row the test makes old is made old by `stale`).
    e.clock = Clock(utcnow())
    e.app = make_app(WebSettings(home=h, store=store, clock=e.clock, monotonic=e.clock.monotonic))
    e.client = lambda **kw: WsgiClient(e.app, **kw)
    return e


def token(page_text: str, action: str) -> str:
    """The CSRF token in the form that posts to `action`."""
    m = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>\s*'
                  r'<input type="hidden" name="csrf_token" value="([^"]+)">', page_text)
    assert m, f"no form to {action}"
    return m.group(1)


def stale(store, *gen_ids, seconds: float = 3600) -> None:
    """As if the generations' runs had died `seconds` ago: their rows last changed then."""
    from datetime import timedelta

    from aigen.store.core import iso

    with store.transaction() as db:
        for gid in gen_ids:
            db.conn.execute("UPDATE generations SET updated_at = ? WHERE id = ?",
                            (iso(utcnow() - timedelta(seconds=seconds)), gid))


def retry_events(store, **where):
    return events(store, kind="generation_retry", **where)


# -- GET /api/live ---------------------------------------------------------------------------------------

def test_live_needs_a_login(env):
    r = env.client().get("/api/live")
    assert r.status == 401 and r.header("content-type").startswith("application/json")
    assert "log in" in r.json()["message"]


def test_live_says_counts_states_and_progress_and_answers_304_when_nothing_changed(env):
    done = seed_generation(env.store, env.home, "alice", "done one")
    busy = seed_generation(env.store, env.home, "alice", "busy one", images=2, videos=0, finish=False)
    seed_generation(env.store, env.home, "bob", "not yours")
    stale(env.store, done, busy)
    c = env.client()
    c.login("alice")
    r = c.get("/api/live")
    assert r.status == 200 and r.header("etag")
    d = r.json()
    assert d["counts"] == {"Processing": 1, "Completed": 1, "Failed": 0} and d["total"] == 2
    assert [g["id"] for g in d["generations"]] == [busy, done]
    b = d["generations"][0]
    assert b["status"] == "Processing" and b["state"] == "stalled" and (b["done"], b["total"]) == (0, 2)
    assert [(a["kind"], a["index"], a["status"]) for a in b["assets"]] == [("image", 1, "queued"), ("image", 2, "queued")]
    assert d["busy"] is False  # nothing works on it: the page polls slowly
    assert "assets" not in d["generations"][1]

    # Unchanged: a 304 with no body.
    again = c.get("/api/live", headers={"If-None-Match": r.header("etag")})
    assert again.status == 304 and again.body == b""

    # A process takes it, and an asset makes progress: a new answer, busy, with the progress.
    a1 = env.store.assets(busy)[0]
    env.store.start_asset(a1["id"])
    with env.store.transaction() as db:
        db.conn.execute("UPDATE assets SET progress = 0.5 WHERE id = ?", (a1["id"],))
    with run_lock(env.home, busy):
        r2 = c.get("/api/live", headers={"If-None-Match": r.header("etag")})
    assert r2.status == 200
    b2 = r2.json()["generations"][0]
    assert b2["state"] == "running" and r2.json()["busy"] is True
    assert b2["assets"][0]["status"] == "running" and b2["assets"][0]["progress"] == 0.5
    assert b2["v"] != b["v"]
    # The section's version is the one the live JSON gives (the page compares them).
    with run_lock(env.home, busy):
        sec = c.get(f"/g/{busy}/section").text
        tag = c.get("/api/live").json()["generations"][0]["v"]
    assert f'data-v="{tag}"' in sec
    # Polls are not views.
    assert not events(env.store, kind="api_view")


def test_live_for_one_generation_is_the_owners_only(env):
    mine = seed_generation(env.store, env.home, "alice", "mine")
    theirs = seed_generation(env.store, env.home, "bob", "theirs")
    c = env.client()
    c.login("alice")
    d = c.get(f"/api/live?g={mine}").json()
    assert [g["id"] for g in d["generations"]] == [mine]
    r = c.get(f"/api/live?g={theirs}")
    assert r.status == 404 and theirs not in r.json()["message"].replace(f"no generation {theirs} of yours", "")
    assert c.get("/api/live?g=../x").status == 400
    assert c.get("/api/live?page=x").status == 400


def test_a_live_refetch_of_a_generation_page_is_not_another_view(env):
    gid = seed_generation(env.store, env.home, "alice")
    c = env.client()
    c.login("alice")
    c.get(f"/g/{gid}")
    c.get(f"/g/{gid}?live=1")
    assert len(events(env.store, kind="generation_view")) == 1


# -- POST /g/ID/retry ------------------------------------------------------------------------------------

def test_resume_of_a_stalled_run_starts_it_in_the_background_and_it_completes(env):
    gid = real_generation(env.home, env.store, "alice", "a stalled fox", images=2, videos=0, run=False)
    stale(env.store, gid)  # its run died long ago
    c = env.client()
    c.login("alice")
    page = c.get(f"/g/{gid}").text
    assert '<span class="badge badge-stalled">Stalled</span>' in page
    r = c.post(f"/g/{gid}/retry", {"csrf_token": token(page, f"/g/{gid}/retry"), "next": f"/g/{gid}"})
    assert r.status == 303 and r.location == f"/g/{gid}"
    [ev] = retry_events(env.store)
    assert ev["ok"] == 1 and ev["user_id"] == "alice" and ev["generation_id"] == gid
    assert ev["detail"].startswith("2 asset(s) to make; pid ")
    # Reopened at once: a second press is refused while its process starts (or runs).
    again = c.post(f"/g/{gid}/retry", {"csrf_token": token(page, f"/g/{gid}/retry"), "next": f"/g/{gid}"})
    assert again.status == 409
    assert "started moments ago" in again.text or "being processed by another aigen process" in again.text
    assert retry_events(env.store)[-1]["ok"] == 0 and retry_events(env.store)[-1]["reason"] == "busy"
    # The detached `aigen retry` makes the assets.
    assert wait_for(lambda: env.store.get_generation(gid)["status"] == "Completed", 60), \
        (env.home.path / "logs" / f"{gid}.log").read_text()
    made = env.store.assets(gid)
    assert [a["status"] for a in made] == ["done", "done"]
    assert all((env.home.path / a["path"]).stat().st_size == a["bytes"] for a in made)


def test_retry_of_a_failed_generation_skips_refused_assets_unless_asked(env, monkeypatch):
    gid = seed_generation(env.store, env.home, "alice", "half refused", images=3, videos=0,
                          fail=(("image", 2), ("image", 3)))
    a3 = [a for a in env.store.assets(gid) if a["idx"] == 3][0]
    env.store.fail_asset(a3["id"], "refused by local: flagged", code="moderation", refused=True)
    stale(env.store, gid)
    started = []
    monkeypatch.setattr("aigen.pipeline.background.spawn_detached",
                        lambda home_path, gen_id, include_refused=False: (started.append(
                            (gen_id, include_refused)) or (4242, home_path / "logs" / f"{gen_id}.log")))
    c = env.client()
    c.login("alice")
    for _ in range(2):  # the second page comes from the section cache: the token is still this session's
        page = c.get("/").text
        assert ">Retry</button>" in page
    tok = token(page, f"/g/{gid}/retry")
    assert tok == re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    r = c.post(f"/g/{gid}/retry", {"csrf_token": tok, "next": "/"})
    assert r.status == 303 and r.location == f"/#g-{gid}"
    assert started == [(gid, False)]
    states = {a["idx"]: a["status"] for a in env.store.assets(gid)}
    assert states == {1: "done", 2: "queued", 3: "failed"}  # the refused one stays failed
    assert env.store.get_generation(gid)["status"] == "Processing"
    ev = retry_events(env.store)[-1]
    assert ev["ok"] == 1 and ev["detail"] == "1 asset(s) to make, 1 refused skipped; pid 4242"


def test_retry_when_every_missing_asset_was_refused_needs_include_refused(env, monkeypatch):
    gid = seed_generation(env.store, env.home, "alice", "refused", images=2, videos=0, fail=(("image", 2),))
    a2 = [a for a in env.store.assets(gid) if a["idx"] == 2][0]
    env.store.fail_asset(a2["id"], "refused by local: flagged", code="moderation", refused=True)
    stale(env.store, gid)
    started = []
    monkeypatch.setattr("aigen.pipeline.background.spawn_detached",
                        lambda home_path, gen_id, include_refused=False: (started.append(
                            (gen_id, include_refused)) or (4243, home_path / "logs" / f"{gen_id}.log")))
    c = env.client()
    c.login("alice")
    page = c.get(f"/g/{gid}").text
    assert "Submit them again anyway" in page and 'name="include_refused" value="1"' in page
    tok = token(page, f"/g/{gid}/retry")
    r = c.post(f"/g/{gid}/retry", {"csrf_token": tok, "next": f"/g/{gid}"})
    assert r.status == 409 and "every asset left to make was refused" in r.text and started == []
    assert retry_events(env.store)[-1]["reason"] == "all_refused"
    assert env.store.get_generation(gid)["status"] == "Failed"
    r = c.post(f"/g/{gid}/retry", {"csrf_token": tok, "next": f"/g/{gid}", "include_refused": "1"})
    assert r.status == 303 and started == [(gid, True)]
    assert {a["idx"]: a["status"] for a in env.store.assets(gid)} == {1: "done", 2: "queued"}


def test_retry_is_refused_while_a_process_runs_it_and_for_a_completed_one(env, monkeypatch):
    busy = seed_generation(env.store, env.home, "alice", "busy", images=1, videos=0, finish=False)
    done = seed_generation(env.store, env.home, "alice", "done", images=1, videos=0)
    stale(env.store, busy, done)
    monkeypatch.setattr("aigen.pipeline.background.spawn_detached",
                        lambda *a, **k: pytest.fail("nothing may be started"))
    c = env.client()
    c.login("alice")
    tok = c.csrf("/")
    with run_lock(env.home, busy):
        r = c.post(f"/g/{busy}/retry", {"csrf_token": tok})
    assert r.status == 409 and "being processed by another aigen process" in r.text
    r = c.post(f"/g/{done}/retry", {"csrf_token": tok})
    assert r.status == 409 and "already Completed" in r.text
    assert [e["reason"] for e in retry_events(env.store)] == ["busy", "busy"]


def test_retry_needs_csrf_a_login_and_ownership(env, monkeypatch):
    gid = seed_generation(env.store, env.home, "alice", "mine", images=1, videos=0, finish=False)
    stale(env.store, gid)
    monkeypatch.setattr("aigen.pipeline.background.spawn_detached",
                        lambda *a, **k: pytest.fail("nothing may be started"))
    before = env.store.get_generation(gid)

    # Not logged in: to the login page, and back here after it.
    anon = env.client()
    r = anon.post(f"/g/{gid}/retry", {"csrf_token": anon.csrf()})
    assert r.status == 303 and r.location == f"/login?next=/g/{gid}"

    c = env.client()
    c.login("alice")
    r = c.post(f"/g/{gid}/retry", {})
    assert r.status == 403 and "expired or did not come from this page" in r.text
    r = c.post(f"/g/{gid}/retry", {"csrf_token": "0" * 40})
    assert r.status == 403
    r = c.post(f"/g/{gid}/retry", {"csrf_token": c.csrf("/")}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "another site" in r.text
    assert [e["reason"] for e in retry_events(env.store)] == ["csrf", "csrf", "cross_site"]

    # Another user: the same 404 as a generation that does not exist; nothing logged against it.
    bob = env.client()
    bob.login("bob")
    r = bob.post(f"/g/{gid}/retry", {"csrf_token": bob.csrf("/")})
    assert r.status == 404 and "not yours" in r.text
    assert bob.post("/g/abcdef0123/retry", {"csrf_token": bob.csrf("/")}).status == 404
    assert not retry_events(env.store, user_id="bob")
    assert env.store.get_generation(gid) == before
    # GET is not a way in.
    assert c.get(f"/g/{gid}/retry").status == 405
