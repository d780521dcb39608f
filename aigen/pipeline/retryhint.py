"""What to tell a user whose generation failed: `aigen retry ID`, unless every missing asset was refused.

`aigen retry` skips assets a provider refused (moderation) unless
--include-refused, so after an all-refused run a plain `aigen retry ID` only
refuses to start. The failure notification, the gallery and `generate`'s last
lines all use this one rule. No imports: the CLI's fast paths use it.
"""

from __future__ import annotations

from typing import Iterable

REFUSED_LEAD = ("Every missing asset was refused by its provider: the same prompt is refused again (and may be "
                "charged again). Change the prompt with a new `aigen generate`, or submit them again anyway with:")
MISSING_LEAD = "Make the missing assets with:"


def all_left_refused(assets: Iterable[dict]) -> bool:
    """True when at least one asset is not made and every one that is not was refused by its provider."""
    left = [a for a in assets if a.get("status") != "done"]
    return bool(left) and all(a.get("status") == "failed" and a.get("refused") for a in left)


def retry_command(base: str, gen_id: str, assets: Iterable[dict]) -> str:
    """`BASE ID`, with --include-refused when that is the only retry that would submit anything."""
    return f"{base} {gen_id}" + (" --include-refused" if all_left_refused(list(assets)) else "")


def lead(assets: Iterable[dict]) -> str:
    return REFUSED_LEAD if all_left_refused(list(assets)) else MISSING_LEAD
