"""The gallery's actions in a real browser (Debian's Chromium, Playwright): a generation asked for from the form
is made (by the real detached `aigen retry` process and the `local` provider) and its video plays; the search
finds by a word of the prompt; Delete removes the rows and files and logs an event.

Skips without Chromium unless AIGEN_REQUIRE_BROWSER is set (as tests/test_web_browser.py)."""

from __future__ import annotations

import os

import pytest
from fakes.web import open_home, real_generation

from aigen.web.app import WebSettings, make_app
from aigen.web.server import GalleryServer
from test_web_browser import browser, log_in, page  # noqa: F401 - the shared Chromium fixtures

# The README's picture of the form (AIGEN_UPDATE_SCREENSHOT=1 refreshes it).
FORM_SCREENSHOT = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs" / "new.png"

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home, store = open_home(tmp_path_factory.mktemp("actions") / "home")
    fox = real_generation(home, store, "alice", "a red fox at dawn in a misty forest", images=1, videos=1)
    lake = real_generation(home, store, "alice", "a quiet mountain lake at noon", images=1, videos=0)
    # The real start: a detached `aigen retry ID` process, as `aigen serve` does.
    settings = WebSettings(home=home, store=store, poll_ms=400)
    server = GalleryServer(make_app(settings), "127.0.0.1", 0).start_in_thread()
    try:
        yield {"home": home, "store": store, "fox": fox, "lake": lake, "url": f"http://127.0.0.1:{server.port}"}
    finally:
        server.shutdown()


def wait_until(check, timeout=10.0):
    import time

    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_generation_asked_for_from_the_form_is_made_and_its_video_plays(page, site, tmp_path):  # noqa: F811
    base, store = site["url"], site["store"]
    log_in(page, base, "carol")
    page.click("text=New generation")
    page.wait_for_url(base + "/new")
    page.fill("#ask-prompt", "a paper boat on a green river")
    page.fill("#ask-images", "1")
    page.fill("#ask-videos", "1")
    page.fill("#ask-image-size", "256x256")
    page.fill("#ask-video-size", "320x240")
    page.select_option("#ask-notify-via", "none")
    if os.environ.get("AIGEN_UPDATE_SCREENSHOT") or not FORM_SCREENSHOT.exists():
        from test_web_browser import save_small_png

        shot = tmp_path / "new.png"
        page.screenshot(path=str(shot), full_page=True)
        save_small_png(shot, FORM_SCREENSHOT)
    page.click("form.ask-form button[type=submit]")
    page.wait_for_url(lambda url: "/g/" in url)
    gid = page.url.rsplit("/", 1)[-1]
    gen = store.get_generation(gid)
    assert gen["user_id"] == "carol" and gen["prompt"] == "a paper boat on a green river"
    # Made by the detached process; the page notices and shows the result.
    page.wait_for_selector(f'#g-{gid}[data-status="Completed"] .videos a.tile', timeout=180_000)
    assert store.get_generation(gid)["status"] == "Completed"
    # Its tile opens it in the viewer, where it plays.
    page.click(f"#g-{gid} .videos a.tile")
    page.wait_for_selector("dialog.viewer[open] video")
    page.evaluate("""async () => { const v = document.querySelector('dialog.viewer video');
                                   v.muted = true; await v.play(); }""")
    page.wait_for_function("() => document.querySelector('dialog.viewer video').currentTime > 0.3")
    assert page.evaluate("document.querySelector('dialog.viewer video').error") is None
    ev = store.query("SELECT ok, detail FROM events WHERE kind = 'generation_requested' AND generation_id = ?", (gid,))
    assert len(ev) == 1 and ev[0]["ok"] == 1 and ev[0]["detail"].startswith("form: 2 asset(s), pid ")
    assert page.problems == []


def test_search_finds_by_a_word_of_the_prompt(page, site):  # noqa: F811
    base = site["url"]
    log_in(page, base, "alice")
    assert page.locator("section.generation").count() == 2
    page.fill("#search-q", "misty")
    page.click("form.search button[type=submit]")
    page.wait_for_url(base + "/?q=misty&status=&provider=&sort=newest")
    sections = page.locator("section.generation")
    assert sections.count() == 1 and sections.first.get_attribute("id") == f"g-{site['fox']}"
    assert page.input_value("#search-q") == "misty"
    assert page.locator("p.counts[role=status]").inner_text() == "1 match."
    page.goto(base + '/?q=' + '%22NEAR(%2A')  # FTS syntax is only words: no error page
    assert page.locator("h2", has_text="Nothing matches").count() == 1
    page.goto(base + "/?q=LAKE")
    assert page.locator("section.generation").count() == 1
    assert page.locator(f"#g-{site['lake']}").count() == 1
    # Copy prompt (shown only with JavaScript) puts the prompt on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    button = page.locator(f"#g-{site['lake']} button.copy-prompt")
    assert button.is_visible()
    button.click()
    page.wait_for_function("b => b.textContent === 'Copied'", arg=button.element_handle())
    assert page.evaluate("navigator.clipboard.readText()") == "a quiet mountain lake at noon"
    # ...and the copy is an event, like every action.
    store = site["store"]
    wait_until(lambda: store.query("SELECT ok, detail FROM events WHERE kind = 'prompt_copied' AND generation_id = ?",
                                   (site["lake"],)) == [{"ok": 1, "detail": "from the gallery"}])
    assert page.problems == []


def test_delete_removes_the_rows_and_files_and_logs_an_event(page, site):  # noqa: F811
    base, store, home = site["url"], site["store"], site["home"]
    gid = real_generation(home, store, "dave", "a lighthouse in a storm", images=1, videos=1)
    folder = home.content_dir / "dave" / gid
    assert folder.is_dir() and any(folder.iterdir())
    log_in(page, base, "dave")
    page.click(f"#g-{gid} a.action-danger")
    page.wait_for_url(base + f"/g/{gid}/delete")
    assert "a lighthouse in a storm" in page.locator("blockquote").inner_text()
    page.click("button.danger")
    page.wait_for_url(base + "/?deleted=1")
    assert "was deleted" in page.locator("p.notice").inner_text()
    assert page.locator(f"#g-{gid}").count() == 0
    assert not folder.exists()
    assert store.query_one("SELECT count(*) AS n FROM generations WHERE id = ?", (gid,))["n"] == 0
    assert store.query_one("SELECT count(*) AS n FROM assets WHERE generation_id = ?", (gid,))["n"] == 0
    ev = store.query("SELECT ok, user_id, detail FROM events WHERE kind = 'generation_deleted' AND generation_id = ?",
                     (gid,))
    # The image, the video, its poster and the 1x/2x previews of both.
    assert ev == [{"ok": 1, "user_id": "dave", "detail": "from the gallery: 7 file(s)"}]
    assert page.problems == []
