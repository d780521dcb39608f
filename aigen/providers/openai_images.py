"""`openai`: images from OpenAI's GPT Image models through the official SDK.

One asset is one ``images.generate`` call with ``n=1`` and ``output_format=png``;
the base64 in the JSON answer is decoded, checked (PNG magic, size cap) and
written to the path the pipeline gave.

Variety: the Images API takes no seed, so the 5 images of a request differ
because every call samples the model afresh; the per-asset seed aigen records
is not sent (and a re-run with the same --seed will not reproduce an image).

Retries are aigen's (``http.with_retries``), not the SDK's (``max_retries=0``): the
same bounded behaviour as every other provider, and a sleep tests can replace.
Once the request is sent, nothing is retried: a read timeout, a connection that
breaks, an answer that is cut off, too slow (``http.BodyLimits``, enforced by a
transport wrapped around the SDK's) or unreadable all fail the image with
``http.sent_but_lost``, since OpenAI may have made (and billed) it.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
from datetime import date
from pathlib import Path
from typing import Any

from aigen.errors import BadInput, MediaCheckError, MissingKey, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers import http
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter

KEY_VAR = "OPENAI_API_KEY"
BASE_URL_VAR = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-image-2"

# Shutdown dates from the openai 3.54 SDK docstrings and OpenAI's deprecations page
# (PROVIDERS.md §0). A model is refused before anything is written once its date has come.
SHUTDOWNS: dict[str, date] = {
    "dall-e-2": date(2026, 5, 12),
    "dall-e-3": date(2026, 5, 12),
    "gpt-image-1": date(2026, 10, 23),
    "gpt-image-1-mini": date(2026, 12, 1),
    "gpt-image-1.5": date(2026, 12, 1),
    "gpt-image-1.5-2025-12-16": date(2026, 12, 1),
    "chatgpt-image-latest": date(2026, 12, 1),
}

# The GPT image models that take only these three sizes.
STANDARD_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
# gpt-image-2 and later (PROVIDERS.md §1): any WxH with both sides divisible by 16,
# ratio 1:3..3:1, total pixels 655,360 to 8,294,400 (3840x2160) and the longest edge
# at most 3840 (so 2880x2880 and 2160x3840 are allowed). A size outside is a 400 for
# every image of the request, so it is mapped before anything is sent.
FLEX_STEP = 16
FLEX_MAX_EDGE = 3840
FLEX_MIN_PIXELS = 655_360
FLEX_MAX_PIXELS = 8_294_400
FLEX_MAX_RATIO = 3

REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})

MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Seconds for the body of the answer once its headers came (AIGEN_DOWNLOAD_DEADLINE overrides).
ANSWER_DEADLINE = 300.0


def today() -> date:
    """Today's date; a function so tests can move the clock."""
    return date.today()


def is_flexible(model: str) -> bool:
    return model.startswith("gpt-image-2")


def flex_size_ok(width: int, height: int) -> bool:
    """Whether the gpt-image-2 family accepts ``width`` x ``height`` as it is."""
    return (width % FLEX_STEP == 0 and height % FLEX_STEP == 0 and width > 0 and height > 0
            and max(width, height) <= FLEX_MAX_EDGE
            and FLEX_MIN_PIXELS <= width * height <= FLEX_MAX_PIXELS
            and max(width, height) <= FLEX_MAX_RATIO * min(width, height))


def map_size(model: str, width: int, height: int) -> tuple[int, int]:
    """The size to ask ``model`` for, as close as it allows to ``width`` x ``height``.

    gpt-image-2 family: the ratio is clamped to 3:1 first (shortening the long side),
    then the size is scaled down to fit the edge and pixel caps or scaled *up* to the
    pixel floor, keeping its aspect ratio, then put on the 16-pixel grid.
    """
    if not is_flexible(model):
        want = math.log(width / height)
        return min(STANDARD_SIZES, key=lambda s: (abs(math.log(s[0] / s[1]) - want), s != (1024, 1024)))
    w, h = float(width), float(height)
    if w > FLEX_MAX_RATIO * h:
        w = FLEX_MAX_RATIO * h
    elif h > FLEX_MAX_RATIO * w:
        h = FLEX_MAX_RATIO * w
    area = w * h
    scale = min(1.0, FLEX_MAX_EDGE / max(w, h), math.sqrt(FLEX_MAX_PIXELS / area))
    if area * scale * scale < FLEX_MIN_PIXELS:
        scale = math.sqrt(FLEX_MIN_PIXELS / area)
    w, h = w * scale, h * scale

    def near(v: float) -> int:
        return max(FLEX_STEP, int(v / FLEX_STEP + 0.5) * FLEX_STEP)

    first = (near(w), near(h))
    if flex_size_ok(*first):
        return first
    # Rounding broke a limit (the floor, a cap or the ratio): the allowed grid point
    # nearest in shape, then in size, among the neighbours of the target.
    want_ratio, want_area = math.log(w / h), math.log(w * h)
    best = None
    for reach in (2, 4, 8):
        cands = [(cw, ch)
                 for cw in range(max(FLEX_STEP, first[0] - reach * FLEX_STEP), first[0] + reach * FLEX_STEP + 1,
                                 FLEX_STEP)
                 for ch in range(max(FLEX_STEP, first[1] - reach * FLEX_STEP), first[1] + reach * FLEX_STEP + 1,
                                 FLEX_STEP)
                 if flex_size_ok(cw, ch)]
        if cands:
            best = min(cands, key=lambda c: (round(abs(math.log(c[0] / c[1]) - want_ratio), 9),
                                             abs(math.log(c[0] * c[1]) - want_area)))
            break
    if best is None:  # pragma: no cover - the target itself satisfies every limit
        raise AssertionError(f"no gpt-image-2 size near {width}x{height}")
    return best


def size_note(model: str, width: int, height: int) -> str | None:
    """What `generate` prints when ``model`` will not be sent the asked size; None when it is."""
    w, h = map_size(model, width, height)
    if (w, h) == (width, height):
        return None
    if is_flexible(model):
        reasons = []
        long, short = max(width, height), min(width, height)
        if long > FLEX_MAX_RATIO * short:
            reasons.append("its ratio is at most 3:1")
            short_, long_ = short, FLEX_MAX_RATIO * short
        else:
            short_, long_ = short, long
        if short_ * long_ < FLEX_MIN_PIXELS:
            reasons.append(f"it makes at least {FLEX_MIN_PIXELS:,} pixels, so the size is scaled up keeping its "
                           "aspect ratio")
        elif short_ * long_ > FLEX_MAX_PIXELS or long_ > FLEX_MAX_EDGE:
            reasons.append(f"it makes at most {FLEX_MAX_PIXELS:,} pixels and edges up to {FLEX_MAX_EDGE}, so the "
                           "size is scaled down keeping its aspect ratio")
        if not reasons or (width % FLEX_STEP or height % FLEX_STEP):
            reasons.append("its sides are multiples of 16")
        why = f"{model}: " + "; ".join(reasons)
    else:
        why = f"{model} makes only 1024x1024, 1536x1024 and 1024x1536"
    return f"openai images are sent as {w}x{h} for the asked {width}x{height} ({why}); the files are {w}x{h}"


class OpenAIImages(Provider):
    name = "openai"
    kinds = frozenset({"image"})
    description = "OpenAI GPT Image models (official openai SDK, images.generate); no seed parameter"
    key_env = ((KEY_VAR,),)
    base_url_env = BASE_URL_VAR
    default_base_url = DEFAULT_BASE_URL
    default_models = {"image": DEFAULT_MODEL}
    # A default tier allows a handful of image calls per minute; 4 in flight keeps
    # a request of 5 quick without provoking 429s.
    concurrency = 4
    read_timeout = 300.0  # image calls can exceed 30 s; tools built on them use 120-300 s

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._client: Any = None
        self._client_lock = threading.Lock()

    # -- checks before anything is written ------------------------------------
    def model_for(self, kind: str, requested: str | None) -> str | None:
        model = super().model_for(kind, requested)
        if model:
            check_model(model)
        return model

    def check_request(self, kind: str, *, prompt: str, model: str | None, width: int, height: int,
                      duration: float | None = None, options: dict | None = None) -> list[str]:
        """Before anything is written: the model, and a note when the size sent differs from the asked."""
        model = model or DEFAULT_MODEL
        check_model(model)
        note = size_note(model, width, height)
        return [note] if note else []

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        """What the model will be asked for, for `--dry-run`."""
        w, h = map_size(model or DEFAULT_MODEL, width, height)
        if (w, h) == (width, height):
            return f"{w}x{h}"
        return f"{w}x{h} (nearest size {model or DEFAULT_MODEL} accepts)"

    # -- the call --------------------------------------------------------------
    def client(self, key: str):
        with self._client_lock:
            if self._client is None:
                import openai

                connect, read = http.timeout_from_env(self.env, self.read_timeout)
                limits = http.BodyLimits.from_env(self.env, ANSWER_DEADLINE)
                self._client = openai.OpenAI(
                    api_key=key,
                    base_url=self.env.get(BASE_URL_VAR) or DEFAULT_BASE_URL,
                    organization=self.env.get("OPENAI_ORG_ID") or None,
                    project=self.env.get("OPENAI_PROJECT_ID") or None,
                    max_retries=0,
                    timeout=openai.Timeout(read, connect=connect),
                    http_client=openai.DefaultHttpxClient(transport=_paced_transport(limits)),
                )
            return self._client

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        model = req.model or DEFAULT_MODEL
        check_model(model)
        key = self.lookup_key(KEY_VAR)
        if not key:
            raise MissingKey(f"provider 'openai' needs {KEY_VAR}, which is not set",
                             hint=f"export {KEY_VAR}=... or run `aigen keys set openai`")
        width, height = map_size(model, req.width, req.height)
        client = self.client(key)
        policy = http.RetryPolicy.from_env(self.env)
        check_stop = getattr(reporter, "check_stop", None)

        def call():
            if check_stop is not None:
                check_stop()
            return client.images.generate(
                model=model, prompt=req.prompt, n=1, size=f"{width}x{height}", output_format="png",
            )

        resp = http.with_retries(
            call, policy=policy, provider=self.name, what="image generation",
            classify=lambda exc: classify_error(exc, key=key, model=model),
        )
        reporter.progress(0.9)
        self._write(resp, dest, key)
        reporter.progress(1.0)
        from aigen.providers.pricing import unit_price

        price = unit_price(self.name, "image", model, width, height)
        cost = price.low if price is not None and price.low == price.high else None
        return AssetOutput(format="png", model=model, cost=cost)

    def _write(self, resp: Any, dest: Path, key: str) -> None:
        if not hasattr(resp, "data"):
            # The SDK hands back the text of an answer that was not JSON (a proxy page, a cut body).
            raise http.sent_but_lost(self.name, "the answer could not be read (not the JSON of an images response)",
                                     code="bad_answer")
        data = list(getattr(resp, "data", None) or [])
        if not data:
            raise ProviderError("openai answered without an image (empty data list)", provider=self.name,
                                provider_code="empty_response")
        item = data[0]
        b64 = getattr(item, "b64_json", None)
        if b64:
            try:
                raw = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as e:
                raise http.sent_but_lost(self.name, f"the image in the answer is not valid base64 ({e})",
                                         code="bad_answer") from None
            fmt = http.write_media(raw, dest, expect="png", max_bytes=MAX_IMAGE_BYTES, provider=self.name)
            if not http.media_is_complete(dest, fmt):
                dest.unlink(missing_ok=True)
                raise http.sent_but_lost(self.name, "the PNG in the answer is cut off (no end marker)",
                                         code="truncated")
            return
        url = getattr(item, "url", None)
        if url:
            # Only legacy models (or a proxy in front of OpenAI) answer with a URL.
            http.download(
                url, dest, timeout=http.timeout_from_env(self.env, 60.0), max_bytes=MAX_IMAGE_BYTES,
                allowed_types=("image/",), expect_kind="png", provider=self.name,
                policy=http.RetryPolicy.from_env(self.env), secrets=(key,), env=self.env,
            )
            return
        raise ProviderError("openai answered without image data (no b64_json and no url)", provider=self.name,
                            provider_code="empty_response")


def check_model(model: str, *, on: date | None = None) -> None:
    """Refuse a model OpenAI has shut down, naming it, the date and the default."""
    shutdown = SHUTDOWNS.get(model)
    on = on or today()
    if shutdown is not None and on >= shutdown:
        raise BadInput(
            f"invalid --image-model {model!r}: OpenAI shut this model down on {shutdown.isoformat()}",
            hint=f"use the default {DEFAULT_MODEL!r} (or a newer GPT image model such as gpt-image-2.5-flare)",
        )


def classify_error(exc: BaseException, *, key: str | None, model: str) -> ProviderError | None:
    """An openai SDK exception as aigen's error (retryable, refusal, quota or fatal); None if not the SDK's."""
    import json

    import openai

    secrets = (key,)
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, ProviderError):
        return exc.__cause__  # worded by our transport (deadline, rate floor)
    if isinstance(exc, json.JSONDecodeError):
        # The SDK parses a JSON-typed answer itself: a cut or garbled body ends up here.
        return http.sent_but_lost("openai", f"the answer could not be read (invalid JSON: {exc.msg})",
                                  code="bad_answer")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        code = exc.code or (body.get("code") if body else None)
        etype = getattr(exc, "type", None) or body.get("type")
        detail = http.scrub(http.body_message(body or exc.body) or "", secrets)
        headers = exc.response.headers if getattr(exc, "response", None) is not None else {}
        if code in REFUSAL_CODES:
            reason = detail or "the prompt or image was blocked by moderation"
            md = body.get("moderation_details") if body else None
            if isinstance(md, dict):
                extra = [str(md["moderation_stage"]) + " stage"] if md.get("moderation_stage") else []
                cats = md.get("categories")
                if isinstance(cats, list) and cats:
                    extra.append("categories: " + ", ".join(map(str, cats)))
                if extra:
                    reason = f"{reason} ({'; '.join(extra)})"
            return Refused("openai", reason, status=status)
        if code in QUOTA_CODES or etype in QUOTA_CODES:
            return QuotaExceeded(
                f"openai: quota exhausted ({code or etype}){': ' + detail if detail else ''}",
                provider="openai", status=status, provider_code="quota",
                hint="check the plan and billing of your OpenAI account; retrying will not help until then",
            )
        if code == "model_not_found" or (status == 404 and "model" in detail.lower()):
            shutdown = SHUTDOWNS.get(model)
            why = f"; OpenAI shut it down on {shutdown.isoformat()}" if shutdown else ""
            return ProviderError(
                f"openai: model {model!r} is not available (model_not_found){why}",
                provider="openai", status=status, provider_code="model_not_found",
                hint=f"use the default {DEFAULT_MODEL!r} or another model your account can use",
            )
        if status == 400 and (getattr(exc, "param", None) == "size" or code == "invalid_size"):
            return ProviderError(
                f"openai: model {model!r} does not accept the size sent{': ' + detail if detail else ''}",
                provider="openai", status=status, provider_code="invalid_size",
                hint="choose another --image-size (gpt-image-2: sides divisible by 16, ratio 1:3 to 3:1, "
                     "655,360 to 8,294,400 pixels, edges up to 3840)",
            )
        err = http.error_for_status("openai", status, headers, body or exc.body, key_var=KEY_VAR,
                                    secrets=secrets, what="image generation")
        should = str(headers.get("x-should-retry", "")).lower() if headers else ""
        if should == "false":
            err.retryable = False
        elif should == "true" and not isinstance(err, (Refused, QuotaExceeded)):
            err.retryable = True
        return err
    if isinstance(exc, openai.APITimeoutError):
        connect = "connect" in type(exc.__cause__).__name__.lower()
        if connect:
            return ProviderTimeout("openai: timed out connecting to the API", provider="openai",
                                   retryable=True, provider_code="connect_timeout")
        return http.sent_but_lost(
            "openai", "no answer within the timeout", code="timeout", timeout=True,
            hint=f"raise the read timeout with {http.TIMEOUT_ENV}=SECONDS if your images take long; "
                 + http.BILLED_HINT,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        name = type(cause).__name__ if cause is not None else "connection error"
        if cause is None or http.never_sent(cause):
            return ProviderError(f"openai: could not reach the API ({name})", provider="openai",
                                 retryable=True, provider_code="connection")
        detail = http.scrub(" ".join(str(cause).split())[:160], secrets)
        if "complete message body" in detail or "incomplete" in detail.lower():
            what = f"the answer was cut off ({detail})"
        else:
            what = f"the connection broke after the request was sent ({name}: {detail})"
        return http.sent_but_lost("openai", what, code="connection_lost")
    return None


def _paced_transport(limits: http.BodyLimits):
    """The shared paced transport (``http.paced_transport``) for the httpx the openai SDK is built on."""
    import importlib

    import openai

    # The httpx the SDK is built on (openai 3.x ships its own fork, `httpx2`).
    base = next(c for c in type.mro(openai.DefaultHttpxClient) if c.__name__ == "Client")
    httpx = importlib.import_module(base.__module__.split(".")[0])
    return http.paced_transport(
        httpx, limits,
        too_slow=lambda request, err: http.sent_but_lost("openai", f"the answer {err.message}",
                                                         code="download_timeout", timeout=True),
    )


__all__ = ["OpenAIImages", "check_model", "classify_error", "flex_size_ok", "map_size", "size_note"]
