"""A local fake of Pictory's API, following the documented contract (see PROVIDERS.md §5).

On 127.0.0.1 it serves:

* POST /v1/oauth2/token `{client_id, client_secret}` -> `{access_token, expires_in, token_type}`;
* POST /v2/video/storyboard/render: checks auth (the API key raw in
  `Authorization`, or a token it issued plus `X-Pictory-User-Id`), rejects
  library User-Agents the way Cloudflare does (403, error 1010), checks the
  body (videoName, aspectRatio or videoWidth+videoHeight, language,
  webhook length, scenes[].story of at most 15,000 characters, the exact
  `voiceOver` shape), silently drops unknown fields as Pictory does, counts
  the creation and answers `{"success": true, "data": {"jobId"}}`. A render
  without `voiceOver` is accepted, as Pictory accepts it, but Pictory makes a
  silent video then: the job is flagged (`Job.voice_missing`, `unvoiced`) so
  tests can prove aigen never sends one by accident. A speaker the fake does
  not know fails the job the way Pictory does (`TEXT_TO_VIDEO_FAILED`, "The
  AI voice speaker [X] is invalid...");
* GET /v1/jobs/{jobId}: each GET moves the job one step, in-progress ->
  completed by default (`data.videoURL`), or to `failed` with
  `error_code`/`error_message` (or to `cancelled`, which Pictory does not
  document but a job deleted in its web app plausibly shows); an unknown id
  answers `JOB_NOT_FOUND`;
* GET /files/<token>/<name>.mp4: a real H.264 mp4, with the same download
  faults as the Runway fake.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field

from fakes.httpfake import FakeServer, Recorded, Reply
from fakes.runway_fake import sample_mp4

API_KEY = "pictai_" + "a1b2c3d4e5f6" * 4
CLIENT_ID = "client-1234"
CLIENT_SECRET = "secret-" + "9" * 24
USER_ID = "user-42"
ASPECT_RATIOS = {"16:9", "9:16", "1:1", "4:5"}
LANGUAGES = {"ar", "zh", "nl", "en", "fr", "de", "hi", "id", "it", "ja", "ko", "mr", "pl", "pt", "ru", "es", "ta",
             "tr", "ur", "vi"}
# Top-level storyboard fields Pictory knows (pictory-claude-skills request-schema.md); others are stripped.
FIELDS = {"videoName", "videoDescription", "videoWidth", "videoHeight", "aspectRatio", "language", "saveProject",
          "webhook", "webhookInput", "backgroundMusic", "voiceOver", "logo", "avatar", "subtitleStyle", "scenes",
          "templateId", "brandId", "storyboardVersion"}
# Voices named in Pictory's docs and examples (the real list comes from GET /v1/voiceovers/tracks).
VOICES = {"martin", "tim", "gabriel", "wilbur", "marco", "aurelio", "hugo", "joanna", "brian", "adison", "jackson"}
STORY_MAX = 15_000
ELEVEN_MODELS = {"eleven_v3", "eleven_multilingual_v2", "eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_turbo_v2",
                 "eleven_flash_v2", "eleven_multilingual_v1", "eleven_monolingual_v1"}


def voice_over_errors(vo) -> list[str]:
    """What Pictory's body validation says about a `voiceOver` block (PROVIDERS.md §5)."""
    if not isinstance(vo, dict):
        return ["voiceOver must be an object"]
    errs = []
    if not isinstance(vo.get("enabled"), bool):
        errs.append("voiceOver.enabled must be a boolean")
    voices, external = vo.get("aiVoices"), vo.get("externalVoice")
    if voices is not None and external is not None:
        errs.append("voiceOver.aiVoices and voiceOver.externalVoice are mutually exclusive")
    if vo.get("enabled") is True and voices is None and external is None:
        errs.append("voiceOver.aiVoices is required when voiceOver.enabled is true")
    if voices is not None:
        if not isinstance(voices, list) or not voices:
            return errs + ["voiceOver.aiVoices must be a non-empty array"]
        for i, v in enumerate(voices):
            if not isinstance(v, dict):
                errs.append(f"voiceOver.aiVoices[{i}] must be an object")
                continue
            speaker = v.get("speaker")
            if isinstance(speaker, bool) or not isinstance(speaker, (str, int)) or not str(speaker).strip():
                errs.append(f"voiceOver.aiVoices[{i}].speaker is required")
            speed = v.get("speed", 100)
            if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 50 <= speed <= 200:
                errs.append(f"voiceOver.aiVoices[{i}].speed must be between 50 and 200")
            amp = v.get("amplificationLevel", 0)
            if isinstance(amp, bool) or not isinstance(amp, (int, float)) or not -1 <= amp <= 1:
                errs.append(f"voiceOver.aiVoices[{i}].amplificationLevel must be between -1 and 1")
            premium = v.get("premiumVoiceSettings")
            if premium is not None and (not isinstance(premium, dict) or premium.get("modelId") not in ELEVEN_MODELS):
                errs.append(f"voiceOver.aiVoices[{i}].premiumVoiceSettings.modelId is invalid")
    if external is not None and (not isinstance(external, dict) or not isinstance(external.get("voiceUrl"), str)):
        errs.append("voiceOver.externalVoice.voiceUrl is required")
    return errs


def unknown_speaker(body: dict) -> str | None:
    """The first aiVoices speaker the fake does not know (Pictory fails the job for it), else None."""
    vo = body.get("voiceOver")
    if not isinstance(vo, dict) or vo.get("enabled") is not True:
        return None
    for v in vo.get("aiVoices") or []:
        speaker = str(v.get("speaker"))
        if not speaker.isdigit() and speaker.lower() not in VOICES:
            return speaker
    return None


@dataclass
class JobOutcome:
    steps: tuple[str, ...] = ("in-progress", "in-progress", "completed")
    error_code: str = "TEXT_TO_VIDEO_FAILED"
    error_message: str = "Video rendering failed."
    download_fault: str | None = None  # "truncate" | "wrong_type" | "expired" | "gone"


@dataclass
class Job:
    id: str
    body: dict
    outcome: JobOutcome
    polls: int = 0
    tokens: list[str] = field(default_factory=list)
    seeded: bool = False

    @property
    def voice_missing(self) -> bool:
        """Rendered without a voiceOver block: Pictory makes a silent video, unasked."""
        return not self.seeded and "voiceOver" not in self.body

    @property
    def silent(self) -> bool:
        vo = self.body.get("voiceOver")
        return self.voice_missing or (isinstance(vo, dict) and vo.get("enabled") is False)

    @property
    def status(self) -> str:
        steps = self.outcome.steps
        return steps[min(self.polls, len(steps)) - 1] if self.polls else steps[0]


class PictoryFake(FakeServer):
    def __init__(self, *, api_key: str = API_KEY, token_lifetime: int = 3600):
        super().__init__()
        self.api_key = api_key
        self.token_lifetime = token_lifetime
        self.tokens_issued: list[str] = []
        self.revoked: set[str] = set()
        self.jobs: dict[str, Job] = {}
        self.outcomes: list[JobOutcome] = []
        self.default_outcome = JobOutcome()
        self._ids = itertools.count(1)
        self._jlock = threading.Lock()
        self.route("POST", "/v1/oauth2/token", self._token)
        self.route("POST", "/v2/video/storyboard/render", self._render)
        self.route("GET", "/v1/jobs/*", self._job)
        self.route("GET", "/files/*", self._file)

    @property
    def creations(self) -> int:
        with self._jlock:
            return sum(1 for j in self.jobs.values() if not j.seeded)

    @property
    def unvoiced(self) -> list[str]:
        """Ids of the renders that came without a voiceOver block (silent videos nobody asked for)."""
        with self._jlock:
            return [j.id for j in self.jobs.values() if j.voice_missing]

    def polls_of(self, job_id: str) -> int:
        return self.count("GET", f"/v1/jobs/{job_id}")

    def add_job(self, outcome: JobOutcome | None = None, *, polls: int = 0) -> str:
        jid = str(uuid.uuid4())
        with self._jlock:
            self.jobs[jid] = Job(jid, {}, outcome or JobOutcome(), polls=polls, seeded=True)
        return jid

    # -- handlers ---------------------------------------------------------------
    def _blocked(self, req: Recorded) -> Reply | None:
        agent = req.headers.get("user-agent", "")
        if not agent.startswith("Mozilla/"):
            return Reply(403, "error code: 1010", content_type="text/plain")
        return None

    def _auth_error(self, req: Recorded) -> Reply | None:
        blocked = self._blocked(req)
        if blocked:
            return blocked
        auth = req.headers.get("authorization", "")
        if auth == self.api_key:
            return None
        if auth in self.tokens_issued and auth not in self.revoked:
            if req.headers.get("x-pictory-user-id") != USER_ID:
                return Reply(401, {"message": "Unauthorized"})
            return None
        return Reply(401, {"message": "Unauthorized"})

    def _token(self, req: Recorded, srv) -> Reply:
        blocked = self._blocked(req)
        if blocked:
            return blocked
        body = req.json() or {}
        if body.get("client_id") != CLIENT_ID or body.get("client_secret") != CLIENT_SECRET:
            return Reply(401, {"message": "Invalid client credentials"})
        token = "eyJ" + uuid.uuid4().hex
        self.tokens_issued.append(token)
        return Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime})

    def _render(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        try:
            raw = req.json()
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            return Reply(400, {"code": "INVALID_REQUEST_BODY", "message": "Invalid request body",
                               "fields": [{"name": "body", "errors": ["must be a JSON object"]}]})
        body = {k: v for k, v in raw.items() if k in FIELDS}  # Pictory strips unknown fields silently
        fields = []
        if not isinstance(body.get("videoName"), str) or not body["videoName"].strip():
            fields.append({"name": "videoName", "errors": ["videoName is required"]})
        has_w, has_h = "videoWidth" in body, "videoHeight" in body
        if has_w != has_h:
            fields.append({"name": "videoWidth", "errors": ["videoWidth and videoHeight go together"]})
        if "aspectRatio" in body or not has_w:
            if body.get("aspectRatio") not in ASPECT_RATIOS:
                fields.append({"name": "aspectRatio", "errors": [f"must be one of {sorted(ASPECT_RATIOS)}"]})
        if "language" in body and body["language"] not in LANGUAGES:
            fields.append({"name": "language", "errors": [f"must be one of {sorted(LANGUAGES)}"]})
        if "webhook" in body and (not isinstance(body["webhook"], str) or len(body["webhook"]) > 500):
            fields.append({"name": "webhook", "errors": ["webhook must be a URL of at most 500 characters"]})
        scenes = body.get("scenes")
        if not isinstance(scenes, list) or not scenes or not all(
            isinstance(s, dict) and isinstance(s.get("story"), str) and s["story"].strip() for s in scenes
        ):
            fields.append({"name": "scenes", "errors": ["each scene needs a story"]})
        elif any(len(s["story"]) > STORY_MAX for s in scenes):
            fields.append({"name": "scenes.story", "errors": [f"story must be at most {STORY_MAX} characters"]})
        if "voiceOver" in body:
            fields += [{"name": "voiceOver", "errors": [e]} for e in voice_over_errors(body["voiceOver"])]
        if "avatar" in body and not (isinstance(body.get("voiceOver"), dict) and body["voiceOver"].get("enabled")):
            fields.append({"name": "avatar", "errors": ["avatar needs voiceOver.enabled true"]})
        if fields:
            return Reply(400, {"code": "INVALID_REQUEST_BODY", "message": "Invalid request body", "fields": fields})
        with self._jlock:
            outcome = self.outcomes.pop(0) if self.outcomes else self.default_outcome
            speaker = unknown_speaker(body)
            if speaker is not None:
                outcome = JobOutcome(steps=("in-progress", "failed"), error_code="TEXT_TO_VIDEO_FAILED",
                                     error_message=f"The AI voice speaker [{speaker}] is invalid. Please provide "
                                                   "a valid AI voice speaker name.")
            jid = str(uuid.UUID(int=next(self._ids)))
            self.jobs[jid] = Job(jid, body, outcome)
        return Reply(200, {"success": True, "data": {"jobId": jid}})

    def _job(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        jid = req.path.rsplit("/", 1)[1]
        with self._jlock:
            job = self.jobs.get(jid)
            if job is None:
                return Reply(200, {"job_id": jid, "success": False,
                                   "data": {"status": "failed", "error_code": "5000",
                                            "error_message": "JOB_NOT_FOUND"}})
            if job.polls < len(job.outcome.steps):
                job.polls += 1
            status = job.status
            if status == "in-progress":
                return Reply(200, {"job_id": jid, "success": True, "data": {
                    "status": "in-progress", "renderProgress": 42, "renderProgressMessage": "Rendering",
                    "renderState": "RUNNING"}})
            if status == "failed":
                return Reply(200, {"job_id": jid, "success": False, "data": {
                    "status": "failed", "error_code": job.outcome.error_code,
                    "error_message": job.outcome.error_message}})
            if status == "cancelled":
                return Reply(200, {"job_id": jid, "success": False, "data": {"status": "cancelled"}})
            token = uuid.uuid4().hex
            job.tokens.append(token)
            return Reply(200, {"job_id": jid, "success": True, "data": {
                "status": "completed", "progress": 100,
                "videoURL": f"{self.url}/files/{token}/{jid}.mp4",
                "videoShareURL": f"https://video.pictory.ai/share/{jid}",
                "thumbnail": f"{self.url}/files/{token}/{jid}.jpg",
                "videoDuration": 1.0, "aiCreditsUsed": 0}})

    def _file(self, req: Recorded, srv) -> Reply:
        parts = req.path.split("/")
        if len(parts) != 4:
            return Reply(404, "not found")
        token, name = parts[2], parts[3]
        jid = name.rpartition(".")[0]
        with self._jlock:
            job = self.jobs.get(jid)
            if job is None or token not in job.tokens:
                return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
            fault = job.outcome.download_fault
            first = token == job.tokens[0]
        if fault == "gone":
            return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        if fault == "expired" and first:
            return Reply(403, "<Error><Code>AccessDenied</Code></Error>", content_type="application/xml")
        data = sample_mp4()
        if fault == "truncate":
            return Reply(200, data, content_type="video/mp4", truncate_to=len(data) // 3)
        if fault == "wrong_type":
            return Reply(200, "<html><body>Please log in</body></html>", content_type="text/html")
        return Reply(200, data, content_type="video/mp4")


__all__ = ["API_KEY", "CLIENT_ID", "CLIENT_SECRET", "USER_ID", "VOICES", "JobOutcome", "PictoryFake",
           "voice_over_errors"]
