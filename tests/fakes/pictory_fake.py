"""A local fake of Pictory's API, following the documented contract (see PROVIDERS.md §5).

On 127.0.0.1 it serves:

* POST /v1/oauth2/token `{client_id, client_secret}` -> `{access_token, expires_in, token_type}`;
* POST /v2/video/storyboard/render: checks auth (the API key raw in
  `Authorization`, or a token it issued plus `X-Pictory-User-Id`), rejects
  library User-Agents the way Cloudflare does (403, error 1010), checks the
  body (videoName, aspectRatio, scenes[].story), counts the creation and
  answers `{"success": true, "data": {"jobId"}}`;
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
        body = req.json() or {}
        fields = []
        if not isinstance(body.get("videoName"), str) or not body["videoName"].strip():
            fields.append({"name": "videoName", "errors": ["videoName is required"]})
        if body.get("aspectRatio") not in ASPECT_RATIOS:
            fields.append({"name": "aspectRatio", "errors": [f"must be one of {sorted(ASPECT_RATIOS)}"]})
        scenes = body.get("scenes")
        if not isinstance(scenes, list) or not scenes or not all(
            isinstance(s, dict) and isinstance(s.get("story"), str) and s["story"].strip() for s in scenes
        ):
            fields.append({"name": "scenes", "errors": ["each scene needs a story"]})
        if fields:
            return Reply(400, {"code": "INVALID_REQUEST_BODY", "message": "Invalid request body", "fields": fields})
        with self._jlock:
            outcome = self.outcomes.pop(0) if self.outcomes else self.default_outcome
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


__all__ = ["API_KEY", "CLIENT_ID", "CLIENT_SECRET", "USER_ID", "JobOutcome", "PictoryFake"]
