"""Helpers for the notification tests: finished generations at a chosen time, and recording channels."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from aigen.config import Home
from aigen.store import Store

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
FAIL_MESSAGE = "flaky: server error 500"


def open_home(path) -> tuple[Home, Store]:
    home = Home(path, "--home")
    home.ensure()
    return home, Store(home.db_path)


def make_generation(store: Store, home: Home, *, user: str = "alice", prompt: str = "a red fox at dawn",
                    images: int = 2, videos: int = 0, fail: tuple = (), notify_at: datetime | None = None,
                    via: list | None = ("console",), email: str | None = None, finished: datetime | None = T0,
                    image_size: tuple[int, int] = (64, 48)) -> str:
    """A generation whose assets are made (real PNG files) or failed, finished at ``finished``.

    ``finished=None`` leaves it Processing. ``fail`` lists image indexes that failed.
    """
    from PIL import Image

    created = (finished or T0) - timedelta(minutes=1)
    assets = [{"kind": "image", "idx": i, "provider": "flaky", "width": image_size[0], "height": image_size[1]}
              for i in range(1, images + 1)]
    assets += [{"kind": "video", "idx": i, "provider": "flaky"} for i in range(1, videos + 1)]
    gid = store.create_generation(
        {
            "user_id": user, "prompt": prompt, "image_count": images, "video_count": videos,
            "notify_at": notify_at.astimezone(timezone.utc).isoformat(timespec="seconds") if notify_at else None,
            "notify_via": list(via) if via is not None else None,
            "notify_email": email,
        },
        assets, now=created,
    )
    if finished is None:
        return gid
    folder = home.content_dir / user / gid
    folder.mkdir(parents=True, exist_ok=True)
    for a in store.assets(gid):
        if a["kind"] == "image" and a["idx"] in fail:
            store.fail_asset(a["id"], f"{FAIL_MESSAGE} for image {a['idx']}", code="http_500", now=finished)
            continue
        path = folder / (f"image_{a['idx']}.png" if a["kind"] == "image" else f"video_{a['idx']}.poster.jpg")
        colour = (200, 40 + 30 * a["idx"], 20)
        Image.new("RGB", image_size, colour).save(path)
        rel = path.relative_to(home.path).as_posix()
        info = {"path": rel, "bytes": path.stat().st_size, "sha256": "0" * 64,
                "width": image_size[0], "height": image_size[1]}
        if a["kind"] == "video":
            info["poster_path"] = rel
        store.complete_asset(a["id"], info, now=finished)
    store.finalize_generation(gid, now=finished)
    return gid


class ConsoleRecorder:
    """A console channel that remembers what it was asked to show."""

    def __init__(self, delay: float = 0.0):
        self.shown: list[tuple] = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, notice, context):
        if self.delay:
            import time

            time.sleep(self.delay)  # widens the window in which concurrent senders could collide
        with self.lock:
            self.shown.append((notice, context))

    @property
    def ids(self) -> list[str]:
        with self.lock:
            return [n.generation_id for n, _ in self.shown]


class FakeClock:
    """A clock the test moves; ``wait`` advances it instead of sleeping."""

    def __init__(self, start: datetime = T0):
        self.now = start
        self.waits: list[float] = []
        self.on_wait = None

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 3))
        self.now += timedelta(seconds=seconds)
        if self.on_wait is not None:
            self.on_wait(self)
        return False
