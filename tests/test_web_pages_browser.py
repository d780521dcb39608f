"""The gallery's pages in headless Chromium (issue 11, items 1 and 7): page weight, layout stability,
accessibility (axe-core) in both colour schemes and two sizes, and small screens.

axe-core comes from npm: AIGEN_AXE_JS names its axe.min.js (.ci/run installs it and sets it). Without
it the accessibility tests skip and say so; with AIGEN_AXE_JS set to a file that is not there they fail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fakes.pages import PERF_OBSERVER, measure_load, realistic_generations
from fakes.web import open_home, real_generation, seed_generation
from test_web_browser import browser, log_in  # noqa: F401 - the module's browser fixture

from aigen.web.app import WebSettings, make_app
from aigen.web.server import GalleryServer

REPO = Path(__file__).resolve().parent.parent
BUDGET_BYTES = 1_500_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def axe_path() -> Path | None:
    """axe.min.js: AIGEN_AXE_JS, else a copy installed where .ci/run puts it."""
    named = os.environ.get("AIGEN_AXE_JS")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"AIGEN_AXE_JS={named} is not a file (npm install axe-core, then point it at "
                        "node_modules/axe-core/axe.min.js)")
        return Path(named)
    default = REPO / ".ci" / "node_modules" / "axe-core" / "axe.min.js"
    return default if default.is_file() else None


@pytest.fixture(scope="module")
def weighty(tmp_path_factory):
    """A gallery with a page of 10 generations of 5 images (1024x1024 PNG) and 5 videos (1280x720) each;
    two of them have no previews yet (made when the page asks)."""
    home, store = open_home(tmp_path_factory.mktemp("weighty") / "home")
    ids = realistic_generations(home, store, "alice", 10)
    for gid in ids[-2:]:  # the newest two: at the top of the page
        with store.transaction() as db:
            db.conn.execute("UPDATE assets SET thumb_path = NULL, thumb2x_path = NULL WHERE generation_id = ?",
                            (gid,))
        for f in (home.content_dir / "alice" / gid).glob("*.thumb*.webp"):
            f.unlink()
    server = GalleryServer(make_app(WebSettings(home=home, store=store)), "127.0.0.1", 0).start_in_thread()
    try:
        yield {"home": home, "store": store, "ids": ids, "url": f"http://127.0.0.1:{server.port}"}
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def pages_site(tmp_path_factory):
    """One of each kind of page: completed (real media), failed, stalled, an empty gallery."""
    home, store = open_home(tmp_path_factory.mktemp("pages") / "home")
    done = real_generation(home, store, "alice", "a red fox at dawn in a misty forest", images=2, videos=2)
    failed = seed_generation(store, home, "alice", "blue ocean waves at night with a very long prompt that "
                             "keeps going to test wrapping " + "x" * 80, images=2, videos=1,
                             fail=(("image", 2), ("video", 1)))
    stalled = seed_generation(store, home, "alice", "a stalled run", images=1, videos=1, finish=False)
    server = GalleryServer(make_app(WebSettings(home=home, store=store, poll_ms=60_000)), "127.0.0.1",
                           0).start_in_thread()
    try:
        yield {"home": home, "store": store, "done": done, "failed": failed, "stalled": stalled,
               "url": f"http://127.0.0.1:{server.port}"}
    finally:
        server.shutdown()


def context(browser, viewport, scheme="dark", scale=1):  # noqa: F811
    return browser.new_context(viewport=viewport, color_scheme=scheme, device_scale_factor=scale)


def every_page(site, ctx):
    """(name, page) for each kind of page, loaded in `ctx` (a fresh context: logged out at first)."""
    from aigen.web import links

    base = site["url"]
    page = ctx.new_page()
    page.goto(base + "/login")
    yield "login", page
    page.goto(links.magic_link(site["home"], "alice", site["done"], base_url=base))
    yield "magic-link landing", page
    log_in(page, base, "alice")
    yield "gallery", page
    for key in ("done", "failed", "stalled"):
        page.goto(f"{base}/g/{site[key]}")
        yield f"generation ({key})", page
    page.goto(f"{base}/g/{site['done']}#image-1")
    page.wait_for_selector("dialog.viewer[open] img")
    yield "viewer (an image open)", page
    page.goto(f"{base}/g/{site['done']}#video-1")
    page.wait_for_selector("dialog.viewer[open] video")
    yield "viewer (a video open)", page
    page.goto(base + "/?q=fox&status=Completed")
    yield "search results", page
    page.goto(base + "/?q=nothingmatchesthis")
    yield "search without a match", page
    page.goto(base + "/new")
    yield "new generation form", page
    page.goto(f"{base}/g/{site['done']}/again")
    yield "make again", page
    page.goto(f"{base}/g/{site['done']}/delete")
    yield "delete confirmation", page
    page.goto(base + "/g/ffffffffffff")
    yield "error (404)", page
    page.click(".logout button")
    page.wait_for_url(base + "/login?bye=1")
    log_in(page, base, "nobody")
    yield "empty gallery", page


# -- item 1: weight and stability ----------------------------------------------------------------------------


@pytest.mark.parametrize("viewport,scale", [(DESKTOP, 1), (PHONE, 3)], ids=["desktop", "phone-3x"])
def test_a_page_of_10_generations_is_light_and_does_not_shift(browser, weighty, viewport, scale):  # noqa: F811
    base = weighty["url"]
    ctx = context(browser, viewport, scale=scale)
    try:
        page = ctx.new_page()
        log_in(page, base, "alice")
        page.add_init_script(PERF_OBSERVER)
        m = measure_load(page, base + "/")
        assert page.locator("section.generation").count() == 10
        assert page.locator("section.generation .videos a.tile").count() == 50
        assert page.locator("section.generation .images img").count() == 50
        urls = [u for u, _, _ in m["requests"]]
        # Before any interaction: no full-size image and no video is fetched, only previews.
        full = [u for u in urls if re.search(r"/media/\d+(\?.*)?$", u)]
        assert full == [], full
        assert all(status in (200, 304) for u, status, _ in m["requests"] if "/media/" in u), m["requests"]
        print(f"\n{viewport} x{scale}: {m['bytes']} bytes in {len(m['requests'])} requests, CLS {m['cls']:.4f}, LCP {m['lcp_ms']:.0f} ms ({m['lcp_element']})")
        assert m["bytes"] <= BUDGET_BYTES, (m["bytes"], sorted(m["requests"], key=lambda r: -r[2])[:10])
        assert m["cls"] is not None and m["cls"] < 0.02, m["shifts"]
        assert m["lcp_ms"] and m["lcp_ms"] < 2500, m

        # Scrolling down the whole page loads the rest of the previews; still nothing moves.
        height = page.evaluate("document.documentElement.scrollHeight")
        for y in range(0, height, viewport["height"] // 2):
            page.evaluate(f"window.scrollTo(0, {y})")
            page.wait_for_timeout(60)
        page.wait_for_load_state("networkidle")
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        cls = page.evaluate("window.__perf.cls")
        assert cls < 0.02, page.evaluate("window.__perf.shifts")
        # The previews the page asked for lazily were made once and recorded.
        for gid in weighty["ids"][-2:]:
            rows = weighty["store"].assets(gid)
            assert all(a["thumb_path"] and a["thumb2x_path"] for a in rows), gid
    finally:
        ctx.close()


# -- item 7: accessibility and small screens -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "390x844"])
def test_axe_finds_no_violation_on_any_page(browser, pages_site, scheme, viewport):  # noqa: F811
    axe = axe_path()
    if axe is None:
        if os.environ.get("AIGEN_REQUIRE_BROWSER"):
            pytest.fail("axe-core is required here (AIGEN_REQUIRE_BROWSER is set): npm install axe-core and set "
                        "AIGEN_AXE_JS to its axe.min.js")
        pytest.skip("axe-core is not installed: npm install axe-core into a scratch folder and set AIGEN_AXE_JS "
                    "to node_modules/axe-core/axe.min.js")
    source = axe.read_text(encoding="utf-8")
    ctx = context(browser, viewport, scheme)
    found = {}
    try:
        for name, page in every_page(pages_site, ctx):
            page.wait_for_load_state("load")
            # Evaluated through the DevTools protocol: the page's Content-Security-Policy stays on.
            if not page.evaluate("typeof window.axe !== 'undefined'"):
                page.evaluate(source)
            result = page.evaluate("""() => axe.run(document, {resultTypes: ['violations']})
                .then(r => r.violations.map(v => ({id: v.id, impact: v.impact,
                    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ': ' + n.failureSummary)})))""")
            if result:
                found[name] = result
    finally:
        ctx.close()
    assert found == {}, found


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_scrolls_sideways_at_320_px(browser, pages_site, scheme):  # noqa: F811
    ctx = context(browser, {"width": 320, "height": 640}, scheme)
    wide = {}
    try:
        for name, page in every_page(pages_site, ctx):
            page.wait_for_load_state("load")
            sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            if sizes[0] > sizes[1]:
                wide[name] = sizes
    finally:
        ctx.close()
    assert wide == {}, wide


def test_tiles_show_a_focus_ring_that_nothing_clips(browser, pages_site):  # noqa: F811
    ctx = context(browser, DESKTOP, "light")
    try:
        page = ctx.new_page()
        log_in(page, pages_site["url"], "alice")
        sec = f"#g-{pages_site['done']}"
        for selector in (f"{sec} .images a.tile", f"{sec} .videos a.tile"):
            page.focus(selector)
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Tab")  # by keyboard, so :focus-visible applies
            style = page.evaluate("""sel => { const el = document.querySelector(sel), s = getComputedStyle(el);
                let clip = null;
                for (let p = el.parentElement; p; p = p.parentElement) {
                  const o = getComputedStyle(p).overflow;
                  if (o !== 'visible' && p.tagName !== 'HTML' && p.tagName !== 'BODY') { clip = p.tagName; break; }
                }
                return {active: document.activeElement === el, style: s.outlineStyle,
                        width: parseFloat(s.outlineWidth), clip}; }""", selector)
            assert style["active"] and style["style"] == "solid" and style["width"] >= 2, (selector, style)
            assert style["clip"] is None, (selector, style)
    finally:
        ctx.close()
