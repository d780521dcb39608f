"""`runway`: videos and images through Runway's API with the official `runwayml` SDK.

* Videos: `text_to_video` (default model gen4.5; veo3.1 and veo3.1_fast too), or
  `image_to_video` from this request's own images (`--video-from-images`), sent
  as a data URI (Runway takes up to 5 MB that way; bigger images are re-encoded
  as JPEG, shrinking until they fit).
* Images: `text_to_image` (gen4_image).

Every call is a Runway *task*: the create call returns an id, which is saved on
the asset at once; the task is then polled (aigen.providers.jobs) until it
succeeds, fails or is cancelled, and its output URL is downloaded with the
shared, checked download. A resumed run polls the saved task instead of paying
for a new one.

The SDK's own retries are switched off (max_retries=0) so that every provider
retries the same bounded way (aigen.providers.http.with_retries), and the SDK's
`wait_for_task_output` is not used: the sync version never treats CANCELLED as
final, and it cannot notice a stop request.

Runway only makes a fixed set of sizes ("ratios", which are pixel sizes) and
durations per model; the asked size and duration are mapped to the closest
allowed ones, and `check_request` says so before anything is written.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigen.errors import BadInput, MediaCheckError, MissingKey, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter
from aigen.providers.jobs import PollPolicy, poll_job

log = logging.getLogger("aigen.providers.runway")

KEY_VAR = "RUNWAYML_API_SECRET"
BASE_URL_VAR = "RUNWAYML_BASE_URL"
DEFAULT_BASE_URL = "https://api.dev.runwayml.com"  # the SDK's own default

# One Runway credit is $0.01 (Runway developer portal pricing).
USD_PER_CREDIT = 0.01
PROMPT_MAX_UTF16 = 1000
# "base64 data URI ... up to 5MB": counted on the URI itself, the safe reading.
DATA_URI_MAX = 5 * 1000 * 1000
MAX_VIDEO_BYTES = 512 * 1024 * 1024
MAX_IMAGE_BYTES = 64 * 1024 * 1024
SEED_MAX = 4294967295

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# Signed output URLs expire after 24-48 h; these statuses then mean "ask for a fresh URL".
EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})

_QUOTA_WORDS = re.compile(r"credit|insufficient funds|billing|quota", re.I)
_DAILY_LIMIT_WORDS = re.compile(r"daily|per day|today", re.I)


@dataclass(frozen=True)
class VideoModel:
    text_ratios: tuple[str, ...]  # empty: no text_to_video for this model
    image_ratios: tuple[str, ...]  # empty: no image_to_video for this model
    durations: tuple[int, ...]


_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_GEN4_I2V_RATIOS = ("1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672")

# From the typed overloads of runwayml 5.24 (text_to_video / image_to_video create params).
VIDEO_MODELS: dict[str, VideoModel] = {
    "gen4.5": VideoModel(("1280:720", "720:1280"), _GEN4_I2V_RATIOS, tuple(range(2, 11))),
    "veo3.1": VideoModel(_VEO_RATIOS, _VEO_RATIOS, (4, 6, 8)),
    "veo3.1_fast": VideoModel(_VEO_RATIOS, _VEO_RATIOS, (4, 6, 8)),
    "gen4_turbo": VideoModel((), _GEN4_I2V_RATIOS, tuple(range(2, 11))),
}

IMAGE_MODELS: dict[str, tuple[str, ...]] = {
    "gen4_image": (
        "1024:1024", "1080:1080", "1168:880", "1360:768", "1440:1080", "1080:1440", "1808:768", "1920:1080",
        "1080:1920", "2112:912", "1280:720", "720:1280", "720:720", "960:720", "720:960", "1680:720",
    ),
}


# --------------------------------------------------------------------------- sizes and durations
def _ratio_size(ratio: str) -> tuple[int, int]:
    w, h = ratio.split(":")
    return int(w), int(h)


def closest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    """The allowed size whose shape is closest to width x height, then whose area is."""

    def distance(r: str) -> tuple[float, float]:
        w, h = _ratio_size(r)
        return (round(abs(math.log((w / h) / (width / height))), 6), abs(math.log((w * h) / (width * height))))

    return min(ratios, key=distance)


def closest_duration(seconds: float | None, allowed: tuple[int, ...]) -> int:
    seconds = 4.0 if seconds is None else float(seconds)
    # Ties go to the longer clip: a little more footage beats a cut-short one.
    return min(allowed, key=lambda d: (abs(d - seconds), -d))


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- the provider
class RunwayProvider(Provider):
    name = "runway"
    kinds = frozenset({"image", "video"})
    description = (
        "Runway API (runwayml SDK): videos by text_to_video (gen4.5, veo3.1, veo3.1_fast) or "
        "image_to_video from this request's images; images by text_to_image (gen4_image)"
    )
    key_env = ((KEY_VAR,),)
    base_url_env = BASE_URL_VAR
    default_base_url = DEFAULT_BASE_URL
    default_models = {"video": "gen4.5", "image": "gen4_image"}
    # Tasks run on Runway's side; a thread here mostly sleeps between polls. Runway
    # queues tasks over the account's concurrency as THROTTLED, so creating all of
    # a request's tasks at once gets them scheduled as early as the tier allows.
    concurrency = 5
    supports_video_from_images = True

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._client_obj = None
        self._client_key: str | None = None
        import threading

        self._client_lock = threading.Lock()

    # -- checks before anything is written ------------------------------------
    def model_for(self, kind: str, requested: str | None) -> str | None:
        model = super().model_for(kind, requested)
        known = VIDEO_MODELS if kind == "video" else IMAGE_MODELS
        if model not in known:
            raise BadInput(
                f"unknown runway {kind} model {model!r}: choose one of {', '.join(known)}",
                hint="aigen maps sizes and durations to what each model allows, so only these are accepted",
            )
        return model

    def check_request(
        self,
        kind: str,
        *,
        prompt: str,
        model: str | None,
        width: int,
        height: int,
        duration: float | None = None,
        options: dict | None = None,
    ) -> list[str]:
        """Raise BadInput for what Runway would refuse; return notes on what will differ from the ask."""
        options = options or {}
        model = self.model_for(kind, model)
        if utf16_len(prompt) > PROMPT_MAX_UTF16:
            raise BadInput(
                f"prompt too long for runway: {utf16_len(prompt)} UTF-16 units, the limit is {PROMPT_MAX_UTF16}",
                hint="shorten the prompt or use another provider",
            )
        notes = []
        if kind == "image":
            ratio = closest_ratio(width, height, IMAGE_MODELS[model])
            if _ratio_size(ratio) != (width, height):
                notes.append(
                    f"runway {model} makes images of fixed sizes: {ratio.replace(':', 'x')} is the closest "
                    f"to the asked {width}x{height}"
                )
            return notes
        spec = VIDEO_MODELS[model]
        from_images = bool(options.get("video_from_images"))
        ratios = spec.image_ratios if from_images else spec.text_ratios
        if not ratios:
            other = [m for m, s in VIDEO_MODELS.items() if (s.image_ratios if from_images else s.text_ratios)]
            how = "from images" if from_images else "from text"
            raise BadInput(
                f"runway model {model!r} cannot make videos {how}: choose one of {', '.join(other)}",
                hint=None if from_images else "or add --video-from-images to animate this request's images",
            )
        ratio = closest_ratio(width, height, ratios)
        if _ratio_size(ratio) != (width, height):
            notes.append(
                f"runway {model} makes videos of fixed sizes: {ratio.replace(':', 'x')} is the closest "
                f"to the asked {width}x{height}"
            )
        seconds = closest_duration(duration, spec.durations)
        if duration is not None and abs(seconds - duration) > 1e-6:
            allowed = f"{spec.durations[0]}-{spec.durations[-1]} s" if len(spec.durations) > 3 else (
                ", ".join(str(d) for d in spec.durations) + " s")
            notes.append(f"runway {model} makes {allowed} videos: {seconds} s is the closest to the asked {duration:g} s")
        return notes

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        """What --dry-run shows as the output size (text-to-video ratios; notes cover the rest)."""
        model = model or self.default_models[kind]
        if kind == "image":
            ratios = IMAGE_MODELS.get(model, ())
        else:
            spec = VIDEO_MODELS.get(model)
            ratios = (spec.text_ratios or spec.image_ratios) if spec else ()
        if not ratios:
            return f"{width}x{height}"
        return closest_ratio(width, height, ratios).replace(":", "x")

    # -- the SDK client -------------------------------------------------------
    def _timeout(self):
        import httpx

        from aigen.providers.http import timeout_from_env

        connect, read = timeout_from_env(self.env, 60.0)
        # The write timeout matters too: a create call may carry a 5 MB data URI.
        return httpx.Timeout(read, connect=connect)

    def _client(self):
        key = self.lookup_key(KEY_VAR)
        if not key:
            raise MissingKey(
                f"provider 'runway' needs {KEY_VAR}, which is not set",
                hint=f"export {KEY_VAR}=... or run `aigen keys set runway`",
            )
        with self._client_lock:
            if self._client_obj is None or self._client_key != key:
                from runwayml import RunwayML

                self._client_obj = RunwayML(
                    api_key=key,
                    base_url=self.env.get(BASE_URL_VAR) or DEFAULT_BASE_URL,
                    max_retries=0,
                    timeout=self._timeout(),
                )
                self._client_key = key
            return self._client_obj

    def _policy(self):
        from aigen.providers.http import RetryPolicy

        return RetryPolicy.from_env(self.env)

    def _secrets(self) -> list[str]:
        return [self._client_key or self.lookup_key(KEY_VAR) or ""]

    def _classify(self, exc: BaseException, *, idempotent: bool, what: str) -> ProviderError | None:
        """A runwayml/httpx exception as a ProviderError saying whether another try is safe."""
        import httpx
        import runwayml

        from aigen.providers.http import body_message, error_for_status, scrub, sent_but_lost

        secrets = self._secrets()
        if isinstance(exc, runwayml.APIStatusError):
            status, body = exc.status_code, exc.body
            detail = scrub(body_message(body), secrets)
            if status == 400 and _QUOTA_WORDS.search(detail):
                return QuotaExceeded(
                    f"runway: out of credits: {detail}", provider=self.name, status=status, provider_code="quota",
                    hint="add credits in the Runway developer portal; retrying will not help until then",
                )
            if status == 429 and _DAILY_LIMIT_WORDS.search(detail):
                return QuotaExceeded(
                    f"runway: daily generation limit of your usage tier reached: {detail}", provider=self.name,
                    status=status, provider_code="daily_limit",
                    hint="wait for the limit to reset, or move to a higher usage tier",
                )
            return error_for_status(
                self.name, status, exc.response.headers, body, key_var=KEY_VAR, secrets=secrets, what=what,
            )
        portal = ("the task may have been created anyway; check the Runway developer portal before `aigen retry "
                  "ID` makes a new one")
        if isinstance(exc, runwayml.APITimeoutError):
            never_sent = isinstance(exc.__cause__, httpx.ConnectTimeout)
            if not (idempotent or never_sent):
                # The one wording every provider uses for a paid call whose answer was lost.
                return sent_but_lost(self.name, f"no answer within the timeout ({what})", code="timeout",
                                     timeout=True, hint=portal)
            return ProviderTimeout(
                f"runway: no answer within the timeout ({what})", provider=self.name,
                retryable=True, provider_code="timeout",
            )
        if isinstance(exc, runwayml.APIConnectionError):
            never_sent = isinstance(exc.__cause__, httpx.ConnectError)
            if not (idempotent or never_sent):
                return sent_but_lost(
                    self.name, f"the connection broke after the request was sent ({what}): "
                               f"{scrub(str(exc.__cause__ or exc), secrets)}", code="connection_lost", hint=portal)
            return ProviderError(
                f"runway: connection failed ({what}): {scrub(str(exc.__cause__ or exc), secrets)}",
                provider=self.name, retryable=idempotent or never_sent, provider_code="connection",
            )
        if isinstance(exc, runwayml.APIResponseValidationError):
            return ProviderError(f"runway: unexpected answer ({what})", provider=self.name,
                                 provider_code="bad_response")
        return None

    def _call(self, fn, *, idempotent: bool, what: str):
        from aigen.providers.http import with_retries

        return with_retries(
            fn, policy=self._policy(), provider=self.name, what=what,
            classify=lambda e: self._classify(e, idempotent=idempotent, what=what),
            on_retry=lambda n, err, delay: log.warning(
                "runway %s failed (%s); try %d again in %.1f s", what, err.message, n + 1, delay),
        )

    def _retrieve(self, task_id: str):
        client = self._client()
        return self._call(lambda: client.tasks.retrieve(task_id), idempotent=True, what=f"task {task_id}")

    def _poll_once(self, task_id: str):
        """One GET of the task: the polling loop is the retry loop here, spacing tries by its interval."""
        client = self._client()
        try:
            return client.tasks.retrieve(task_id)
        except Exception as exc:  # noqa: BLE001 - classified, or re-raised when unknown
            err = self._classify(exc, idempotent=True, what=f"task {task_id}")
            if err is None:
                raise
            raise err from exc

    # -- generate ---------------------------------------------------------------
    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        model = self.model_for(req.kind, req.model)
        task = None
        if req.provider_job_id:
            task = self._resume(req.provider_job_id,
                                resubmit_refused=bool(req.options.get("resubmit_refused")))
        if task is None:
            task_id = self._create(req, model)
            reporter.save_job_id(task_id)
            reporter.progress(0.02)
            task = self._wait(task_id, reporter, first_wait=True)
        elif task.status not in FINAL_STATES:
            task = self._wait(task.id, reporter, first_wait=True)
        self._raise_if_failed(task)
        return self._deliver(task, req, model, dest, reporter)

    def _resume(self, task_id: str, *, resubmit_refused: bool = False):
        """The saved task, to be polled; None when a new task must be created.

        A task refused by moderation (any SAFETY.* code, input or output) is
        reported again, never resubmitted, unless `resubmit_refused` (`aigen
        retry --include-refused`): Runway's task-failures page says not to retry
        these, and repeated moderation hits can get the account suspended.
        """
        try:
            task = self._retrieve(task_id)
        except ProviderError as e:
            if e.status == 404:
                log.warning("runway task %s is unknown to Runway (deleted?); creating a new one", task_id)
                return None
            raise
        if task.status == "FAILED":
            code = getattr(task, "failure_code", None) or ""
            if code.startswith("SAFETY") and not resubmit_refused:
                self._raise_if_failed(task)
            log.warning("runway task %s had failed (%s); creating a new one", task_id, code or "no code")
            return None
        if task.status == "CANCELLED":
            log.warning("runway task %s was cancelled; creating a new one", task_id)
            return None
        return task

    def _create(self, req: AssetRequest, model: str) -> str:
        client = self._client()
        seed = req.seed % (SEED_MAX + 1)
        if req.kind == "image":
            ratio = closest_ratio(req.width, req.height, IMAGE_MODELS[model])
            kwargs: dict[str, Any] = dict(model=model, prompt_text=req.prompt, ratio=ratio, seed=seed)
            fn = client.text_to_image.create
        else:
            spec = VIDEO_MODELS[model]
            duration = closest_duration(req.duration, spec.durations)
            source = req.options.get("source_image")
            if req.options.get("video_from_images"):
                if not source:
                    raise ProviderError(
                        f"video {req.index} was to be made from an image, but no source image was given",
                        provider=self.name, provider_code="source_image_missing",
                    )
                ratio = closest_ratio(req.width, req.height, spec.image_ratios)
                kwargs = dict(model=model, prompt_image=image_data_uri(Path(source)), prompt_text=req.prompt,
                              ratio=ratio, duration=duration, seed=seed)
                fn = client.image_to_video.create
            else:
                if not spec.text_ratios:
                    raise ProviderError(f"runway model {model} cannot make videos from text",
                                        provider=self.name, provider_code="model_unsupported")
                ratio = closest_ratio(req.width, req.height, spec.text_ratios)
                kwargs = dict(model=model, prompt_text=req.prompt, ratio=ratio, duration=duration, seed=seed)
                fn = client.text_to_video.create
        # Not idempotent: a timeout after sending may have created (and billed) a task,
        # so only errors that prove nothing was created are retried.
        created = self._call(lambda: fn(**kwargs), idempotent=False, what=f"create {req.kind} task")
        task_id = getattr(created, "id", None)
        if not task_id:
            raise ProviderError("runway: the create call returned no task id", provider=self.name,
                                provider_code="bad_response")
        log.info("runway task %s created for %s %d (%s)", task_id, req.kind, req.index, model)
        return task_id

    def _wait(self, task_id: str, reporter: Reporter, *, first_wait: bool):
        policy = PollPolicy.from_env(self.env, interval=5.0, max_interval=15.0, timeout=15 * 60.0)

        def update(task) -> None:
            if task.status == "RUNNING":
                progress = getattr(task, "progress", None) or 0.0
                reporter.progress(0.05 + 0.85 * max(0.0, min(1.0, float(progress))))

        return poll_job(
            lambda: self._poll_once(task_id),
            lambda task: task.status in FINAL_STATES,
            policy=policy, reporter=reporter, provider=self.name, what=f"runway task {task_id}",
            on_update=update, first_wait=first_wait,
        )

    def _raise_if_failed(self, task) -> None:
        if task.status == "FAILED":
            failure = getattr(task, "failure", None) or "no reason given"
            code = getattr(task, "failure_code", None) or "FAILED"
            if code.startswith("SAFETY"):
                raise Refused(self.name, f"{failure} ({code})", provider_code=code)
            if code.startswith("INTERNAL.BAD_OUTPUT"):
                raise ProviderError(
                    f"runway task {task.id} failed: {failure} ({code}); Runway rejected its own output, so "
                    "`aigen retry` (which submits a new task) is likely to work",
                    provider=self.name, provider_code=code, retryable=True,
                )
            raise ProviderError(f"runway task {task.id} failed: {failure} ({code})", provider=self.name,
                                provider_code=code)
        if task.status == "CANCELLED":
            raise ProviderError(
                f"runway task {task.id} was cancelled (deleted at Runway before it finished)",
                provider=self.name, provider_code="CANCELLED",
                hint="`aigen retry` submits a new task",
            )

    def _deliver(self, task, req: AssetRequest, model: str, dest: Path, reporter: Reporter) -> AssetOutput:
        from aigen.providers.http import download, timeout_from_env

        video = req.kind == "video"
        for attempt in (1, 2):
            urls = list(getattr(task, "output", None) or [])
            if not urls:
                raise ProviderError(f"runway task {task.id} succeeded without an output URL",
                                    provider=self.name, provider_code="no_output")
            try:
                got = download(
                    urls[0], dest,
                    timeout=timeout_from_env(self.env, 60.0),
                    max_bytes=MAX_VIDEO_BYTES if video else MAX_IMAGE_BYTES,
                    allowed_types=("video/mp4",) if video else ("image/png", "image/jpeg", "image/webp"),
                    expect_kind="mp4" if video else "image",
                    provider=self.name,
                    deadline=900.0,
                    env=self.env,
                    policy=self._policy(),
                    secrets=self._secrets(),
                    progress=lambda got, total: reporter.progress(0.9 + 0.1 * (got / total if total else 0.5)),
                )
                break
            except ProviderError as e:
                if attempt == 1 and e.status in EXPIRED_URL_STATUSES:
                    # Signed URLs expire (24-48 h): the task itself hands out fresh ones.
                    log.info("runway output URL of task %s refused (HTTP %s); fetching fresh URLs", task.id, e.status)
                    task = self._retrieve(task.id)
                    if task.status != "SUCCEEDED":
                        raise ProviderError(
                            f"runway task {task.id} is {task.status} when its output was fetched again",
                            provider=self.name, provider_code=task.status,
                        ) from e
                    continue
                raise
        fmt = got.format
        if not video and fmt == "webp":
            to_png(dest)
            fmt = "png"
        if not video and fmt not in ("png", "jpeg"):
            raise MediaCheckError(f"runway image is {fmt}, not PNG or JPEG")
        # runwayml >= 5 types `cost`; older SDKs (the 3.13 floor) keep the unknown field as a plain dict.
        cost = getattr(task, "cost", None)
        credits = cost.get("credits") if isinstance(cost, dict) else getattr(cost, "credits", None)
        return AssetOutput(
            format=fmt,
            model=model,
            cost=round(credits * USD_PER_CREDIT, 4) if credits is not None else None,
        )


# --------------------------------------------------------------------------- images in and out
def image_data_uri(path: Path, *, limit: int = DATA_URI_MAX) -> str:
    """The image as a data URI within `limit` characters, re-encoding as JPEG when needed."""
    from aigen.providers.http import sniff

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProviderError(f"cannot read the source image {path.name}: {e.strerror}", provider="runway",
                            provider_code="source_image_missing") from e
    mime = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}.get(sniff(raw[:32]) or "")
    if mime is None:
        raise MediaCheckError(f"source image {path.name} is not a PNG, JPEG or WebP file")
    uri = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    if len(uri) <= limit:
        return uri
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        im = im.convert("RGB")
        scale = 1.0
        while scale > 0.05:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            frame = im if scale == 1.0 else im.resize(size, Image.LANCZOS)
            for quality in (92, 85, 75):
                buf = io.BytesIO()
                frame.save(buf, format="JPEG", quality=quality, optimize=True)
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                if len(uri) <= limit:
                    log.info("source image %s re-encoded as JPEG %dx%d q%d to fit Runway's %d-byte data URI limit",
                             path.name, size[0], size[1], quality, limit)
                    return uri
            scale *= 0.75
    raise MediaCheckError(f"source image {path.name} cannot be made small enough for Runway ({limit} bytes)")


def to_png(path: Path) -> None:
    """Re-encode an image file in place as PNG (Runway may answer WebP; aigen keeps PNG/JPEG)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        converted = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    converted.save(path, format="PNG")
