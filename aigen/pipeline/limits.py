"""Fairness: how much one user may ask for from the gallery (the form, `POST /api/generations`, Make again).

``<home>/config.toml``::

    [limits]
    running_per_user = 3     # generations of one user in progress at once (0: no limit)
    assets_per_day = 200     # images + videos one user may ask for in any 24 hours (0: no limit)

"In progress" is every `Processing` generation of the user, a stalled one included (Resume or delete it
to free its place): counting only those a process holds would let a burst of requests through before
their runs start. The day is the last 24 hours, counted from what was asked for (a deleted generation
still counts). `aigen generate` on the server's shell is the operator's and is not limited, but what it
makes for a user counts toward that user's day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aigen.errors import AigenError, BadInput

DEFAULT_RUNNING = 3
DEFAULT_ASSETS_PER_DAY = 200


class LimitReached(AigenError):
    """A fairness limit of config.toml [limits] is reached: the request is refused (HTTP 429)."""

    code = "limit_reached"


@dataclass(frozen=True)
class Limits:
    running_per_user: int = DEFAULT_RUNNING
    assets_per_day: int = DEFAULT_ASSETS_PER_DAY

    @classmethod
    def from_config(cls, home: Path | None) -> "Limits":
        from aigen.config import read_config_file

        data, path = read_config_file(home)
        table = data.get("limits") or {}
        if not isinstance(table, dict):
            raise BadInput(f"{path}: [limits] must be a table")
        values = {}
        for key, default in (("running_per_user", DEFAULT_RUNNING), ("assets_per_day", DEFAULT_ASSETS_PER_DAY)):
            v = table.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
                raise BadInput(f"{path}: [limits] {key} = {v!r} is not a whole number from 0 (no limit) to 1000000")
            values[key] = v
        unknown = sorted(set(table) - set(values))
        if unknown:
            raise BadInput(f"{path}: [limits] has no setting {unknown[0]!r} (running_per_user, assets_per_day)")
        return cls(**values)


@dataclass
class Usage:
    running: int
    assets_today: int


def usage(store, user_id: str, now: datetime) -> Usage:
    from aigen.store.core import iso

    since = iso(now - timedelta(hours=24))
    running = store.query_one("SELECT count(*) AS n FROM generations WHERE user_id = ? AND status = 'Processing'",
                              (user_id,))["n"]
    asked = store.query_one(
        "SELECT COALESCE(SUM(COALESCE(image_count, 0) + COALESCE(video_count, 0)), 0) AS n FROM generations "
        "WHERE user_id = ? AND created_at >= ?", (user_id, since))["n"]
    gone = store.query_one("SELECT COALESCE(SUM(assets), 0) AS n FROM deleted_generations WHERE user_id = ? "
                           "AND created_at >= ?", (user_id, since))["n"]
    return Usage(int(running), int(asked) + int(gone))


def problem(limits: Limits, use: Usage, new_assets: int = 0) -> str | None:
    """Why a request of `new_assets` more is refused now, or None. With new_assets=0: is a limit reached already?"""
    if limits.running_per_user and use.running >= limits.running_per_user:
        return (f"You have {use.running} generation(s) in progress, the most allowed at once "
                f"({limits.running_per_user}): wait for one to finish (or delete a stalled one), then ask again.")
    if limits.assets_per_day:
        left = limits.assets_per_day - use.assets_today
        if left <= 0 or new_assets > left:
            return (f"You asked for {use.assets_today} images and videos in the last 24 hours; the limit is "
                    f"{limits.assets_per_day} a day" + (f", so {left} more can be asked for now." if left > 0
                                                        else ": ask again later."))
    return None


def check(store, limits: Limits, user_id: str, new_assets: int, now: datetime) -> None:
    """Raise LimitReached when this request would pass a limit. Call it inside the write transaction that
    creates the generation, so that two requests at once cannot both pass."""
    why = problem(limits, usage(store, user_id, now), new_assets)
    if why:
        raise LimitReached(why, hint="the limits are [limits] running_per_user and assets_per_day in config.toml")
