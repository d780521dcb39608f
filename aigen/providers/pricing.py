"""What an asset costs, where that is known: the one place prices live.

Every figure names its source. Where a vendor does not publish a price for a
model (or it depends on something aigen does not choose, such as OpenAI's
``quality=auto``), the estimate says "unknown" or gives the documented range
rather than inventing a number. Figures come from ../shared/PROVIDERS.md
(compiled November 2026); a live price list wins over these.

To add a provider's prices, add rules to ``RULES`` (first match wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class UnitPrice:
    """Price of one asset (``per="image"``/``"video"``) or of one second of video (``per="second"``)."""

    low: float
    high: float
    per: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Estimate:
    """A request's cost for one kind: a range in US dollars, or unknown (both None)."""

    low: float | None
    high: float | None
    source: str
    note: str = ""

    @property
    def known(self) -> bool:
        return self.low is not None

    def text(self) -> str:
        if self.low is None or self.high is None:
            return "unknown"
        if abs(self.high - self.low) < 1e-9:
            return _usd(self.low)
        return f"{_usd(self.low)}–{_usd(self.high)}"

    def to_dict(self) -> dict:
        return {
            "usd_low": None if self.low is None else round(self.low, 4),
            "usd_high": None if self.high is None else round(self.high, 4),
            "text": self.text(),
            "source": self.source,
            "note": self.note,
        }


def _usd(x: float) -> str:
    if x == 0:
        return "$0"
    s = f"{x:.3f}"
    return f"${x:.2f}" if s.endswith("0") else f"${s}"


# (provider, kind, model or None for any, size -> UnitPrice | None)
Rule = tuple[str, str, "str | None", Callable[[int, int], "UnitPrice | None"]]

_STABILITY_SRC = "Stability credits table (PROVIDERS.md §4): $0.01 per credit, failed generations free"
_STABILITY_CREDITS = {
    "core": 3.0,
    "ultra": 8.0,
    "sd3.5-large": 6.5,
    "sd3-large": 6.5,
    "sd3.5-large-turbo": 4.0,
    "sd3-large-turbo": 4.0,
    "sd3.5-medium": 3.5,
    "sd3-medium": 3.5,
}


def _stability(model: str) -> Callable[[int, int], UnitPrice]:
    usd = _STABILITY_CREDITS[model] * 0.01
    return lambda w, h: UnitPrice(usd, usd, "image", _STABILITY_SRC, f"{_STABILITY_CREDITS[model]:g} credits")


def _gpt_image_1_mini(w: int, h: int) -> UnitPrice:
    # aigen leaves quality to the model ("auto"), so the price is the low..high range.
    square = (w, h) == (1024, 1024)
    low, high = (0.005, 0.036) if square else (0.006, 0.052)
    return UnitPrice(low, high, "image", "OpenAI gpt-image-1-mini model page (PROVIDERS.md §1)",
                     "range from quality low to high; aigen sends quality=auto")


def _gpt_image_1(w: int, h: int) -> UnitPrice:
    square = (w, h) == (1024, 1024)
    low, high = (0.011, 0.167) if square else (0.016, 0.25)
    return UnitPrice(low, high, "image", "gpt-image-1 pass-through prices on fal (PROVIDERS.md §1)",
                     "range from quality low to high; aigen sends quality=auto")


_FAL_FLUX_DEV_SRC = "fal FLUX.1 [dev] page: $0.025 per megapixel (PROVIDERS.md §7)"
_FAL_KLING4_SRC = "fal learn page \"Kling API … 2026\": Kling 4.0 $0.157/s at 720p, $0.235/s at 1080p (PROVIDERS.md §7)"


def _fal_flux_dev(w: int, h: int) -> UnitPrice:
    usd = 0.025 * w * h / 1_000_000
    return UnitPrice(usd, usd, "image", _FAL_FLUX_DEV_SRC, f"{w * h / 1_000_000:.2f} megapixels")


def _fal_kling_v4(w: int, h: int) -> UnitPrice:
    from aigen.providers.fal import MODELS, closest_resolution

    res = closest_resolution(w, h, MODELS["fal-ai/kling-video/v4/text-to-video"].resolutions)
    usd = 0.235 if res == "1080p" else 0.157
    return UnitPrice(usd, usd, "second", _FAL_KLING4_SRC, f"{res}")


RULES: list[Rule] = [
    ("local", "image", None, lambda w, h: UnitPrice(0.0, 0.0, "image", "runs on this machine")),
    ("local", "video", None, lambda w, h: UnitPrice(0.0, 0.0, "video", "runs on this machine")),
    ("comfyui", "image", None, lambda w, h: UnitPrice(0.0, 0.0, "image", "runs on your own ComfyUI server")),
    ("comfyui", "video", None, lambda w, h: UnitPrice(0.0, 0.0, "video", "runs on your own ComfyUI server")),
    ("openai", "image", "gpt-image-1-mini", _gpt_image_1_mini),
    ("openai", "image", "gpt-image-1", _gpt_image_1),
    *[("stability", "image", m, _stability(m)) for m in _STABILITY_CREDITS],
    ("fal", "image", "fal-ai/flux/dev", _fal_flux_dev),
    ("fal", "video", "fal-ai/kling-video/v4/text-to-video", _fal_kling_v4),
]

_UNKNOWN_NOTES = {
    "openai": "OpenAI publishes no per-image price for this model in aigen's sources; "
              "see the usage tokens in your OpenAI dashboard",
    "fal": "no price for this fal model in aigen's sources; see its page on fal.ai/models",
    "gemini": "Google's prices for Veo, Imagen, Gemini image models and Omni Flash are not in aigen's sources "
              "(PROVIDERS.md §10); see the Google Cloud or AI Studio billing pages",
}


def unit_price(provider: str, kind: str, model: str | None, width: int, height: int) -> UnitPrice | None:
    for p, k, m, fn in RULES:
        if p == provider and k == kind and (m is None or m == model):
            return fn(width, height)
    return None


def estimate(
    provider: str,
    kind: str,
    model: str | None,
    count: int,
    width: int,
    height: int,
    duration: float | None = None,
) -> Estimate:
    """The cost of ``count`` assets of one kind, or an unknown Estimate saying why."""
    price = unit_price(provider, kind, model, width, height)
    if price is None:
        note = _UNKNOWN_NOTES.get(provider, f"no published price for {provider} {model or ''}".strip())
        return Estimate(None, None, "none", note)
    if price.per == "second":
        if duration is None:
            return Estimate(None, None, price.source, "priced per second; no duration given")
        units = count * duration
    else:
        units = count
    return Estimate(price.low * units, price.high * units, price.source, price.note)


def plan(gen: dict, assets: list[dict], *, env: dict | None = None, home=None) -> dict:
    """What `aigen generate --dry-run` shows: per kind, who makes what and what it may cost.

    Takes the rows ``pipeline.plan.prepare`` validated; imports provider classes
    but no SDK, and calls nothing.
    """
    from aigen.providers.base import get_provider

    items = []
    low_total = high_total = 0.0
    complete = True
    for kind in ("image", "video"):
        rows = [a for a in assets if a["kind"] == kind]
        if not rows:
            continue
        first = rows[0]
        provider = get_provider(first["provider"], env=env, home=home)
        w, h = first["width"], first["height"]
        duration = first.get("duration")
        # A provider that makes only some lengths bills the one it makes, not the one asked.
        billed = getattr(provider, "billed_duration", None)
        if kind == "video" and callable(billed):
            duration = billed(kind, first["model"], duration)
        describe = getattr(provider, "describe_output", None)
        output = describe(kind, first["model"], w, h) if callable(describe) else f"{w}x{h}"
        est = estimate(first["provider"], kind, first["model"], len(rows), w, h, duration)
        if est.known:
            low_total += est.low or 0.0
            high_total += est.high or 0.0
        else:
            complete = False
        items.append({
            "kind": kind,
            "provider": first["provider"],
            "model": first["model"],
            "count": len(rows),
            "size": f"{w}x{h}",
            "output": output,
            "duration": duration if kind == "video" else None,
            "seeds": [a["seed"] for a in rows],
            "estimate": est.to_dict(),
        })
    known = [i for i in items if i["estimate"]["usd_low"] is not None]
    total = Estimate(low_total, high_total, "sum of the known estimates") if known else Estimate(None, None, "")
    text = total.text()
    if known and not complete:
        text = f"{text} + unknown"
    return {
        "dry_run": True,
        "user": gen["user_id"],
        "prompt": gen["prompt"],
        "notify_at": gen.get("notify_at"),
        "items": items,
        "total": {**total.to_dict(), "text": text, "complete": complete},
    }


__all__ = ["Estimate", "RULES", "UnitPrice", "estimate", "plan", "unit_price"]
