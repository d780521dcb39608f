"""`stability`: Stable Diffusion images from Stability AI's v2beta REST API, through `requests`.

One asset is one ``POST /v2beta/stable-image/generate/{core|ultra|sd3}``, always
multipart (the API refuses anything else; ``files={"none": ""}`` forces it even
without a file, as Stability's own example does), with ``accept: image/*`` so
the PNG arrives as the body and is streamed to disk with the usual checks.

Variety: each asset sends its own seed, so the 5 images of a request differ and
a re-run with the same ``--seed`` asks for the same pictures.

Refusals come two ways: HTTP 403 ``{"name": "content_moderation"}`` for the
prompt, and HTTP 200 with ``finish-reason: CONTENT_FILTERED`` for the output.
Both are reported as "refused by stability" and never retried.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
from pathlib import Path
from typing import Any

from aigen import __version__
from aigen.errors import BadInput, MediaCheckError, MissingKey, ProviderError, QuotaExceeded, Refused
from aigen.providers import http
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter

KEY_VAR = "STABILITY_API_KEY"
BASE_URL_VAR = "STABILITY_BASE_URL"
DEFAULT_BASE_URL = "https://api.stability.ai"
DEFAULT_MODEL = "core"

# model name -> (endpoint, value of the `model` field or None)
MODELS: dict[str, tuple[str, str | None]] = {
    "core": ("core", None),
    "ultra": ("ultra", None),
    "sd3.5-large": ("sd3", "sd3.5-large"),
    "sd3.5-large-turbo": ("sd3", "sd3.5-large-turbo"),
    "sd3.5-medium": ("sd3", "sd3.5-medium"),
    "sd3-large": ("sd3", "sd3-large"),
    "sd3-large-turbo": ("sd3", "sd3-large-turbo"),
    "sd3-medium": ("sd3", "sd3-medium"),
}

ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
SEED_MAX = 4294967294  # the API's range is 0..4294967294, 0 meaning "random"
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Stability documents a 60 s lockout after a 429 (over 150 requests in 10 s) but
# was not seen sending Retry-After; without the header, wait the documented time.
RATE_LIMIT_LOCKOUT = 60.0
# Seconds for the body of the answer once its headers came (AIGEN_DOWNLOAD_DEADLINE overrides).
ANSWER_DEADLINE = 300.0


def aspect_ratio(width: int, height: int) -> str:
    """The allowed aspect ratio closest (in log scale) to width:height."""
    want = math.log(width / height)

    def distance(r: str) -> float:
        a, b = r.split(":")
        return abs(math.log(int(a) / int(b)) - want)

    return min(ASPECT_RATIOS, key=distance)


class StabilityImages(Provider):
    name = "stability"
    kinds = frozenset({"image"})
    description = "Stability AI Stable Image (v2beta REST): core, ultra and SD3.5 models; a seed per image"
    key_env = ((KEY_VAR,),)
    base_url_env = BASE_URL_VAR
    default_base_url = DEFAULT_BASE_URL
    default_models = {"image": DEFAULT_MODEL}
    # The API allows 150 requests per 10 s; 4 parallel generations stay far below it.
    concurrency = 4
    read_timeout = 180.0

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        # One requests.Session per worker thread: sessions are not documented as thread-safe.
        self._local = threading.local()

    def model_for(self, kind: str, requested: str | None) -> str | None:
        model = super().model_for(kind, requested)
        if model is not None and model not in MODELS:
            raise BadInput(
                f"invalid --image-model {model!r} for stability: choose one of {', '.join(MODELS)}"
            )
        return model

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        """For `--dry-run`: Stability takes an aspect ratio, not a size."""
        return f"aspect ratio {aspect_ratio(width, height)} (the model sets the pixel size)"

    @property
    def base_url(self) -> str:
        return (self.env.get(BASE_URL_VAR) or DEFAULT_BASE_URL).rstrip("/")

    def session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = http.make_session(timeout=http.timeout_from_env(self.env, self.read_timeout))
            self._local.session = session
        return session

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        model = self.model_for("image", req.model)
        endpoint, model_field = MODELS[model]
        key = self.lookup_key(KEY_VAR)
        if not key:
            raise MissingKey(f"provider 'stability' needs {KEY_VAR}, which is not set",
                             hint=f"export {KEY_VAR}=... or run `aigen keys set stability`")
        url = f"{self.base_url}/v2beta/stable-image/generate/{endpoint}"
        fields = {
            "prompt": req.prompt,
            "output_format": "png",
            "aspect_ratio": aspect_ratio(req.width, req.height),
            # 0 would mean "random": keep every asset's seed in 1..SEED_MAX.
            "seed": str(req.seed % SEED_MAX + 1 if req.seed > SEED_MAX or req.seed <= 0 else req.seed),
        }
        negative = (req.options or {}).get("negative_prompt")
        if negative:
            fields["negative_prompt"] = str(negative)
        if model_field:
            fields["model"] = model_field
            fields["mode"] = "text-to-image"
        headers = {
            "authorization": f"Bearer {key}",
            "accept": "image/*",
            "stability-client-id": "aigen",
            "stability-client-version": __version__,
        }
        session = self.session()
        policy = http.RetryPolicy.from_env(self.env)
        limits = http.BodyLimits.from_env(self.env, ANSWER_DEADLINE)
        check_stop = getattr(reporter, "check_stop", None)

        def call():
            if check_stop is not None:
                check_stop()
            # From here on the request may be paid for: once it is sent, anything that goes
            # wrong with the answer (timeout, reset, cut-off or unreadable body) is reported
            # and not sent again (http.sent_but_lost); only errors the API answered
            # (429, 5xx) and connections that never opened are retried.
            resp = session.post(url, headers=headers, data=fields, files={"none": ""}, stream=True)
            try:
                return self._receive(resp, dest, key, limits)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            finally:
                resp.close()

        fmt = http.with_retries(
            call, policy=policy, provider=self.name, what="image generation",
            classify=lambda e: http.error_from_requests(e, provider=self.name, idempotent=False, secrets=(key,)),
        )
        reporter.progress(1.0)
        from aigen.providers.pricing import unit_price

        price = unit_price(self.name, "image", model, req.width, req.height)
        return AssetOutput(format=fmt, model=model, cost=price.low if price else None)

    def _receive(self, resp: Any, dest: Path, key: str, limits: http.BodyLimits) -> str:
        if not 200 <= resp.status_code < 300:
            raise self._error(resp, key)
        finish = (resp.headers.get("finish-reason") or "").strip().upper()
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if ctype.startswith("application/json"):
            # A proxy (or a changed default) answered with the JSON variant.
            return self._receive_json(resp, dest, key, limits)
        if finish == "CONTENT_FILTERED":
            raise Refused(self.name, "the image was filtered by content moderation (finish-reason CONTENT_FILTERED)")
        if finish and finish != "SUCCESS":
            raise ProviderError(f"stability: generation did not succeed (finish-reason {finish})",
                                provider=self.name, provider_code=finish.lower())
        got = http.save_response(
            resp, dest, max_bytes=MAX_IMAGE_BYTES, allowed_types=("image/png", "image/jpeg"),
            expect_kind="image", provider=self.name, where="the generate endpoint", limits=limits, paid=True,
        )
        if got.format not in ("png", "jpeg"):
            raise MediaCheckError(f"stability sent a {got.format} image; expected PNG")
        return got.format

    def _receive_json(self, resp: Any, dest: Path, key: str, limits: http.BodyLimits) -> str:
        import json

        tmp = dest.with_name(dest.name + ".json-answer")
        try:
            # The JSON is read with the same checks as an image body: deadline, rate, truncation.
            http.save_response(resp, tmp, max_bytes=MAX_IMAGE_BYTES * 2, allowed_types=("application/json",),
                               expect_kind=None, provider=self.name, where="the generate endpoint",
                               limits=limits, paid=True)
            body = json.loads(tmp.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise http.sent_but_lost(self.name, "the JSON answer could not be read (cut off or malformed)",
                                     code="bad_answer") from None
        finally:
            tmp.unlink(missing_ok=True)
        if not isinstance(body, dict):
            raise http.sent_but_lost(self.name, "the JSON answer is not an object", code="bad_answer")
        finish = str(body.get("finish_reason") or "").upper()
        if finish == "CONTENT_FILTERED":
            raise Refused(self.name, "the image was filtered by content moderation (finish_reason CONTENT_FILTERED)")
        try:
            raw = base64.b64decode(body.get("image") or "", validate=True)
        except (binascii.Error, ValueError):
            raise http.sent_but_lost(self.name, "the image in the JSON answer is not valid base64",
                                     code="bad_answer") from None
        fmt = http.write_media(raw, dest, expect="image", max_bytes=MAX_IMAGE_BYTES, provider=self.name)
        if not http.media_is_complete(dest, fmt):
            raise http.sent_but_lost(self.name, f"the {fmt.upper()} image in the JSON answer is cut off",
                                     code="truncated")
        return fmt

    def _error(self, resp: Any, key: str) -> ProviderError:
        body = http.response_body(resp)
        name = str(body.get("name") or "") if isinstance(body, dict) else ""
        detail = http.scrub(http.body_message(body), (key,))
        lname = name.lower()
        if resp.status_code == 403 and lname == "content_moderation":
            return Refused(self.name, detail or "the prompt was flagged by content moderation", status=403)
        if resp.status_code == 402 or any(w in lname for w in ("credit", "balance", "payment")):
            return QuotaExceeded(
                f"stability: out of credits (HTTP {resp.status_code}){': ' + detail if detail else ''}",
                provider=self.name, status=resp.status_code, provider_code="quota",
                hint="buy credits at platform.stability.ai; retrying will not help until then",
            )
        err = http.error_for_status(self.name, resp.status_code, resp.headers, body, key_var=KEY_VAR,
                                    secrets=(key,), what="image generation")
        if resp.status_code == 429 and err.retry_after is None:
            err.retry_after = RATE_LIMIT_LOCKOUT
        if resp.status_code == 413:
            err.message = "stability: request too large (HTTP 413, the limit is 10 MiB)" + (
                f": {detail}" if detail else "")
            err.args = (err.message,)
        return err


__all__ = ["StabilityImages", "aspect_ratio", "MODELS"]
