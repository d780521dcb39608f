"""A fake Stability AI v2beta Stable Image API on 127.0.0.1 (PROVIDERS.md §4).

``POST /v2beta/stable-image/generate/{core,ultra,sd3}``: multipart only (a JSON or
urlencoded body is a 400, as on the real API), bearer key, ``prompt`` required,
``aspect_ratio``/``output_format``/``seed`` validated, ``model`` validated on sd3.
With ``accept: image/*`` the answer is the PNG itself with ``finish-reason`` and
``seed`` headers; with ``accept: application/json`` it is ``{image, finish_reason, seed}``.
The image's size follows the aspect ratio and its colour follows the seed, so
different seeds give different files.

Prompt words script refusals: ``BLOCKME`` -> 403 ``content_moderation``;
``FILTERME`` -> 200 with ``finish-reason: CONTENT_FILTERED``.
"""

from __future__ import annotations

import base64
import math

from fakes.httpfake import FakeServer, Recorded, Reply, png_bytes

PATH = "/v2beta/stable-image/generate/*"
KEY = "sk-test-stability-0123456789abcdef"
RATIOS = {"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"}
PROMPT_MAX = 10_000
STYLE_PRESETS = {"3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                 "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                 "photographic", "pixel-art", "tile-texture"}
# The SD3.0 names are in the older spec copies but not confirmed for 2026 (PROVIDERS.md §4): still accepted.
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3-large", "sd3-large-turbo", "sd3-medium"}


def error(status: int, name: str, *errors: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"id": "a1b2c3", "name": name, "errors": list(errors)}, headers=headers or {})


def rate_limited(retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return error(429, "rate_limit_exceeded", "You have exceeded the rate limit of 150 requests within a "
                 "10 second period.", headers=headers)


def server_error() -> Reply:
    return error(500, "internal_error", "An unexpected server error occurred, please try again.")


def no_credits() -> Reply:
    return error(402, "payment_required", "You lack sufficient credits to make this request.")


class StabilityFake:
    def __init__(self, key: str = KEY, side: int = 128):
        self.key = key
        self.side = side  # the 1:1 size; small so tests stay fast
        self.server = FakeServer()
        self.server.route("POST", PATH, self._generate)

    def start(self) -> "StabilityFake":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url

    def script(self, *replies: Reply) -> None:
        self.server.script("POST", PATH, *replies)

    @property
    def calls(self) -> int:
        return self.server.count("POST", PATH)

    def forms(self) -> list[dict]:
        return [r.form() for r in self.server.matching("POST", PATH)]

    def _generate(self, req: Recorded, srv: FakeServer) -> Reply:
        endpoint = req.path.rsplit("/", 1)[-1]
        if endpoint not in ("core", "ultra", "sd3"):
            return error(404, "not_found", f"unknown endpoint {endpoint}")
        if req.headers.get("authorization") != f"Bearer {self.key}":
            return error(401, "unauthorized", "Authorization failed: invalid API key.")
        if not req.is_multipart():
            return error(400, "bad_request", "content-type: must be multipart/form-data")
        form = req.form()
        prompt = form.get("prompt") or ""
        if not prompt:
            return error(400, "bad_request", "prompt: cannot be empty")
        for name in ("stability-client-id", "stability-client-user-id", "stability-client-version"):
            if len(req.headers.get(name, "")) > 256:
                return error(400, "bad_request", f"{name}: must be at most 256 characters")
        for name in ("prompt", "negative_prompt"):
            if len(form.get(name) or "") > PROMPT_MAX:
                return error(400, "bad_request", f"{name}: must be at most {PROMPT_MAX} characters")
        if "style_preset" in form and (endpoint == "sd3" or form["style_preset"] not in STYLE_PRESETS):
            return error(400, "bad_request", f"style_preset: must be one of {sorted(STYLE_PRESETS)}")
        mode = form.get("mode", "text-to-image")
        if endpoint == "sd3" and mode not in ("text-to-image", "image-to-image"):
            return error(400, "bad_request", "mode: must be text-to-image or image-to-image")
        wants_image = (endpoint == "sd3" and mode == "image-to-image") or "strength" in form
        if wants_image and "image" not in form:
            return error(400, "bad_request", "image: required for image-to-image")
        if "image" in form and endpoint != "core" and "strength" not in form:
            return error(400, "bad_request", "strength: required when image is given")
        if "image" in form and endpoint == "core":
            return error(400, "bad_request", "image: core takes no image")
        ratio = form.get("aspect_ratio", "1:1")
        if ratio not in RATIOS:
            return error(400, "bad_request", f"aspect_ratio: must be one of {sorted(RATIOS)}")
        fmt = form.get("output_format", "png")
        if fmt not in ("png", "jpeg", "webp"):
            return error(400, "bad_request", "output_format: must be png, jpeg or webp")
        try:
            seed = int(form.get("seed", "0"))
        except ValueError:
            return error(400, "bad_request", "seed: must be an integer")
        if not 0 <= seed <= 4294967294:
            return error(400, "bad_request", "seed: must be between 0 and 4294967294")
        if endpoint == "sd3" and form.get("model", "sd3.5-large") not in SD3_MODELS:
            return error(400, "bad_request", f"model: unknown model {form.get('model')}")
        if "BLOCKME" in prompt:
            return error(403, "content_moderation",
                         "Your request was flagged by our content moderation system, as a result your "
                         "request was denied and you were not charged.")
        finish = "CONTENT_FILTERED" if "FILTERME" in prompt else "SUCCESS"
        a, b = (int(x) for x in ratio.split(":"))
        w = int(round(self.side * math.sqrt(a / b) / 8) * 8)
        h = int(round(self.side * math.sqrt(b / a) / 8) * 8)
        png = png_bytes(w, h, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
        if req.headers.get("accept", "image/*").startswith("application/json"):
            return Reply(200, {"image": base64.b64encode(png).decode(), "finish_reason": finish, "seed": seed},
                         content_type="application/json; type=image/png")
        return Reply(200, png, content_type="image/png",
                     headers={"finish-reason": finish, "seed": str(seed), "x-request-id": "a1b2c3"})
