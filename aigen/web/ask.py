"""Asking for content from the gallery: the form, `POST /api/generations` and Make again share this.

The fields are checked by the CLI's own code (aigen.pipeline.plan.prepare, aigen.notify.when,
aigen.notify.options), so the same bad input gets the same message as `aigen generate` (which names its
flags: "invalid --images 11: ..."). Nothing here imports Bottle or the command line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aigen import config
from aigen.errors import BadInput

# The fields of the form and of the JSON API, with the `aigen generate` flag each one is.
FIELDS = {
    "prompt": "PROMPT",
    "images": "--images",
    "videos": "--videos",
    "image_provider": "--image-provider",
    "video_provider": "--video-provider",
    "image_size": "--image-size",
    "video_size": "--video-size",
    "notify_at": "--notify-at",
    "notify_via": "--notify-via",
    "email": "--email",
}
NOTIFY_CHOICES = ("", "none", "email", "desktop", "console")


def provider_choices(home_path: Path, env: dict | None = None) -> dict[str, list[str]]:
    """The providers that can run now (key set, or none needed), per kind, `local` first (as `aigen providers`)."""
    import os

    from aigen.providers.base import provider_class, provider_names

    env = dict(os.environ) if env is None else env
    out: dict[str, list[str]] = {"image": [], "video": []}
    for name in sorted(provider_names(), key=lambda n: (n != "local", n)):
        try:
            cls = provider_class(name)
            if cls(env=env, home=home_path).missing_keys():
                continue
        except Exception:  # a plugin that cannot load is not offered (`aigen providers` shows why)
            continue
        for kind in out:
            if kind in cls.kinds:
                out[kind].append(name)
    return out


def defaults() -> dict:
    return {"prompt": "", "images": str(config.DEFAULT_IMAGES), "videos": str(config.DEFAULT_VIDEOS),
            "image_provider": "local", "video_provider": "local", "image_size": config.DEFAULT_IMAGE_SIZE,
            "video_size": config.DEFAULT_VIDEO_SIZE, "notify_at": "", "notify_via": "", "email": ""}


def _count(flag: str, value) -> int:
    """A count as `aigen generate` reads `--images`: the same words for the same bad value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        return int(text.strip())
    except ValueError:
        raise BadInput(_cli_int_message(flag, text)) from None


def _cli_int_message(flag: str, text: str) -> str:
    """What the command line says for `flag TEXT` that is not a whole number, asked of typer itself (its words
    change between versions), through a throwaway command with one such option."""
    try:
        import typer

        app = typer.Typer()

        @app.command()
        def _one(value: int = typer.Option(0, flag)) -> None:  # pragma: no cover - never run, only parsed
            pass

        typer.main.get_command(app).make_context("aigen", [flag, text])
    except Exception as e:  # the parser's BadParameter
        format_message = getattr(e, "format_message", None)
        if format_message is not None:
            return format_message()
    return f"Invalid value for '{flag}': {text!r} is not a valid integer."


def from_json(body) -> dict:
    """The fields of a `POST /api/generations` body, as text like a form's (strict: unknown keys are refused)."""
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object, e.g. {\"prompt\": \"a red fox at dawn\"}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadInput(f"unknown field {unknown[0]!r}: the fields are {', '.join(FIELDS)}")
    out = {}
    for key, value in body.items():
        if value is None:
            continue
        if key in ("images", "videos"):
            out[key] = value if isinstance(value, int) and not isinstance(value, bool) else _count(FIELDS[key], value)
        elif not isinstance(value, str):
            raise BadInput(f"field {key!r} must be text, not {type(value).__name__}")
        else:
            out[key] = value
    if "prompt" not in out:
        raise BadInput("Missing argument 'PROMPT'.")
    return out


@dataclass
class Asked:
    gen_row: dict
    asset_rows: list[dict]
    email: str | None


def prepare_request(home, store, user_id: str, fields: dict, now: datetime, *, env: dict | None = None) -> Asked:
    """Check every field as `aigen generate` does and plan the rows; BadInput with the CLI's message if not."""
    from aigen.notify.options import resolve_notify_options
    from aigen.notify.when import parse_notify_at
    from aigen.pipeline.plan import RequestSpec, prepare

    f = {**defaults(), **{k: v for k, v in fields.items() if v is not None}}
    images = _count("--images", f["images"])
    videos = _count("--videos", f["videos"])
    when = None
    if str(f["notify_at"]).strip():
        when = parse_notify_at(str(f["notify_at"]).strip(), now)
    via = str(f["notify_via"]).strip() or None
    email = str(f["email"]).strip() or None
    channels, address = resolve_notify_options(home.path, store, user_id, via, email)
    spec = RequestSpec(
        user_id=user_id, prompt=f["prompt"], images=images, videos=videos,
        image_provider=str(f["image_provider"]).strip() or "local",
        video_provider=str(f["video_provider"]).strip() or "local",
        image_size=str(f["image_size"]).strip(), video_size=str(f["video_size"]).strip(),
        notify_at=when, notify_via=channels, notify_email=address,
    )
    gen, assets = prepare(spec, env=env, home=home.path)
    return Asked(gen, assets, email)


def again_fields(gen: dict) -> tuple[dict, dict]:
    """(form fields, extra RequestSpec arguments) that ask for `gen` again: the same prompt, counts, providers,
    models, sizes, length, pass-through options and notification channels; a new seed, and no notification time
    (the old one has passed: it comes when the new one is ready)."""
    opts = dict(gen.get("options") or {})

    def size(key, default):
        v = opts.get(key)
        return f"{v[0]}x{v[1]}" if isinstance(v, (list, tuple)) and len(v) == 2 else default

    via = gen.get("notify_via")
    fields = {
        "prompt": gen["prompt"], "images": gen.get("image_count") or 0, "videos": gen.get("video_count") or 0,
        "image_provider": gen.get("image_provider") or "local", "video_provider": gen.get("video_provider") or "local",
        "image_size": size("image_size", config.DEFAULT_IMAGE_SIZE),
        "video_size": size("video_size", config.DEFAULT_VIDEO_SIZE),
        "notify_via": (",".join(via) or "none") if isinstance(via, list) else "",
        "email": gen.get("notify_email") or "",
    }
    extra = {
        "image_model": gen.get("image_model"), "video_model": gen.get("video_model"),
        "duration": opts.get("duration", config.DEFAULT_DURATION), "fps": opts.get("fps", config.DEFAULT_FPS),
        "options": {k: opts[k] for k in ("video_from_images", "voice", "image_options", "video_options")
                    if opts.get(k) not in (None, False, {}, [])},
    }
    return fields, extra


def prepare_again(home, store, gen: dict, now: datetime, *, env: dict | None = None) -> Asked:
    from aigen.notify.options import resolve_notify_options
    from aigen.pipeline.plan import RequestSpec, prepare

    fields, extra = again_fields(gen)
    channels, address = resolve_notify_options(home.path, store, gen["user_id"], fields["notify_via"] or None,
                                               fields["email"] or None)
    spec = RequestSpec(
        user_id=gen["user_id"], prompt=fields["prompt"], images=int(fields["images"]), videos=int(fields["videos"]),
        image_provider=fields["image_provider"], video_provider=fields["video_provider"],
        image_size=fields["image_size"], video_size=fields["video_size"], notify_via=channels,
        notify_email=address, **extra,
    )
    gen_row, assets = prepare(spec, env=env, home=home.path)
    return Asked(gen_row, assets, None)


def generate_command(gen: dict) -> str:
    """The `aigen generate` line that asks for the same as Make again (its CLI twin)."""
    fields, extra = again_fields(gen)
    args = ["aigen", "generate", fields["prompt"], "--user", gen["user_id"]]
    d = defaults()
    for key in ("images", "videos"):
        if str(fields[key]) != d[key]:
            args += [FIELDS[key], str(fields[key])]
    for kind in ("image", "video"):
        if int(fields[f"{kind}s"]) == 0:
            continue
        if fields[f"{kind}_provider"] != "local":
            args += [f"--{kind}-provider", fields[f"{kind}_provider"]]
        if extra[f"{kind}_model"] and extra[f"{kind}_model"] != _default_model(fields[f"{kind}_provider"], kind):
            args += [f"--{kind}-model", extra[f"{kind}_model"]]
        if fields[f"{kind}_size"] != d[f"{kind}_size"]:
            args += [f"--{kind}-size", fields[f"{kind}_size"]]
    if int(fields["videos"]):
        if extra["duration"] != config.DEFAULT_DURATION:
            args += ["--duration", f"{extra['duration']:g}"]
        if extra["fps"] != config.DEFAULT_FPS:
            args += ["--fps", str(extra["fps"])]
    o = extra["options"]
    if o.get("video_from_images"):
        args.append("--video-from-images")
    if o.get("voice") is not None:
        args += ["--voice", str(o["voice"])]
    import json

    for kind in ("image", "video"):
        for k, v in (o.get(f"{kind}_options") or {}).items():
            args += [f"--{kind}-option", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
    if fields["notify_via"]:
        args += ["--notify-via", fields["notify_via"]]
    if fields["email"]:
        args += ["--email", fields["email"]]
    return " ".join(shlex.quote(a) for a in args)


def _default_model(provider: str, kind: str) -> str | None:
    try:
        from aigen.providers.base import provider_class

        return provider_class(provider).default_models.get(kind)
    except Exception:
        return None
