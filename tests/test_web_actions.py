"""The gallery's actions at the WSGI level: the ask form and `POST /api/generations` (the CLI's messages, the
fairness limits), Make again, Delete (rows, files, refused while running), Download all (a streamed zip), and
the search of the gallery page. Every new route: not logged in, CSRF, another site, another user, events."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile

import pytest
from fakes.web import Clock, WsgiClient, events, open_home, seed_generation

from aigen.pipeline.limits import Limits
from aigen.web.app import WebSettings, make_app


@pytest.fixture
def env(home):
    h, store = open_home(home)
    started = []

    class Env:
        pass

    e = Env()
    e.home, e.store, e.clock, e.started = h, store, Clock(), started

    def start(home_path, store_, gen_id):
        started.append(gen_id)
        return {"queued": False, "pid": 4242, "log": "x"}

    def app(**kw):
        kw.setdefault("start", start)
        kw.setdefault("limits", Limits(running_per_user=5, assets_per_day=100))
        return make_app(WebSettings(home=h, store=store, clock=e.clock, **kw))

    e.make_app = app
    e.app = app()
    e.client = lambda app_=None, **kw: JsonClient(app_ or e.app, **kw)
    return e


def logged_in(e, user="alice"):
    c = e.client()
    c.login(user)
    return c


def token(c, path="/"):
    return c.csrf(path)


def n_generations(store, user=None):
    if user is None:
        return store.query_one("SELECT count(*) AS n FROM generations")["n"]
    return store.query_one("SELECT count(*) AS n FROM generations WHERE user_id = ?", (user,))["n"]


def basic(user, code=""):
    return "Basic " + base64.b64encode(f"{user}:{code}".encode()).decode()


def post_json(c, path, body, headers=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    return c.request("POST", path, headers=h, body=data)


class JsonClient(WsgiClient):
    """WsgiClient sends form data only: this one can also send a raw body (JSON)."""

    def request(self, method, path, *, data=None, headers=None, raw=False, body=None):
        if body is None:
            return super().request(method, path, data=data, headers=headers, raw=raw)
        return _request_with_body(self, method, path, headers=headers, body=body)


def _request_with_body(self, method, path, *, headers=None, body=b""):
    import sys
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(path)
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote(parts.path), "QUERY_STRING": parts.query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": self.remote_addr, "HTTP_HOST": self.host, "HTTP_USER_AGENT": self.user_agent,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    if self.cookies:
        environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
    for k, v in (headers or {}).items():
        key = k.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = v
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
    from fakes.web import Resp

    hl = captured["headers"]
    return Resp(captured["status"], {k.lower(): v for k, v in hl}, hl, out)



FORM = {"prompt": "a red fox at dawn", "images": "2", "videos": "1", "image_provider": "local",
        "video_provider": "local", "image_size": "256x256", "video_size": "320x240", "notify_at": "",
        "notify_via": "none", "email": ""}


# -- the ask form -----------------------------------------------------------------------------------------------


def test_the_form_needs_a_login_and_offers_only_providers_with_keys(env, monkeypatch):
    c = env.client()
    r = c.get("/new")
    assert r.status == 303 and r.location.startswith("/login")
    r = c.post("/new", {**FORM, "csrf_token": "0" * 64})
    assert r.status == 303 and r.location.startswith("/login")
    assert n_generations(env.store) == 0 and env.started == []

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RUNWAYML_API_SECRET", raising=False)
    c = logged_in(env)
    page = c.get("/new")
    assert page.status == 200
    assert 'name="csrf_token"' in page.text and 'name="prompt"' in page.text
    image_opts = re.search(r'name="image_provider">(.*?)</select>', page.text, re.S).group(1)
    assert 'value="local"' in image_opts and 'value="openai"' not in image_opts  # no key: not offered
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    image_opts = re.search(r'name="image_provider">(.*?)</select>', c.get("/new").text, re.S).group(1)
    assert 'value="openai"' in image_opts
    video_opts = re.search(r'name="video_provider">(.*?)</select>', c.get("/new").text, re.S).group(1)
    assert 'value="openai"' not in video_opts  # it makes no videos
    assert "Limits per user: 5 in progress at once, 100 images and videos a day" in page.text


def test_the_form_creates_and_starts_a_generation_and_logs_it(env):
    c = logged_in(env)
    r = c.post("/new", {**FORM, "csrf_token": token(c, "/new")})
    assert r.status == 303
    gid = r.location.rsplit("/", 1)[-1]
    assert r.location == f"/g/{gid}" and env.started == [gid]
    gen = env.store.get_generation(gid)
    assert (gen["user_id"], gen["prompt"], gen["status"]) == ("alice", "a red fox at dawn", "Processing")
    assert (gen["image_count"], gen["video_count"]) == (2, 1)
    assert gen["options"]["image_size"] == [256, 256] and gen["options"]["video_size"] == [320, 240]
    assert gen["notify_via"] == []
    assert len(env.store.assets(gid)) == 3
    ev = events(env.store, kind="generation_requested")
    assert len(ev) == 1 and ev[0]["ok"] == 1 and ev[0]["generation_id"] == gid and ev[0]["user_id"] == "alice"
    assert ev[0]["detail"] == "form: 3 asset(s), pid 4242" and ev[0]["session_id"]


def test_the_form_gives_the_clis_message_for_the_same_bad_input_and_writes_nothing(env, cli):
    import html

    c = logged_in(env)
    base = ["--images", "2", "--videos", "1", "--image-size", "256x256", "--video-size", "320x240"]
    cases = [
        ({"images": "11"}, ["--images", "11"]),
        ({"images": "x"}, ["--images", "x"]),
        ({"video_size": "321x240"}, ["--video-size", "321x240"]),
        ({"image_provider": "nosuch"}, ["--image-provider", "nosuch"]),
        ({"notify_at": "25:99"}, ["--notify-at", "25:99"]),
        ({"notify_via": "pigeon"}, ["--notify-via", "pigeon"]),
        ({"notify_via": "email"}, ["--notify-via", "email"]),
        ({"images": "0", "videos": "0"}, ["--images", "0", "--videos", "0"]),
    ]
    for change, flags in cases:
        form = {**FORM, **change, "csrf_token": token(c, "/new")}
        r = c.post("/new", form)
        assert r.status == 400, (change, r.text[:300])
        shown = html.unescape(re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S).group(1))
        via = [] if "notify_via" in change else ["--notify-via", "none"]
        out = cli("generate", form["prompt"], "--user", "alice", "--dry-run", *base, *via, *flags)
        assert out.exit_code == 2, out.output
        said = " ".join(line.strip() for line in out.output.splitlines())
        assert f"Error: {shown}" in said or f"Invalid value" in said and shown in said, (change, shown, said)
        # What was typed is kept in the form.
        for k, v in change.items():
            assert html.escape(v) in r.text
    r = c.post("/new", {**FORM, "prompt": "   ", "csrf_token": token(c, "/new")})
    assert r.status == 400 and "invalid prompt" in r.text
    assert n_generations(env.store) == 0 and env.started == []
    bad = events(env.store, kind="generation_requested")
    assert len(bad) == len(cases) + 1 and all(e["ok"] == 0 and e["reason"] == "bad_input" for e in bad)


def test_the_form_refuses_without_a_csrf_token_or_from_another_site(env):
    c = logged_in(env)
    r = c.post("/new", {**FORM})
    assert r.status == 403 and "did not come from this page" in r.text
    r = c.post("/new", {**FORM, "csrf_token": "zz" * 32})
    assert r.status == 403
    r = c.post("/new", {**FORM, "csrf_token": "\u00e9" * 64})  # not ASCII: refused, not a 500
    assert r.status == 403
    r = c.post("/new", {**FORM, "csrf_token": token(c, "/new")}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "another site" in r.text
    r = c.post("/new", {**FORM, "csrf_token": token(c, "/new")}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403
    assert n_generations(env.store) == 0 and env.started == []
    reasons = [e["reason"] for e in events(env.store, kind="generation_requested")]
    assert reasons == ["csrf", "csrf", "csrf", "cross_site", "cross_site"]


def test_fairness_limits_refuse_with_429_and_show_on_the_page(env, home):
    e = env
    e.app = e.make_app(limits=Limits(running_per_user=2, assets_per_day=10))
    c = logged_in(e)
    for _ in range(2):
        assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 303
    # Two in progress (Processing): the third is refused, said on the page and in the form.
    page = c.get("/new")
    assert "You have 2 generation(s) in progress, the most allowed at once (2)" in page.text
    r = c.post("/new", {**FORM, "csrf_token": token(c, "/new")})
    assert r.status == 429 and "the most allowed at once (2)" in r.text
    assert n_generations(e.store, "alice") == 2
    # Another user is not held back by alice's.
    bob = logged_in(e, "bob")
    assert bob.post("/new", {**FORM, "csrf_token": token(bob, "/new")}).status == 303
    # Assets per day: 6 asked by alice; 3 more fit, 6 more do not, even when the running ones are done.
    for gid in [g["id"] for g in e.store.list_generations(user_id="alice")]:
        e.store.set_generation_fields(gid, status="Completed")
    r = c.post("/new", {**FORM, "images": "5", "videos": "1", "csrf_token": token(c, "/new")})
    assert r.status == 429 and "You asked for 6 images and videos in the last 24 hours; the limit is 10 a day, " \
                               "so 4 more can be asked for now." in r.text
    assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 303  # 3 more: 9 of 10
    # A deleted generation still counts toward the day.
    gid = e.store.list_generations(user_id="alice", limit=1)[0]["id"]
    e.store.set_generation_fields(gid, status="Completed")
    assert c.post(f"/g/{gid}/delete", {"csrf_token": token(c, f"/g/{gid}/delete")}).status == 303
    r = c.post("/new", {**FORM, "images": "1", "videos": "1", "csrf_token": token(c, "/new")})
    assert r.status == 429
    # ...until 24 hours have passed (the clock is the app's).
    e.clock.advance(24 * 3600 + 1)
    assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 303
    reasons = [ev["reason"] for ev in events(e.store, kind="generation_requested") if not ev["ok"]]
    assert reasons == ["limit_reached"] * 3


def test_limits_come_from_config_toml_and_a_bad_table_is_said(env, home):
    app = env.make_app(limits=None)
    c = JsonClient(app)
    c.login("alice")
    (env.home.path / "config.toml").write_text("[limits]\nrunning_per_user = 1\nassets_per_day = 50\n")
    assert "Limits per user: 1 in progress at once, 50 images and videos a day" in c.get("/new").text
    assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 303
    assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 429
    (env.home.path / "config.toml").write_text("[limits]\nrunning_per_user = -1\n")
    page = c.get("/new")
    assert "running_per_user = -1 is not a whole number from 0 (no limit) to 1000000" in page.text
    r = c.post("/new", {**FORM, "csrf_token": token(c, "/new")})
    assert r.status == 400 and "running_per_user = -1" in r.text
    (env.home.path / "config.toml").write_text("[limits]\nrunning_per_user = 0\nassets_per_day = 0\n")
    for _ in range(3):
        assert c.post("/new", {**FORM, "csrf_token": token(c, "/new")}).status == 303


# -- POST /api/generations ----------------------------------------------------------------------------------------


API_BODY = {"prompt": "a red fox at dawn", "images": 1, "videos": 1, "image_size": "256x256",
            "video_size": "320x240", "notify_via": "none"}


def test_api_create_with_basic_auth_answers_201_with_the_id_and_urls(env):
    c = env.client()
    r = post_json(c, "/api/generations", API_BODY, {"Authorization": basic("alice")})
    assert r.status == 201, r.text
    d = r.json()
    gid = d["id"]
    assert d == {"id": gid, "status": "Processing", "url": f"http://127.0.0.1:8000/g/{gid}",
                 "api_url": f"http://127.0.0.1:8000/api/generations/{gid}",
                 "status_url": f"http://127.0.0.1:8000/api/generations/{gid}/status"}
    assert r.header("location") == f"/api/generations/{gid}"
    assert env.started == [gid] and env.store.get_generation(gid)["user_id"] == "alice"
    ev = events(env.store, kind="generation_requested")
    assert ev[-1]["ok"] == 1 and ev[-1]["detail"].startswith("api: 2 asset(s)")
    # The API reads it back.
    assert c.get(f"/api/generations/{gid}", headers={"Authorization": basic("alice")}).json()["id"] == gid


def test_api_create_with_a_session_needs_the_csrf_header(env):
    c = logged_in(env)
    r = post_json(c, "/api/generations", API_BODY)
    assert r.status == 403 and "X-CSRF-Token" in r.json()["message"]
    r = post_json(c, "/api/generations", API_BODY, {"X-CSRF-Token": "ab" * 32})
    assert r.status == 403
    assert n_generations(env.store) == 0
    r = post_json(c, "/api/generations", API_BODY, {"X-CSRF-Token": token(c)})
    assert r.status == 201
    assert [e["reason"] for e in events(env.store, kind="generation_requested")] == ["csrf", "csrf", None]


def test_api_create_refusals(env, cli):
    c = env.client()
    auth = {"Authorization": basic("alice")}
    r = post_json(c, "/api/generations", API_BODY)
    assert r.status == 401 and r.header("www-authenticate") == 'Basic realm="aigen"'
    # Not JSON: a form another site could send is not even read.
    r = c.request("POST", "/api/generations", headers={**auth, "Content-Type": "text/plain"},
                  body=json.dumps(API_BODY).encode())
    assert r.status == 415
    r = post_json(c, "/api/generations", API_BODY, {**auth, "Origin": "http://evil.example"})
    assert r.status == 403
    r = post_json(c, "/api/generations", None, auth, raw=b"{not json")
    assert r.status == 400 and r.json()["message"].startswith("the body is not valid JSON")
    r = post_json(c, "/api/generations", ["a"], auth)
    assert r.status == 400 and "JSON object" in r.json()["message"]
    r = post_json(c, "/api/generations", {**API_BODY, "seed": 3}, auth)
    assert r.status == 400 and r.json()["message"].startswith("unknown field 'seed'")
    r = post_json(c, "/api/generations", {"images": 1}, auth)
    assert r.status == 400 and r.json()["message"] == "Missing argument 'PROMPT'."
    r = post_json(c, "/api/generations", {**API_BODY, "images": True}, auth)
    assert r.status == 400
    # The same message as the CLI for the same bad value.
    r = post_json(c, "/api/generations", {**API_BODY, "images": 11}, auth)
    cli_msg = json.loads(cli("generate", "x", "--user", "alice", "--images", "11", "--json").output)["message"]
    assert r.status == 400 and r.json() == {"error": "bad_input", "message": cli_msg}
    r = post_json(c, "/api/generations", {**API_BODY, "image_size": "12"}, auth)
    cli_msg = json.loads(cli("generate", "x", "--user", "alice", "--image-size", "12", "--json").output)["message"]
    assert r.status == 400 and r.json()["message"] == cli_msg
    assert n_generations(env.store) == 0 and env.started == []


def test_api_create_answers_429_at_a_limit(env):
    env.app = env.make_app(limits=Limits(running_per_user=1, assets_per_day=0))
    c = env.client()
    auth = {"Authorization": basic("alice")}
    assert post_json(c, "/api/generations", API_BODY, auth).status == 201
    r = post_json(c, "/api/generations", API_BODY, auth)
    assert r.status == 429 and r.json()["error"] == "limit_reached" and r.header("retry-after") == "60"
    assert "the most allowed at once (1)" in r.json()["message"]
    assert n_generations(env.store) == 1


def test_api_create_off_loopback_needs_the_access_code(env):
    from aigen.web import access

    app = env.make_app(host="0.0.0.0")
    c = JsonClient(app, host="gallery.example:8000", remote_addr="10.0.0.9")
    code = access.set_code(env.store, "alice")
    r = post_json(c, "/api/generations", API_BODY, {"Authorization": basic("alice", "")})
    assert r.status == 401
    r = post_json(c, "/api/generations", API_BODY, {"Authorization": basic("alice", "WRONG-CODE-0000")})
    assert r.status == 401
    assert n_generations(env.store) == 0
    r = post_json(c, "/api/generations", API_BODY, {"Authorization": basic("alice", code)})
    assert r.status == 201 and r.json()["url"].startswith("http://gallery.example:8000/g/")
    assert n_generations(env.store) == 1


# -- Make again ------------------------------------------------------------------------------------------------


def test_make_again_asks_for_the_same_prompt_and_options_as_a_new_generation(env):
    c = logged_in(env)
    r = c.post("/new", {**FORM, "image_size": "320x256", "csrf_token": token(c, "/new")})
    first = r.location.rsplit("/", 1)[-1]
    env.store.set_generation_fields(first, status="Completed")
    page = c.get(f"/g/{first}/again")
    assert page.status == 200 and "a red fox at dawn" in page.text
    # Its CLI twin, shell-quoted.
    assert ("aigen generate &#039;a red fox at dawn&#039; --user alice --images 2 --videos 1 "
            "--image-size 320x256 --video-size 320x240 --notify-via none") in page.text
    r = c.post(f"/g/{first}/again", {"csrf_token": token(c, f"/g/{first}/again")})
    assert r.status == 303
    second = r.location.rsplit("/", 1)[-1]
    assert second != first and env.started == [first, second]
    a, b = env.store.get_generation(first), env.store.get_generation(second)
    for k in ("user_id", "prompt", "image_count", "video_count", "image_provider", "video_provider", "image_model",
              "video_model", "options", "notify_via"):
        assert a[k] == b[k], k
    assert b["status"] == "Processing"
    assert [(x["kind"], x["idx"], x["width"], x["height"]) for x in env.store.assets(first)] == \
           [(x["kind"], x["idx"], x["width"], x["height"]) for x in env.store.assets(second)]
    ev = events(env.store, kind="generation_requested")[-1]
    assert ev["ok"] == 1 and ev["generation_id"] == second and ev["detail"].startswith(f"make again from {first}")


def test_make_again_of_another_users_generation_is_404_and_makes_nothing(env):
    gid = seed_generation(env.store, env.home, "bob", "bob's own")
    c = logged_in(env, "alice")
    assert c.get(f"/g/{gid}/again").status == 404
    r = c.post(f"/g/{gid}/again", {"csrf_token": token(c)})
    assert r.status == 404 and "bob's own" not in r.text
    assert n_generations(env.store) == 1 and env.started == []
    # Without a token, or from another site: 403 before anything.
    own = seed_generation(env.store, env.home, "alice", "mine")
    assert c.post(f"/g/{own}/again", {}).status == 403
    assert c.post(f"/g/{own}/again", {"csrf_token": token(c)}, headers={"Origin": "http://evil.example"}).status == 403
    assert n_generations(env.store) == 2
    anon = env.client()
    r = anon.post(f"/g/{own}/again", {"csrf_token": token(c)})
    assert r.status == 303 and r.location.startswith("/login")


def test_make_again_says_why_it_cannot_and_makes_nothing(env, monkeypatch):
    gid = seed_generation(env.store, env.home, "alice", "needs a key")
    env.store.set_generation_fields(gid, image_provider="openai", video_count=0)
    with env.store.transaction() as db:
        db.conn.execute("DELETE FROM assets WHERE generation_id = ? AND kind = 'video'", (gid,))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    c = logged_in(env)
    r = c.post(f"/g/{gid}/again", {"csrf_token": token(c)})
    assert r.status == 400 and "provider &#039;openai&#039; needs OPENAI_API_KEY" in r.text
    assert n_generations(env.store) == 1


# -- Delete ----------------------------------------------------------------------------------------------------


def test_delete_asks_first_then_removes_rows_and_files_and_logs_it(env):
    gid = seed_generation(env.store, env.home, "alice", "to be deleted")
    keep = seed_generation(env.store, env.home, "alice", "to be kept")
    folder = env.home.content_dir / "alice" / gid
    assert len(list(folder.iterdir())) == 15  # 5 images, 5 videos, 5 posters
    c = logged_in(env)
    page = c.get(f"/g/{gid}/delete")
    assert page.status == 200 and "to be deleted" in page.text and "removes its 10 files" in page.text
    assert f'action="/g/{gid}/delete"' in page.text and "aigen delete " + gid in page.text
    assert folder.exists()  # a GET never deletes
    r = c.post(f"/g/{gid}/delete", {"csrf_token": token(c, f"/g/{gid}/delete")})
    assert r.status == 303 and r.location == "/?deleted=1"
    assert "The generation was deleted, with its files." in c.get(r.location).text
    assert not folder.exists()
    assert env.store.query_one("SELECT count(*) AS n FROM generations WHERE id = ?", (gid,))["n"] == 0
    assert env.store.query_one("SELECT count(*) AS n FROM assets WHERE generation_id = ?", (gid,))["n"] == 0
    assert (env.home.content_dir / "alice" / keep).exists() and len(env.store.assets(keep)) == 10
    ev = events(env.store, kind="generation_deleted")
    assert len(ev) == 1 and ev[0]["ok"] == 1 and ev[0]["generation_id"] == gid
    assert ev[0]["detail"] == "from the gallery: 15 file(s)"
    # Gone: its page, its files and the search index.
    assert c.get(f"/g/{gid}").status == 404
    assert "to be deleted" not in c.get("/?q=deleted").text
    assert c.post(f"/g/{gid}/delete", {"csrf_token": token(c)}).status == 404


def test_delete_of_another_users_generation_is_404_and_deletes_nothing(env):
    gid = seed_generation(env.store, env.home, "bob", "bob's")
    c = logged_in(env, "alice")
    assert c.get(f"/g/{gid}/delete").status == 404
    r = c.post(f"/g/{gid}/delete", {"csrf_token": token(c)})
    assert r.status == 404
    assert (env.home.content_dir / "bob" / gid).exists() and len(env.store.assets(gid)) == 10
    assert events(env.store, kind="generation_deleted") == []


def test_delete_refuses_without_csrf_or_login_and_while_running(env):
    from aigen.pipeline.run import run_lock

    gid = seed_generation(env.store, env.home, "alice", "busy one", finish=False)
    c = logged_in(env)
    assert c.post(f"/g/{gid}/delete", {}).status == 403
    assert c.post(f"/g/{gid}/delete", {"csrf_token": token(c)}, headers={"Origin": "null"}).status == 403
    r = env.client().post(f"/g/{gid}/delete", {"csrf_token": token(c)})
    assert r.status == 303 and r.location.startswith("/login")
    with run_lock(env.home, gid):  # a process is making it
        page = c.get(f"/g/{gid}/delete")
        assert "being made right now" in page.text and 'action="/g/' not in page.text
        r = c.post(f"/g/{gid}/delete", {"csrf_token": token(c)})
        assert r.status == 409 and f"generation {gid} is being made right now" in r.text
    assert len(env.store.assets(gid)) == 10
    reasons = [e["reason"] for e in events(env.store, kind="generation_deleted")]
    assert reasons == ["csrf", "cross_site", "running"]
    # A stalled one (Processing, nobody on it) can be deleted.
    r = c.post(f"/g/{gid}/delete", {"csrf_token": token(c)})
    assert r.status == 303 and n_generations(env.store) == 0


# -- Download all -----------------------------------------------------------------------------------------------


def test_download_all_is_a_zip_of_every_file_streamed(env):
    gid = seed_generation(env.store, env.home, "alice", "a red fox at dawn", fail=(("image", 3),))
    c = logged_in(env)
    r = c.get(f"/g/{gid}/download.zip")
    assert r.status == 200 and r.header("content-type") == "application/zip"
    assert r.header("content-disposition") == f'attachment; filename="aigen-a-red-fox-at-dawn-{gid}.zip"'
    zf = zipfile.ZipFile(io.BytesIO(r.body))
    assert zf.testzip() is None
    names = zf.namelist()
    folder = f"aigen-a-red-fox-at-dawn-{gid}"
    assert names == [f"{folder}/prompt.txt"] + [f"{folder}/image_{i}.png" for i in (1, 2, 4, 5)] + \
        [f"{folder}/video_{i}.mp4" for i in range(1, 6)]
    assert zf.read(f"{folder}/prompt.txt") == b"a red fox at dawn\n"
    for a in env.store.assets(gid):
        if a["status"] != "done":
            continue
        info = zf.getinfo(f"{folder}/{a['path'].rsplit('/', 1)[-1]}")
        assert info.compress_type == zipfile.ZIP_STORED
        assert hashlib.sha256(zf.read(info)).hexdigest() == a["sha256"]
    ev = events(env.store, kind="zip_download")
    assert len(ev) == 1 and ev[0]["generation_id"] == gid and ev[0]["detail"].startswith("9 file(s)")
    # The page links it, saying what it is.
    assert f'href="/g/{gid}/download.zip" download>Download all 9 files (zip)' in c.get("/").text


def test_download_all_returns_an_iterator_whose_memory_does_not_grow_with_the_files(env):
    import tracemalloc

    gid = seed_generation(env.store, env.home, "alice", "big files", images=0, videos=2)
    big = 24 << 20
    for a in env.store.assets(gid):  # two 24 MB videos
        path = env.home.path / a["path"]
        with open(path, "wb") as fh:
            for i in range(big >> 20):
                fh.write(bytes([i % 251]) * (1 << 20))
        env.store.complete_asset(a["id"], {"path": a["path"], "bytes": big, "sha256": "x"})
    c = logged_in(env)
    environ_client = c
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status

    import sys

    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": f"/g/{gid}/download.zip",
               "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
               "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in environ_client.cookies.items()),
               "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
               "wsgi.run_once": False}
    tracemalloc.start()
    try:
        body = env.app(environ, start_response)
        assert not isinstance(body, (bytes, list))  # an iterator, not a built blob
        total, chunks, biggest = 0, 0, 0
        digest = hashlib.sha256()
        for chunk in body:
            total += len(chunk)
            chunks += 1
            biggest = max(biggest, len(chunk))
            digest.update(chunk)
        if hasattr(body, "close"):
            body.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert captured["status"].startswith("200")
    assert total > 2 * big and chunks > 700 and biggest <= 70_000
    assert peak < 4 << 20, peak  # 48 MB went through; a few MB at most were held at once


def test_download_all_is_owner_only(env):
    gid = seed_generation(env.store, env.home, "bob", "bob's")
    c = logged_in(env, "alice")
    r = c.get(f"/g/{gid}/download.zip")
    assert r.status == 404 and b"PK" not in r.body[:2]
    r = env.client().get(f"/g/{gid}/download.zip")
    assert r.status == 303 and r.location.startswith("/login")
    # A row tampered to point outside its folder is a 404, not another file.
    own = seed_generation(env.store, env.home, "alice", "mine")
    a = env.store.assets(own)[0]
    with env.store.transaction() as db:
        db.conn.execute("UPDATE assets SET path = ? WHERE id = ?", (f"generated_content/bob/{gid}/image_1.png", a["id"]))
    assert c.get(f"/g/{own}/download.zip").status == 404
    assert events(env.store, kind="zip_download") == []


def test_download_all_of_a_generation_with_no_files_yet_is_404(env):
    gid = seed_generation(env.store, env.home, "alice", "nothing yet", finish=False)
    c = logged_in(env)
    r = c.get(f"/g/{gid}/download.zip")
    assert r.status == 404 and "no files yet" in r.text
    assert "download.zip" not in c.get("/").text


# -- search --------------------------------------------------------------------------------------------------


def test_search_finds_by_a_word_filters_sorts_and_pages_with_the_query_in_the_url(env):
    clock = env.clock
    ids = {}
    for i, prompt in enumerate(["a red fox at dawn", "blue ocean waves", "the Fox and the hound",
                                "mountain lake, red sky", "Café crème"]):
        clock.advance(60)
        ids[prompt] = seed_generation(env.store, env.home, "alice", prompt, images=1, videos=0, now=clock())
    seed_generation(env.store, env.home, "bob", "bob's red fox", images=1, videos=0)
    env.store.set_generation_fields(ids["blue ocean waves"], status="Failed")
    c = logged_in(env)

    def found(query):
        r = c.get("/?" + query)
        assert r.status == 200, (query, r.text[:300])
        return [p for p in re.findall(r'<h2 class="prompt"><a href="/g/[0-9a-f]+">(.*?)</a></h2>', r.text)]

    import html

    assert found("q=fox") == ["the Fox and the hound", "a red fox at dawn"]
    assert found("q=FOX+red") == ["a red fox at dawn"]
    assert found("q=fox&sort=oldest") == ["a red fox at dawn", "the Fox and the hound"]
    assert found("q=red") == ["mountain lake, red sky", "a red fox at dawn"]  # never bob's
    assert found("q=cafe") == [html.escape("Café crème")]  # accents ignored
    assert found("status=Failed") == ["blue ocean waves"]
    assert found("provider=local&q=ocean") == ["blue ocean waves"]
    assert found("provider=runway") == []
    assert "Nothing matches" in c.get("/?q=zebra").text
    assert "1 match." in c.get("/?q=ocean").text
    page = c.get("/?q=fox")
    assert 'value="fox"' in page.text and "2 matches." in page.text
    # Hostile input is words, never FTS syntax: no error, and a sensible answer.
    for q in ['"', '*', 'NEAR(', 'fox*', '"fox', 'fox"', 'AND', 'OR fox', '-fox', 'fox:', '^fox', '(', "'",
              '%', '_', '\\', 'NEAR(fox red, 2)', '{fox}', 'prompt:fox', 'x' * 500, '🦊', '\u202e']:
        from urllib.parse import quote

        r = c.get("/?q=" + quote(q))
        assert r.status == 200, q
    # "NEAR(fox red, 2)" is the words near, fox, red and 2, all of which must appear: none has them all.
    assert found("q=" + "NEAR%28fox%20red%2C%202%29") == []
    assert found("q=%22fox%22+%2Ared") == ["a red fox at dawn"]  # '"fox" *red': the words fox and red


def test_prompt_copied_is_recorded_only_with_the_token_for_the_owner(env):
    """POST /g/ID/copied: the Copy prompt buttons' record. CSRF header, owner only, logged in."""
    gid = seed_generation(env.store, env.home, "alice", "a fox to copy")
    assert env.client().request("POST", f"/g/{gid}/copied", body=b"").status == 401
    c = logged_in(env)
    assert c.request("POST", f"/g/{gid}/copied", body=b"").status == 403
    assert c.request("POST", f"/g/{gid}/copied?from=viewer", headers={"X-CSRF-Token": token(c)}, body=b"").status == 204
    bob = logged_in(env, "bob")
    assert bob.request("POST", f"/g/{gid}/copied", headers={"X-CSRF-Token": token(bob)}, body=b"").status == 404
    other_site = c.request("POST", f"/g/{gid}/copied", body=b"",
                           headers={"X-CSRF-Token": token(c), "Origin": "https://evil.example"})
    assert other_site.status == 403
    rows = env.store.query("SELECT ok, reason, user_id, detail FROM events WHERE kind = 'prompt_copied' "
                           "AND generation_id = ? ORDER BY id", (gid,))
    assert [(r["ok"], r["reason"]) for r in rows] == [(0, "csrf"), (1, None), (0, "cross_site")]
    assert rows[1]["detail"] == "from the viewer" and rows[1]["user_id"] == "alice"
