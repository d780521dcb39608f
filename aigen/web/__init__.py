"""The gallery: `make_app(settings)` builds the Bottle app (see app.py).

`make_app` and `WebSettings` are imported lazily, so that `aigen.web.links`
(used by the notifier) and `aigen.web.access` (used by `aigen user code`)
never pull in Bottle.
"""

from __future__ import annotations

# Every kind of row the gallery writes to the events table (README, "Events").
# Here rather than in app.py so that `aigen events` can check --kind without
# importing Bottle.
EVENT_KINDS = ("login_ok", "login_failed", "magic_link_login", "logout", "gallery_view", "generation_view",
               "asset_view", "api_view", "generation_retry", "generation_requested", "generation_deleted",
               "zip_download", "prompt_copied")


def __getattr__(name: str):
    if name in ("make_app", "WebSettings"):
        from aigen.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'aigen.web' has no attribute {name!r}")
