"""What the gallery shows, as plain data: loaded in few queries, shaped once,
used by both the HTML templates and the JSON API.

A page of the gallery costs three queries whatever the number of
generations a user has: the counts per status (a few rows of
generation_counts), one page of generations (newest first: its ids from the
(user_id, created_at, id) index, see aigen.store.search.page_of) and all
assets of that page at once; the last is skipped for generations whose
section is cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from aigen.pipeline import retryhint
from aigen.store.core import Store, decode_generation

PROCESSING_MESSAGE = "Your content is being generated. Please check back later."


@dataclass
class Page:
    generations: list[dict]
    total: int
    page: int
    pages: int
    counts: dict[str, int] = field(default_factory=dict)
    matched: int | None = None  # how many match the search (None: no search)
    filters: object | None = None  # the aigen.store.search.Filters of this page

    def url(self, page: int) -> str:
        """The link to another page of the same search."""
        from urllib.parse import urlencode

        params = self.filters.params(page=page if page > 1 else None) if self.filters else (
            {"page": page} if page > 1 else {})
        return "/?" + urlencode(params) if params else "/"


def _asset_view(a: dict) -> dict:
    ext = PurePosixPath(a["path"]).suffix if a.get("path") else ""
    name = f"{a['kind']}_{a['idx']}{ext}"
    view = {
        "id": a["id"],
        "kind": a["kind"],
        "index": a["idx"],
        "status": a["status"],
        "provider": a.get("provider"),
        "model": a.get("model"),
        "seed": a.get("seed"),
        "width": a.get("width"),
        "height": a.get("height"),
        "duration": a.get("duration"),
        "fps": a.get("fps"),
        "bytes": a.get("bytes"),
        "sha256": a.get("sha256"),
        "attempts": a.get("attempts"),
        "error": a.get("error"),
        "error_code": a.get("error_code"),
        "note": a.get("note"),  # a kept file not as asked: "asked 1024x1024, got 512x512"
        "progress": a.get("progress"),
        "name": name,
        "url": None,
        "download_url": None,
        "poster_url": None,
        # The tile's previews (WebP, 256 and 512 px on the long side): made with the file, or by the
        # gallery the first time they are asked for.
        "thumb_url": None,
        "thumb2x_url": None,
        "format": ext.lstrip(".").upper() or None,  # what Download saves: PNG, JPG, MP4
    }
    if a["status"] == "done" and a.get("path"):
        view["url"] = f"/media/{a['id']}"
        view["download_url"] = f"/media/{a['id']}?download=1"
        view["thumb_url"] = f"/media/{a['id']}/thumb"
        view["thumb2x_url"] = f"/media/{a['id']}/thumb2x"
        if a["kind"] == "video" and a.get("poster_path"):
            view["poster_url"] = f"/media/{a['id']}/poster"
    return view


def shape(gen: dict, assets: list[dict], *, running: bool | None = None) -> dict:
    """One generation with its assets, as the templates and the API use it."""
    views = [_asset_view(a) for a in sorted(assets, key=lambda a: (a["kind"] != "video", a["idx"]))]
    done = [a for a in views if a["status"] == "done"]
    total = len(views) or ((gen.get("image_count") or 0) + (gen.get("video_count") or 0))
    status = gen["status"]
    g = {
        "id": gen["id"],
        "user_id": gen["user_id"],
        "prompt": gen["prompt"],
        "status": status,
        "created_at": gen.get("created_at"),
        "generated_at": gen.get("generated_at"),
        "error": gen.get("error"),
        "image_provider": gen.get("image_provider"),
        "video_provider": gen.get("video_provider"),
        "image_model": gen.get("image_model"),
        "video_model": gen.get("video_model"),
        "seed": gen.get("seed"),
        "options": gen.get("options") or {},
        "done": len(done),
        "total": total,
        "videos": [a for a in done if a["kind"] == "video"],
        "images": [a for a in done if a["kind"] == "image"],
        "failed": [a for a in views if a["status"] == "failed"],
        "assets": views,
        "retry_command": retryhint.retry_command("aigen retry", gen["id"], assets) if status != "Completed" else None,
        "all_refused": status == "Failed" and retryhint.all_left_refused(assets),
        "message": PROCESSING_MESSAGE if status == "Processing" else None,
        # None when unknown (the API does not look); False means no process
        # holds the run lock: the run was killed and `aigen retry` resumes it.
        "running": running,
        # aigen.pipeline.resume's RUNNING, STARTING, STALLED, NO_WORKER or FINAL, when the page looked.
        "run_state": None,
        "updated_at": gen.get("updated_at"),
    }
    g["v"] = version(g, None if status != "Processing" else views)
    return g


def version(g: dict, assets: list[dict] | None, run_state: str | None = None) -> str:
    """A short tag that changes whenever the section of a generation would: the live page compares it.

    A final generation changes only with its row (`updated_at`); one in progress also with each asset's status
    (not its progress fraction: that is sent as data and drawn in place).
    """
    import hashlib

    parts = [g["status"], g.get("updated_at") or "", run_state or g.get("run_state") or ""]
    if assets is not None:
        parts += [f"{a['id']}:{a['status']}" for a in sorted(assets, key=lambda a: a["id"])]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def set_run_state(g: dict, state: str | None) -> None:
    """Record what the page decided about who works on `g` (and the version that depends on it)."""
    g["run_state"] = state
    if state is not None:
        g["running"] = state in ("running", "starting")
    if "assets" in g:
        g["v"] = version(g, g["assets"] if g["status"] == "Processing" else None)


def load_page(store: Store, user_id: str, page: int, page_size: int,
              need_assets=None, filters=None) -> Page:
    """One page of a user's generations with their assets.

    `need_assets(row)` may say that a generation's assets are not needed
    (its section is already rendered and cached): those are shaped without
    assets and their rows skipped by the asset query. `filters` (an
    aigen.store.search.Filters) narrows and orders the list; `Page.matched`
    is then the number of generations that match (`total` stays the user's).
    """
    from aigen.store.search import Filters, count_matches, fts5_page, page_of, where_clause

    f = filters or Filters()
    counts = store.count_generations(user_id=user_id)
    total = sum(counts.values())
    if f.active:
        where, params = where_clause(store, user_id, f)
        matched = count_matches(store, user_id, f, counts)
    else:
        where, params, matched = "g.user_id = ?", [user_id], total
    pages = max(1, -(-matched // page_size))
    page = min(max(1, page), pages)
    rows = fts5_page(store, "g.*", user_id, f, page, page_size, matched) if f.words else None
    if rows is None:
        rows = page_of(store, "g.*", where, params, f, page, page_size, matched)
    wanted = {r["id"] for r in rows if need_assets is None or need_assets(r)}
    by_gen: dict[str, list[dict]] = {gid: [] for gid in wanted}
    if wanted:
        marks = ",".join("?" for _ in wanted)
        for a in store.query(f"SELECT * FROM assets WHERE generation_id IN ({marks})", list(wanted)):
            by_gen[a["generation_id"]].append(a)
    # A generation whose section is cached needs no shaping: only what the page
    # around the sections reads (id, status, the time that keys the cache).
    gens = [
        shape(decode_generation(r), by_gen[r["id"]]) if r["id"] in wanted
        else {"id": r["id"], "status": r["status"], "updated_at": r["updated_at"], "cached": True}
        for r in rows
    ]
    return Page(gens, total, page, pages, counts, matched=matched, filters=f)


def load_generation(store: Store, user_id: str, gen_id: str) -> dict | None:
    """The generation if it exists and belongs to `user_id`; None otherwise (the caller answers 404 to both)."""
    row = store.query_one("SELECT * FROM generations WHERE id = ? AND user_id = ?", (gen_id, user_id))
    if row is None:
        return None
    gen = decode_generation(row)
    return shape(gen, store.assets(gen_id))


def api_dict(g: dict, base_url: str = "") -> dict:
    """The JSON form: no file-system paths, only URLs the same login can fetch."""

    def asset(a: dict) -> dict:
        d = {k: a[k] for k in ("id", "kind", "index", "status", "width", "height", "duration", "fps", "bytes",
                               "sha256", "provider", "model", "seed", "attempts", "error", "error_code", "note")}
        for key in ("url", "download_url", "poster_url", "thumb_url", "thumb2x_url"):
            d[key] = f"{base_url}{a[key]}" if a[key] else None
        return d

    return {
        "id": g["id"],
        "user_id": g["user_id"],
        "prompt": g["prompt"],
        "status": g["status"],
        "message": g["message"],
        "created_at": g["created_at"],
        "generated_at": g["generated_at"],
        "progress": {"done": g["done"], "total": g["total"]},
        "error": g["error"],
        "retry_command": g["retry_command"],
        "videos": [asset(a) for a in g["videos"]],
        "images": [asset(a) for a in g["images"]],
        "assets": [asset(a) for a in g["assets"]],
    }


def short_text(text: str | None, limit: int = 80) -> str:
    """``text`` on one line, cut at a word before ``limit`` characters with an ellipsis when longer:
    a page title, a video's accessible name. (Escaping is the template's job.)"""
    one = " ".join((text or "").split())
    if len(one) <= limit:
        return one
    cut = one[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def local_time(iso_text: str | None) -> str:
    if not iso_text:
        return ""
    try:
        return datetime.fromisoformat(iso_text).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso_text


def took(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        secs = int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return ""
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min {secs % 60:02d} s"
    return f"{secs // 3600} h {secs % 3600 // 60:02d} min"


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass
class Live:
    """What the live page needs, and no more: ids, statuses and asset progress of one page (or one generation)."""

    generations: list[dict]
    counts: dict[str, int]
    total: int
    page: int
    pages: int


def load_live(store: Store, user_id: str, *, page: int, page_size: int, gen_id: str | None = None) -> Live:
    """Three small queries: the counts, the page's rows (a few columns), the assets of those in progress."""
    counts = store.count_generations(user_id=user_id)
    total = sum(counts.values())
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    cols = "id, status, updated_at, created_at"
    if gen_id is not None:
        rows = store.query(f"SELECT {cols} FROM generations WHERE id = ? AND user_id = ?", (gen_id, user_id))
    else:
        from aigen.store.search import Filters, page_of

        rows = page_of(store, cols, "g.user_id = ?", [user_id], Filters(), page, page_size, total)
    gens = [dict(r) for r in rows]
    busy = [g["id"] for g in gens if g["status"] == "Processing"]
    by_gen: dict[str, list[dict]] = {gid: [] for gid in busy}
    if busy:
        marks = ",".join("?" for _ in busy)
        for a in store.query(f"SELECT id, generation_id, kind, idx, status, progress FROM assets "
                             f"WHERE generation_id IN ({marks}) ORDER BY kind, idx", busy):
            by_gen[a["generation_id"]].append(dict(a))
    for g in gens:
        g["assets"] = by_gen.get(g["id"])
    return Live(gens, counts, total, page, pages)


def live_dict(live: Live) -> dict:
    """The JSON of /api/live: per generation its status, who works on it, its version tag and, while in
    progress, each asset's status and progress."""
    out = []
    for g in live.generations:
        d = {"id": g["id"], "status": g["status"], "state": g.get("run_state"),
             "v": version(g, g["assets"], g.get("run_state"))}
        if g["assets"] is not None:
            d["done"] = sum(1 for a in g["assets"] if a["status"] == "done")
            d["total"] = len(g["assets"])
            d["assets"] = [{"id": a["id"], "kind": a["kind"], "index": a["idx"], "status": a["status"],
                            "progress": None if a["progress"] is None else round(float(a["progress"]), 3)}
                           for a in g["assets"]]
        out.append(d)
    return {
        "page": live.page,
        "pages": live.pages,
        "total": live.total,
        "counts": {k: live.counts.get(k, 0) for k in ("Processing", "Completed", "Failed")},
        "busy": any(g["status"] == "Processing" and g.get("run_state") in ("running", "starting", None)
                    for g in live.generations),
        "generations": out,
    }
