"""The viewer and the live page in a real browser (Debian's Chromium, driven by Playwright).

The viewer: opened by a click and by the keyboard, previous/next by keys, buttons and a swipe, Esc and the
Back button close it and focus returns to the tile, each file's URL opens it on load, and without
JavaScript the tile's link is the file. The live page: a generation started after the page was opened
appears (with the counts), a file made by a running generation shows before the rest (the `gated` test
provider lets each image through when the test says), completion is announced, and a killed
`aigen generate` shows Stalled, and Resume completes it. Skips like tests/test_web_browser.py without
Chromium (fails under AIGEN_REQUIRE_BROWSER).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from fakes.web import open_home, real_generation
from test_web_browser import REPO, browser, log_in, save_small_png  # noqa: F401  (the module's browser fixture)

from aigen.pipeline.run import is_running, wait_for
from aigen.store.core import iso, utcnow
from aigen.web.app import WebSettings, make_app
from aigen.web.server import GalleryServer

VIEWPORT = {"width": 1280, "height": 900}
POLL_MS = 300
SCREENSHOT = REPO / "docs" / "viewer.png"  # the README's picture of the viewer (AIGEN_UPDATE_SCREENSHOT=1)


@pytest.fixture
def page(browser):  # noqa: F811
    context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    problems = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.problems = problems
    try:
        yield pg
    finally:
        context.close()


def serve(home, store, **kw):
    settings = WebSettings(home=home, store=store, poll_ms=POLL_MS, idle_poll_ms=POLL_MS, **kw)
    return GalleryServer(make_app(settings), "127.0.0.1", 0).start_in_thread()


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    """A gallery with one finished generation of 2 videos and 3 images."""
    home, store = open_home(tmp_path_factory.mktemp("viewer") / "home")
    gid = real_generation(home, store, "alice", "a red fox at dawn", images=3, videos=2)
    server = serve(home, store)
    try:
        yield {"home": home, "store": store, "gid": gid, "url": f"http://127.0.0.1:{server.port}"}
    finally:
        server.shutdown()


def viewer_title(page) -> str:
    return page.locator("dialog.viewer .viewer-title").inner_text()


def closed(page) -> None:
    """The viewer is closed and has handled its close event: the dialog is hidden, and focus has left it (the
    event comes as a task after the dialog hides; reading the focus before it meets the dialog's own button)."""
    page.wait_for_selector("dialog.viewer", state="hidden")
    page.wait_for_function("() => !document.activeElement || !document.activeElement.closest('dialog.viewer')")


def focused(page) -> dict:
    return page.evaluate("""() => { const a = document.activeElement, f = a && a.closest('figure[data-asset]');
                                    return {tag: a.tagName, kind: f && f.dataset.kind, index: f && f.dataset.index}; }""")


def test_the_viewer_by_click_keys_buttons_swipe_and_back_to_the_tile(page, shown, tmp_path):
    base, gid = shown["url"], shown["gid"]
    log_in(page, base, "alice")
    sec = f"#g-{gid}"
    images = shown["store"].query("SELECT id, idx, bytes FROM assets WHERE generation_id = ? AND kind = 'image' "
                                  "ORDER BY idx", (gid,))

    # A click on an image opens it large, in the page, with its own URL.
    page.click(f'{sec} figure[data-kind="image"][data-index="1"] a[title="Open full size"]')
    page.wait_for_selector("dialog.viewer[open]")
    assert page.url == f"{base}/#g-{gid}-image-1"
    assert viewer_title(page) == "Image 1 · 3 of 5"  # the videos come first on the page
    page.wait_for_function("() => document.querySelector('dialog.viewer img').naturalWidth === 256")
    assert page.get_attribute("dialog.viewer img", "src") == f"/media/{images[0]['id']}"
    assert page.locator("dialog.viewer .viewer-prompt").inner_text() == "a red fox at dawn"
    facts = page.locator("dialog.viewer .viewer-facts").inner_text()
    for word in ("image", "local", "256 × 256", "Seed"):
        assert word in facts, facts
    dl = page.locator("dialog.viewer .viewer-download")
    assert dl.get_attribute("href") == f"/media/{images[0]['id']}?download=1"
    assert dl.inner_text().startswith("Download image 1 (PNG, ")
    assert page.get_attribute("dialog.viewer .viewer-permalink", "href") == f"/g/{gid}#image-1"

    if os.environ.get("AIGEN_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
        shot = tmp_path / "viewer.png"  # (the picture is loaded: naturalWidth above)
        page.screenshot(path=str(shot))
        save_small_png(shot, SCREENSHOT)

    # The prompt is copied.
    page.click("dialog.viewer .viewer-copy")
    page.wait_for_function("() => document.querySelector('dialog.viewer .viewer-copied').textContent === 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == "a red fox at dawn"
    # ...and recorded as the action's event.
    import time

    end = time.monotonic() + 10
    while not shown["store"].query("SELECT 1 FROM events WHERE kind = 'prompt_copied' AND generation_id = ? "
                                   "AND detail = 'from the viewer' AND ok = 1", (gid,)):
        assert time.monotonic() < end, "the copy was not recorded"
        time.sleep(0.05)

    # Next and previous: the arrow keys, the buttons, a swipe.
    page.keyboard.press("ArrowRight")
    assert viewer_title(page) == "Image 2 · 4 of 5" and page.url.endswith(f"#g-{gid}-image-2")
    page.click("dialog.viewer .viewer-next")
    assert viewer_title(page) == "Image 3 · 5 of 5"
    assert page.locator("dialog.viewer .viewer-next").is_disabled()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert viewer_title(page) == "Video 2 · 2 of 5"
    assert page.get_attribute("dialog.viewer video", "aria-label") == "Video 2: a red fox at dawn"
    page.evaluate("""() => { const s = document.querySelector('dialog.viewer .viewer-stage');
        const ev = (type, x) => s.dispatchEvent(new PointerEvent(type, {pointerType: 'touch', clientX: x,
                                                                       clientY: 300, bubbles: true}));
        ev('pointerdown', 600); ev('pointerup', 400); }""")  # a swipe to the left: the next one
    assert viewer_title(page) == "Image 1 · 3 of 5"

    # Esc closes; focus is back on the tile shown last, and the URL is the page's again.
    page.keyboard.press("Escape")
    closed(page)
    assert focused(page) == {"tag": "A", "kind": "image", "index": "1"}
    page.wait_for_url(f"{base}/")  # the history entry the viewer added is gone again

    # By the keyboard alone: to a video's link, Enter; the close button; focus back on that tile.
    page.focus(f'{sec} figure[data-kind="video"][data-index="1"] a.tile')
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog.viewer[open]")
    assert viewer_title(page) == "Video 1 · 1 of 5"
    page.wait_for_function("() => document.querySelector('dialog.viewer video').readyState >= 1")
    assert page.locator("dialog.viewer .viewer-prev").is_disabled()
    page.click("dialog.viewer .viewer-close")
    closed(page)
    assert focused(page) == {"tag": "A", "kind": "video", "index": "1"}

    # The Back button closes it too.
    page.click(f'{sec} figure[data-kind="image"][data-index="2"] a[title="Open full size"]')
    page.wait_for_selector("dialog.viewer[open]")
    page.go_back()
    closed(page)
    page.wait_for_url(f"{base}/")
    assert page.problems == []


def test_a_files_url_opens_the_viewer_on_load(page, shown):
    base, gid = shown["url"], shown["gid"]
    log_in(page, base, "alice")
    # A generation's page: /g/ID#image-2.
    page.goto(f"{base}/g/{gid}#image-2")
    page.wait_for_selector("dialog.viewer[open]")
    assert viewer_title(page) == "Image 2 · 4 of 5"
    page.keyboard.press("Escape")
    closed(page)
    assert focused(page) == {"tag": "A", "kind": "image", "index": "2"}
    assert page.url == f"{base}/g/{gid}"
    # The gallery's form of it, reloaded.
    page.goto(f"{base}/#g-{gid}-video-2")
    page.wait_for_selector("dialog.viewer[open]")
    assert viewer_title(page) == "Video 2 · 2 of 5"
    page.reload()
    page.wait_for_selector("dialog.viewer[open]")
    assert viewer_title(page) == "Video 2 · 2 of 5"
    # Not on this page of the gallery (e.g. shared from an older page): its generation's page opens it.
    page.goto(f"{base}/#g-0123abcd-image-1")
    assert page.locator("dialog.viewer[open]").count() == 0
    assert page.problems == []


def test_without_javascript_the_tile_link_opens_the_file(browser, shown):  # noqa: F811
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        page = context.new_page()
        base, gid = shown["url"], shown["gid"]
        log_in(page, base, "alice")
        href = page.get_attribute(f'#g-{gid} figure[data-kind="image"][data-index="1"] a', "href")
        with page.expect_response(base + href) as res:
            page.click(f'#g-{gid} figure[data-kind="image"][data-index="1"] a')
        assert res.value.status == 200 and res.value.headers["content-type"] == "image/png"
        page.wait_for_url(base + href)
    finally:
        context.close()


# -- live ----------------------------------------------------------------------------------------------------

@pytest.fixture
def gated(home, tmp_path, monkeypatch):
    """An empty gallery for bob, and a way to start a real `aigen generate` with the gated provider."""
    h, store = open_home(home)
    gate = tmp_path / "gate"
    gate.mkdir()
    # Also for the `aigen retry` the gallery's Resume starts.
    monkeypatch.setenv("AIGEN_TEST_GATE", str(gate))
    server = serve(h, store)
    procs = []

    def start(prompt: str, images: int = 3) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "aigen", "generate", prompt, "--user", "bob", "--images",
                              str(images), "--videos", "0", "--image-provider", "gated", "--image-size", "96x64",
                              "--notify-via", "none", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        return p

    def let_through(*indexes: int) -> None:
        for i in indexes:
            (gate / str(i)).touch()

    def generation_of(prompt: str) -> str:
        found = wait_for(lambda: store.query("SELECT id FROM generations WHERE prompt = ?", (prompt,))
                         or any(p.poll() is not None for p in procs), 60)
        assert found and all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll()]
        return store.query("SELECT id FROM generations WHERE prompt = ?", (prompt,))[0]["id"]

    try:
        yield {"home": h, "store": store, "url": f"http://127.0.0.1:{server.port}", "start": start,
               "let_through": let_through, "generation_of": generation_of}
    finally:
        let_through(*range(1, 11))
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                p.kill()
        server.shutdown()


def test_a_new_generation_appears_shows_each_file_as_it_is_made_and_its_end_is_announced(page, gated):
    base, store = gated["url"], gated["store"]
    log_in(page, base, "bob")
    assert page.locator("section.empty").count() == 1
    page.evaluate("window.__same_page = true")

    # Started after the page was opened: it appears, and the counts with it.
    proc = gated["start"]("a lighthouse in a storm")
    gid = gated["generation_of"]("a lighthouse in a storm")
    sec = f"#g-{gid}"
    page.wait_for_selector(f'{sec}[data-status="Processing"]')
    assert page.locator("section.empty").count() == 0
    page.wait_for_function("() => document.querySelector('[data-count=\"Processing\"]').textContent === '1'")
    assert page.locator(".counts").is_visible()
    assert page.locator(f"{sec} figure.pending").count() == 3

    # Image 2 is made first: it shows while the others are still being made.
    gated["let_through"](2)
    page.wait_for_selector(f'{sec} figure[data-asset][data-kind="image"][data-index="2"] img')
    page.wait_for_function(
        "s => document.querySelector(s + ' figure[data-index=\"2\"] img').naturalWidth === 96", arg=sec)
    assert page.get_attribute(sec, "data-status") == "Processing"
    assert page.locator(f"{sec} figure.pending").count() == 2
    assert page.locator(f"{sec} .progress-text").inner_text() == "1 of 3"
    # Kept in place as the rest arrive: the same element (an image or a playing video is never reloaded).
    page.evaluate(f"window.__tile = document.querySelector('{sec} figure[data-index=\"2\"]')")

    gated["let_through"](1, 3)
    assert proc.wait(timeout=60) == 0
    page.wait_for_selector(f'{sec}[data-status="Completed"]')
    assert page.locator(f"{sec} figure[data-asset]").count() == 3
    assert page.evaluate(f"window.__tile === document.querySelector('{sec} figure[data-index=\"2\"]')")
    idx = page.locator(f"{sec} figure[data-asset]").evaluate_all("fs => fs.map(f => f.dataset.index)")
    assert idx == ["1", "2", "3"]
    page.wait_for_function("() => document.getElementById('live-announcer').textContent"
                           ".startsWith('Finished: \u201ca lighthouse in a storm\u201d is ready')")
    assert page.locator("[data-count=\"Completed\"]").inner_text() == "1"
    assert page.evaluate("window.__same_page") is True
    # The viewer opens the new files as well.
    page.click(f'{sec} figure[data-index="3"] a[title="Open full size"]')
    page.wait_for_selector("dialog.viewer[open]")
    assert viewer_title(page) == "Image 3 · 3 of 3"
    assert page.problems == []


def test_a_killed_run_shows_stalled_and_resume_completes_it(page, gated):
    base, store, home = gated["url"], gated["store"], gated["home"]
    proc = gated["start"]("a kite over the dunes")
    gid = gated["generation_of"]("a kite over the dunes")
    gated["let_through"](1)
    assert wait_for(lambda: any(a["status"] == "done" for a in store.assets(gid)), 60)
    sec = f"#g-{gid}"
    log_in(page, base, "bob")
    page.goto(f"{base}/g/{gid}")  # its own page: the details table follows too
    assert page.get_attribute(sec, "data-state") == "running"
    assert page.locator(f"{sec} .badge").inner_text() == "Processing"

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: not is_running(home, gid), 10)
    # Its last change is now long past (rather than waiting out the start-up grace on the wall clock).
    with store.transaction() as db:
        db.conn.execute("UPDATE generations SET updated_at = ? WHERE id = ?",
                        (iso(utcnow() - timedelta(minutes=5)), gid))
    # The open page sees it without a reload.
    page.wait_for_selector(f'{sec}[data-state="stalled"]')
    assert page.locator(f"{sec} .badge").inner_text() == "Stalled"
    page.wait_for_function("() => document.getElementById('live-announcer').textContent.startsWith('Stalled')")
    assert store.get_generation(gid)["status"] == "Processing"

    page.click(f"{sec} .retry-form button")
    page.wait_for_url(f"{base}/g/{gid}")
    assert page.get_attribute(sec, "data-state") in ("starting", "running")
    assert page.locator(f"{sec} .badge").inner_text() == "Processing"
    page.evaluate("window.__same_page = true")
    gated["let_through"](2, 3)
    log = home.path / "logs" / f"{gid}.log"
    assert wait_for(lambda: store.get_generation(gid)["status"] != "Processing", 60), log.read_text()
    page.wait_for_selector(f'{sec}[data-status="Completed"]')
    assert page.locator(f"{sec} figure[data-asset] img").count() == 3
    page.wait_for_function("() => document.querySelectorAll('section.details tr.asset-done').length === 3")
    assert page.evaluate("window.__same_page") is True  # merged in place, not reloaded
    page.wait_for_function("() => document.getElementById('live-announcer').textContent.startsWith('Finished')")
    [ev] = store.query("SELECT * FROM events WHERE kind = 'generation_retry'")
    assert ev["ok"] == 1 and ev["user_id"] == "bob" and ev["generation_id"] == gid
    # Image 1 was made once: the resume made only the other two.
    assert [a["attempts"] for a in sorted(store.assets(gid), key=lambda a: a["idx"])][0] == 1
    assert wait_for(lambda: not is_running(home, gid), 30)
    assert page.problems == []
