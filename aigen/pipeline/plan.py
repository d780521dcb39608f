"""Turn a request into validated rows: one generation, one row per asset.

Everything is checked here, before anything is written, so that bad input
costs nothing and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aigen import config
from aigen.errors import BadInput
from aigen.providers.base import get_provider

SEED_MAX = 2**31 - 2


@dataclass
class RequestSpec:
    user_id: str
    prompt: str
    images: int = config.DEFAULT_IMAGES
    videos: int = config.DEFAULT_VIDEOS
    image_provider: str = "local"
    video_provider: str = "local"
    image_model: str | None = None
    video_model: str | None = None
    seed: int | None = None
    image_size: str = config.DEFAULT_IMAGE_SIZE
    video_size: str = config.DEFAULT_VIDEO_SIZE
    duration: float = config.DEFAULT_DURATION
    fps: int = config.DEFAULT_FPS
    notify_at: datetime | None = None
    notify_via: list[str] | None = None
    notify_email: str | None = None
    options: dict = field(default_factory=dict)


def asset_seed(base: int, kind: str, index: int) -> int:
    """A different, reproducible seed per asset, so the 5 of a request differ."""
    digest = hashlib.sha256(f"{base}:{kind}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_MAX + 1


def prepare(spec: RequestSpec, *, env: dict | None = None, home: Path | None = None) -> tuple[dict, list[dict]]:
    """Validate the whole request and return (generation row, asset rows)."""
    user_id = config.validate_user_id(spec.user_id)
    prompt = config.validate_prompt(spec.prompt)
    config.validate_count("--images", spec.images)
    config.validate_count("--videos", spec.videos)
    if spec.images + spec.videos == 0:
        raise BadInput("nothing to make: --images and --videos are both 0")
    iw, ih = config.parse_size("--image-size", spec.image_size)
    vw, vh = config.parse_size("--video-size", spec.video_size, even=True)
    duration = config.validate_duration(spec.duration)
    if not 1 <= spec.fps <= 60:
        raise BadInput(f"invalid fps {spec.fps}: must be between 1 and 60")
    if spec.seed is not None and not 0 <= spec.seed <= SEED_MAX:
        raise BadInput(f"invalid seed {spec.seed}: must be between 0 and {SEED_MAX}")

    providers = {}
    if spec.images:
        providers["image"] = get_provider(spec.image_provider, env=env, home=home)
        providers["image"].check_ready("image")
    if spec.videos:
        providers["video"] = get_provider(spec.video_provider, env=env, home=home)
        providers["video"].check_ready("video")

    base_seed = spec.seed if spec.seed is not None else secrets.randbelow(SEED_MAX)
    image_model = providers["image"].model_for("image", spec.image_model) if spec.images else None
    video_model = providers["video"].model_for("video", spec.video_model) if spec.videos else None
    if spec.options.get("video_from_images"):
        if not spec.images or not spec.videos:
            raise BadInput(
                f"--video-from-images needs at least one image and one video (asked: {spec.images} images, "
                f"{spec.videos} videos)"
            )
        if not getattr(providers["video"], "supports_video_from_images", False):
            raise BadInput(
                f"video provider {spec.video_provider!r} cannot make videos from images",
                hint="use --video-provider runway, or drop --video-from-images",
            )
    if spec.options.get("voice") is not None:
        if not spec.videos:
            raise BadInput("--voice is for the videos' narration, but --videos is 0")
        if not getattr(providers["video"], "supports_voice", False):
            raise BadInput(
                f"video provider {spec.video_provider!r} takes no voice-over choice",
                hint="--voice works with --video-provider pictory; drop it for other providers",
            )
    for kind, count in (("image", spec.images), ("video", spec.videos)):
        passed = spec.options.get(f"{kind}_options")
        if not passed:
            continue
        if not count:
            raise BadInput(f"--{kind}-option is for the {kind}s, but --{kind}s is 0")
        provider = providers[kind]
        if not provider.takes_options:
            raise BadInput(
                f"{kind} provider {provider.name!r} takes no --{kind}-option",
                hint=f"drop --{kind}-option; pass-through options are for providers such as fal and comfyui",
            )
    # Providers that only make some sizes, durations or prompt lengths check the
    # request here (before anything is written) and say what will differ.
    notes: list[str] = []
    for kind, model, (w, h) in (("image", image_model, (iw, ih)), ("video", video_model, (vw, vh))):
        check = getattr(providers.get(kind), "check_request", None)
        if check is not None:
            notes += check(kind, prompt=prompt, model=model, width=w, height=h,
                           duration=duration if kind == "video" else None, options=spec.options)
    gen = {
        "user_id": user_id,
        "prompt": prompt,
        "image_provider": spec.image_provider if spec.images else None,
        "video_provider": spec.video_provider if spec.videos else None,
        "image_model": image_model,
        "video_model": video_model,
        "image_count": spec.images,
        "video_count": spec.videos,
        "seed": base_seed,
        "options": {
            "image_size": [iw, ih],
            "video_size": [vw, vh],
            "duration": duration,
            "fps": spec.fps,
            **spec.options,
            **({"notes": notes} if notes else {}),
        },
        "notify_at": spec.notify_at.isoformat(timespec="seconds") if spec.notify_at else None,
        "notify_via": spec.notify_via,
        "notify_email": spec.notify_email,
    }
    assets = []
    for i in range(1, spec.images + 1):
        assets.append({
            "kind": "image", "idx": i, "provider": spec.image_provider, "model": image_model,
            "seed": asset_seed(base_seed, "image", i), "width": iw, "height": ih,
        })
    for i in range(1, spec.videos + 1):
        assets.append({
            "kind": "video", "idx": i, "provider": spec.video_provider, "model": video_model,
            "seed": asset_seed(base_seed, "video", i), "width": vw, "height": vh,
            "duration": duration, "fps": spec.fps,
        })
    return gen, assets
