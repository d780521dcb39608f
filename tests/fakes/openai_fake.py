"""A fake OpenAI Images API on 127.0.0.1 that follows the documented contract (PROVIDERS.md §1).

``POST /v1/images/generations`` with a JSON body. Checks the bearer key, the model
(shut-down and unknown ones answer ``model_not_found``; a body without ``model`` gets the
API's historical default ``dall-e-2``, which is shut down), the prompt length, ``n``, the size
rules of the model (gpt-image-2 family: sides divisible by 16, ratio 1:3..3:1, 655,360 to
8,294,400 pixels, longest edge 3840), ``quality`` and ``output_format``; answers ``{"created", "data": [{"b64_json"}], "size", "output_format",
"usage"}`` with a real PNG of the asked size, a different colour per call.

A prompt containing ``BLOCKME`` is refused the way GPT image models refuse
(HTTP 400, ``image_generation_user_error`` / ``moderation_blocked``). The helpers
below build the scripted bad-day answers (429 with Retry-After, 500s, quota).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time

from fakes.httpfake import FakeServer, Recorded, Reply, png_bytes

PATH = "/v1/images/generations"
KEY = "sk-test-openai-0123456789abcdef"
# Shut down as of December 2026 (PROVIDERS.md §0): the fake plays the API as it is now.
RETIRED = {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-1.5-2025-12-16",
           "chatgpt-image-latest"}
# The openai 3.57.0 ImageModel literal, less the retired ones.
MODELS = {"gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
          "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
PROMPT_MAX = 32000
# The request fields of images.generate for GPT image models; OpenAI answers 400 unknown_parameter to others
# (response_format and style are dall-e only).
PARAMS = {"prompt", "model", "n", "size", "quality", "output_format", "output_compression", "background",
          "moderation", "user", "safety_identifier", "stream", "partial_images"}
MIN_PIXELS, MAX_PIXELS, MAX_EDGE = 655_360, 8_294_400, 3840
STANDARD = {"1024x1024", "1536x1024", "1024x1536", "auto"}
REFUSE_WORD = "BLOCKME"


def error(status: int, message: str, *, type_: str, code: str | None, param: str | None = None,
          headers: dict | None = None, **extra) -> Reply:
    err = {"message": message, "type": type_, "param": param, "code": code, **extra}
    return Reply(status, {"error": err}, headers=headers or {})


def rate_limited(retry_after: str | None = "2", **kw) -> Reply:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return error(429, "Rate limit reached for images per minute.", type_="requests",
                 code="rate_limit_exceeded", headers=headers, **kw)


def quota() -> Reply:
    # OpenAI sends x-should-retry: false for errors that will not clear.
    return error(429, "You exceeded your current quota, please check your plan and billing details.",
                 type_="insufficient_quota", code="insufficient_quota", headers={"x-should-retry": "false"})


def server_error(status: int = 500) -> Reply:
    return error(status, "The server had an error while processing your request.", type_="server_error",
                 code=None)


def refusal() -> Reply:
    return error(400, "Your request was rejected by the safety system.", type_="image_generation_user_error",
                 code="moderation_blocked", moderation_details={"moderation_stage": "input",
                                                                "categories": ["violence"]})


def answer(png: bytes) -> dict:
    """The JSON of a successful images.generate answer carrying ``png``."""
    return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}],
            "output_format": "png", "size": "1024x1024"}


# Bad days after the request was received (the image may have been made and billed).
def cut_answer(png: bytes) -> Reply:
    """A full Content-Length, then the connection closes halfway through the JSON."""
    body = json.dumps(answer(png))
    return Reply(200, body, content_type="application/json", truncate_to=len(body) // 2)


def garbled_answer(png: bytes) -> Reply:
    """Half the JSON with a matching Content-Length: the transfer is complete, the JSON is not."""
    body = json.dumps(answer(png))
    return Reply(200, body[: len(body) // 2], content_type="application/json")


def dropped() -> Reply:
    """The request is read, then the connection closes without an answer."""
    return Reply(drop=True)


def trickled(png: bytes, nbytes: int = 16, every: float = 0.25) -> Reply:
    """The answer arrives ``nbytes`` at a time (64 B/s by default)."""
    return Reply(200, answer(png), trickle=(nbytes, every))


class OpenAIFake:
    def __init__(self, key: str = KEY):
        self.key = key
        self.server = FakeServer()
        self._colours = itertools.count(1)
        self.server.route("POST", PATH, self._generate)

    # the FakeServer API, forwarded
    def start(self) -> "OpenAIFake":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def script(self, *replies: Reply) -> None:
        self.server.script("POST", PATH, *replies)

    @property
    def calls(self) -> int:
        return self.server.count("POST", PATH)

    @property
    def bodies(self) -> list[dict]:
        return [r.json() for r in self.server.matching("POST", PATH)]

    def _generate(self, req: Recorded, srv: FakeServer) -> Reply:
        auth = req.headers.get("authorization", "")
        if auth != f"Bearer {self.key}":
            shown = auth.removeprefix("Bearer ")
            masked = f"{shown[:3]}***{shown[-4:]}" if len(shown) > 8 else "***"
            return error(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.",
                         type_="invalid_request_error", code="invalid_api_key")
        if not req.headers.get("content-type", "").startswith("application/json"):
            return error(400, "Expected a JSON body.", type_="invalid_request_error", code=None)
        body = req.json()
        prompt = body.get("prompt")
        model = body.get("model", "dall-e-2")
        if not prompt:
            return error(400, "Missing required parameter: 'prompt'.", type_="invalid_request_error",
                         code="missing_required_parameter", param="prompt")
        if not isinstance(prompt, str) or len(prompt) > PROMPT_MAX:
            return error(400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
                              f"{PROMPT_MAX}.", type_="invalid_request_error", code="string_above_max_length",
                         param="prompt")
        if model in RETIRED or model not in MODELS:
            return error(404, f"The model '{model}' does not exist or you do not have access to it.",
                         type_="invalid_request_error", code="model_not_found")
        unknown = sorted(set(body) - PARAMS)
        if unknown:
            return error(400, f"Unknown parameter: '{unknown[0]}'.", type_="invalid_request_error",
                         code="unknown_parameter", param=unknown[0])
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            return error(400, f"Invalid 'n': {n}.", type_="invalid_request_error", code=None, param="n")
        size = body.get("size", "auto")
        ok, w, h = self._size_ok(model, size)
        if not ok:
            return error(400, f"Invalid size '{size}' for model {model}.", type_="invalid_request_error",
                         code="invalid_value", param="size")
        quality = body.get("quality", "auto")
        allowed_q = {"low", "medium", "high", "auto"} | ({"xhigh", "max"} if model.startswith("gpt-image-2.")
                                                         else set())
        if quality not in allowed_q:
            return error(400, f"Invalid quality '{quality}'.", type_="invalid_request_error",
                         code="invalid_value", param="quality")
        fmt = body.get("output_format", "png")
        if fmt not in ("png", "jpeg", "webp"):
            return error(400, f"Invalid output_format '{fmt}'.", type_="invalid_request_error", code=None,
                         param="output_format")
        background = body.get("background", "auto")
        if background not in ("transparent", "opaque", "auto"):
            return error(400, f"Invalid background '{background}'.", type_="invalid_request_error",
                         code="invalid_value", param="background")
        if background == "transparent" and fmt not in ("png", "webp"):
            return error(400, "Transparent background requires output_format png or webp.",
                         type_="invalid_request_error", code="invalid_value", param="background")
        if "output_compression" in body:
            oc = body["output_compression"]
            if fmt not in ("jpeg", "webp") or not isinstance(oc, int) or not 0 <= oc <= 100:
                return error(400, "output_compression takes 0-100 and only with jpeg or webp.",
                             type_="invalid_request_error", code="invalid_value", param="output_compression")
        if body.get("moderation", "auto") not in ("low", "auto"):
            return error(400, "Invalid moderation value.", type_="invalid_request_error", code="invalid_value",
                         param="moderation")
        if REFUSE_WORD in prompt:
            return refusal()
        data = []
        for _ in range(n):
            c = next(self._colours)
            png = png_bytes(w, h, ((c * 67) % 256, (c * 139) % 256, (c * 29) % 256))
            data.append({"b64_json": base64.b64encode(png).decode()})
        return Reply(200, {
            "created": int(time.time()), "data": data, "background": "opaque", "output_format": "png",
            "quality": "medium", "size": f"{w}x{h}",
            "usage": {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                      "output_tokens": 100, "total_tokens": 110},
        }, headers={"x-request-id": f"req_{c}"})

    @staticmethod
    def _size_ok(model: str, size: str) -> tuple[bool, int, int]:
        if size == "auto":
            return True, 1024, 1024
        m = re.fullmatch(r"(\d+)x(\d+)", size or "")
        if not m:
            return False, 0, 0
        w, h = int(m.group(1)), int(m.group(2))
        if model.startswith("gpt-image-2"):
            ok = (w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h)
                  and MIN_PIXELS <= w * h <= MAX_PIXELS and max(w, h) <= MAX_EDGE)
            return ok, w, h
        return size in STANDARD, w, h
