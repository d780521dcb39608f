"""The gallery in a real browser: headless Chromium (Debian's build) driven by Playwright.

Content is made by the real pipeline with the `local` provider at small
sizes. On a machine without Chromium these tests skip, unless
AIGEN_REQUIRE_BROWSER is set (CI sets it), in which case they fail.
AIGEN_CHROMIUM names another Chromium binary.
Set AIGEN_UPDATE_SCREENSHOT=1 to refresh docs/gallery.png (it is written
anyway when missing).
"""

from __future__ import annotations

import os
import shutil
import struct
from datetime import timedelta
from pathlib import Path

import pytest
from fakes.web import kinds, open_home, real_generation

from aigen.store.core import utcnow
from aigen.web.app import WebSettings, make_app
from aigen.web.server import GalleryServer
from aigen.web.views import PROCESSING_MESSAGE

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "gallery.png"
VIEWPORT = {"width": 1280, "height": 900}
POLL_MS = 400
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """AIGEN_CHROMIUM if set (e.g. on macOS), else Debian's /usr/bin/chromium or one on PATH."""
    if os.environ.get("AIGEN_CHROMIUM"):
        return os.environ["AIGEN_CHROMIUM"] if os.path.exists(os.environ["AIGEN_CHROMIUM"]) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _unavailable(why: str):
    if os.environ.get("AIGEN_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests are required here (AIGEN_REQUIRE_BROWSER is set) but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        _unavailable("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home, store = open_home(tmp_path_factory.mktemp("gallery") / "home")
    fox = real_generation(home, store, "alice", "a red fox at dawn in a misty forest")
    settings = WebSettings(home=home, store=store, poll_ms=POLL_MS)
    server = GalleryServer(make_app(settings), "127.0.0.1", 0).start_in_thread()
    try:
        yield {"home": home, "store": store, "fox": fox, "url": f"http://127.0.0.1:{server.port}"}
    finally:
        server.shutdown()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
    pg = context.new_page()
    problems = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.problems = problems
    try:
        yield pg
    finally:
        context.close()


def log_in(page, base: str, user_id: str) -> None:
    page.goto(base + "/")
    assert page.url == base + "/login"
    page.fill("#user_id", user_id)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def save_small_png(src: Path, dest: Path) -> None:
    """A 256-colour copy for the README: a fraction of the size, and it still reads well."""
    from PIL import Image

    dest.parent.mkdir(exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.FLOYDSTEINBERG).save(dest, optimize=True)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_log_in_see_5_images_and_5_videos_and_play_one(page, site, tmp_path):
    base, sec = site["url"], f"#g-{site['fox']}"
    log_in(page, base, "alice")
    assert page.locator(".who strong").inner_text() == "alice"

    page.wait_for_function(
        """sel => { const imgs = document.querySelectorAll(sel + ' .images img');
                    return imgs.length === 5 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }""",
        arg=sec)
    widths = page.eval_on_selector_all(f"{sec} .images img", "els => els.map(e => e.naturalWidth)")
    assert widths == [256] * 5

    # Video tiles are previews: the page fetched no video before one was asked for.
    assert page.locator(f"{sec} video").count() == 0
    page.wait_for_function(
        """sel => { const imgs = document.querySelectorAll(sel + ' .videos a.tile img');
                    return imgs.length === 5 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }""",
        arg=sec)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_load_state("networkidle")
    update = bool(os.environ.get("AIGEN_UPDATE_SCREENSHOT")) or not SCREENSHOT.exists()
    if update:
        # Chromium's loading spinner plays out for about a second after the
        # data is there; this wait only makes the README's picture clean.
        page.wait_for_timeout(1500)
    shot = tmp_path / "gallery.png"
    page.screenshot(path=str(shot))
    assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
    if update:
        save_small_png(shot, SCREENSHOT)

    # A video tile opens the video large, in the viewer, where it really plays and seeks.
    vhref = page.get_attribute(f"{sec} .videos a.tile >> nth=0", "href")
    page.click(f"{sec} .videos a.tile >> nth=0")
    page.wait_for_selector("dialog.viewer[open] video")
    assert page.get_attribute("dialog.viewer video", "src") == vhref
    page.wait_for_function("""() => { const v = document.querySelector('dialog.viewer video');
                                       return v.readyState >= 1 && v.videoWidth === 320 && v.videoHeight === 240; }""")
    assert abs(page.evaluate("document.querySelector('dialog.viewer video').duration") - 1.5) < 0.1
    page.evaluate("""async () => { const v = document.querySelector('dialog.viewer video');
                                   v.muted = true; await v.play(); }""")
    page.wait_for_function("() => document.querySelector('dialog.viewer video').currentTime > 0.3")
    assert page.evaluate("document.querySelector('dialog.viewer video').error") is None
    page.keyboard.press("Escape")

    # An image opens full size, in the viewer (tests/test_web_viewer_browser.py tests it in full).
    href = page.get_attribute(f"{sec} .images a", "href")
    page.click(f"{sec} .images a")
    page.wait_for_selector("dialog.viewer[open]")
    page.wait_for_function("() => document.querySelector('dialog.viewer img').naturalWidth === 256")
    assert page.get_attribute("dialog.viewer img", "src") == href
    page.keyboard.press("Escape")

    # Every file fetched counted once for this session: the video and the image opened, and the next image,
    # which the viewer fetches ahead while this one is looked at; not the previews.
    counts = kinds(site["store"])
    assert counts["login_ok"] >= 1 and counts["gallery_view"] >= 1
    views = site["store"].query(
        "SELECT asset_id, count(*) AS n FROM events WHERE kind = 'asset_view' AND user_id = 'alice' "
        "GROUP BY session_id, asset_id")
    assert len(views) == 3 and all(v["n"] == 1 for v in views)
    # The page ran under its Content-Security-Policy without a single violation.
    assert page.problems == []


def test_a_running_generation_says_so_then_shows_its_content_when_done(page, site):
    from aigen.pipeline.run import Runner

    home, store, base = site["home"], site["store"], site["url"]
    gid = real_generation(home, store, "bob", "blue ocean waves at night", images=1, videos=1, run=False,
                          now=utcnow() - timedelta(seconds=5))
    live_calls = []
    page.on("request", lambda r: live_calls.append(r.url) if "/api/live" in r.url else None)
    log_in(page, base, "bob")
    sec = f"#g-{gid}"
    assert page.locator(f"{sec} .processing .message").inner_text() == PROCESSING_MESSAGE
    assert page.locator(f"{sec} .progress-text").inner_text() == "0 of 2"
    page.wait_for_event("request", lambda r: "/api/live" in r.url)

    result = Runner(store, home).run(gid)
    assert result.generation["status"] == "Completed"

    # The section turns into the finished content in place, without reloading the page.
    page.evaluate("window.__same_page = true")
    page.wait_for_selector(f'{sec}[data-status="Completed"] .images img')
    page.wait_for_function("sel => document.querySelector(sel + ' .images img').naturalWidth > 0", arg=sec)
    assert page.locator(f"{sec} .videos a.tile").count() == 1
    assert page.evaluate("window.__same_page") is True
    assert page.locator(f"{sec} .processing").count() == 0

    # ...and the polling every POLL_MS stops: nothing runs, so the next look is the idle one (20 s by default).
    seen = len(live_calls)
    page.wait_for_timeout(POLL_MS * 4)
    assert len(live_calls) == seen
    assert page.problems == []


def test_a_magic_link_needs_its_button_works_once_and_logout_ends_the_session(browser, page, site):
    from aigen.web import links

    base, fox = site["url"], site["fox"]
    url = links.magic_link(site["home"], "alice", fox, base_url=base)
    page.goto(url)  # what a mail scanner does: it only fetches
    assert page.locator("button[type=submit]").inner_text() == "Log in as alice"
    page.goto(base + "/")
    assert page.url == base + "/login"
    page.goto(url)
    # The button: a real browser's POST (Origin, Sec-Fetch-Site: same-origin) passes the cross-site check.
    page.click("button[type=submit]")
    page.wait_for_url(base + f"/g/{fox}")
    cookies = page.context.cookies()

    other = browser.new_context()
    try:
        p2 = other.new_page()
        p2.goto(url)
        assert "already used" in p2.locator(".error").inner_text()
        # Log out, then put the old cookie back: the server ended the session.
        page.click(".logout button")
        page.wait_for_url(base + "/login?bye=1")
        other.add_cookies(cookies)
        p2.goto(base + "/")
        assert p2.url == base + "/login"
    finally:
        other.close()
    assert page.problems == []


def test_a_form_on_another_site_cannot_log_in_or_count_toward_the_limit(page, site):
    base = site["url"]
    before = len(site["store"].query("SELECT 1 FROM events WHERE kind = 'login_failed'"))
    form = (f'<form method="post" action="{base}/login"><input name="user_id" value="alice">'
            '<input name="csrf_token" value="00"><button>go</button></form>')
    page.route("http://evil.example/", lambda route: route.fulfill(status=200, content_type="text/html", body=form))
    page.goto("http://evil.example/")
    page.click("button")
    page.wait_for_url(base + "/login")
    assert "sent from another site" in page.content()
    rows = site["store"].query("SELECT reason, detail FROM events WHERE kind = 'login_failed' ORDER BY id")[before:]
    assert [r["reason"] for r in rows] == ["cross_site"] and "cross-site" in rows[0]["detail"]
