"""The gallery: `make_app(settings)` builds the Bottle app (see app.py).

`make_app` and `WebSettings` are imported lazily, so that `aigen.web.links`
(used by the notifier) and `aigen.web.access` (used by `aigen user code`)
never pull in Bottle.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("make_app", "WebSettings"):
        from aigen.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'aigen.web' has no attribute {name!r}")
