"""Cluster mode, files in S3 and a stateless gallery: the pipeline writes its files to a real S3 server (SeaweedFS,
which checks signatures), the gallery serves them by presigned redirect or stream, and several gallery processes
share the signing secret, the sessions and the login limiter.

Run with AIGEN_REQUIRE_CLUSTER=1 (and AIGEN_REQUIRE_BROWSER=1 for the Chromium tests): a service that cannot
start is then a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from fakes.serve import Browser, aigen_serve
from fakes.testproviders import tiny_png
from test_pipeline import new_generation
from test_providers_runway import decoded_prompt_image, env, fake, sleeps  # noqa: F401 - fixtures
from test_providers_runway import new_generation as runway_generation
from test_web_browser import browser, log_in, page  # noqa: F401 - fixtures

from aigen.config import resolve_home
from aigen.errors import BadInput
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.pipeline.run import Runner
from aigen.store import Store
from aigen.web.app import WebSettings, make_app
from aigen.web.server import GalleryServer

SMALL = ["--images", "2", "--videos", "1", "--image-provider", "local", "--video-provider", "local",
         "--image-size", "64x64", "--video-size", "64x64", "--duration", "1"]
SECRET = "k" * 24 + "0123456789abcdef0123456789abcdef"


def s3_storage(s3_env):
    from aigen.storage import from_config

    return from_config(None, s3_env)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe_bytes(tmp_path: Path, key: str, data: bytes):
    """Check the bytes decode as the media their key says: an image (png/jpg) or a video (mp4)."""
    from aigen.media import probe

    local = tmp_path / key.replace("/", "_")
    local.write_bytes(data)
    if key.endswith(".mp4"):
        return probe.check_video(local)
    im = probe.probe_image(local)
    assert im.format in ("png", "jpeg"), (key, im.format)
    return im


def made_in_s3(home: Path, s3_env, user: str, prompt: str, *, images: int = 2, videos: int = 1,
               video_size: str = "320x240", duration: float = 1.5, worker: Path | None = None, store=None):
    """A generation made by the real pipeline (`local` provider) straight into S3; its store and id.

    With `worker`, the pipeline runs with that other, empty home (another machine: its own scratch and locks,
    no folder shared with `home`, only the database and the bucket)."""
    h = resolve_home(home)
    h.ensure()
    store = store if store is not None else Store(h.db_path)
    spec = RequestSpec(user_id=user, prompt=prompt, images=images, videos=videos, image_provider="local",
                       video_provider="local", image_size="64x64", video_size=video_size, duration=duration,
                       fps=24, seed=11)
    gen, assets = prepare(spec, home=h.path)
    gid = store.create_generation(gen, assets)
    runner_home = h
    if worker is not None:
        runner_home = resolve_home(worker)
        runner_home.ensure()
    result = Runner(store, runner_home, storage=s3_storage(s3_env)).run(gid)
    assert result.generation["status"] == "Completed", result.generation.get("error")
    return h, store, gid


# -- the pipeline -------------------------------------------------------------------------------------------------

def test_generate_with_s3_writes_no_file_in_the_home_and_every_object_is_valid_media(cli, home, s3_env, monkeypatch,
                                                                                       tmp_path):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    r = cli("generate", "a red fox at dawn", "--user", "alice", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    # Nothing under the home's generated_content (nor left in the scratch folder): the files are in S3 only.
    assert files_under(home / "generated_content") == []
    assert files_under(home / "scratch") == []
    store = Store(home / "aigen.db")
    rows = store.query("SELECT kind, path, poster_path, thumb_path, thumb2x_path, bytes, sha256, width, height "
                       "FROM assets ORDER BY id")
    st = s3_storage(s3_env)
    expected = {r["path"] for r in rows} | {r["poster_path"] for r in rows if r["kind"] == "video"}
    # ...and the gallery's previews of each (WebP, beside the file).
    previews = {r[k] for r in rows for k in ("thumb_path", "thumb2x_path")}
    assert len(expected) == 4 and None not in expected and len(previews) == 6 and None not in previews
    assert all(st.read_bytes(k)[8:12] == b"WEBP" for k in previews)
    expected |= previews
    assert set(st.list("generated_content/")) == expected
    gid = data["id"]
    for r in rows:
        # assets.path is the key, today's relative path
        assert re.fullmatch(rf"generated_content/alice/{gid}/{r['kind']}_\d\.(png|mp4)", r["path"]), r["path"]
        body = st.read_bytes(r["path"])
        assert len(body) == r["bytes"] and sha(body) == r["sha256"]
        info = probe_bytes(tmp_path, r["path"], body)
        assert (info.width, info.height) == (64, 64)
    # What the command prints names where the files are: in S3, not in the home.
    url = s3_env["AIGEN_STORAGE_URL"]
    assert data["images"] == [f"{url}/{r['path']}" for r in rows if r["kind"] == "image"]
    poster = [r["poster_path"] for r in rows if r["kind"] == "video"][0]
    assert probe_bytes(tmp_path, poster, st.read_bytes(poster)).format == "jpeg"

    # aigen doctor checks the listed files in S3: all there; then one goes missing and it says so.
    r = cli("doctor", "--json")
    assert r.exit_code == 0, r.output
    st.delete(rows[0]["path"])
    r = cli("doctor", "--json")
    assert rows[0]["path"] in r.output and "file_missing" in r.output, r.output


def test_a_file_uploaded_before_a_crash_is_kept_not_made_again_and_a_bad_one_is_replaced(home, calls, s3_env,
                                                                                          tmp_path):
    h, store, gid = new_generation(home, images=3)
    st = s3_storage(s3_env)
    # As if a run was killed after the upload but before the database update...
    tiny_png(tmp_path / "one.png", 64, 64, 3)
    kept = (tmp_path / "one.png").read_bytes()
    st.put_file(tmp_path / "one.png", f"generated_content/alice/{gid}/image_1.png")
    # ...and an object that is not a valid image under another final key (it is replaced, not kept).
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    st.put_file(tmp_path / "bad.png", f"generated_content/alice/{gid}/image_2.png")

    result = Runner(store, h, storage=st).run(gid)
    assert result.generation["status"] == "Completed"
    assert sorted(c[2] for c in calls()) == ["2", "3"]  # image 1 was not paid for again
    one = next(a for a in result.assets if a["idx"] == 1)
    assert one["sha256"] == sha(kept) and one["path"] == f"generated_content/alice/{gid}/image_1.png"
    two = next(a for a in result.assets if a["idx"] == 2)
    assert probe_bytes(tmp_path, two["path"], st.read_bytes(two["path"])).width == 64
    assert files_under(h.content_dir) == []


def test_a_worker_with_its_own_empty_home_and_no_shared_folder_stores_in_s3(home, tmp_path, s3_env, calls):
    # The "office" home holds the database; the worker machine has only its own empty home (its scratch and
    # locks) and the S3 credentials: no folder is shared between them.
    office, store, gid = new_generation(home, images=2, videos=1)
    worker = resolve_home(tmp_path / "worker-machine")
    worker.ensure()
    result = Runner(store, worker, storage=s3_storage(s3_env)).run(gid)
    assert result.generation["status"] == "Completed"
    assert files_under(office.content_dir) == [] and files_under(worker.content_dir) == []
    assert files_under(worker.path / "scratch") == []
    st = s3_storage(s3_env)
    assert sorted(st.list("")) == sorted(
        [a["path"] for a in result.assets] + [a["poster_path"] for a in result.assets if a["poster_path"]]
        + [a[k] for a in result.assets for k in ("thumb_path", "thumb2x_path")])


def test_video_from_images_sends_the_image_read_back_from_s3(env, fake, home, s3_env, tmp_path):  # noqa: F811
    h, store, gid = runway_generation(home, images=2, videos=3, options={"video_from_images": True})
    st = s3_storage(s3_env)
    result = Runner(store, h, storage=st).run(gid)
    assert result.generation["status"] == "Completed", result.generation.get("error")
    images = {a["idx"]: st.read_bytes(a["path"]) for a in result.assets if a["kind"] == "image"}
    sent = sorted(decoded_prompt_image(q.json()) for q in fake.matching("POST", "/v1/image_to_video"))
    assert sent == sorted([images[1], images[2], images[1]])
    assert files_under(h.content_dir) == [] and files_under(h.path / "scratch") == []


# -- the gallery --------------------------------------------------------------------------------------------------

class Http:
    """A client that does not follow redirects, with the cookies of a logged-in Browser."""

    def __init__(self, base: str, browser: Browser | None = None):
        self.base = base
        self.browser = browser

    def get(self, url: str, headers: dict | None = None, method: str = "GET"):
        u = urllib.parse.urlsplit(url if "://" in url else self.base + url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        hdrs = dict(headers or {})
        if self.browser is not None and u.netloc == urllib.parse.urlsplit(self.base).netloc:
            hdrs["Cookie"] = self.browser.cookie_header()
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body


@pytest.fixture(params=["sqlite", "postgresql"])
def s3_site(request, tmp_path, s3_env):
    """alice's and bob's generations made into S3 by a "worker machine" (its own empty home), and a gallery per
    delivery mode over HTTP on the office home, which never holds a file; the store in the office home's SQLite
    or in PostgreSQL (the cluster case)."""
    store = None
    if request.param == "postgresql":
        from aigen.store import open_store

        store = open_store(tmp_path / "home", env={"AIGEN_DATABASE_URL": request.getfixturevalue("pg_database")})
        request.addfinalizer(store.close_all)
    h, store, gid = made_in_s3(tmp_path / "home", s3_env, "alice", "a red fox at dawn", images=1, videos=1,
                               worker=tmp_path / "worker", store=store)
    _, _, bob_gid = made_in_s3(tmp_path / "home", s3_env, "bob", "blue waves", images=1, videos=0,
                               worker=tmp_path / "worker", store=store)
    assert store.backend == request.param
    assert files_under(h.content_dir) == [] and files_under(tmp_path / "worker" / "generated_content") == []
    servers = []

    def serve(delivery: str):
        app = make_app(WebSettings(home=h, store=store, storage=s3_storage(s3_env), media_delivery=delivery))
        server = GalleryServer(app, "127.0.0.1", 0).start_in_thread()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    assets = {(a["kind"], a["idx"]): a for a in store.assets(gid)}
    try:
        yield {"home": h, "store": store, "gid": gid, "bob_gid": bob_gid, "serve": serve, "assets": assets,
               "storage": s3_storage(s3_env), "endpoint": s3_env["AIGEN_S3_ENDPOINT_URL"]}
    finally:
        for s in servers:
            s.shutdown()


def test_redirect_mode_sends_a_presigned_url_the_s3_server_serves_with_range(s3_site):
    base = s3_site["serve"]("redirect")
    b = Browser(base)
    b.login("alice")
    c = Http(base, b)
    video = s3_site["assets"][("video", 1)]
    full = s3_site["storage"].read_bytes(video["path"])

    status, headers, _ = c.get(f"/media/{video['id']}")
    assert status == 302
    location = headers["location"]
    origin = s3_site["endpoint"].rstrip("/")
    assert location.startswith(origin + "/") and "X-Amz-Signature=" in location
    assert "no-store" in headers["cache-control"]
    # The page's policy lets <img> and <video> load from the object store the redirect points to.
    status, headers, _ = c.get("/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert f"media-src 'self' {origin}" in csp and f"img-src 'self' {origin}" in csp

    # S3 serves the presigned URL (no cookie, no credentials), whole and by Range.
    status, headers, body = c.get(location)
    assert status == 200 and body == full and headers["content-type"] == "video/mp4"
    status, headers, body = c.get(location, {"Range": "bytes=100-1099"})
    assert status == 206 and body == full[100:1100]
    assert headers["content-range"] == f"bytes 100-1099/{len(full)}"
    # It checks the signature: a changed one is refused.
    forged = re.sub(r"X-Amz-Signature=([0-9a-f])", lambda m: "X-Amz-Signature=" + ("0" if m.group(1) != "0" else "1"),
                    location)
    assert c.get(forged)[0] == 403
    # The poster too, and the previews; and a download carries its Content-Disposition from S3.
    status, headers, _ = c.get(f"/media/{video['id']}/poster")
    assert status == 302 and c.get(headers["location"])[2][:2] == b"\xff\xd8"
    for variant in ("thumb", "thumb2x"):
        status, headers, _ = c.get(f"/media/{video['id']}/{variant}")
        assert status == 302
        status, headers, body = c.get(headers["location"])
        assert status == 200 and headers["content-type"] == "image/webp" and body[8:12] == b"WEBP"
    status, headers, _ = c.get(f"/media/{video['id']}?download=1")
    assert status == 302
    status, headers, body = c.get(headers["location"])
    assert status == 200 and body == full
    assert headers["content-disposition"] == f'attachment; filename="{s3_site["gid"]}-video_1.mp4"'
    # The view was logged once, as a local file's is.
    views = s3_site["store"].query("SELECT detail FROM events WHERE kind = 'asset_view' AND asset_id = ?",
                                   (video["id"],))
    assert [v["detail"] for v in views] == ["view video 1", "download video 1"]


def test_a_missing_preview_is_made_from_the_object_and_stored_beside_it(s3_site):
    base = s3_site["serve"]("stream")
    b = Browser(base)
    b.login("alice")
    c = Http(base, b)
    store, st = s3_site["store"], s3_site["storage"]
    for kind in ("image", "video"):
        a = s3_site["assets"][(kind, 1)]
        for k in ("thumb_path", "thumb2x_path"):
            st.delete(a[k])
        with store.transaction() as db:
            db.conn.execute("UPDATE assets SET thumb_path = NULL, thumb2x_path = NULL WHERE id = ?", (a["id"],))
        status, headers, body = c.get(f"/media/{a['id']}/thumb2x")
        assert status == 200 and headers["content-type"] == "image/webp" and body[8:12] == b"WEBP"
        row = store.get_asset(a["id"])
        assert row["thumb2x_path"] == a["thumb2x_path"] and st.read_bytes(row["thumb2x_path"]) == body
        assert st.exists(row["thumb_path"])
    # Another user asking never makes (or gets) one.
    bob = Browser(base)
    bob.login("bob")
    assert Http(base, bob).get(f"/media/{s3_site['assets'][('image', 1)]['id']}/thumb")[0] == 404


def test_another_users_file_and_a_tampered_path_are_404_and_never_presigned(s3_site):
    base = s3_site["serve"]("redirect")
    b = Browser(base)
    b.login("alice")
    c = Http(base, b)
    store = s3_site["store"]
    bob_image = store.assets(s3_site["bob_gid"])[0]
    status, headers, _ = c.get(f"/media/{bob_image['id']}")
    assert status == 404 and "location" not in headers
    assert Http(base).get(f"/media/{bob_image['id']}")[0] == 401  # not logged in
    # alice's own row made to point at bob's object, or out of the folder: refused before any signing.
    image = s3_site["assets"][("image", 1)]
    for bad in (bob_image["path"], f"generated_content/alice/{s3_site['gid']}/../../bob/{s3_site['bob_gid']}/x.png",
                "/etc/passwd", "generated_content/alice"):
        with store.transaction() as db:
            db.conn.execute("UPDATE assets SET path = ? WHERE id = ?", (bad, image["id"]))
        status, headers, _ = c.get(f"/media/{image['id']}")
        assert status == 404 and "location" not in headers, bad


def test_stream_mode_serves_ranges_through_the_gallery(s3_site):
    base = s3_site["serve"]("stream")
    b = Browser(base)
    b.login("alice")
    c = Http(base, b)
    video = s3_site["assets"][("video", 1)]
    full = s3_site["storage"].read_bytes(video["path"])
    n = len(full)

    status, headers, body = c.get(f"/media/{video['id']}")
    assert status == 200 and body == full and headers["accept-ranges"] == "bytes"
    assert headers["etag"] == f'"{video["sha256"][:32]}"' and headers["content-type"] == "video/mp4"
    status, headers, body = c.get(f"/media/{video['id']}", {"Range": "bytes=10-99"})
    assert status == 206 and body == full[10:100] and headers["content-range"] == f"bytes 10-99/{n}"
    status, headers, body = c.get(f"/media/{video['id']}", {"Range": "bytes=-10"})
    assert status == 206 and body == full[-10:]
    status, headers, body = c.get(f"/media/{video['id']}", {"Range": f"bytes={n}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{n}"
    status, headers, body = c.get(f"/media/{video['id']}", {"If-None-Match": f'"{video["sha256"][:32]}"'})
    assert status == 304 and body == b""
    status, headers, body = c.get(f"/media/{video['id']}", {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 206 and body == b"" and headers["content-length"] == "10"
    status, headers, body = c.get(f"/media/{video['id']}?download=1")
    assert status == 200 and body == full and headers["content-disposition"].startswith("attachment;")
    # The page needs no other origin: the bytes come from the gallery itself.
    assert "media-src" not in c.get("/")[1]["content-security-policy"]
    status, headers, _ = c.get(f"/media/{s3_site['store'].assets(s3_site['bob_gid'])[0]['id']}")
    assert status == 404


def test_a_missing_object_is_404_in_stream_mode(s3_site):
    base = s3_site["serve"]("stream")
    b = Browser(base)
    b.login("alice")
    image = s3_site["assets"][("image", 1)]
    s3_site["storage"].delete(image["path"])
    assert Http(base, b).get(f"/media/{image['id']}")[0] == 404


@pytest.mark.parametrize("delivery", ["redirect", "stream"])
def test_a_video_from_s3_plays_and_seeks_in_chromium(page, s3_site, delivery):  # noqa: F811
    base = s3_site["serve"](delivery)
    log_in(page, base, "alice")
    sec = f"#g-{s3_site['gid']}"
    page.wait_for_function(
        """sel => { const i = document.querySelector(sel + ' .images img');
                    return i && i.complete && i.naturalWidth === 64; }""", arg=sec)
    # The tile shows the video's preview (from S3 too); a click plays it in the viewer.
    page.wait_for_function(
        """sel => { const i = document.querySelector(sel + ' .videos a.tile img');
                    return i && i.complete && i.naturalWidth > 0; }""", arg=sec)
    page.click(f"{sec} .videos a.tile")
    page.wait_for_selector("dialog.viewer[open] video")  # it plays in the viewer
    page.wait_for_function(
        """sel => { const v = document.querySelector('dialog.viewer video');
                    return v && v.readyState >= 1 && v.videoWidth === 320 && v.videoHeight === 240; }""", arg=sec)
    assert abs(page.evaluate("sel => document.querySelector('dialog.viewer video').duration", sec) - 1.5) < 0.1
    page.evaluate("""async sel => { const v = document.querySelector('dialog.viewer video');
                                    v.muted = true; await v.play(); }""", sec)
    page.wait_for_function("sel => document.querySelector('dialog.viewer video').currentTime > 0.2", arg=sec)
    page.evaluate("sel => document.querySelector('dialog.viewer video').pause()", sec)
    # Seek: the browser asks for a later range and shows the frame there.
    page.evaluate("""sel => new Promise(ok => { const v = document.querySelector('dialog.viewer video');
                                               v.addEventListener('seeked', ok, {once: true}); v.currentTime = 1.2; })""",
                  sec)
    assert abs(page.evaluate("sel => document.querySelector('dialog.viewer video').currentTime", sec) - 1.2) < 0.05
    page.wait_for_function("sel => document.querySelector('dialog.viewer video').readyState >= 2", arg=sec)
    assert page.evaluate("sel => document.querySelector('dialog.viewer video').error", sec) is None
    # No CSP violation, no failed load: the console stayed clean.
    assert page.problems == []


# -- several gallery processes --------------------------------------------------------------------------------------

def csrf_of(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def post(base: str, browser: Browser, path: str, fields: dict) -> int:
    import urllib.error
    import urllib.request

    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Origin": base})
    try:
        with browser.opener.open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def two_galleries_share_sessions_logout_and_the_limiter(env_one: dict, env_two: dict):
    with aigen_serve(env=env_one) as one, aigen_serve(env=env_two) as two:
        alice = Browser(one.url)
        alice.login("alice")
        # The same cookie (the cookie jar is per host, not per port) opens the gallery on the other process.
        on_two = Browser(two.url, jar=alice.jar)
        status, page = on_two.get("/")
        assert status == 200 and b"alice" in page and b'name="user_id"' not in page
        # Logging out on the second ends the session on the first.
        assert post(two.url, on_two, "/logout", {"csrf_token": csrf_of(page)}) == 200
        status, page = alice.get("/")
        assert b'name="user_id"' in page  # back at the login form
        # Failed logins on one count on the other: 10 on the first, the next attempt on the second is refused.
        stranger = Browser(one.url)
        for _ in range(10):
            _, page = stranger.get("/login")
            assert post(one.url, stranger, "/login", {"csrf_token": csrf_of(page), "user_id": "bad id"}) == 400
        other = Browser(two.url)
        _, page = other.get("/login")
        assert post(two.url, other, "/login", {"csrf_token": csrf_of(page), "user_id": "alice"}) == 429


def test_two_gallery_processes_on_one_home_share_sessions_logout_and_the_login_limit(home):
    h = resolve_home(home)
    h.ensure()
    Store(h.db_path).ensure_user("alice")
    two_galleries_share_sessions_logout_and_the_limiter({"AIGEN_SECRET_KEY": SECRET}, {"AIGEN_SECRET_KEY": SECRET})
    assert not (home / "secret.key").exists()  # the configured secret is used, no per-home key is made


def test_two_gallery_processes_on_two_hosts_and_one_postgresql_database_share_everything(tmp_path, pg_database):
    """The real cluster case: two homes (two "hosts", nothing shared on disk), one database, one secret."""
    env = {"AIGEN_DATABASE_URL": pg_database, "AIGEN_SECRET_KEY": SECRET}
    hosts = [tmp_path / "host-one", tmp_path / "host-two"]
    two_galleries_share_sessions_logout_and_the_limiter({**env, "AIGEN_HOME": str(hosts[0])},
                                                        {**env, "AIGEN_HOME": str(hosts[1])})
    assert not any((h / "secret.key").exists() for h in hosts)


def test_the_limiter_is_shared_through_the_database(tmp_path):
    from datetime import datetime, timedelta, timezone

    from aigen.web.auth import LoginLimiter

    db = tmp_path / "aigen.db"
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    a = LoginLimiter(Store(db), 3, 60, clock=lambda: now[0])
    b = LoginLimiter(Store(db), 3, 60, clock=lambda: now[0])
    for i in range(3):
        assert b.blocked("10.0.0.1") == 0
        a.failure("10.0.0.1")
        now[0] += timedelta(seconds=10)
    assert b.blocked("10.0.0.1") == pytest.approx(30.0)  # the first failure leaves the window at +60 s
    assert b.blocked("10.0.0.2") == 0
    now[0] += timedelta(seconds=30)
    assert a.blocked("10.0.0.1") == 0
    # Old rows are pruned as failures come in.
    a.failure("10.0.0.3")
    assert Store(db).query_one("SELECT count(*) AS n FROM login_failures")["n"] == 3


# -- the signing secret ---------------------------------------------------------------------------------------------

def test_the_signing_secret_comes_from_the_environment_or_a_file(tmp_path):
    from aigen.web.links import configured_secret, secret_key

    assert configured_secret({}) is None
    assert secret_key(tmp_path / "h1", {"AIGEN_SECRET_KEY": SECRET}) == SECRET.encode()
    assert not (tmp_path / "h1" / "secret.key").exists()
    f = tmp_path / "secret.txt"
    f.write_text(SECRET + "\n")
    assert secret_key(tmp_path / "h2", {"AIGEN_SECRET_KEY_FILE": str(f)}) == SECRET.encode()
    # Without either, the home's own key, made once and kept.
    own = secret_key(tmp_path / "h3", {})
    assert len(own) == 64 and (tmp_path / "h3" / "secret.key").read_bytes().strip() == own
    for bad, message in (({"AIGEN_SECRET_KEY": "short"}, "5 characters long: it needs at least 32"),
                         ({"AIGEN_SECRET_KEY_FILE": str(tmp_path / "none")}, "no such file"),
                         ({"AIGEN_SECRET_KEY": SECRET, "AIGEN_SECRET_KEY_FILE": str(f)}, "set only one")):
        with pytest.raises(BadInput, match=message):
            secret_key(tmp_path / "h4", bad)
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(BadInput, match="3 characters long"):
        configured_secret({"AIGEN_SECRET_KEY_FILE": str(tmp_path / "short.txt")})


def test_serve_with_a_too_short_secret_is_one_clear_line(home):
    env = {**__import__("os").environ, "AIGEN_SECRET_KEY": "too-short"}
    p = subprocess.run([sys.executable, "-m", "aigen", "serve", "--port", "0"], capture_output=True, text=True,
                       env=env, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in out
    assert "AIGEN_SECRET_KEY is 9 characters long: it needs at least 32" in out


def test_a_session_made_under_one_secret_is_refused_under_another(home, tmp_path):
    from fakes.web import WsgiClient, open_home

    h, store = open_home(home)
    store.ensure_user("alice")
    one = make_app(WebSettings(home=h, store=store))
    c = WsgiClient(one)
    c.login("alice")
    assert c.get("/").status == 200
    import os

    old = os.environ.get("AIGEN_SECRET_KEY")
    os.environ["AIGEN_SECRET_KEY"] = SECRET
    try:
        other = WsgiClient(make_app(WebSettings(home=h, store=store)))
    finally:
        if old is None:
            os.environ.pop("AIGEN_SECRET_KEY")
        else:
            os.environ["AIGEN_SECRET_KEY"] = old
    other.cookies = dict(c.cookies)
    r = other.get("/")
    assert r.status in (302, 303) and "/login" in (r.location or "")


def test_the_embedded_path_still_loads_no_s3_library_when_generating(home, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aigen.cli import app\n"
        "r = CliRunner().invoke(app, ['generate', 'a fox', '--user', 'ann', '--images', '1', '--videos', '0',"
        " '--image-size', '64x64', '--quiet'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
    # The image and its two previews.
    assert len(files_under(home / "generated_content")) == 3



def test_a_bad_delivery_setting_or_url_lifetime_is_refused_at_start(home, s3_env, monkeypatch):
    from fakes.web import open_home

    h, store = open_home(home)
    st = s3_storage(s3_env)
    with pytest.raises(BadInput, match="AIGEN_MEDIA_DELIVERY='proxy' is not understood"):
        make_app(WebSettings(home=h, store=store, storage=st, media_delivery="proxy"))
    monkeypatch.setenv("AIGEN_MEDIA_URL_TTL", "5")
    with pytest.raises(BadInput, match="60 s to 7 days"):
        make_app(WebSettings(home=h, store=store, storage=st))
    monkeypatch.setenv("AIGEN_MEDIA_URL_TTL", "soon")
    with pytest.raises(BadInput, match="not a whole number"):
        make_app(WebSettings(home=h, store=store, storage=st))


def test_an_unreachable_store_is_one_line_at_start_and_nothing_is_written_or_paid(cli, home, s3_env, calls,
                                                                                 monkeypatch):
    down = {**s3_env, "AIGEN_S3_ENDPOINT_URL": "http://127.0.0.1:1", "AIGEN_S3_MAX_ATTEMPTS": "1",
            "AIGEN_S3_CONNECT_TIMEOUT": "1"}
    for k, v in down.items():
        monkeypatch.setenv(k, v)
    r = cli("generate", "a quiet lake", "--user", "ann", "--images", "2", "--videos", "0", "--image-provider",
            "flaky", "--image-size", "64x64", "--json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "cannot reach the S3 endpoint" in json.loads(r.output)["message"]
    assert calls() == [] and Store(home / "aigen.db").query("SELECT id FROM generations") == []
    for bad, message in (("ftp://x", "AIGEN_STORAGE_URL='ftp://x' is not understood"),
                         (f"s3://no-such-bucket-{home.name}x/p", "does not exist")):
        monkeypatch.setenv("AIGEN_STORAGE_URL", bad)
        monkeypatch.setenv("AIGEN_S3_ENDPOINT_URL", s3_env["AIGEN_S3_ENDPOINT_URL"])
        r = cli("generate", "a quiet lake", "--user", "ann", "--images", "1", "--videos", "0", "--image-size",
                "64x64", "--dry-run")
        assert r.exit_code in (1, 2) and message in r.output and "Traceback" not in r.output, r.output


def test_a_store_that_goes_down_mid_run_fails_the_next_assets_before_their_provider_is_paid(home, calls, s3_env):
    # The kept-file check (a HEAD of the final key) comes before the provider call.
    from aigen.storage import from_config

    h, store, gid = new_generation(home, images=2)
    down = from_config(None, {**s3_env, "AIGEN_S3_ENDPOINT_URL": "http://127.0.0.1:1", "AIGEN_S3_MAX_ATTEMPTS": "1",
                              "AIGEN_S3_CONNECT_TIMEOUT": "1"})
    result = Runner(store, h, storage=down).run(gid)
    assert result.generation["status"] == "Failed"
    assert all("cannot reach the S3 endpoint" in a["error"] for a in result.assets), result.assets
    assert calls() == []
    # Once it is back, `aigen retry` makes them.
    result = Runner(store, h, storage=s3_storage(s3_env)).run(gid)
    assert result.generation["status"] == "Completed" and len(calls()) == 2


def test_doctor_names_a_partial_file_left_in_the_scratch_folder(cli, home):
    r = cli("status")
    part = home / "scratch" / "abc123" / f".image_1.png.{2**22 + 12345}.abcd1234.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half")
    r = cli("doctor", "--json")
    assert str(part) in r.output and "temp_file" in r.output
    r = cli("doctor", "--remove-temp", "--json")
    assert not part.exists()


def test_generate_with_postgresql_and_s3_on_a_bare_home_then_doctor(tmp_path, pg_database, s3_env):
    """A laptop with only the database URL and the storage credentials: rows in PostgreSQL, files in S3, nothing
    in its home's generated_content/; `aigen doctor` checks the files in the bucket."""
    import os

    env = {**os.environ, **s3_env, "AIGEN_DATABASE_URL": pg_database, "AIGEN_HOME": str(tmp_path / "laptop")}
    p = subprocess.run([sys.executable, "-m", "aigen", "generate", "a fox", "--user", "ann", *SMALL, "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    assert json.loads(p.stdout)["status"] == "Completed"
    assert files_under(tmp_path / "laptop" / "generated_content") == []
    assert len(s3_storage(s3_env).list("")) == 4 + 6  # 2 images, a video and its poster; 2 previews of each
    p = subprocess.run([sys.executable, "-m", "aigen", "doctor"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0 and "3 file(s) checked" in " ".join(p.stdout.split()), p.stderr + p.stdout


# -- a file paid for whose upload fails is kept ----------------------------------------------------------------------

FLAKY = ["--images", "2", "--videos", "1", "--image-provider", "flaky", "--video-provider", "flaky",
         "--image-size", "64x64", "--video-size", "64x64", "--duration", "1"]


def test_a_refused_upload_keeps_the_checked_file_and_retry_uploads_it_without_calling_the_provider(
        cli, home, calls, s3_env, s3_server, monkeypatch):
    # Read-only credentials on the real server: the kept-file HEADs pass, every PUT is refused (403).
    read_only = {**s3_env, "AWS_ACCESS_KEY_ID": s3_server.reader_access_key,
                 "AWS_SECRET_ACCESS_KEY": s3_server.reader_secret_key}
    for k, v in read_only.items():
        monkeypatch.setenv(k, v)
    r = cli("generate", "a red fox at dawn", "--user", "alice", *FLAKY, "--json")
    assert r.exit_code != 0 and "Traceback" not in r.output
    data = json.loads(r.output)
    gid = data["id"]
    assert len(calls()) == 3
    store = Store(home / "aigen.db")
    rows = store.query("SELECT kind, idx, status, error, error_code, model FROM assets ORDER BY id")
    scratch = home / "scratch" / gid
    for a in rows:
        name = f"{a['kind']}_{a['idx']}.{'mp4' if a['kind'] == 'video' else 'png'}"
        assert a["status"] == "failed" and a["error_code"] == "upload_pending", a
        assert "S3 refused the credentials to upload" in a["error"], a["error"]
        assert (f"The file is kept locally in {scratch / name} and will be uploaded by `aigen retry {gid}` on "
                f"this machine, without calling the provider again") in a["error"], a["error"]
        assert a["model"] == "flaky-1"
    # Each checked file waits under its final name (no partial file), and valid.
    kept = {p.name: sha(p.read_bytes()) for p in files_under(scratch)}
    assert sorted(kept) == ["image_1.png", "image_2.png", "video_1.mp4"]
    assert s3_storage(s3_env).list("") == []

    # aigen doctor says they wait for their upload, with the command; --remove-temp does not touch them.
    r = cli("doctor", "--json")
    report = json.loads(r.output)
    waiting = [p for p in report["problems"] if p["kind"] == "upload_pending"]
    assert sorted(Path(p["path"]).name for p in waiting) == sorted(kept), report
    assert all(p["remedy"] == f"aigen retry {gid}" and "waiting for upload" in p["message"] for p in waiting)
    assert not [p for p in report["problems"] if p["kind"] == "temp_file"], report
    cli("doctor", "--remove-temp", "--json")
    assert sorted(p.name for p in files_under(scratch)) == sorted(kept)

    # The store is writable again: `aigen retry` checks and uploads the kept files; the provider is not called.
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    r = cli("retry", gid, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["status"] == "Completed"
    assert len(calls()) == 3
    assert files_under(home / "scratch") == []
    st = s3_storage(s3_env)
    rows = store.query("SELECT path, poster_path, sha256, bytes, model FROM assets ORDER BY id")
    for a in rows:
        body = st.read_bytes(a["path"])
        assert sha(body) == a["sha256"] == kept[a["path"].rsplit("/", 1)[-1]] and len(body) == a["bytes"]
        assert a["model"] == "flaky-1"
    poster = [a["poster_path"] for a in rows if a["poster_path"]]
    assert len(poster) == 1 and st.read_bytes(poster[0])[:2] == b"\xff\xd8"
    r = cli("doctor", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["problems"] == [], r.output


class TcpProxy:
    """A TCP relay to the S3 server that can be cut off: the store going down, mid-run, for real."""

    def __init__(self, upstream: str):
        import socket
        import threading

        u = urllib.parse.urlsplit(upstream)
        self.target = (u.hostname, u.port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open: list = []
        self.down = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.down:  # refused: nothing listens any more
                client.close()
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        import socket

        self.down = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone would not, on Linux)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass


def test_a_store_that_goes_down_during_the_provider_call_keeps_the_paid_file_for_retry(home, calls, s3_env):
    from aigen.storage import from_config

    h, store, gid = new_generation(home, images=2)
    proxy = TcpProxy(s3_env["AIGEN_S3_ENDPOINT_URL"])
    via_proxy = from_config(None, {**s3_env, "AIGEN_S3_ENDPOINT_URL": proxy.url, "AIGEN_S3_MAX_ATTEMPTS": "1",
                                   "AIGEN_S3_CONNECT_TIMEOUT": "1"})

    both_running = threading.Barrier(2, action=proxy.cut)

    def listener(asset, state, fraction, error):
        if state == "running":  # the kept-file HEADs went through; the provider is about to be called
            # Cut only once both assets got this far (their HEADs passed): cut at the first one, the second
            # asset's HEAD could meet the outage and fail before any provider call (a race, 1 run in 3).
            both_running.wait(10)

    result = Runner(store, h, storage=via_proxy, listener=listener).run(gid)
    assert result.generation["status"] == "Failed"
    assert len(calls()) == 2
    scratch = h.path / "scratch" / gid
    for a in result.assets:
        assert a["error_code"] == "upload_pending", a
        assert "cannot reach the S3 endpoint to upload" in a["error"] and "without calling the provider again" in \
            a["error"], a["error"]
    assert sorted(p.name for p in files_under(scratch)) == ["image_1.png", "image_2.png"]
    kept = {p.name: sha(p.read_bytes()) for p in files_under(scratch)}
    # The store is back: the retry uploads the kept files, with no provider call.
    st = s3_storage(s3_env)
    result = Runner(store, h, storage=st).run(gid)
    assert result.generation["status"] == "Completed" and len(calls()) == 2
    assert files_under(h.path / "scratch") == []
    for a in result.assets:
        assert sha(st.read_bytes(a["path"])) == a["sha256"] == kept[a["path"].rsplit("/", 1)[-1]]
