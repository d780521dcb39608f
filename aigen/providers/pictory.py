"""`pictory`: videos from a text story through Pictory's API (plain `requests`).

Flow (v2, 2025-26): POST /v2/video/storyboard/render with the whole storyboard
(the prompt is the story of one scene), which answers a job id at once; the
id is saved on the asset; GET /v1/jobs/{id} is polled until `completed`
(`data.videoURL`) or `failed` (`data.error_code`, `data.error_message`); the mp4
is downloaded with the shared, checked download.

Auth, either:
* PICTORY_API_KEY (`pictai_...`), sent raw in `Authorization` (no "Bearer"), or
* PICTORY_CLIENT_ID + PICTORY_CLIENT_SECRET (+ PICTORY_USER_ID): the older OAuth
  flow, POST /v1/oauth2/token -> access_token (kept until shortly before
  `expires_in`), sent raw in `Authorization` with `X-Pictory-User-Id`.

Every render carries a `voiceOver` block: Pictory makes a *silent* video
without one (it has no implicit narrator). The default narrator is `Martin`,
Pictory's documented default English voice; `--voice NAME` picks another
(a name, numeric id or provider voice id from GET /v1/voiceovers/tracks) and
`--voice none` sends `{"enabled": false}` for a deliberately silent video.

Pictory sits behind Cloudflare, which rejects library User-Agents (error 1010),
so the session sends a browser-like one. Pictory picks stock visuals and
timing itself: it takes no seed, no exact size (only an aspect ratio) and no
exact duration, so its videos are never "exact size" and the notes say so.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from aigen.errors import BadInput, MissingKey, ProviderError, QuotaExceeded, Refused
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter
from aigen.providers.jobs import PollPolicy, poll_job

log = logging.getLogger("aigen.providers.pictory")

DEFAULT_BASE_URL = "https://api.pictory.ai/pictoryapis"
BASE_URL_VAR = "PICTORY_BASE_URL"
KEY_VAR = "PICTORY_API_KEY"
CLIENT_ID_VAR = "PICTORY_CLIENT_ID"
CLIENT_SECRET_VAR = "PICTORY_CLIENT_SECRET"
USER_ID_VAR = "PICTORY_USER_ID"

MAX_VIDEO_BYTES = 1024 * 1024 * 1024
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0, "4:5": 4 / 5}
EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})
# Pictory documents in-progress, completed and failed; a cancelled job (from its
# web app) is treated as final too rather than polled until the deadline.
CANCELLED_STATES = frozenset({"cancelled", "canceled"})
FINAL_STATES = frozenset({"completed", "failed"}) | CANCELLED_STATES
# The narrator (PROVIDERS.md §5): Pictory's documented default voice for English.
DEFAULT_VOICE = "Martin"
NO_VOICE = "none"
VOICE_SPEED = 100  # Pictory's default, 50-200
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}")
# A failed job whose message says the speaker is unknown (Pictory: "The AI voice speaker [X] is invalid").
_BAD_VOICE = re.compile(r"voice.{0,20}speaker|speaker.{0,40}invalid|invalid.{0,20}(voice|speaker)", re.I)
# Refresh an OAuth token this long before Pictory says it expires.
TOKEN_MARGIN_S = 120.0
#: Seconds an API answer (JSON) may take to arrive whole, once its headers came (AIGEN_DOWNLOAD_DEADLINE overrides).
ANSWER_DEADLINE = 120.0

# Pictory documents no moderation code; these words in a failed job's code or
# message are read as a refusal (never retried) rather than a plain failure.
_REFUSAL_WORDS = re.compile(r"moderat|content.?polic|inappropriate|profan|unsafe|safety|nsfw", re.I)
_QUOTA_WORDS = re.compile(r"credit|quota|insufficient.?(balance|fund)|subscription|plan.?limit", re.I)


def validate_voice(value: str | None) -> str | None:
    """The --voice value as sent (None: the default voice; "none": silent), or BadInput."""
    if value is None:
        return None
    v = value.strip()
    if v.lower() == NO_VOICE:
        return NO_VOICE
    if not _VOICE_NAME.fullmatch(v):
        raise BadInput(
            f"invalid --voice {value!r}: give a Pictory voice name or id (1-64 letters, digits, spaces or . _ ( ) -, "
            "starting with a letter or digit), or 'none' for a silent video",
            hint=f"Pictory's default English voice is {DEFAULT_VOICE!r}; others include Joanna and Brian",
        )
    return v


def voice_over(voice: str | None) -> dict:
    """The storyboard's `voiceOver` block for a --voice value (already validated)."""
    if voice == NO_VOICE:
        return {"enabled": False}
    return {"enabled": True,
            "aiVoices": [{"speaker": voice or DEFAULT_VOICE, "speed": VOICE_SPEED, "amplificationLevel": 0}]}


def aspect_ratio_for(width: int, height: int) -> str:
    import math

    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(ASPECT_RATIOS[r] / (width / height))))


class PictoryVideos(Provider):
    name = "pictory"
    kinds = frozenset({"video"})
    description = "Pictory API (requests): story-to-video render with stock visuals; no seed, aspect ratio only"
    key_env = ((KEY_VAR, CLIENT_ID_VAR),)
    base_url_env = BASE_URL_VAR
    default_base_url = DEFAULT_BASE_URL
    default_models = {"video": "storyboard-v2"}
    concurrency = 3
    supports_voice = True

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._lock = threading.Lock()
        # requests.Session is not documented as thread-safe: one per worker thread.
        self._sessions = threading.local()
        self._token: str | None = None
        self._token_expires = 0.0

    # -- keys -------------------------------------------------------------------
    def missing_keys(self) -> list[str]:
        missing = super().missing_keys()
        if missing or self.lookup_key(KEY_VAR):
            return missing
        # The OAuth flow: a client id is useless without its secret and user id.
        return [v for v in (CLIENT_SECRET_VAR, USER_ID_VAR) if not self.lookup_key(v)]

    def model_for(self, kind: str, requested: str | None) -> str | None:
        model = super().model_for(kind, requested)
        if model != self.default_models.get(kind):
            raise BadInput(
                f"unknown pictory video model {model!r}: Pictory has one render flow, {self.default_models['video']!r}"
            )
        return model

    def check_request(self, kind: str, *, prompt: str, model: str | None, width: int, height: int,
                      duration: float | None = None, options: dict | None = None) -> list[str]:
        self.model_for(kind, model)
        if (options or {}).get("video_from_images"):
            raise BadInput("pictory cannot make videos from this request's images: use --video-provider runway")
        ratio = aspect_ratio_for(width, height)
        voice = validate_voice((options or {}).get("voice"))
        if voice == NO_VOICE:
            narration = "silent: no voice-over (--voice none)"
        else:
            narration = (f"narrated by the voice {voice or DEFAULT_VOICE!r}"
                         + ("" if voice else " (the default; choose with --voice NAME, or --voice none)"))
        return [
            f"pictory renders at aspect ratio {ratio} (for the asked {width}x{height}); the pixel size, the "
            "length (set by the story and its voice-over) and the visuals are Pictory's choice, and it takes "
            "no seed, so videos of one request may look alike",
            f"pictory videos are {narration}",
        ]

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        return f"aspect {aspect_ratio_for(width, height)}, size and length chosen by Pictory"

    # -- HTTP -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return (self.env.get(BASE_URL_VAR) or DEFAULT_BASE_URL).rstrip("/")

    def _timeout(self) -> tuple[float, float]:
        from aigen.providers.http import timeout_from_env

        return timeout_from_env(self.env, 60.0)

    def _http(self):
        from aigen.providers.http import make_session

        session = getattr(self._sessions, "session", None)
        if session is None:
            session = make_session(timeout=self._timeout(), browser_like=True, headers={"Accept": "application/json"})
            self._sessions.session = session
        return session

    def _secrets(self) -> list[str]:
        return [self.lookup_key(v) or "" for v in (KEY_VAR, CLIENT_SECRET_VAR)] + [self._token or ""]

    def _policy(self):
        from aigen.providers.http import RetryPolicy

        return RetryPolicy.from_env(self.env)

    def _auth_headers(self) -> dict[str, str]:
        key = self.lookup_key(KEY_VAR)
        if key:
            return {"Authorization": key}
        missing = self.missing_keys()
        if missing:
            raise MissingKey(f"provider 'pictory' needs {missing[0]}, which is not set",
                             hint=f"export {missing[0].split(' or ')[0]}=... or run `aigen keys set pictory`")
        return {"Authorization": self._access_token(), "X-Pictory-User-Id": self.lookup_key(USER_ID_VAR) or ""}

    def _access_token(self, *, renew: bool = False) -> str:
        with self._lock:
            if not renew and self._token and time.monotonic() < self._token_expires:
                return self._token
        body = self._request(
            "POST", "/v1/oauth2/token", what="token request", idempotent=True, auth=False,
            json={"client_id": self.lookup_key(CLIENT_ID_VAR), "client_secret": self.lookup_key(CLIENT_SECRET_VAR)},
            key_var=f"{CLIENT_ID_VAR} / {CLIENT_SECRET_VAR}",
        )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ProviderError("pictory: the token answer has no access_token", provider=self.name,
                                provider_code="bad_response")
        try:
            lifetime = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        with self._lock:
            self._token = token
            self._token_expires = time.monotonic() + lifetime - min(TOKEN_MARGIN_S, lifetime * 0.1)
        return token

    def _request(self, method: str, path: str, *, what: str, idempotent: bool, auth: bool = True,
                 key_var: str | None = None, json: Any = None, retries: bool = True) -> Any:
        """One API call, with the shared retries unless `retries` is False; returns the JSON body."""
        from aigen.providers.http import (BodyLimits, error_from_requests, raise_for_response, read_answer,
                                          response_body, with_retries)

        session = self._http()
        url = self.base_url + path
        renewed = False
        limits = BodyLimits.from_env(self.env, ANSWER_DEADLINE)

        def send(headers):
            # Streamed, then read within the deadline and minimum rate: a trickling answer cannot hold a worker.
            resp = session.request(method, url, json=json, headers=headers, stream=True)
            read_answer(resp, limits=limits, provider=self.name, idempotent=idempotent, what=what)
            return resp

        def once():
            nonlocal renewed
            headers = self._auth_headers() if auth else {}
            resp = send(headers)
            if resp.status_code == 401 and auth and not renewed and not self.lookup_key(KEY_VAR):
                # An OAuth token can expire early (revoked, clock skew): renew it once.
                renewed = True
                self._access_token(renew=True)
                resp = send(self._auth_headers())
            self._refine_error(resp)
            names = key_var or (KEY_VAR if self.lookup_key(KEY_VAR) else f"{CLIENT_ID_VAR} / {CLIENT_SECRET_VAR}")
            raise_for_response(resp, provider=self.name, key_var=names, secrets=self._secrets(), what=what)
            return response_body(resp)

        def classify(e):
            return error_from_requests(e, provider=self.name, idempotent=idempotent, secrets=self._secrets())

        if not retries:
            try:
                return once()
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified, or re-raised when unknown
                err = classify(exc)
                if err is None:
                    raise
                raise err from exc
        return with_retries(
            once, policy=self._policy(), provider=self.name, what=what, classify=classify,
            on_retry=lambda n, err, delay: log.warning(
                "pictory %s failed (%s); try %d again in %.1f s", what, err.message, n + 1, delay),
        )

    def _refine_error(self, resp) -> None:
        """Pictory's own shapes for quota answers, before the generic status mapping."""
        from aigen.providers.http import body_message, response_body, scrub

        if 400 <= resp.status_code < 500 and resp.status_code not in (401, 429):
            detail = scrub(body_message(response_body(resp)), self._secrets())
            if resp.status_code == 403 and "1010" in detail:
                raise ProviderError(
                    "pictory: the request was blocked by Cloudflare in front of Pictory (error 1010: it refused "
                    "this client's signature)", provider=self.name, status=403, provider_code="blocked",
                    hint="a proxy or firewall rewriting the User-Agent can cause this",
                )
            if _QUOTA_WORDS.search(detail):
                raise QuotaExceeded(
                    f"pictory: out of credits or plan limit reached (HTTP {resp.status_code}): {detail}",
                    provider=self.name, status=resp.status_code, provider_code="quota",
                    hint="add credits or upgrade the Pictory plan; retrying will not help until then",
                )

    # -- generate ---------------------------------------------------------------
    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        self.model_for(req.kind, req.model)
        job = self._resume(req.provider_job_id) if req.provider_job_id else None
        if job is None:
            job_id = self._create(req)
            reporter.save_job_id(job_id)
            reporter.progress(0.02)
            job = self._wait(job_id, reporter, first_wait=True)
        else:
            job_id = req.provider_job_id
            if _status(job) != "completed":
                job = self._wait(job_id, reporter, first_wait=True)
        self._raise_if_failed(job, job_id)
        return self._deliver(job, job_id, dest, reporter)

    def _create(self, req: AssetRequest) -> str:
        body = {
            "videoName": f"aigen {req.generation_id} video {req.index}",
            "videoDescription": req.prompt[:500],
            "language": "en",
            "aspectRatio": aspect_ratio_for(req.width, req.height),
            # Without it Pictory renders a silent video: there is no implicit narrator.
            "voiceOver": voice_over(validate_voice((req.options or {}).get("voice"))),
            "scenes": [{"story": req.prompt, "createSceneOnNewLine": True, "createSceneOnEndOfSentence": True}],
        }
        # Not idempotent: a read timeout may hide a render that was started and billed.
        answer = self._request("POST", "/v2/video/storyboard/render", what="render request", idempotent=False,
                               json=body)
        job_id = None
        if isinstance(answer, dict):
            data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
            job_id = data.get("jobId") or data.get("job_id") or answer.get("jobId") or answer.get("job_id")
        if not job_id:
            raise ProviderError("pictory: the render answer has no job id", provider=self.name,
                                provider_code="bad_response")
        log.info("pictory job %s created for video %d", job_id, req.index)
        return str(job_id)

    def _fetch(self, job_id: str, *, retries: bool = True) -> dict:
        answer = self._request("GET", f"/v1/jobs/{job_id}", what=f"job {job_id}", idempotent=True,
                               retries=retries)
        if not isinstance(answer, dict):
            raise ProviderError(f"pictory: unexpected answer for job {job_id}", provider=self.name,
                                provider_code="bad_response")
        answer.setdefault("job_id", job_id)
        return answer

    def _resume(self, job_id: str) -> dict | None:
        try:
            job = self._fetch(job_id)
        except ProviderError as e:
            if e.status == 404:
                log.warning("pictory job %s is unknown to Pictory; starting a new render", job_id)
                return None
            raise
        status = _status(job)
        if _is_not_found(job):
            log.warning("pictory job %s is unknown to Pictory; starting a new render", job_id)
            return None
        if status == "failed":
            code, message = _failure(job)
            if _REFUSAL_WORDS.search(f"{code} {message}") or _BAD_VOICE.search(message):
                # The same story would be refused again, the same voice rejected again.
                self._raise_if_failed(job, job_id)
            log.warning("pictory job %s had failed (%s); starting a new render", job_id, code)
            return None
        if status in CANCELLED_STATES:
            log.warning("pictory job %s was cancelled; starting a new render", job_id)
            return None
        return job

    def _wait(self, job_id: str, reporter: Reporter, *, first_wait: bool) -> dict:
        # Pictory's own helper polls every 30 s for up to 30 min; renders take minutes.
        policy = PollPolicy.from_env(self.env, interval=10.0, max_interval=30.0, timeout=30 * 60.0)

        def update(job: dict) -> None:
            data = job.get("data") if isinstance(job.get("data"), dict) else {}
            pct = data.get("renderProgress", data.get("progress"))
            try:
                reporter.progress(0.05 + 0.85 * max(0.0, min(1.0, float(pct) / 100.0)))
            except (TypeError, ValueError):
                pass

        # The polling loop is the retry loop for polls: one GET per turn.
        return poll_job(
            lambda: self._fetch(job_id, retries=False),
            lambda job: _status(job) in FINAL_STATES or _is_not_found(job),
            policy=policy, reporter=reporter, provider=self.name, what=f"pictory job {job_id}",
            on_update=update, first_wait=first_wait,
        )

    def _raise_if_failed(self, job: dict, job_id: str) -> None:
        if _is_not_found(job):
            raise ProviderError(f"pictory job {job_id} is unknown to Pictory (JOB_NOT_FOUND)",
                                provider=self.name, provider_code="JOB_NOT_FOUND",
                                hint="`aigen retry` starts a new render")
        if _status(job) in CANCELLED_STATES:
            raise ProviderError(f"pictory job {job_id} was cancelled before it finished", provider=self.name,
                                provider_code="CANCELLED", hint="`aigen retry` starts a new render")
        if _status(job) != "failed":
            return
        code, message = _failure(job)
        if _REFUSAL_WORDS.search(f"{code} {message}"):
            raise Refused(self.name, f"{message} ({code})", provider_code=code)
        if _BAD_VOICE.search(message):
            raise ProviderError(f"pictory job {job_id} failed: Pictory does not know the voice: {message} ({code})",
                                provider=self.name, provider_code="invalid_voice",
                                hint="choose a voice from Pictory's list (GET /v1/voiceovers/tracks; e.g. "
                                     f"{DEFAULT_VOICE}, Joanna, Brian) in a new request with --voice NAME")
        if _QUOTA_WORDS.search(f"{code} {message}"):
            raise QuotaExceeded(f"pictory job {job_id} failed: out of credits or plan limit: {message} ({code})",
                                provider=self.name, provider_code=code)
        raise ProviderError(f"pictory job {job_id} failed: {message} ({code})", provider=self.name,
                            provider_code=code)

    def _deliver(self, job: dict, job_id: str, dest: Path, reporter: Reporter) -> AssetOutput:
        from aigen.providers.http import download

        for attempt in (1, 2):
            data = job.get("data") if isinstance(job.get("data"), dict) else {}
            url = data.get("videoURL") or data.get("videoUrl")
            if not url:
                raise ProviderError(f"pictory job {job_id} completed without a videoURL", provider=self.name,
                                    provider_code="no_output")
            try:
                download(
                    url, dest, timeout=self._timeout(), max_bytes=MAX_VIDEO_BYTES, allowed_types=("video/mp4",),
                    expect_kind="mp4", provider=self.name, session=self._http(), deadline=1800.0, env=self.env,
                    policy=self._policy(), secrets=self._secrets(),
                    progress=lambda got, total: reporter.progress(0.9 + 0.1 * (got / total if total else 0.5)),
                )
                break
            except ProviderError as e:
                if attempt == 1 and e.status in EXPIRED_URL_STATUSES:
                    log.info("pictory video URL of job %s refused (HTTP %s); fetching the job again", job_id, e.status)
                    job = self._fetch(job_id)
                    if _status(job) != "completed":
                        raise ProviderError(f"pictory job {job_id} is {_status(job)!r} when fetched again",
                                            provider=self.name, provider_code="job_changed") from e
                    continue
                raise
        return AssetOutput(format="mp4", model=self.default_models["video"], cost=None)


# --------------------------------------------------------------------------- job answers
def _status(job: dict | None) -> str:
    data = (job or {}).get("data")
    status = data.get("status") if isinstance(data, dict) else None
    return str(status or (job or {}).get("status") or "").lower()


def _failure(job: dict) -> tuple[str, str]:
    data = job.get("data") if isinstance(job.get("data"), dict) else {}
    code = data.get("error_code") or job.get("error_code") or "failed"
    message = data.get("error_message") or job.get("error_message") or "no reason given"
    return str(code), str(message)


def _is_not_found(job: dict) -> bool:
    code, message = _failure(job)
    return message == "JOB_NOT_FOUND" or code == "JOB_NOT_FOUND"


