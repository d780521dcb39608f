"""`fal`: images and videos through fal.ai's queue with the official `fal-client` SDK.

fal.ai runs many vendors' models behind one queue API (PROVIDERS.md §7):
Kling, MiniMax Hailuo, Google Veo, ByteDance Seedance, FLUX and more. Every
asset is one queue request:

1. submit: ``POST {queue}/{model id}`` with the model's input JSON; the answer
   carries the request id, which is saved on the asset at once;
2. status: polled (aigen.providers.jobs) until ``COMPLETED``; fal has no failed
   or cancelled status on the wire, a request that failed shows it in the
   completed status (``error``, ``error_type``) and in its result;
3. result: ``GET .../requests/{id}``, the model output JSON with hosted media
   URLs, downloaded at once with the shared, checked download;
4. cancel: ``PUT .../requests/{id}/cancel``, sent when a stop finds the request
   still queued (nothing started, nothing billed) and on `aigen cancel`.

A resumed run polls the saved request instead of submitting a new one.

Known models (``MODELS``) get aigen's size, duration and seed mapped onto the
inputs they take, and their `--image-option` / `--video-option` values are
checked before anything is sent (fal accepts any input at submit and refuses a
bad one only when the result is fetched, and bills it). Any other fal model id
gets the prompt and the pass-through options, unchecked.

How the SDK is used, and why:

* its own retries are off (``fal_client.client.MAX_ATTEMPTS = 1``): it retries a
  submit whose answer was lost (a paid request sent twice) and ignores
  Retry-After; aigen's with_retries does both right, as for every provider;
* its HTTP client is aigen's: an ``httpx.Client`` whose transport sets aigen's
  timeouts on every request, bounds every answer's body by a total deadline,
  and, with ``FAL_BASE_URL`` (a full URL with its scheme: the SDK fixes
  ``https://``), sends what the SDK addresses to the queue host there instead.
  Without it the SDK's own backup-domain transport is kept underneath.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigen.errors import BadInput, MediaCheckError, MissingKey, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter

log = logging.getLogger("aigen.providers.fal")

KEY_VAR = "FAL_KEY"
BASE_URL_VAR = "FAL_BASE_URL"
DEFAULT_BASE_URL = "https://queue.fal.run"  # the SDK's own queue host

MAX_VIDEO_BYTES = 512 * 1024 * 1024
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_ANSWER_BYTES = 8 * 1024 * 1024
ANSWER_DEADLINE = 120.0  # seconds for one API answer's body, once its headers arrived
# A fal video model refused prompts over 2,500 characters (TanStack/ai PR #396; model not named).
VIDEO_PROMPT_WARN = 2500

# "owner/alias[/path]", as the SDK's AppId takes it (a namespace such as workflows/... is just more path).
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)+$")
_CANCEL_WORDS = re.compile(r"cancel", re.I)
_BALANCE_WORDS = re.compile(r"exhausted balance|insufficient balance|out of credit", re.I)


# --------------------------------------------------------------------------- the model table
@dataclass(frozen=True)
class Model:
    """What aigen knows about one fal model's input (fal-ai/fal-js endpoints.ts, PROVIDERS.md §7).

    ``aspect_ratios`` / ``durations`` / ``resolutions``: the values its
    ``aspect_ratio`` / ``duration`` / ``resolution`` inputs take, spelt as fal
    spells them (``"5"``, ``"4s"``, ``5``), empty when it has no such input.
    ``fields``: the other inputs a `--*-option` may set, each with its allowed
    values (a tuple) or its type. ``strict``: refuse option keys not listed
    (False where only part of the schema is known).
    """

    kind: str
    label: str
    aspect_ratios: tuple[str, ...] = ()
    durations: tuple[Any, ...] = ()
    resolutions: tuple[str, ...] = ()
    image_size: bool = False  # FLUX: image_size {"width", "height"}
    seed: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    strict: bool = True
    source: str = "fal-ai/fal-js endpoints.ts (2026-08)"


_FLUX_SIZES = ("square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")
_TOLERANCE = ("1", "2", "3", "4", "5", "6")
_FLUX_DEV_FIELDS = {
    "num_inference_steps": int, "guidance_scale": float, "enable_safety_checker": bool,
    "output_format": ("jpeg", "png"), "acceleration": ("none", "regular", "high"),
}
_KLING_FIELDS = {"negative_prompt": str, "cfg_scale": float}
_HAILUO_FIELDS = {"prompt_optimizer": bool}
_VEO_FIELDS = {"generate_audio": bool, "negative_prompt": str, "auto_fix": bool, "safety_tolerance": _TOLERANCE}
_SEEDANCE_FIELDS = {"camera_fixed": bool, "enable_safety_checker": bool, "num_frames": int}

MODELS: dict[str, Model] = {
    # Images: FLUX.
    "fal-ai/flux/dev": Model("image", "FLUX.1 [dev]", image_size=True, seed=True, fields=_FLUX_DEV_FIELDS),
    "fal-ai/flux/schnell": Model("image", "FLUX.1 [schnell]", image_size=True, seed=True, fields=_FLUX_DEV_FIELDS),
    "fal-ai/flux-pro/v1.1": Model("image", "FLUX1.1 [pro]", image_size=True, seed=True, fields={
        "enhance_prompt": bool, "output_format": ("jpeg", "png"), "safety_tolerance": _TOLERANCE}),
    # Videos: Kling.
    "fal-ai/kling-video/v2.1/master/text-to-video": Model(
        "video", "Kling 2.1 Master", aspect_ratios=("16:9", "9:16", "1:1"), durations=("5", "10"),
        fields=_KLING_FIELDS),
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": Model(
        "video", "Kling 2.5 Turbo Pro", aspect_ratios=("16:9", "9:16", "1:1"), durations=("5", "10"),
        fields=_KLING_FIELDS),
    # Only part of Kling 4.0's schema is in the sources (PROVIDERS.md §7): other inputs pass unchecked.
    "fal-ai/kling-video/v4/text-to-video": Model(
        "video", "Kling 4.0", aspect_ratios=("16:9", "9:16"), durations=tuple(range(3, 31)),
        resolutions=("720p", "1080p"), strict=False, source="PROVIDERS.md §7 (fal learn page, 2026)"),
    # Videos: MiniMax Hailuo (768p; no size input).
    "fal-ai/minimax/hailuo-2.3/standard/text-to-video": Model(
        "video", "MiniMax Hailuo 2.3 Standard", durations=("6", "10"), fields=_HAILUO_FIELDS),
    "fal-ai/minimax/hailuo-02/standard/text-to-video": Model(
        "video", "MiniMax Hailuo 02 Standard", durations=("6", "10"), fields=_HAILUO_FIELDS),
    # Videos: Google Veo 3.1.
    "fal-ai/veo3.1": Model(
        "video", "Veo 3.1", aspect_ratios=("16:9", "9:16"), durations=("4s", "6s", "8s"),
        resolutions=("720p", "1080p", "4k"), seed=True, fields=_VEO_FIELDS),
    "fal-ai/veo3.1/fast": Model(
        "video", "Veo 3.1 Fast", aspect_ratios=("16:9", "9:16"), durations=("4s", "6s", "8s"),
        resolutions=("720p", "1080p", "4k"), seed=True, fields=_VEO_FIELDS),
    # Videos: ByteDance Seedance.
    "fal-ai/bytedance/seedance/v1/pro/text-to-video": Model(
        "video", "Seedance 1.0 Pro", aspect_ratios=("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
        durations=tuple(str(d) for d in range(2, 13)), resolutions=("480p", "720p", "1080p"), seed=True,
        fields=_SEEDANCE_FIELDS),
}

DEFAULT_IMAGE_MODEL = "fal-ai/flux/dev"
DEFAULT_VIDEO_MODEL = "fal-ai/kling-video/v2.1/master/text-to-video"

# Inputs aigen itself owns: the prompt, one output per asset, a seed per asset, media as URLs.
_RESERVED = {
    "prompt": "the prompt is the PROMPT argument",
    "seed": "each asset gets its own seed; use --seed for a reproducible request",
    "num_images": "aigen makes one image per asset (--images sets how many)",
    "sync_mode": "aigen downloads the result's media URLs; sync_mode would inline them",
}
_SEED_MAX = 2**31 - 1


# --------------------------------------------------------------------------- mapping
def _ratio(text: str) -> float:
    w, h = text.split(":")
    return int(w) / int(h)


def closest_aspect(width: int, height: int, allowed: tuple[str, ...]) -> str:
    """The allowed aspect ratio closest in shape to width x height."""
    want = width / height
    return min(allowed, key=lambda r: round(abs(math.log(_ratio(r) / want)), 9))


def _seconds(value: Any) -> float:
    return float(str(value).rstrip("s"))


def closest_duration(seconds: float | None, allowed: tuple[Any, ...]) -> Any:
    """The allowed duration closest to the ask (ties go to the longer clip), spelt as fal spells it."""
    seconds = 4.0 if seconds is None else float(seconds)
    return min(allowed, key=lambda d: (abs(_seconds(d) - seconds), -_seconds(d)))


def _lines(res: str) -> int:
    return 2160 if res == "4k" else int(res.rstrip("p"))


def closest_resolution(width: int, height: int, allowed: tuple[str, ...]) -> str:
    """The allowed resolution ("720p", "4k") closest to the short side of the ask."""
    short = min(width, height)
    return min(allowed, key=lambda r: (abs(math.log(_lines(r) / short)), -_lines(r)))


def _coerce(key: str, value: Any, rule: Any, model_id: str, flag: str) -> Any:
    """One option value checked against its rule; a value given as a number for a text choice
    (``duration=10`` for ``"10"``, ``duration=8`` for ``"8s"``) is spelt as fal wants it."""
    if isinstance(rule, tuple):
        if not isinstance(value, (bool, dict, list)):
            for allowed in rule:
                if str(allowed) == str(value) or (isinstance(allowed, str) and allowed == f"{value}s"):
                    return allowed
        shown = ", ".join(str(a) for a in rule) if len(rule) <= 12 else f"{rule[0]}-{rule[-1]}"
        raise BadInput(f"invalid {flag} {key}={value!r} for fal model {model_id}: must be one of {shown}")
    checks = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
        float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "text"),
    }
    ok, name = checks[rule]
    if not ok(value):
        raise BadInput(f"invalid {flag} {key}={value!r} for fal model {model_id}: must be {name}")
    return float(value) if rule is float else value


def check_options(kind: str, model_id: str, options: dict) -> dict:
    """The pass-through options of one kind, checked for a known model; BadInput for what fal would refuse."""
    flag = f"--{kind}-option"
    for key in options:
        if key in _RESERVED:
            raise BadInput(f"{flag} {key} is not passed to fal: {_RESERVED[key]}")
    spec = MODELS.get(model_id)
    if spec is None:
        return dict(options)
    rules: dict[str, Any] = dict(spec.fields)
    if spec.aspect_ratios:
        rules["aspect_ratio"] = spec.aspect_ratios
    if spec.durations:
        rules["duration"] = spec.durations
    if spec.resolutions:
        rules["resolution"] = spec.resolutions
    checked = {}
    for key, value in options.items():
        if key == "image_size" and spec.image_size:
            checked[key] = _image_size_option(value, model_id, flag)
        elif key in rules:
            checked[key] = _coerce(key, value, rules[key], model_id, flag)
        elif spec.strict:
            known = sorted(set(rules) | ({"image_size"} if spec.image_size else set()))
            raise BadInput(
                f"fal model {model_id} takes no input {key!r} ({flag}): "
                f"it takes {', '.join(known) or 'only the prompt'}",
                hint="fal bills a request refused for its input, so aigen checks the models it knows before sending",
            )
        else:
            checked[key] = value
    return checked


def _image_size_option(value: Any, model_id: str, flag: str) -> Any:
    if isinstance(value, str) and value in _FLUX_SIZES:
        return value
    if (isinstance(value, dict) and set(value) == {"width", "height"}
            and all(isinstance(v, int) and not isinstance(v, bool) and 64 <= v <= 4096 for v in value.values())):
        return value
    raise BadInput(f"invalid {flag} image_size for fal model {model_id}: one of {', '.join(_FLUX_SIZES)}, "
                   'or {"width": W, "height": H} (64-4096)')


def build_input(kind: str, model_id: str, *, prompt: str, width: int, height: int, duration: float | None,
                seed: int, options: dict) -> dict:
    """The model input JSON for one asset: the prompt, what the model takes of aigen's ask, then the options."""
    body: dict[str, Any] = {"prompt": prompt}
    spec = MODELS.get(model_id)
    if spec is not None:
        if spec.image_size:
            body["image_size"] = {"width": width, "height": height}
            body["num_images"] = 1
            body["output_format"] = "png"
        if spec.aspect_ratios:
            body["aspect_ratio"] = closest_aspect(width, height, spec.aspect_ratios)
        if spec.durations:
            body["duration"] = closest_duration(duration, spec.durations)
        if spec.resolutions:
            body["resolution"] = closest_resolution(width, height, spec.resolutions)
        if spec.seed:
            body["seed"] = seed % _SEED_MAX
    body.update(check_options(kind, model_id, options))
    return body


# --------------------------------------------------------------------------- the HTTP transport
def _transport_class():
    """The httpx transport aigen gives the SDK (built lazily: httpx is not imported at start-up)."""
    import httpx

    class AigenTransport(httpx.BaseTransport):
        """Timeouts, a body deadline, and FAL_BASE_URL, under the SDK's own calls."""

        def __init__(self, inner: httpx.BaseTransport, *, rewrite: tuple[str, str] | None,
                     timeout: httpx.Timeout, deadline: float, max_bytes: int = MAX_ANSWER_BYTES):
            self._inner = inner
            self._rewrite = rewrite  # (prefix the SDK builds, base URL to send it to)
            self._timeout = timeout
            self._deadline = deadline
            self._max_bytes = max_bytes

        def _target(self, request: httpx.Request) -> httpx.Request:
            if self._rewrite is None:
                return request
            prefix, base = self._rewrite
            url = str(request.url)
            if not url.startswith(prefix):
                return request  # the status/result/cancel URLs a submit answer named are followed as given
            new = httpx.URL(base.rstrip("/") + "/" + url[len(prefix):])
            headers = request.headers.copy()
            headers["Host"] = new.netloc.decode("ascii")
            return httpx.Request(request.method, new, headers=headers, stream=request.stream,
                                 extensions=dict(request.extensions))

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            request = self._target(request)
            # aigen's timeouts, whatever the SDK asked (its queue polls wait 120 s per read).
            request.extensions["timeout"] = self._timeout.as_dict()
            started = time.monotonic()
            resp = self._inner.handle_request(request)
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in resp.stream:
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise httpx.DecodingError(f"answer passed the {self._max_bytes}-byte cap", request=request)
                    chunks.append(chunk)
                    if time.monotonic() - started > self._deadline:
                        raise httpx.ReadTimeout(
                            f"answer took over its {self._deadline:g} s deadline ({size} bytes received)",
                            request=request)
            finally:
                resp.close()
            keep = {k: v for k, v in resp.extensions.items() if k in ("http_version", "reason_phrase")}
            return httpx.Response(resp.status_code, headers=resp.headers, stream=httpx.ByteStream(b"".join(chunks)),
                                  request=request, extensions=keep)

        def close(self) -> None:
            self._inner.close()

    return AigenTransport


def _sdk_module():
    """fal_client.client, with its own retries off (aigen's with_retries retries; see the module docstring)."""
    import fal_client.client as fc

    fc.MAX_ATTEMPTS = 1
    return fc


def parse_base_url(raw: str | None) -> str | None:
    """FAL_BASE_URL checked: a full http(s) URL with a host (the SDK's scheme is fixed, so ours must be given)."""
    if raw is None or not raw.strip():
        return None
    from urllib.parse import urlsplit

    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadInput(
            f"invalid {BASE_URL_VAR} {value!r}: must be a full URL with its scheme, such as "
            f"{DEFAULT_BASE_URL} or http://127.0.0.1:8080",
        )
    return value.rstrip("/")


# --------------------------------------------------------------------------- the provider
class FalProvider(Provider):
    name = "fal"
    kinds = frozenset({"image", "video"})
    description = (
        "fal.ai queue (fal-client SDK): Kling, MiniMax Hailuo, Veo 3.1, Seedance videos and FLUX images, "
        "or any fal model id with pass-through --*-option inputs"
    )
    key_env = ((KEY_VAR,),)
    base_url_env = BASE_URL_VAR
    default_base_url = DEFAULT_BASE_URL
    default_models = {"video": DEFAULT_VIDEO_MODEL, "image": DEFAULT_IMAGE_MODEL}
    # Requests wait in fal's queue; a thread here mostly sleeps between polls. fal allows
    # 10 requests a second per user, and queues work over the account's concurrency.
    concurrency = 4
    takes_options = True

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._sdk_obj = None
        self._sdk_key: str | None = None
        self._sdk_lock = threading.Lock()

    # -- checks before anything is written ------------------------------------
    def check_ready(self, kind: str) -> None:
        super().check_ready(kind)
        import importlib.util

        if importlib.util.find_spec("fal_client") is None:
            raise BadInput("provider 'fal' needs the fal-client package, which is not installed",
                           hint="pip install 'aigen[fal]'")
        parse_base_url(self.env.get(BASE_URL_VAR))

    def model_for(self, kind: str, requested: str | None) -> str | None:
        model = super().model_for(kind, requested)
        if not _MODEL_ID.fullmatch(model or "") or ".." in model:
            raise BadInput(
                f"invalid fal {kind} model {model!r}: a fal model id looks like owner/name[/path], "
                f"e.g. {self.default_models[kind]}",
            )
        spec = MODELS.get(model)
        if spec is not None and spec.kind != kind:
            raise BadInput(f"fal model {model} makes {spec.kind}s, not {kind}s",
                           hint=f"use --{spec.kind}-model for it, or another --{kind}-model")
        return model

    def check_request(self, kind: str, *, prompt: str, model: str | None, width: int, height: int,
                      duration: float | None = None, options: dict | None = None) -> list[str]:
        """Raise BadInput for what fal would refuse (a refused input is billed); return notes on what differs."""
        model = self.model_for(kind, model)
        passed = self.pass_options(kind, options)
        check_options(kind, model, passed)
        spec = MODELS.get(model)
        notes: list[str] = []
        if spec is None:
            notes.append(
                f"fal model {model} is not in aigen's table: it gets the prompt and the --{kind}-option values "
                "only (no size, duration or seed), and fal checks them only after queueing (a refused input is billed)"
            )
            return notes
        if kind == "video" and len(prompt) > VIDEO_PROMPT_WARN:
            notes.append(f"fal video models may refuse prompts over {VIDEO_PROMPT_WARN} characters "
                         f"(this one has {len(prompt)}); a refused input is billed")
        if spec.image_size or kind == "image":
            return notes
        what = []
        if spec.aspect_ratios and "aspect_ratio" not in passed:
            ar = closest_aspect(width, height, spec.aspect_ratios)
            if abs(_ratio(ar) - width / height) > 1e-3:
                what.append(f"aspect ratio {ar} (of {', '.join(spec.aspect_ratios)}) for the asked {width}x{height}")
        if spec.resolutions and "resolution" not in passed:
            what.append(f"resolution {closest_resolution(width, height, spec.resolutions)}")
        if not spec.aspect_ratios and not spec.resolutions and "image_size" not in passed:
            what.append(f"the size the model chooses (it takes none; asked {width}x{height})")
        if spec.durations and "duration" not in passed:
            d = closest_duration(duration, spec.durations)
            if duration is not None and abs(_seconds(d) - duration) > 1e-6:
                what.append(f"{_seconds(d):g} s, the closest it makes to the asked {duration:g} s")
        if what:
            notes.append(f"fal {spec.label} makes {'; '.join(what)}")
        return notes

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        """What --dry-run shows as the output: the size, or the aspect ratio and resolution sent."""
        spec = MODELS.get(model or self.default_models[kind])
        if spec is None:
            return "as the model makes it"
        if spec.image_size:
            return f"{width}x{height}"
        parts = []
        if spec.aspect_ratios:
            parts.append(closest_aspect(width, height, spec.aspect_ratios))
        if spec.resolutions:
            parts.append(closest_resolution(width, height, spec.resolutions))
        return " ".join(parts) or "as the model makes it"

    def billed_duration(self, kind: str, model: str | None, duration: float | None) -> float | None:
        """The length fal will make (and bill) for the asked one: the mapped duration of a known model."""
        spec = MODELS.get(model or "")
        if kind != "video" or spec is None or not spec.durations:
            return duration
        return _seconds(closest_duration(duration, spec.durations))

    # -- the SDK client -------------------------------------------------------
    def _timeouts(self):
        import httpx

        from aigen.providers.http import timeout_from_env

        connect, read = timeout_from_env(self.env, 60.0)
        return httpx.Timeout(read, connect=connect)

    def _client(self):
        key = self.lookup_key(KEY_VAR)
        if not key:
            raise MissingKey(f"provider 'fal' needs {KEY_VAR}, which is not set",
                             hint=f"export {KEY_VAR}=... or run `aigen keys set fal`")
        with self._sdk_lock:
            if self._sdk_obj is None or self._sdk_key != key:
                import fal_client
                import httpx

                fc = _sdk_module()
                base = parse_base_url(self.env.get(BASE_URL_VAR))
                timeout = self._timeouts()
                if base is None:
                    inner, rewrite = fc.BackupDomainTransport(), None
                else:
                    inner, rewrite = httpx.HTTPTransport(), (fc.QUEUE_URL_FORMAT, base)
                http = httpx.Client(
                    transport=_transport_class()(inner, rewrite=rewrite, timeout=timeout, deadline=ANSWER_DEADLINE),
                    headers={"Authorization": f"Key {key}", "User-Agent": fc.USER_AGENT},
                    timeout=timeout, follow_redirects=True,
                )
                sdk = fal_client.SyncClient(key=key, default_timeout=timeout.read)
                # The SDK's client is a cached property: this one is used for submit, status, result and cancel.
                sdk.__dict__["_client"] = http
                self._sdk_obj, self._sdk_key = sdk, key
            return self._sdk_obj

    def _policy(self):
        from aigen.providers.http import RetryPolicy

        return RetryPolicy.from_env(self.env)

    def _secrets(self) -> list[str]:
        return [self._sdk_key or self.lookup_key(KEY_VAR) or ""]

    def _classify(self, exc: BaseException, *, idempotent: bool, what: str) -> ProviderError | None:
        """An SDK/httpx exception as a ProviderError saying whether another try is safe."""
        import httpx

        from aigen.providers.http import scrub, sent_but_lost

        fc = _sdk_module()
        secrets = self._secrets()
        if isinstance(exc, fc.FalClientHTTPError):
            return self._http_error(exc.status_code, exc.message, exc.error_type, exc.response_headers, what=what)
        dashboard = ("the request may have been queued anyway; check your fal dashboard before `aigen retry ID` "
                     "sends a new one")
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ProviderError(f"fal: could not reach the server ({what}): {scrub(str(exc), secrets)}",
                                 provider=self.name, retryable=True, provider_code="connection")
        if isinstance(exc, httpx.TimeoutException):
            if not idempotent:
                return sent_but_lost(self.name, f"no answer within the timeout ({what})", code="timeout",
                                     timeout=True, hint=dashboard)
            return ProviderTimeout(f"fal: no answer within the timeout ({what})", provider=self.name,
                                   retryable=True, provider_code="timeout")
        if isinstance(exc, httpx.HTTPError):
            text = scrub(str(exc), secrets)
            if not idempotent:
                return sent_but_lost(self.name, f"the connection broke after the request was sent ({what}): {text}",
                                     code="connection_lost", hint=dashboard)
            return ProviderError(f"fal: connection failed ({what}): {text}", provider=self.name, retryable=True,
                                 provider_code="connection")
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            # An answer the SDK could not read (not JSON, a missing field, an unknown status).
            if not idempotent:
                return sent_but_lost(self.name, f"its answer could not be read ({what})", code="bad_answer",
                                     hint=dashboard)
            return ProviderError(f"fal: unexpected answer ({what}): {scrub(str(exc), secrets)[:200]}",
                                 provider=self.name, provider_code="bad_response")
        return None

    def _http_error(self, status: int, detail: Any, error_type: str | None, headers: dict | None, *,
                    what: str) -> ProviderError:
        from aigen.providers.http import body_message, error_for_status, scrub

        secrets = self._secrets()
        items = detail if isinstance(detail, list) else []
        types = {str(i.get("type")) for i in items if isinstance(i, dict)} | {str(error_type or "")}
        text = scrub(body_message({"detail": detail}), secrets)
        if status == 422 and "content_policy_violation" in types:
            cats = sorted({c for i in items if isinstance(i, dict) for c in (i.get("categories") or [])
                           if isinstance(c, str)})
            reason = text or "content policy violation"
            if cats:
                reason += f" (categories: {', '.join(cats)})"
            return Refused(self.name, reason, provider_code="content_policy_violation", status=status)
        if status == 422:
            where = []
            for i in items:
                if isinstance(i, dict):
                    loc = ".".join(str(p) for p in (i.get("loc") or []) if p != "body")
                    where.append(f"{loc}: {i.get('msg')}" if loc else str(i.get("msg")))
            msg = scrub("; ".join(where), secrets) or text or "invalid input"
            return ProviderError(
                f"fal refused the input ({what}): {msg}", provider=self.name, status=status,
                provider_code="invalid_input",
                hint="fal bills a request refused for its input; change the --image-option/--video-option values "
                     "(or the model) and make a new request",
            )
        if status == 403 and _BALANCE_WORDS.search(text):
            return QuotaExceeded(f"fal: out of credit: {text}", provider=self.name, status=status,
                                 provider_code="quota",
                                 hint="add credit to your fal account; retrying will not help until then")
        if status == 404 and what.startswith("submit"):
            return ProviderError(f"fal does not know the model of this request ({what}, HTTP 404): {text}",
                                 provider=self.name, status=status, provider_code="unknown_model",
                                 hint="check the model id on fal.ai/models (--image-model / --video-model)")
        body = {"detail": detail}
        err = error_for_status(self.name, status, headers, body, key_var=KEY_VAR, secrets=secrets, what=what)
        if error_type and error_type not in err.message:
            err.message = f"{err.message} ({error_type})"
            err.args = (err.message,)
        return err

    def _call(self, fn, *, idempotent: bool, what: str):
        from aigen.providers.http import with_retries

        return with_retries(
            fn, policy=self._policy(), provider=self.name, what=what,
            classify=lambda e: self._classify(e, idempotent=idempotent, what=what),
            on_retry=lambda n, err, delay: log.warning(
                "fal %s failed (%s); try %d again in %.1f s", what, err.message, n + 1, delay),
        )

    def _once(self, fn, *, what: str):
        """One idempotent call, its error classified (the polling loop spaces and repeats polls itself)."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified, or re-raised when unknown
            err = self._classify(exc, idempotent=True, what=what)
            if err is None:
                raise
            raise err from exc

    # -- generate ---------------------------------------------------------------
    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        model = self.model_for(req.kind, req.model)
        sdk = self._client()
        handle, result = None, None
        if req.provider_job_id:
            found = self._resume(sdk, model, req.provider_job_id, reporter,
                                 resubmit_refused=bool(req.options.get("resubmit_refused")))
            if found is not None:
                handle, result = found
        if handle is None:
            handle = self._submit(sdk, req, model)
            reporter.save_job_id(handle.request_id)
            reporter.progress(0.02)
        if result is None:
            status = self._wait(handle, reporter, first_wait=True)
            result = self._result(handle, status)
        return self._deliver(result, handle.request_id, req, model, dest, reporter)

    def _submit(self, sdk, req: AssetRequest, model: str):
        body = build_input(req.kind, model, prompt=req.prompt, width=req.width, height=req.height,
                           duration=req.duration, seed=req.seed, options=self.pass_options(req.kind, req.options))
        # Not idempotent: a submit whose answer was lost may have queued (and will bill) a request,
        # so only errors that prove nothing was queued are retried.
        handle = self._call(lambda: sdk.submit(model, body), idempotent=False, what=f"submit to {model}")
        if not getattr(handle, "request_id", None):
            raise ProviderError("fal: the submit answer carried no request id", provider=self.name,
                                provider_code="bad_response")
        log.info("fal request %s queued for %s %d (%s)", handle.request_id, req.kind, req.index, model)
        return handle

    def _resume(self, sdk, model: str, request_id: str, reporter: Reporter, *, resubmit_refused: bool):
        """(handle, result or None) for the saved request, to be polled; None when a new one must be submitted.

        A request refused by moderation is reported again, never resubmitted,
        unless `resubmit_refused` (`aigen retry --include-refused`); one refused
        for its input would be refused (and billed) again, so it is reported too.
        A request that failed, was cancelled, or that fal no longer knows, is
        replaced by a new one.
        """
        fc = _sdk_module()
        handle = sdk.get_handle(model, request_id)
        try:
            status = self._call(lambda: handle.status(with_logs=False), idempotent=True,
                                what=f"status of request {request_id}")
        except ProviderError as e:
            if e.status == 404:
                log.warning("fal request %s is unknown to fal (expired?); submitting a new one", request_id)
                return None
            raise
        if not isinstance(status, fc.Completed):
            return handle, None
        try:
            return handle, self._result(handle, status)
        except Refused:
            if not resubmit_refused:
                raise
            log.warning("fal request %s was refused; submitting it again as asked", request_id)
            return None
        except ProviderError as e:
            if not getattr(e, "request_failed", False):
                raise  # a refused input would be refused (and billed) again; a fault of this call is not the request's
            log.warning("fal request %s ended without a result (%s); submitting a new one", request_id, e.message)
            return None

    def _wait(self, handle, reporter: Reporter, *, first_wait: bool):
        from aigen.providers.jobs import PollPolicy, poll_job

        fc = _sdk_module()
        policy = PollPolicy.from_env(self.env, interval=3.0, max_interval=15.0, timeout=20 * 60.0)
        seen: dict[str, Any] = {"last": None, "polls": 0}

        def update(status) -> None:
            seen["last"] = status
            if isinstance(status, fc.InProgress):
                # fal reports no fraction: creep towards 0.85 as polls go by.
                seen["polls"] += 1
                reporter.progress(0.1 + 0.75 * (1 - 0.85 ** seen["polls"]))
            elif isinstance(status, fc.Queued):
                reporter.progress(0.05)

        rid = handle.request_id
        try:
            return poll_job(
                lambda: self._once(lambda: handle.status(with_logs=False), what=f"status of request {rid}"),
                lambda s: isinstance(s, fc.Completed),
                policy=policy, reporter=reporter, provider=self.name, what=f"fal request {rid}",
                on_update=update, first_wait=first_wait,
            )
        except Exception as e:
            if getattr(e, "code", None) == "cancelled":
                self._cancel_on_stop(handle, reporter, seen["last"])
            raise

    def _cancel_on_stop(self, handle, reporter: Reporter, last) -> None:
        """Cancel at fal when the work is abandoned (`aigen cancel`) or nothing has started yet.

        A stop (Ctrl-C, SIGTERM) of a request that runs keeps it: it is billed
        anyway, its id is saved, and `aigen retry` fetches its result. A request
        still queued costs nothing to cancel, and a retry submits a new one.
        """
        fc = _sdk_module()
        abandoned = bool(getattr(reporter, "cancel_requested", lambda: False)())
        queued = last is None or isinstance(last, fc.Queued)
        if not (abandoned or queued):
            log.info("fal request %s keeps running after the stop; `aigen retry` fetches its result",
                     handle.request_id)
            return
        try:
            handle.cancel()
            log.info("fal request %s cancelled (%s)", handle.request_id,
                     "aigen cancel" if abandoned else "stopped while queued")
        except Exception as exc:  # noqa: BLE001 - best effort: the request id is saved either way
            err = self._classify(exc, idempotent=True, what=f"cancel request {handle.request_id}")
            log.warning("could not cancel fal request %s: %s", handle.request_id,
                        err.message if err is not None else exc)

    def _result(self, handle, status) -> dict:
        """The result JSON of a completed request, or the failure, refusal or cancellation it ended with."""
        rid = handle.request_id
        what = f"result of request {rid}"
        error = getattr(status, "error", None)
        error_type = getattr(status, "error_type", None)
        try:
            if error or error_type:
                # The request itself failed: its result says why; trying again would not change it.
                result = self._once(handle.get, what=what)
            else:
                result = self._call(handle.get, idempotent=True, what=what)
        except Refused:
            raise
        except ProviderError as e:
            if error or error_type:
                raise self._failed(rid, error, error_type, e) from e
            raise
        if not isinstance(result, dict):
            raise ProviderError(f"fal request {rid} returned no result object", provider=self.name,
                                provider_code="bad_response")
        return result

    def _failed(self, rid: str, error: str | None, error_type: str | None, e: ProviderError) -> ProviderError:
        if isinstance(e, Refused) or e.provider_code == "invalid_input":
            return e
        from aigen.providers.http import scrub

        reason = scrub(str(error or ""), self._secrets()) or e.message
        code = error_type or e.provider_code or "failed"
        if _CANCEL_WORDS.search(f"{error_type or ''} {error or ''}"):
            failed = ProviderError(f"fal request {rid} was cancelled before it finished: {reason}",
                                   provider=self.name, provider_code="CANCELLED",
                                   hint="`aigen retry` submits a new request")
        else:
            failed = ProviderError(f"fal request {rid} failed: {reason} ({code})", provider=self.name,
                                   provider_code=code, status=e.status,
                                   hint="`aigen retry` submits a new request (fal does not bill server-side "
                                        "failures)")
        failed.request_failed = True  # the request's own end, not a fault of this call: a resume replaces it
        return failed

    def _deliver(self, result: dict, rid: str, req: AssetRequest, model: str, dest: Path,
                 reporter: Reporter) -> AssetOutput:
        from aigen.providers.http import download, timeout_from_env

        video = req.kind == "video"
        url = media_url(result, req.kind)
        if not url:
            raise ProviderError(f"fal request {rid} completed without a{' video' if video else 'n image'} URL in "
                                f"its result", provider=self.name, provider_code="no_output")
        got = download(
            url, dest,
            timeout=timeout_from_env(self.env, 60.0),
            max_bytes=MAX_VIDEO_BYTES if video else MAX_IMAGE_BYTES,
            allowed_types=("video/mp4",) if video else ("image/png", "image/jpeg", "image/webp"),
            expect_kind="mp4" if video else "image",
            provider=self.name,
            deadline=900.0 if video else 300.0,
            env=self.env,
            policy=self._policy(),
            secrets=self._secrets(),
            progress=lambda n, total: reporter.progress(0.9 + 0.1 * (n / total if total else 0.5)),
        )
        fmt = got.format
        if not video and fmt == "webp":
            from aigen.providers.runway import to_png

            to_png(dest)
            fmt = "png"
        if not video and fmt not in ("png", "jpeg"):
            raise MediaCheckError(f"fal image is {fmt}, not PNG or JPEG")
        return AssetOutput(format=fmt, model=model)


def media_url(result: dict, kind: str) -> str | None:
    """The first media URL of `kind` in a fal result: images[].url / image.url, or video.url / videos[].url."""
    keys = ("images", "image") if kind == "image" else ("video", "videos")
    for key in keys:
        value = result.get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                return item["url"]
            if isinstance(item, str) and item.startswith(("http://", "https://")):
                return item
    return None
