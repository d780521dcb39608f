"""A gallery page as users see it, and what loading it costs in a real browser.

Used by the browser tests (tests/test_web_pages_browser.py) and by bench/fig4_gallery.py:

- ``realistic_generations``: N generations of 5 images (1024x1024 PNG, about 1.2 MB each, as the
  issue measured) and 5 videos (1280x720 H.264), made once by the real pipeline with the `local`
  provider and copied N-1 times (files and rows), so a page of 10 costs seconds, not minutes.
- ``measure_load``: opens a URL in a Playwright page and reports the bytes that crossed the network
  (Chromium's own count, from the DevTools protocol: headers and bodies as sent), every request, and
  the page's cumulative layout shift and largest contentful paint from PerformanceObserver.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

from aigen.config import Home
from aigen.store import Store

T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=timezone.utc)

PROMPTS = [
    "a red fox at dawn in a misty forest",
    "blue ocean waves at night under a full moon",
    "a neon city street in the rain",
    "snowy mountains at sunrise",
    "a field of glowing orbs over a quiet lake",
    "desert dunes under a starry sky",
    "a lighthouse on a cliff in a storm",
    "autumn leaves drifting over a stone bridge",
    "a hot air balloon over green hills",
    "northern lights over a frozen fjord",
]

# Before the page's own scripts: every layout shift without recent input and the latest LCP candidate.
PERF_OBSERVER = """
window.__perf = {cls: 0, shifts: [], lcp: 0, lcpElement: null};
new PerformanceObserver(function (list) {
  list.getEntries().forEach(function (e) {
    if (!e.hadRecentInput) {
      window.__perf.cls += e.value;
      window.__perf.shifts.push({value: e.value, at: e.startTime,
        nodes: (e.sources || []).map(function (s) { return s.node ? s.node.nodeName : null; })});
    }
  });
}).observe({type: "layout-shift", buffered: true});
new PerformanceObserver(function (list) {
  var all = list.getEntries(), last = all[all.length - 1];
  window.__perf.lcp = last.renderTime || last.loadTime || last.startTime;
  window.__perf.lcpElement = last.element ? last.element.nodeName + (last.url ? " " + last.url : "") : null;
}).observe({type: "largest-contentful-paint", buffered: true});
"""


def realistic_generations(home: Home, store: Store, user_id: str, n: int = 10, *, image_size: str = "1024x1024",
                          video_size: str = "1280x720", duration: float = 2.0, start: datetime = T0) -> list[str]:
    """`n` completed generations of 5 images and 5 videos each, newest last in the list."""
    from aigen.pipeline.plan import RequestSpec, prepare
    from aigen.pipeline.run import Runner

    spec = RequestSpec(user_id=user_id, prompt=PROMPTS[0], images=5, videos=5, image_provider="local",
                       video_provider="local", image_size=image_size, video_size=video_size, duration=duration,
                       fps=24, seed=11)
    gen, assets = prepare(spec, home=home.path)
    first = store.create_generation(gen, assets, now=start)
    result = Runner(store, home).run(first)
    assert result.generation["status"] == "Completed", result.generation.get("error")
    ids = [first]
    for i in range(1, n):
        ids.append(clone_generation(home, store, first, PROMPTS[i % len(PROMPTS)], now=start + timedelta(minutes=i)))
    return ids


def clone_generation(home: Home, store: Store, gid: str, prompt: str, *, now: datetime) -> str:
    """A copy of a completed generation under a new id and prompt: its rows, and its files (previews too)."""
    src = store.query_one("SELECT * FROM generations WHERE id = ?", (gid,))
    gen = {k: src[k] for k in ("user_id", "image_provider", "video_provider", "image_model", "video_model",
                               "image_count", "video_count", "seed")}
    gen.update(prompt=prompt, options={})
    assets = store.assets(gid)
    specs = [{k: a[k] for k in ("kind", "idx", "provider", "model", "seed", "width", "height", "duration", "fps")}
             for a in assets]
    new = store.create_generation(gen, specs, now=now)
    folder = home.content_dir / src["user_id"] / new
    folder.mkdir(parents=True, exist_ok=True)
    by_slot = {(a["kind"], a["idx"]): a for a in assets}
    for a in store.assets(new):
        old = by_slot[(a["kind"], a["idx"])]
        info = {k: old[k] for k in ("bytes", "sha256", "width", "height", "duration", "fps", "model")}
        for column in ("path", "poster_path", "thumb_path", "thumb2x_path"):
            if old.get(column):
                name = old[column].rsplit("/", 1)[-1]
                shutil.copyfile(home.path / old[column], folder / name)
                info[column] = f"generated_content/{src['user_id']}/{new}/{name}"
        store.complete_asset(a["id"], info, now=now)
    store.finalize_generation(new, now=now + timedelta(seconds=30))
    return new


def measure_load(page, url: str, *, settle_ms: int = 500) -> dict:
    """Load `url` in `page` (nothing clicked, nothing scrolled) and measure it.

    Returns {"bytes": transferred, "requests": [(url, status, bytes)], "cls": ..., "lcp_ms": ...,
    "lcp_element": ...}. Call `page.add_init_script(PERF_OBSERVER)` before for cls/lcp.
    """
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    seen: dict[str, dict] = {}

    def sent(e):
        seen.setdefault(e["requestId"], {"url": e["request"]["url"], "status": None, "bytes": 0})

    def received(e):
        seen.setdefault(e["requestId"], {"url": e["response"]["url"], "status": None, "bytes": 0})
        seen[e["requestId"]]["status"] = e["response"]["status"]

    def finished(e):
        if e["requestId"] in seen:
            seen[e["requestId"]]["bytes"] = e["encodedDataLength"]

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.responseReceived", received)
    cdp.on("Network.loadingFinished", finished)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(settle_ms)
        perf = page.evaluate("window.__perf || null") or {}
    finally:
        cdp.detach()
    requests = [(r["url"], r["status"], r["bytes"]) for r in seen.values()]
    return {"bytes": sum(b for _, _, b in requests), "requests": requests, "cls": perf.get("cls"),
            "shifts": perf.get("shifts"), "lcp_ms": perf.get("lcp"), "lcp_element": perf.get("lcpElement")}
