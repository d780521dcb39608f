"""`gemini`: Google's video and image models through the official `google-genai` SDK.

Two ways in, chosen by the environment exactly as the SDK reads it (PROVIDERS.md §10):

* **Gemini Developer API** (a key alone: `GOOGLE_API_KEY` or `GEMINI_API_KEY`, the SDK's order): images from
  Gemini image models (`models.generate_content`), videos from Gemini Omni Flash (`interactions.create` with
  `background=True`). google-genai 3.x refuses Veo and Imagen in this mode before sending anything.
* **Agent Platform** (formerly Vertex AI; `GOOGLE_GENAI_USE_ENTERPRISE=true`, or the legacy
  `GOOGLE_GENAI_USE_VERTEXAI`): with `GOOGLE_CLOUD_PROJECT` (+ `GOOGLE_CLOUD_LOCATION`, default `global`) and
  Application Default Credentials, or with an API key alone ("express mode"). Videos from Veo
  (`models.generate_videos`, a long-running operation), images from Imagen (`models.generate_images`) or Gemini
  image models.

Everything is passed to the SDK explicitly (key, project, location, base URL from `GOOGLE_GEMINI_BASE_URL` /
`GOOGLE_VERTEX_BASE_URL`), so the settings aigen shows in `aigen providers` are the ones used.

Videos are asynchronous: the operation name (Veo) or interaction id (Omni) is saved through the reporter the
moment the create call returns, and a resumed run polls it instead of paying again. Images are one synchronous
call. The SDK retries nothing by default; aigen's own retries (`http.with_retries`) handle 429 and 5xx,
honouring `Retry-After` or the `google.rpc.RetryInfo` delay; a `RESOURCE_EXHAUSTED` that names a daily or
zero quota is a quota error, never retried. Answers are read through `http.paced_transport`, so a server that
trickles bytes cannot hold a worker past the deadline. Safety blocks (Veo's `raiMediaFilteredReasons`, Imagen's
`raiFilteredReason`, a Gemini `IMAGE_SAFETY` finish or a prompt block, a failed Omni interaction that says so)
are refusals, never retried. A video comes inline (bytes) or as a uri: an `https://` uri is streamed to disk
with the shared checked download (the key is sent only to Google's hosts or the configured base URL), a
`gs://` uri (when `--video-option output_gcs_uri=gs://...` was asked) through the Cloud Storage JSON API with
Application Default Credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from aigen.errors import BadInput, MissingKey, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers import http
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter
from aigen.providers.jobs import PollPolicy, poll_job

log = logging.getLogger("aigen.providers.gemini")

# The SDK's own variable names (google-genai 3.x `_api_client.py`, `_base_url.py`); GOOGLE_API_KEY wins over
# GEMINI_API_KEY when both are set, as in the SDK.
KEY_VARS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
ENTERPRISE_VAR = "GOOGLE_GENAI_USE_ENTERPRISE"
VERTEXAI_VAR = "GOOGLE_GENAI_USE_VERTEXAI"  # the legacy spelling, read when ENTERPRISE is unset
PROJECT_VAR = "GOOGLE_CLOUD_PROJECT"
LOCATION_VAR = "GOOGLE_CLOUD_LOCATION"
GEMINI_BASE_URL_VAR = "GOOGLE_GEMINI_BASE_URL"
VERTEX_BASE_URL_VAR = "GOOGLE_VERTEX_BASE_URL"
CREDENTIALS_VAR = "GOOGLE_APPLICATION_CREDENTIALS"
# google-cloud-storage's own variable for another Cloud Storage endpoint (an emulator, a test fake).
STORAGE_HOST_VAR = "STORAGE_EMULATOR_HOST"
HTTP_CLIENT_VAR = "GOOGLE_GENAI_HTTP_CLIENT"

GEMINI_DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
VERTEX_GLOBAL_BASE_URL = "https://aiplatform.googleapis.com"
GCS_DEFAULT_BASE_URL = "https://storage.googleapis.com"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

DEVELOPER = "developer"
AGENT = "agent"

MAX_VIDEO_BYTES = 1024 * 1024 * 1024
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Seconds for one answer's body once its headers came (AIGEN_DOWNLOAD_DEADLINE overrides): an inline video in
# an operation is tens of MB of base64.
ANSWER_DEADLINE = 600.0
SEED_MAX = 2**31 - 1  # int32 for Gemini's generationConfig.seed; Veo and Imagen take at least this range

# Prices: none (pricing.py says "unknown" with its note): Google's own prices were not in aigen's sources.


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "image" | "video"
    api: str  # "veo" | "omni" | "imagen" | "gemini_image"
    platforms: frozenset[str]
    aspect_ratios: tuple[str, ...]
    durations: tuple[int, ...] = ()
    resolutions: tuple[str, ...] = ()
    image_sizes: tuple[str, ...] = ()
    audio: bool = False
    listed: bool = True  # False: a name aigen does not know, given the rules of its family


_BOTH = frozenset({DEVELOPER, AGENT})
_AGENT = frozenset({AGENT})
_DEV = frozenset({DEVELOPER})
_VEO_RATIOS = ("16:9", "9:16")
_IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
_GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")


def _veo3() -> ModelSpec:
    return ModelSpec("video", "veo", _AGENT, _VEO_RATIOS, (4, 6, 8), ("720p", "1080p", "4k"), audio=True)


def _gemini_image(platforms=_BOTH) -> ModelSpec:
    return ModelSpec("image", "gemini_image", platforms, _GEMINI_RATIOS, image_sizes=("1K", "2K", "4K"))


# Model names and rules from PROVIDERS.md §10 (SDK docstrings and tests, Agent Platform model pages, the Gemini
# API deprecations page). The first of each kind per platform is that platform's default.
MODELS: dict[str, ModelSpec] = {
    "veo-3.1-generate-001": _veo3(),
    "veo-3.1-fast-generate-001": _veo3(),
    "veo-3.1-lite-generate-001": _veo3(),
    "veo-3.1-generate-preview": _veo3(),
    "veo-3.1-fast-generate-preview": _veo3(),
    "veo-2.0-generate-001": ModelSpec("video", "veo", _AGENT, _VEO_RATIOS, (5, 6, 7, 8), ("720p",)),
    "gemini-omni-flash-preview": ModelSpec("video", "omni", _DEV, _VEO_RATIOS, tuple(range(3, 11)), ("720p",)),
    "gemini-3.1-flash-image": _gemini_image(),
    "gemini-3-pro-image": _gemini_image(),
    "gemini-3.1-flash-lite-image": _gemini_image(),
    "imagen-4.0-generate-001": ModelSpec("image", "imagen", _AGENT, _IMAGEN_RATIOS, image_sizes=("1K", "2K")),
    "imagen-4.0-ultra-generate-001": ModelSpec("image", "imagen", _AGENT, _IMAGEN_RATIOS, image_sizes=("1K", "2K")),
    "imagen-4.0-fast-generate-001": ModelSpec("image", "imagen", _AGENT, _IMAGEN_RATIOS, image_sizes=("1K",)),
    "imagen-3.0-generate-002": ModelSpec("image", "imagen", _AGENT, _IMAGEN_RATIOS, image_sizes=("1K",)),
}

DEFAULTS = {
    (AGENT, "video"): "veo-3.1-generate-001",
    (DEVELOPER, "video"): "gemini-omni-flash-preview",
    (AGENT, "image"): "gemini-3.1-flash-image",
    (DEVELOPER, "image"): "gemini-3.1-flash-image",
}

# Shut down or retired (PROVIDERS.md §0 and §10): refused before anything is written.
RETIRED: dict[str, str] = {
    "veo-3.0-generate-001": "retired on Agent Platform on 2026-06-30; use veo-3.1-generate-001",
    "veo-3.0-fast-generate-001": "retired on Agent Platform on 2026-06-30; use veo-3.1-fast-generate-001",
    "gemini-2.5-flash-image": "shut down on 2026-10-02; use gemini-3.1-flash-image",
    "gemini-3.1-flash-image-preview": "shut down on 2026-06-25; use gemini-3.1-flash-image",
    "gemini-3-pro-image-preview": "shut down on 2026-06-25; use gemini-3-pro-image",
}

# What `--image-option` / `--video-option` may pass, per model family: a type, or the allowed values.
OPTIONS: dict[str, dict[str, Any]] = {
    "veo": {
        "negative_prompt": str,
        "person_generation": ("allow_adult", "dont_allow", "allow_all"),
        "generate_audio": bool,
        "enhance_prompt": bool,
        "resolution": ("720p", "1080p", "4k"),
        "output_gcs_uri": "gs",
    },
    "omni": {},
    "imagen": {
        "negative_prompt": str,
        "person_generation": ("DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"),
        "safety_filter_level": ("BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE"),
        "add_watermark": bool,
        "enhance_prompt": bool,
        "guidance_scale": float,
        "image_size": ("1K", "2K"),
        "language": str,
    },
    "gemini_image": {"image_size": ("1K", "2K", "4K")},
}

_SAFETY_FINISH = frozenset({"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "IMAGE_RECITATION",
                            "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"})
_SAFETY_WORDS = re.compile(r"safety|blocked|prohibited|policy|responsible ai|\brai\b|filtered", re.I)
# Without a QuotaFailure detail, only words that name a spent quota make a 429 final ("check your plan and
# billing details" is in every Gemini API 429, per-minute ones too).
_QUOTA_WORDS = re.compile(r"per ?day|daily|limit: ?0\b|prepayment|credits? (are )?depleted", re.I)
_RUNNING_OMNI = frozenset({"in_progress", "queued", "idle", "requires_continuation"})


def spec_for(model: str) -> ModelSpec | None:
    """The rules for a model: from the table, or by family for a newer name (veo-*, imagen-*, gemini-*image*)."""
    if model in MODELS:
        return MODELS[model]
    if model.startswith("veo-2"):
        return ModelSpec("video", "veo", _AGENT, _VEO_RATIOS, (5, 6, 7, 8), ("720p",), listed=False)
    if model.startswith("veo-"):
        return ModelSpec("video", "veo", _AGENT, _VEO_RATIOS, (4, 6, 8), ("720p", "1080p", "4k"), audio=True,
                         listed=False)
    if model.startswith("imagen-"):
        return ModelSpec("image", "imagen", _AGENT, _IMAGEN_RATIOS, image_sizes=("1K",), listed=False)
    if model.startswith("gemini-") and "image" in model:
        return ModelSpec("image", "gemini_image", _BOTH, _GEMINI_RATIOS, image_sizes=("1K", "2K", "4K"),
                         listed=False)
    if model.startswith("gemini-omni"):
        return ModelSpec("video", "omni", _DEV, _VEO_RATIOS, tuple(range(3, 11)), ("720p",), listed=False)
    return None


def closest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    want = math.log(width / height)

    def distance(r: str) -> float:
        a, b = r.split(":")
        return abs(math.log(int(a) / int(b)) - want)

    return min(ratios, key=distance)


def closest_duration(seconds: float | None, allowed: tuple[int, ...]) -> int:
    seconds = 4.0 if seconds is None else float(seconds)
    # Ties go to the longer clip, as for runway.
    return min(allowed, key=lambda d: (abs(d - seconds), -d))


_RES_PIXELS = {"720p": 720, "1080p": 1080, "4k": 2160}


def video_pixels(ratio: str, resolution: str) -> tuple[int, int]:
    short = _RES_PIXELS[resolution]
    long = short * 16 // 9
    return (long, short) if ratio == "16:9" else (short, long)


def image_size_for(width: int, height: int, sizes: tuple[str, ...]) -> str:
    """The smallest of "1K"/"2K"/"4K" whose pixel count (about 1024², 2048², 4096² at any aspect ratio) covers
    the asked one, with a little slack: 1280x720 is 1K, 1920x1080 2K."""
    area = width * height
    for size in sizes:
        if area <= (int(size[0]) * 1024) ** 2 * 1.1:
            return size
    return sizes[-1]


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Mode:
    """Which API the configuration in force reaches, and how."""

    platform: str  # DEVELOPER | AGENT
    key: str | None = None
    key_var: str | None = None
    project: str | None = None
    location: str | None = None
    base_url: str | None = None  # from GOOGLE_GEMINI_BASE_URL / GOOGLE_VERTEX_BASE_URL

    @property
    def agent(self) -> bool:
        return self.platform == AGENT

    @property
    def adc(self) -> bool:
        return self.agent and self.key is None

    @property
    def base_url_var(self) -> str:
        return VERTEX_BASE_URL_VAR if self.agent else GEMINI_BASE_URL_VAR

    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if not self.agent:
            return GEMINI_DEFAULT_BASE_URL
        if self.key or self.location in (None, "global"):
            return VERTEX_GLOBAL_BASE_URL
        if self.location in ("us", "eu"):
            return f"https://aiplatform.{self.location}.rep.googleapis.com"
        return f"https://{self.location}-aiplatform.googleapis.com"

    def label(self) -> str:
        if not self.agent:
            return f"Gemini Developer API ({self.key_var})"
        if self.adc:
            return (f"Agent Platform, project {self.project}, location {self.location}, "
                    "Application Default Credentials")
        return f"Agent Platform express mode ({self.key_var})"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def resolve_mode(env: dict, lookup: Callable[[str], str | None]) -> tuple[Mode | None, str | None]:
    """The mode the settings select (as google-genai reads them), or None and what is missing.

    ``lookup(var)`` reads a setting from the environment, else the keys file; keys come from the environment
    before the file, GOOGLE_API_KEY before GEMINI_API_KEY (the SDK's order).
    """
    key_var = next((v for v in KEY_VARS if env.get(v)), None)
    key = env.get(key_var) if key_var else None
    if not key:
        for var in KEY_VARS:
            value = lookup(var)
            if value:
                key_var, key = var, value
                break
    enterprise = lookup(ENTERPRISE_VAR)
    agent = _truthy(enterprise) if enterprise not in (None, "") else _truthy(lookup(VERTEXAI_VAR))
    project = lookup(PROJECT_VAR)
    location = lookup(LOCATION_VAR)
    if agent:
        base = env.get(VERTEX_BASE_URL_VAR) or None
        # The SDK's precedence: a project from the environment wins over a key from the environment.
        if project:
            return Mode(AGENT, project=project, location=location or "global", base_url=base), None
        if key:
            return Mode(AGENT, key=key, key_var=key_var, base_url=base), None
        return None, (f"{ENTERPRISE_VAR} is true (Agent Platform) but neither {PROJECT_VAR} (with Application "
                      f"Default Credentials) nor an API key ({' or '.join(KEY_VARS)}, express mode) is set")
    if key:
        return Mode(DEVELOPER, key=key, key_var=key_var, base_url=env.get(GEMINI_BASE_URL_VAR) or None), None
    why = f"needs {' or '.join(KEY_VARS)} (Gemini API), or {ENTERPRISE_VAR}=true with {PROJECT_VAR} (Agent Platform)"
    if project:
        why += (f"; {PROJECT_VAR} is set, but Agent Platform is used only with {ENTERPRISE_VAR}=true, "
                "as in the SDK")
    return None, why


# --------------------------------------------------------------------------- the provider
class GeminiProvider(Provider):
    name = "gemini"
    kinds = frozenset({"image", "video"})
    description = (
        "Google (google-genai SDK): on Agent Platform, videos by Veo and images by Imagen or Gemini image models; "
        "with a Gemini API key alone, images by Gemini image models and videos by Gemini Omni Flash"
    )
    key_env = (KEY_VARS,)
    base_url_env = GEMINI_BASE_URL_VAR
    default_base_url = GEMINI_DEFAULT_BASE_URL
    default_models = {"video": DEFAULTS[(AGENT, "video")], "image": DEFAULTS[(AGENT, "image")]}
    # Video jobs run at Google and mostly wait here; Google's per-minute request quotas are small.
    concurrency = 4
    takes_options = True

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._lock = threading.Lock()
        self._clients: dict[Mode, Any] = {}
        self._credentials = None

    # -- configuration ---------------------------------------------------------
    def mode(self) -> tuple[Mode | None, str | None]:
        return resolve_mode(self.env, self.lookup_key)

    def missing_keys(self) -> list[str]:
        mode, _ = self.mode()
        return [] if mode is not None else [" or ".join(KEY_VARS)]

    def check_ready(self, kind: str) -> None:
        self.concurrency_cap()
        mode, why = self.mode()
        if mode is None:
            raise MissingKey(
                f"provider 'gemini' {why}",
                hint=f"export GEMINI_API_KEY=... or run `aigen keys set gemini`; for Veo and Imagen also "
                     f"{ENTERPRISE_VAR}=true (with {PROJECT_VAR} and Application Default Credentials, or the key "
                     "alone for express mode)",
            )
        super().check_ready(kind)

    def _mode_or_fail(self) -> Mode:
        mode, why = self.mode()
        if mode is None:
            raise MissingKey(f"provider 'gemini' {why}", hint="see `aigen providers`")
        return mode

    def models_for(self, mode: Mode, kind: str) -> list[str]:
        return [m for m, s in MODELS.items() if s.kind == kind and mode.platform in s.platforms]

    def configuration(self) -> dict:
        """What `aigen providers` shows: the mode in force and the models it can use."""
        mode, why = self.mode()
        if mode is None:
            return {"mode": None, "problem": why, "models": {}, "default_models": {}}
        return {
            "mode": mode.platform,
            "label": mode.label(),
            "base_url_env": mode.base_url_var,
            "base_url": mode.effective_base_url(),
            "models": {k: self.models_for(mode, k) for k in ("video", "image")},
            "default_models": {k: DEFAULTS[(mode.platform, k)] for k in ("image", "video")},
        }

    # -- checks before anything is written ---------------------------------------
    def model_for(self, kind: str, requested: str | None) -> str | None:
        mode, _ = self.mode()
        if mode is None:
            return requested or self.default_models.get(kind)
        model = requested or DEFAULTS[(mode.platform, kind)]
        self._spec(kind, model, mode)
        return model

    def _spec(self, kind: str, model: str, mode: Mode) -> ModelSpec:
        flag = f"--{kind}-model"
        if model in RETIRED:
            raise BadInput(f"invalid {flag} {model!r} for gemini: {RETIRED[model]}")
        spec = spec_for(model)
        usable = ", ".join(self.models_for(mode, kind))
        if spec is None or spec.kind != kind:
            raise BadInput(f"invalid {flag} {model!r} for gemini: choose one of {usable}",
                           hint="newer veo-*, imagen-* and gemini-*-image names are accepted too")
        if mode.platform not in spec.platforms:
            if spec.api in ("veo", "imagen"):
                why = ("Veo and Imagen are only on Agent Platform (google-genai 3.x refuses them with a Gemini API "
                       f"key alone; Imagen is shut down on the Gemini API): set {ENTERPRISE_VAR}=true, with "
                       f"{PROJECT_VAR} or with your key for express mode")
            else:
                why = "Gemini Omni Flash is a Gemini Developer API model (Interactions API); unset " + ENTERPRISE_VAR
            raise BadInput(f"gemini {kind} model {model!r} cannot be used with {mode.label()}: {why}",
                           hint=f"or choose one of {usable}")
        return spec

    def check_request(self, kind: str, *, prompt: str, model: str | None, width: int, height: int,
                      duration: float | None = None, options: dict | None = None) -> list[str]:
        """Raise BadInput for what the model would refuse; return notes on what will differ from the ask."""
        mode = self._mode_or_fail()
        model = model or DEFAULTS[(mode.platform, kind)]
        spec = self._spec(kind, model, mode)
        passed = self.pass_options(kind, options)
        opts = validate_options(kind, model, spec, passed, mode)
        plan = plan_request(spec, width, height, duration, opts)
        notes = list(plan["notes"])
        if not spec.listed:
            notes.append(f"gemini {kind} model {model} is not in aigen's table: the rules of its family are used")
        return [f"gemini {model}: {n}" for n in notes]

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        mode, _ = self.mode()
        model = model or (DEFAULTS[(mode.platform, kind)] if mode else self.default_models[kind])
        spec = spec_for(model)
        if spec is None:
            return f"{width}x{height}"
        plan = plan_request(spec, width, height, None, {})
        if kind == "video":
            w, h = video_pixels(plan["aspect_ratio"], plan["resolution"])
            return f"{w}x{h} ({plan['aspect_ratio']}, {plan['resolution']})"
        return f"aspect ratio {plan['aspect_ratio']} at {plan['image_size']} (the model sets the pixel size)"

    # -- the SDK client -------------------------------------------------------------
    def _httpx_module(self):
        import importlib

        choice = (self.env.get(HTTP_CLIENT_VAR) or "").strip().lower()
        names = ["httpx"] if choice == "httpx" else ["httpx2", "httpx"]
        for name in names:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        raise ProviderError("gemini: neither httpx2 nor httpx is installed (google-genai needs one)",
                            provider=self.name, provider_code="sdk_missing")

    def _too_slow(self, request, err) -> ProviderError:
        if _is_paid(request.method, request.url.path):
            return http.sent_but_lost(self.name, f"the answer {err.message}", code="download_timeout", timeout=True)
        return ProviderTimeout(f"gemini: the answer {err.message}", provider=self.name, retryable=True,
                               provider_code="download_timeout")

    def _client(self, mode: Mode):
        with self._lock:
            client = self._clients.get(mode)
            if client is not None:
                return client
            try:
                from google import genai
                from google.genai import types
            except ImportError:
                raise ProviderError(
                    "gemini: the google-genai SDK is not installed", provider=self.name, provider_code="sdk_missing",
                    hint="pip install 'aigen[gemini]' (or pip install google-genai)",
                ) from None
            _, read = http.timeout_from_env(self.env, 120.0)
            limits = http.BodyLimits.from_env(self.env, ANSWER_DEADLINE)
            transport = http.paced_transport(self._httpx_module(), limits, too_slow=self._too_slow)
            options = types.HttpOptions(base_url=mode.base_url or None, timeout=int(read * 1000),
                                        client_args={"transport": transport})
            if not mode.agent:
                client = genai.Client(api_key=mode.key, http_options=options)
            elif mode.key:
                client = genai.Client(vertexai=True, api_key=mode.key, http_options=options)
            else:
                client = genai.Client(vertexai=True, project=mode.project, location=mode.location,
                                      credentials=self._adc(mode), http_options=options)
            self._clients[mode] = client
            return client

    def _adc(self, mode: Mode | None):
        """Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, else google-auth's own search."""
        if self._credentials is not None:
            return self._credentials
        import google.auth
        import google.auth.exceptions

        path = self.env.get(CREDENTIALS_VAR)
        try:
            creds = _credentials_from_file(path) if path else google.auth.default(scopes=[CLOUD_SCOPE])[0]
        except google.auth.exceptions.DefaultCredentialsError as e:
            where = f"project {mode.project}" if mode is not None and mode.project else "Cloud Storage"
            raise ProviderError(
                f"gemini: no Application Default Credentials for {where}: {' '.join(str(e).split())[:200]}",
                provider=self.name, provider_code="auth",
                hint="run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                     "credentials file",
            ) from None
        self._credentials = creds
        return creds

    def _secrets(self) -> list[str]:
        mode, _ = self.mode()
        return [mode.key] if mode is not None and mode.key else []

    def _classify(self, exc: BaseException, *, paid: bool, what: str) -> ProviderError | None:
        """An exception from the SDK (or its HTTP client, or google-auth) as aigen's error; None when unknown."""
        if isinstance(exc, ProviderError):
            return exc
        from google.genai import errors as gerrors

        secrets = self._secrets()
        if isinstance(exc, gerrors.APIError):
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            return self._status_error(exc.code, exc.status, exc.message, exc.details, headers, what)
        names = {c.__name__ for c in type(exc).__mro__}
        module = type(exc).__module__ or ""
        if "GenAiError" in names and "ResponseValidationError" not in names:
            # The Interactions client's errors: the body is JSON text.
            try:
                body = json.loads(exc.body or "{}")
            except ValueError:
                body = {"error": {"message": exc.body}}
            err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
            return self._status_error(exc.status_code, err.get("status"), err.get("message"), body,
                                      exc.headers or {}, what)
        if "UnknownApiResponseError" in names or "JSONDecodeError" in names or "ResponseValidationError" in names:
            text = http.scrub(" ".join(str(exc).split())[:160], secrets)
            if paid:
                return http.sent_but_lost(self.name, f"the answer could not be read ({text})", code="bad_answer")
            return ProviderError(f"gemini: the answer could not be read ({what}: {text})", provider=self.name,
                                 retryable=True, provider_code="bad_answer")
        if module.startswith("google.auth"):
            text = http.scrub(" ".join(str(exc).split())[:200], secrets)
            if "TransportError" in names:
                return ProviderError(f"gemini: could not reach Google's token endpoint ({text})",
                                     provider=self.name, retryable=True, provider_code="connection")
            return ProviderError(f"gemini: Application Default Credentials were refused ({text})",
                                 provider=self.name, provider_code="auth",
                                 hint="run `gcloud auth application-default login` again, or check "
                                      "GOOGLE_APPLICATION_CREDENTIALS")
        if module.split(".")[0] in ("httpx", "httpx2", "httpcore"):
            text = http.scrub(" ".join(str(exc).split())[:160], secrets)
            if names & {"ConnectError", "ConnectTimeout", "PoolTimeout"} or http.never_sent(exc):
                return ProviderError(f"gemini: could not reach the API ({type(exc).__name__}: {text})",
                                     provider=self.name, retryable=True, provider_code="connection")
            if "TimeoutException" in names:
                if paid:
                    return http.sent_but_lost(self.name, f"no answer within the timeout ({what})", code="timeout",
                                              timeout=True,
                                              hint=f"raise the read timeout with {http.TIMEOUT_ENV}=SECONDS; "
                                                   + http.BILLED_HINT)
                return ProviderTimeout(f"gemini: no answer within the timeout ({what})", provider=self.name,
                                       retryable=True, provider_code="timeout")
            if paid:
                return http.sent_but_lost(self.name, f"the connection broke after the request was sent ({what}: "
                                                     f"{type(exc).__name__})", code="connection_lost")
            return ProviderError(f"gemini: connection failed ({what}: {type(exc).__name__}: {text})",
                                 provider=self.name, retryable=True, provider_code="connection")
        if isinstance(exc, ValueError) and (module.startswith(("google.genai", "builtins", "pydantic"))):
            # The SDK checks arguments and modes (and pydantic the request's fields) before sending anything.
            return ProviderError(f"gemini: the google-genai SDK refused the call before sending it: "
                                 f"{http.scrub(str(exc), secrets)}", provider=self.name, provider_code="sdk_refused")
        return None

    def _status_error(self, code: int | None, status: str | None, message: str | None, details: Any,
                      headers: Any, what: str) -> ProviderError:
        code = int(code or 0)
        status = str(status or "")
        secrets = self._secrets()
        detail = http.scrub(" ".join(str(message or http.body_message(details)).split()), secrets)[:300]
        label = f"HTTP {code}{' ' + status if status else ''}"
        suffix = f": {detail}" if detail else ""
        retry_after = http.parse_retry_after(dict(headers) if headers else None)
        if retry_after is None:
            retry_after = _retry_delay(details)
        if code == 429 or status == "RESOURCE_EXHAUSTED":
            if _is_quota(detail, details):
                return QuotaExceeded(
                    f"gemini: quota exhausted ({label}){suffix}", provider=self.name, status=code,
                    provider_code="quota",
                    hint="the quota resets later (daily quotas at midnight Pacific time) or with a higher tier or "
                         "billing; retrying now will not help",
                )
            return ProviderError(f"gemini: rate limited ({label}){suffix}", provider=self.name, status=code,
                                 retryable=True, retry_after=retry_after, provider_code="rate_limited")
        mode, _ = self.mode()
        key_var = (mode.key_var if mode is not None and mode.key_var else None) or KEY_VARS[0]
        if code == 404:
            return ProviderError(f"gemini: not found ({label}){suffix}", provider=self.name, status=code,
                                 provider_code="not_found",
                                 hint="check the model name: `aigen providers --json` lists what this "
                                      "configuration can use")
        if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in _rpc_details(details)):
            return ProviderError(f"gemini rejected the API key ({label}){suffix}", provider=self.name, status=code,
                                 provider_code="auth",
                                 hint=f"check {key_var} (`aigen keys list`, `aigen keys set gemini`)")
        if code in (401, 403):
            how = (f"check {key_var} (`aigen keys list`, `aigen keys set gemini`)" if mode is None or mode.key
                   else "check the Application Default Credentials and that the project has the Vertex AI API "
                        "enabled")
            kind = "credentials rejected" if code == 401 else "access denied"
            return ProviderError(f"gemini: {kind} ({label}){suffix}", provider=self.name, status=code,
                                 provider_code="auth" if code == 401 else "forbidden", hint=how)
        err = http.error_for_status(self.name, code, headers, {"error": {"message": detail}}, key_var=key_var,
                                    secrets=secrets, what=what)
        err.message = err.message.replace(f"(HTTP {code})", f"({label})")
        err.args = (err.message,)
        if err.retryable and retry_after is not None:
            err.retry_after = retry_after
        return err

    def _call(self, fn: Callable[[], Any], *, paid: bool, what: str, reporter: Reporter | None = None):
        check_stop = getattr(reporter, "check_stop", None)

        def attempt():
            if check_stop is not None:
                check_stop()
            return fn()

        return http.with_retries(
            attempt, policy=http.RetryPolicy.from_env(self.env), provider=self.name, what=what,
            classify=lambda e: self._classify(e, paid=paid, what=what),
            on_retry=lambda n, err, delay: log.warning("gemini %s failed (%s); try %d again in %.1f s",
                                                       what, err.message, n + 1, delay),
        )

    def _once(self, fn: Callable[[], Any], *, what: str):
        """One idempotent call for polling: the polling loop spaces the tries."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified, or re-raised when unknown
            err = self._classify(exc, paid=False, what=what)
            if err is None:
                raise
            raise err from exc

    # -- generate -----------------------------------------------------------------------
    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        mode = self._mode_or_fail()
        model = req.model or DEFAULTS[(mode.platform, req.kind)]
        spec = self._spec(req.kind, model, mode)
        opts = validate_options(req.kind, model, spec, self.pass_options(req.kind, req.options), mode)
        plan = plan_request(spec, req.width, req.height, req.duration, opts)
        client = self._client(mode)
        if spec.api == "veo":
            self._veo(client, mode, req, model, spec, plan, opts, dest, reporter)
            fmt = "mp4"
        elif spec.api == "omni":
            self._omni(client, mode, req, model, plan, dest, reporter)
            fmt = "mp4"
        elif spec.api == "imagen":
            fmt = self._imagen(client, req, model, plan, opts, dest, reporter)
        else:
            fmt = self._gemini_image(client, req, model, plan, dest, reporter)
        reporter.progress(1.0)
        return AssetOutput(format=fmt, model=model, cost=None)

    # -- images ---------------------------------------------------------------------------
    def _imagen(self, client, req, model, plan, opts, dest, reporter) -> str:
        import warnings

        from google.genai import types

        watermark = opts.get("add_watermark")
        config = dict(
            number_of_images=1, aspect_ratio=plan["aspect_ratio"], include_rai_reason=True,
            output_mime_type="image/png",
            **{k: v for k, v in opts.items() if k in ("negative_prompt", "person_generation", "safety_filter_level",
                                                       "enhance_prompt", "guidance_scale", "language")},
        )
        if watermark is not None:
            config["add_watermark"] = watermark
        if watermark is False:
            # Imagen takes a seed only without its watermark (SDK docstring).
            config["seed"] = req.seed % SEED_MAX
        if plan["image_size"] != "1K":
            config["image_size"] = plan["image_size"]

        image_config = types.GenerateImagesConfig(**config)

        def call():
            with warnings.catch_warnings():
                # generate_images is deprecated in 3.x (removal "not before Jan. 1 2027"); aigen says so in README.
                warnings.simplefilter("ignore")
                return client.models.generate_images(model=model, prompt=req.prompt, config=image_config)

        resp = self._call(call, paid=True, what="image generation", reporter=reporter)
        reporter.progress(0.9)
        images = list(getattr(resp, "generated_images", None) or [])
        for item in images:
            image = getattr(item, "image", None)
            data = getattr(image, "image_bytes", None) if image is not None else None
            if data:
                return self._write_image(data, dest)
        reasons = [str(r) for r in (getattr(i, "rai_filtered_reason", None) for i in images) if r]
        if reasons:
            raise Refused(self.name, "; ".join(reasons), provider_code="rai_filtered")
        raise Refused(self.name, "Imagen returned no image (its safety filters drop images without a reason)",
                      provider_code="rai_filtered")

    def _gemini_image(self, client, req, model, plan, dest, reporter) -> str:
        from google.genai import types

        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"], candidate_count=1, seed=req.seed % SEED_MAX,
            image_config=types.ImageConfig(aspect_ratio=plan["aspect_ratio"], image_size=plan["image_size"]),
        )
        resp = self._call(lambda: client.models.generate_content(model=model, contents=req.prompt, config=config),
                          paid=True, what="image generation", reporter=reporter)
        reporter.progress(0.9)
        feedback = getattr(resp, "prompt_feedback", None)
        block = _enum_name(getattr(feedback, "block_reason", None))
        if block:
            msg = getattr(feedback, "block_reason_message", None)
            raise Refused(self.name, f"the prompt was blocked ({block}{': ' + msg if msg else ''})",
                          provider_code=block)
        candidates = list(getattr(resp, "candidates", None) or [])
        if not candidates:
            raise ProviderError("gemini answered without a candidate (no image)", provider=self.name,
                                provider_code="empty_response")
        cand = candidates[0]
        parts = list(getattr(getattr(cand, "content", None), "parts", None) or [])
        for part in parts:
            inline = getattr(part, "inline_data", None)
            mime = str(getattr(inline, "mime_type", "") or "")
            data = getattr(inline, "data", None) if inline is not None else None
            if data and mime.startswith("image/"):
                return self._write_image(data, dest)
        finish = _enum_name(getattr(cand, "finish_reason", None))
        message = getattr(cand, "finish_message", None)
        text = " ".join(str(getattr(p, "text", "") or "") for p in parts).strip()
        if finish in _SAFETY_FINISH:
            raise Refused(self.name, f"the image was blocked ({finish}{': ' + message if message else ''})",
                          provider_code=finish)
        said = f"; the model said: {text[:200]}" if text else ""
        raise ProviderError(f"gemini answered without an image (finish reason {finish or 'none'}){said}",
                            provider=self.name, provider_code=(finish or "no_image").lower())

    def _write_image(self, data: Any, dest: Path) -> str:
        raw = _as_bytes(data, self.name)
        fmt = http.write_media(raw, dest, expect="image", max_bytes=MAX_IMAGE_BYTES, provider=self.name)
        if fmt in ("png", "jpeg"):
            if not http.media_is_complete(dest, fmt):
                raise http.sent_but_lost(self.name, f"the {fmt.upper()} image in the answer is cut off",
                                         code="truncated")
            return fmt
        from aigen.providers.runway import to_png

        to_png(dest)  # WebP (or GIF) is kept as PNG, as for runway
        return "png"

    # -- videos: Veo on Agent Platform ------------------------------------------------------
    def _veo(self, client, mode, req, model, spec, plan, opts, dest, reporter) -> None:
        from google.genai import types

        op = None
        if req.provider_job_id:
            op = self._resume_veo(client, req.provider_job_id, bool(req.options.get("resubmit_refused")))
        if op is None:
            config = dict(number_of_videos=1, duration_seconds=plan["duration"], aspect_ratio=plan["aspect_ratio"],
                          seed=req.seed % SEED_MAX)
            if len(spec.resolutions) > 1:
                config["resolution"] = plan["resolution"]
            for k in ("negative_prompt", "person_generation", "generate_audio", "enhance_prompt", "output_gcs_uri"):
                if k in opts:
                    config[k] = opts[k]
            source = types.GenerateVideosSource(prompt=req.prompt)
            video_config = types.GenerateVideosConfig(**config)
            created = self._call(
                lambda: client.models.generate_videos(model=model, source=source, config=video_config),
                paid=True, what="create video operation", reporter=reporter)
            name = getattr(created, "name", None)
            if not name:
                raise ProviderError("gemini: generate_videos returned no operation name", provider=self.name,
                                    provider_code="bad_response")
            reporter.save_job_id(name)
            reporter.progress(0.02)
            log.info("gemini operation %s created for video %d (%s)", name, req.index, model)
            op = created if getattr(created, "done", None) else self._wait_veo(client, name, reporter)
        elif not op.done:
            op = self._wait_veo(client, op.name, reporter)
        self._deliver_veo(op, mode, dest, reporter)

    def _get_op(self, client, name: str):
        from google.genai import types

        return client.operations.get(types.GenerateVideosOperation(name=name))

    def _resume_veo(self, client, name: str, resubmit_refused: bool):
        """The saved operation, to be polled; None when a new one must be created."""
        try:
            op = self._call(lambda: self._get_op(client, name), paid=False, what=f"operation {name}")
        except ProviderError as e:
            if e.status == 404:
                log.warning("gemini operation %s is unknown to Google (expired?); creating a new one", name)
                return None
            raise
        if op.done and op.error:
            log.warning("gemini operation %s had failed (%s); creating a new one", name, _op_error_text(op.error))
            return None
        if op.done and not _videos(op) and _rai(op) and not resubmit_refused:
            self._deliver_veo(op, None, None, None)  # raises the refusal again
        if op.done and not _videos(op):
            return None
        return op

    def _wait_veo(self, client, name: str, reporter):
        return self._wait(lambda: self._get_op(client, name), lambda op: bool(getattr(op, "done", False)),
                          f"operation {name}", reporter, interval=10.0, max_interval=20.0)

    def _wait(self, fetch, done, what: str, reporter, *, interval: float, max_interval: float):
        """Poll a long-running job (a Veo operation, an Omni interaction) until `done`, with aigen's policy."""
        policy = PollPolicy.from_env(self.env, interval=interval, max_interval=max_interval, timeout=20 * 60.0)
        polls = [0]

        def update(_job) -> None:
            polls[0] += 1
            reporter.progress(min(0.85, 0.05 + 0.05 * polls[0]))

        return poll_job(lambda: self._once(fetch, what=what), done, policy=policy, reporter=reporter,
                        provider=self.name, what=f"gemini {what}", on_update=update)

    def _deliver_veo(self, op, mode, dest, reporter) -> None:
        if op.error:
            raise ProviderError(f"gemini operation {op.name} failed: {_op_error_text(op.error)}",
                                provider=self.name, provider_code=f"op_{_op_error_code(op.error)}",
                                hint="`aigen retry` creates a new operation")
        videos = _videos(op)
        if not videos:
            reasons = _rai(op)
            if reasons:
                raise Refused(self.name, "; ".join(reasons), provider_code="rai_media_filtered")
            raise ProviderError(f"gemini operation {op.name} finished without a video", provider=self.name,
                                provider_code="no_output")
        self._save_video(getattr(videos[0], "video", None), mode, dest, reporter)

    # -- videos: Omni Flash on the Gemini Developer API ---------------------------------------
    def _omni(self, client, mode, req, model, plan, dest, reporter) -> None:
        it = None
        if req.provider_job_id:
            it = self._resume_omni(client, req.provider_job_id, bool(req.options.get("resubmit_refused")))
        if it is None:
            created = self._call(
                lambda: client.interactions.create(
                    model=model, input=req.prompt, background=True, response_modalities=["video"],
                    response_format={"type": "video", "aspect_ratio": plan["aspect_ratio"],
                                     "duration": f"{plan['duration']}s"},
                    generation_config={"seed": req.seed % SEED_MAX},
                ),
                paid=True, what="create video interaction", reporter=reporter)
            iid = getattr(created, "id", None)
            if not iid:
                raise ProviderError("gemini: interactions.create returned no id", provider=self.name,
                                    provider_code="bad_response")
            reporter.save_job_id(iid)
            reporter.progress(0.02)
            log.info("gemini interaction %s created for video %d (%s)", iid, req.index, model)
            it = created if _omni_final(created) else self._wait_omni(client, iid, reporter)
        elif not _omni_final(it):
            it = self._wait_omni(client, it.id, reporter)
        self._deliver_omni(it, mode, dest, reporter)

    def _resume_omni(self, client, iid: str, resubmit_refused: bool):
        try:
            it = self._call(lambda: client.interactions.get(iid), paid=False, what=f"interaction {iid}")
        except ProviderError as e:
            if e.status == 404:
                log.warning("gemini interaction %s is unknown to Google (expired?); creating a new one", iid)
                return None
            raise
        status = str(getattr(it, "status", "") or "")
        if status == "failed" and _omni_refusal(it) and not resubmit_refused:
            self._deliver_omni(it, None, None, None)
        if status in ("failed", "cancelled", "incomplete"):
            log.warning("gemini interaction %s ended %s; creating a new one", iid, status)
            return None
        return it

    def _wait_omni(self, client, iid: str, reporter):
        return self._wait(lambda: client.interactions.get(iid), _omni_final, f"interaction {iid}", reporter,
                          interval=5.0, max_interval=15.0)

    def _deliver_omni(self, it, mode, dest, reporter) -> None:
        status = str(getattr(it, "status", "") or "")
        errors = "; ".join(str(getattr(e, "message", None) or getattr(e, "code", None) or e)
                           for e in (getattr(it, "errors", None) or []))
        if status == "failed":
            if _omni_refusal(it):
                raise Refused(self.name, errors or "the interaction failed on a safety check", provider_code="failed")
            raise ProviderError(f"gemini interaction {it.id} failed: {errors or 'no reason given'}",
                                provider=self.name, provider_code="failed", hint="`aigen retry` creates a new one")
        if status == "budget_exceeded":
            raise QuotaExceeded(f"gemini interaction {it.id} stopped: budget exceeded", provider=self.name,
                                provider_code="budget_exceeded")
        if status != "completed":
            raise ProviderError(f"gemini interaction {it.id} ended {status or 'without a status'}"
                                f"{': ' + errors if errors else ''}", provider=self.name,
                                provider_code=status or "unknown")
        video = getattr(it, "output_video", None)
        if video is None:
            raise ProviderError(f"gemini interaction {it.id} completed without a video", provider=self.name,
                                provider_code="no_output")
        self._save_video(video, mode, dest, reporter)

    # -- video bytes ------------------------------------------------------------------------
    def _save_video(self, video, mode: Mode | None, dest: Path | None, reporter) -> None:
        data = getattr(video, "video_bytes", None) or getattr(video, "data", None)
        uri = str(getattr(video, "uri", None) or "")
        if data:
            raw = _as_bytes(data, self.name, paid=False)
            http.write_media(raw, dest, expect="video", max_bytes=MAX_VIDEO_BYTES, provider=self.name,
                             source="video")
            return
        if uri.startswith("gs://"):
            self._download_gcs(uri, dest, reporter)
            return
        if uri.startswith(("https://", "http://")):
            headers = {}
            if mode is not None and mode.key and self._trusted(uri, mode):
                headers["x-goog-api-key"] = mode.key
            self._download(uri, dest, headers, reporter)
            return
        raise ProviderError(f"gemini: the video came without bytes and without a usable uri ({uri[:40] or 'none'})",
                            provider=self.name, provider_code="no_output")

    def _trusted(self, uri: str, mode: Mode) -> bool:
        """Whether the key may go to this uri's host: Google's API hosts or the configured base URL's."""
        host = (urlsplit(uri).hostname or "").lower()
        base = (urlsplit(mode.effective_base_url()).hostname or "").lower()
        return host == base or (uri.startswith("https://") and host.endswith(".googleapis.com"))

    def _download(self, url: str, dest: Path, headers: dict, reporter) -> None:
        secrets = [v for v in headers.values()] + self._secrets()
        http.download(
            url, dest, timeout=http.timeout_from_env(self.env, 60.0), max_bytes=MAX_VIDEO_BYTES,
            allowed_types=("video/",), expect_kind="video", provider=self.name, headers=headers, deadline=900.0,
            env=self.env, policy=http.RetryPolicy.from_env(self.env), secrets=secrets,
            progress=(lambda got, total: reporter.progress(0.9 + 0.09 * (got / total if total else 0.5)))
            if reporter is not None else None,
        )

    def _download_gcs(self, uri: str, dest: Path, reporter) -> None:
        bucket, _, obj = uri[len("gs://"):].partition("/")
        if not bucket or not obj:
            raise ProviderError(f"gemini: the video's Cloud Storage uri {uri} names no object", provider=self.name,
                                provider_code="bad_response")
        host = (self.env.get(STORAGE_HOST_VAR) or "").strip().rstrip("/")
        base = (host if "://" in host else f"http://{host}") if host else GCS_DEFAULT_BASE_URL
        creds = self._adc(None)
        try:
            import google.auth.transport.requests

            if not creds.valid:
                creds.refresh(google.auth.transport.requests.Request())
        except Exception as exc:  # noqa: BLE001 - google-auth errors, classified
            err = self._classify(exc, paid=False, what="Cloud Storage token")
            if err is None:
                raise
            raise err from exc
        url = f"{base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}?alt=media"
        try:
            self._download(url, dest, {"Authorization": f"Bearer {creds.token}"}, reporter)
        except ProviderError as e:
            e.message += f" (the video is kept at {uri}; the operation is saved, so `aigen retry` fetches it again)"
            e.args = (e.message,)
            raise


def _credentials_from_file(path: str):
    """The credentials in GOOGLE_APPLICATION_CREDENTIALS, loaded by their type's own loader (as google-auth
    advises), so aigen's environment is used rather than the process's."""
    import warnings

    import google.auth
    import google.auth.exceptions

    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError) as e:
        raise google.auth.exceptions.DefaultCredentialsError(
            f"{CREDENTIALS_VAR}={path} cannot be read as a credentials file ({getattr(e, 'strerror', None) or e})"
        ) from None
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_SCOPE])
        if kind == "authorized_user":
            import google.oauth2.credentials

            return google.oauth2.credentials.Credentials.from_authorized_user_info(info, scopes=[CLOUD_SCOPE])
    except ValueError as e:
        raise google.auth.exceptions.DefaultCredentialsError(f"{path}: {e}") from None
    with warnings.catch_warnings():
        # Other types (external_account, impersonated): google-auth's generic loader, as google.auth.default uses.
        warnings.simplefilter("ignore", DeprecationWarning)
        return google.auth.load_credentials_from_file(path, scopes=[CLOUD_SCOPE])[0]


# --------------------------------------------------------------------------- request planning
def validate_options(kind: str, model: str, spec: ModelSpec, passed: dict, mode: Mode) -> dict:
    """The pass-through options checked against what the model family takes, with canonical values."""
    allowed = OPTIONS[spec.api]
    flag = f"--{kind}-option"
    out: dict = {}
    for key, value in passed.items():
        rule = allowed.get(key)
        if rule is None:
            takes = ", ".join(allowed) or "none"
            raise BadInput(f"invalid {flag} {key!r} for gemini {model}: it takes {takes}")
        if rule is bool:
            if not isinstance(value, bool):
                raise BadInput(f"invalid {flag} {key}={value!r} for gemini: use true or false")
        elif rule is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadInput(f"invalid {flag} {key}={value!r} for gemini: use a number")
            value = float(value)
        elif rule is str:
            if not isinstance(value, str) or not value.strip():
                raise BadInput(f"invalid {flag} {key}={value!r} for gemini: use some text")
        elif rule == "gs":
            if not isinstance(value, str) or not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}(/.*)?", value):
                raise BadInput(f"invalid {flag} {key}={value!r} for gemini: use a Cloud Storage prefix gs://BUCKET/PATH/")
        else:
            match = next((v for v in rule if isinstance(value, str) and v.lower() == value.lower()), None)
            if match is None:
                raise BadInput(f"invalid {flag} {key}={value!r} for gemini: choose one of {', '.join(rule)}")
            value = match
        out[key] = value
    if spec.api == "veo" and "generate_audio" in out and not spec.audio:
        raise BadInput(f"invalid {flag} generate_audio for gemini {model}: this Veo model makes no sound")
    if "resolution" in out and out["resolution"] not in spec.resolutions:
        raise BadInput(f"invalid {flag} resolution={out['resolution']} for gemini {model}: choose one of "
                       f"{', '.join(spec.resolutions)}")
    if "image_size" in out and out["image_size"] not in spec.image_sizes:
        raise BadInput(f"invalid {flag} image_size={out['image_size']} for gemini {model}: choose one of "
                       f"{', '.join(spec.image_sizes)}")
    return out


def plan_request(spec: ModelSpec, width: int, height: int, duration: float | None, opts: dict) -> dict:
    """What is sent for an asked size (and duration): aspect ratio, resolution or image size, with notes."""
    notes: list[str] = []
    ratio = closest_ratio(width, height, spec.aspect_ratios)
    plan: dict = {"aspect_ratio": ratio, "notes": notes}
    if spec.kind == "image":
        size = opts.get("image_size") or image_size_for(width, height, spec.image_sizes)
        plan["image_size"] = size
        a, b = (int(x) for x in ratio.split(":"))
        if abs(math.log((a / b) / (width / height))) > 0.01:
            notes.append(f"makes images by aspect ratio: {ratio} at {size} is the closest to the asked "
                         f"{width}x{height}")
        return plan
    seconds = closest_duration(duration, spec.durations)
    plan["duration"] = seconds
    if duration is not None and abs(seconds - duration) > 1e-6:
        allowed = (f"{spec.durations[0]}-{spec.durations[-1]} s" if len(spec.durations) > 3
                   else ", ".join(str(d) for d in spec.durations) + " s")
        notes.append(f"makes {allowed} videos: {seconds} s is the closest to the asked {duration:g} s")
    short = min(width, height)
    wanted = opts.get("resolution") or ("720p" if short <= 720 else "1080p" if short <= 1080 else "4k")
    if wanted not in spec.resolutions:
        wanted = spec.resolutions[-1]
    if wanted != "720p" and seconds != 8 and spec.api == "veo":
        if opts.get("resolution"):
            raise BadInput(f"--video-option resolution={wanted} needs 8 s videos on Veo (asked {seconds} s): "
                           "use --duration 8, or resolution=720p")
        notes.append(f"makes {wanted} only for 8 s videos: 720p is sent for {seconds} s")
        wanted = "720p"
    plan["resolution"] = wanted
    w, h = video_pixels(ratio, wanted)
    if (w, h) != (width, height):
        notes.append(f"makes videos of fixed sizes: {w}x{h} ({ratio}, {wanted}) is the closest to the asked "
                     f"{width}x{height}")
    return plan


# --------------------------------------------------------------------------- answers
def _is_paid(method: str, path: str) -> bool:
    """Whether a request makes (and may bill) an asset: its answer is then never re-asked."""
    return method.upper() == "POST" and (
        bool(re.search(r":(predict|predictLongRunning|generateContent)$", path)) or path.rstrip("/").endswith(
            "/interactions"))


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    name = getattr(value, "name", None) or getattr(value, "value", None) or str(value)
    return str(name).rsplit(".", 1)[-1].upper() if name not in ("", "None") else ""


def _as_bytes(data: Any, provider: str, *, paid: bool = True) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        if paid:
            raise http.sent_but_lost(provider, "the media in the answer is not valid base64",
                                     code="bad_answer") from None
        raise ProviderError(f"{provider}: the media in the answer is not valid base64", provider=provider,
                            retryable=True, provider_code="bad_answer") from None


def _videos(op) -> list:
    resp = getattr(op, "response", None) or getattr(op, "result", None)
    return [v for v in (getattr(resp, "generated_videos", None) or []) if getattr(v, "video", None) is not None]


def _rai(op) -> list[str]:
    resp = getattr(op, "response", None) or getattr(op, "result", None)
    reasons = [str(r) for r in (getattr(resp, "rai_media_filtered_reasons", None) or []) if r]
    count = getattr(resp, "rai_media_filtered_count", None) or 0
    if count and not reasons:
        reasons = [f"{count} video(s) filtered by Responsible AI checks (no reason given)"]
    return reasons


def _op_error_text(error: Any) -> str:
    if isinstance(error, dict):
        msg = error.get("message") or ""
        code = error.get("code")
        return f"{msg} (code {code})" if code is not None else str(msg or error)
    return str(error)


def _op_error_code(error: Any) -> str:
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") is not None else "error"


def _omni_final(it) -> bool:
    return str(getattr(it, "status", "") or "") not in _RUNNING_OMNI


def _omni_refusal(it) -> bool:
    for e in getattr(it, "errors", None) or []:
        if _SAFETY_WORDS.search(f"{getattr(e, 'code', '') or ''} {getattr(e, 'message', '') or ''}"):
            return True
    return False


def _rpc_details(details: Any) -> list:
    if isinstance(details, dict):
        err = details.get("error") if isinstance(details.get("error"), dict) else details
        found = err.get("details")
        return found if isinstance(found, list) else []
    return []


def _retry_delay(details: Any) -> float | None:
    """The wait a `google.rpc.RetryInfo` asks for ("37s", "1.5s"), if any."""
    for d in _rpc_details(details):
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)s\s*", str(d.get("retryDelay") or ""))
            if m:
                return float(m.group(1))
    return None


def _is_quota(text: str, details: Any) -> bool:
    """RESOURCE_EXHAUSTED covers a rate limit (wait and retry) and a spent quota (do not): tell them apart."""
    failures = [d for d in _rpc_details(details)
                if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.QuotaFailure")]
    if failures:
        for d in failures:
            for v in d.get("violations") or []:
                if not isinstance(v, dict):
                    continue
                if "perday" in str(v.get("quotaId") or "").lower() or str(v.get("quotaValue") or "") == "0":
                    return True
        return False
    return bool(_QUOTA_WORDS.search(text or ""))


__all__ = ["GeminiProvider", "MODELS", "Mode", "plan_request", "resolve_mode", "spec_for", "validate_options"]
