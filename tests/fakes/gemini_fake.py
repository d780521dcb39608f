"""A local fake of Google's Gemini Developer API and Agent Platform (Vertex AI) REST shapes (PROVIDERS.md §10).

It serves, on 127.0.0.1, what google-genai 3.x sends (paths captured from the SDK against a logging server):

Agent Platform (`vertexai=True`), API version v1beta1, with an API key (express mode: no project prefix) or with
a project and location (`projects/P/locations/L/` prefix, `Authorization: Bearer` from the fake's token endpoint):

* POST .../publishers/google/models/{veo}:predictLongRunning -> {"name": "projects/.../operations/ID"}
* POST .../publishers/google/models/{veo}:fetchPredictOperation {"operationName"} -> the operation, advancing
  one step per poll; finished: inline `bytesBase64Encoded`, or `gcsUri` when `storageUri` was asked, or
  `raiMediaFilteredReasons` and no video, or `error` {code, message};
* POST .../publishers/google/models/{imagen}:predict -> predictions with `bytesBase64Encoded` or
  `raiFilteredReason`;
* POST .../publishers/google/models/{gemini image}:generateContent.

Gemini Developer API, version v1, `x-goog-api-key`:

* POST /v1/models/{gemini image}:generateContent -> `candidates[0].content.parts[].inlineData`, or a finish
  reason such as IMAGE_SAFETY, or `promptFeedback.blockReason`;
* POST /v1/interactions (Omni Flash, background) and GET /v1/interactions/{id}: in_progress -> completed with
  a `model_output` step holding a video (base64 `data`, or a `uri` served by GET /v1/files/{id}:download);
* GET /v1/files/{id}:download?alt=media: the video bytes, with the key.

Also POST /token (Google's OAuth token endpoint for a service account: the RS256-signed JWT is verified) and the Cloud Storage JSON
API media download GET /download/storage/v1/b/{bucket}/o/{object}?alt=media (with the bearer token), so
Application Default Credentials and `gs://` outputs work end to end.

Strict like the vendor where the sources say so: a missing key is 403 PERMISSION_DENIED on the Developer API
and 401 UNAUTHENTICATED on Agent Platform, a wrong key 400 INVALID_ARGUMENT (API_KEY_INVALID), an unknown or
wrong-API model 404 NOT_FOUND, bad parameters 400 INVALID_ARGUMENT; every answered error has Google's
`{"error": {"code", "message", "status"}}` body. Faults (429 RESOURCE_EXHAUSTED with RetryInfo, 5xx, slow or
cut answers) are scripted with FakeServer.script(); outcomes of the next jobs with `video_outcomes` /
`image_outcomes`. Where it is more lenient than Google: fields aigen does not send are not validated, and the
live Omni `response_format.duration` format ("8s") is inferred from the SDK's string type.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from fakes.httpfake import FakeServer, Recorded, Reply
from fakes.runway_fake import sample_mp4, sample_png

DEV_KEY = "AIzaSy" + "D" * 33
EXPRESS_KEY = "AIzaSy" + "E" * 33
ACCESS_TOKEN = "ya29.fake-access-token-0123456789"
SA_EMAIL = "aigen@aigen-test.iam.gserviceaccount.com"
PROJECT = "aigen-test"
LOCATION = "us-central1"

VEO3 = {"veo-3.1-generate-001", "veo-3.1-fast-generate-001", "veo-3.1-lite-generate-001",
        "veo-3.1-generate-preview", "veo-3.1-fast-generate-preview"}
VEO2 = {"veo-2.0-generate-001"}
IMAGEN = {"imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001", "imagen-4.0-fast-generate-001",
          "imagen-3.0-generate-002"}
GEMINI_IMAGE = {"gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image"}
OMNI = {"gemini-omni-flash-preview"}

_VERTEX = re.compile(r"^/v1beta1/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
                     r"publishers/google/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_DEV_MODEL = re.compile(r"^/v1/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_INTERACTION = re.compile(r"^/v1/interactions/(?P<id>[^/]+)$")
_FILE = re.compile(r"^/v1/files/(?P<id>[a-z0-9]+):download$")
_GCS = re.compile(r"^/download/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<object>[^/]+)$")


def gerror(code: int, status: str, message: str, details: list | None = None, headers: dict | None = None) -> Reply:
    body = {"error": {"code": code, "message": message, "status": status}}
    if details:
        body["error"]["details"] = details
    return Reply(code, body, headers=headers or {})


def rate_limited(retry_delay: str = "2s", *, per_day: bool = False) -> Reply:
    """Google's 429 RESOURCE_EXHAUSTED as the Gemini API sends it (QuotaFailure + RetryInfo)."""
    quota_id = ("GenerateRequestsPerDayPerProjectPerModel-FreeTier" if per_day
                else "GenerateRequestsPerMinutePerProjectPerModel")
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_requests", "quotaId": quota_id,
                         "quotaValue": "10"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]
    return gerror(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing "
                  "details.", details)


@dataclass
class VideoOutcome:
    """How the next video job behaves: `polls` unfinished answers before it is done, then `result`.

    result: "bytes" (inline video), "uri" (a file uri for Omni), "rai" (filtered, no video), "error" (a failed
    operation with `error_code` / `error_message`), "cancelled" (Omni)."""

    polls: int = 1
    result: str = "bytes"
    error_code: int = 13
    error_message: str = "Internal error while generating the video."
    reasons: tuple[str, ...] = ("Your prompt may violate our Responsible AI practices (code 58061214).",)


@dataclass
class ImageOutcome:
    """result: "ok", "rai" (filtered: Imagen raiFilteredReason / Gemini IMAGE_SAFETY), "block" (prompt blocked),
    "none" (no image and no reason), "webp"."""

    result: str = "ok"


@dataclass
class Job:
    id: str
    api: str  # "veo" | "omni"
    model: str
    body: dict
    outcome: VideoOutcome
    name: str = ""
    polls: int = 0


class GeminiFake(FakeServer):
    def __init__(self):
        super().__init__()
        self.jobs: dict[str, Job] = {}
        self.video_outcomes: list[VideoOutcome] = []
        self.image_outcomes: list[ImageOutcome] = []
        self.default_video = VideoOutcome()
        self.tokens_issued = 0
        self.sa_public_key = None  # set by service_account_info()
        self.creates = 0  # accepted calls that make (and would bill) something
        self.files: dict[str, str] = {}  # file id -> job id (Developer API uri delivery)
        self._ids = itertools.count(1)
        self._jlock = threading.Lock()
        self.route("POST", "/*", self._post)
        self.route("GET", "/*", self._get)

    # -- what tests look at ----------------------------------------------------------
    def create_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and re.search(
            r":(predictLongRunning|predict|generateContent)$|/v1/interactions$", r.path)]

    def polls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(":fetchPredictOperation")
                or (r.method == "GET" and _INTERACTION.match(r.path))]

    def add_operation(self, model: str = "veo-3.1-generate-001", outcome: VideoOutcome | None = None,
                      *, project: str = PROJECT, location: str = LOCATION) -> str:
        """A Veo operation that exists already (made by an earlier run); not counted as a create."""
        job = self._new_job("veo", model, {}, outcome or VideoOutcome())
        job.name = f"projects/{project}/locations/{location}/publishers/google/models/{model}/operations/{job.id}"
        return job.name

    def add_interaction(self, outcome: VideoOutcome | None = None) -> str:
        job = self._new_job("omni", "gemini-omni-flash-preview", {}, outcome or VideoOutcome())
        return job.id

    def _new_job(self, api: str, model: str, body: dict, outcome: VideoOutcome) -> Job:
        with self._jlock:
            n = next(self._ids)
            jid = f"v1_{uuid.UUID(int=n).hex}" if api == "omni" else str(1000000 + n)
            job = Job(jid, api, model, body, outcome)
            self.jobs[jid] = job
            return job

    def _next_video(self) -> VideoOutcome:
        with self._jlock:
            return self.video_outcomes.pop(0) if self.video_outcomes else self.default_video

    def _next_image(self) -> ImageOutcome:
        with self._jlock:
            return self.image_outcomes.pop(0) if self.image_outcomes else ImageOutcome()

    # -- auth ----------------------------------------------------------------------------
    def _dev_auth(self, req: Recorded) -> Reply | None:
        key = req.headers.get("x-goog-api-key")
        if not key:
            return gerror(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                          "established identity). Please use API Key or other form of API consumer identity to "
                          "call this API.")
        if key != DEV_KEY:
            return gerror(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                          [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}])
        return None

    def _vertex_auth(self, req: Recorded, project: str | None, location: str | None) -> Reply | None:
        key = req.headers.get("x-goog-api-key")
        bearer = req.headers.get("authorization", "")
        if project and not key:
            if bearer != f"Bearer {ACCESS_TOKEN}":
                return gerror(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                              "OAuth 2 access token, login cookie or other valid authentication credential.")
        elif not key:
            return gerror(401, "UNAUTHENTICATED", "Request is missing required authentication credential.")
        elif key != EXPRESS_KEY:
            return gerror(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                          [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}])
        # An express-mode key belongs to the fake's project, as do the credentials: any other project is refused.
        if project and (project != PROJECT or location != LOCATION):
            return gerror(403, "PERMISSION_DENIED", f"Permission denied on resource project {project}.")
        return None

    # -- routing -------------------------------------------------------------------------------
    def _post(self, req: Recorded, srv) -> Reply:
        if req.path == "/token":
            return self._token(req)
        m = _VERTEX.match(req.path)
        if m:
            bad = self._vertex_auth(req, m["project"], m["location"])
            if bad:
                return bad
            body, bad = _json_body(req)
            if bad:
                return bad
            model, method = m["model"], m["method"]
            if method == "predictLongRunning":
                return self._veo_create(model, body, m["project"], m["location"])
            if method == "fetchPredictOperation":
                return self._veo_fetch(req.path, model, body)
            if method == "predict":
                return self._imagen(model, body)
            if method == "generateContent":
                return self._generate_content(model, body, "v1beta1")
            return gerror(404, "NOT_FOUND", f"Method {method} not found.")
        m = _DEV_MODEL.match(req.path)
        if m:
            bad = self._dev_auth(req)
            if bad:
                return bad
            body, bad = _json_body(req)
            if bad:
                return bad
            if m["method"] == "generateContent":
                if m["model"] in OMNI:
                    return gerror(400, "INVALID_ARGUMENT", "This model only supports Interactions API.")
                return self._generate_content(m["model"], body, "v1")
            return gerror(404, "NOT_FOUND", f"models/{m['model']} is not found for API version v1, or is not "
                          f"supported for {m['method']}. Call ListModels to see the list of available models.")
        if req.path == "/v1/interactions":
            bad = self._dev_auth(req)
            if bad:
                return bad
            body, bad = _json_body(req)
            if bad:
                return bad
            return self._omni_create(body)
        return gerror(404, "NOT_FOUND", f"The requested URL {req.path} was not found on this server.")

    def _get(self, req: Recorded, srv) -> Reply:
        m = _INTERACTION.match(req.path)
        if m:
            bad = self._dev_auth(req)
            if bad:
                return bad
            return self._omni_get(m["id"])
        m = _FILE.match(req.path)
        if m:
            bad = self._dev_auth(req)
            if bad:
                return bad
            if req.query.get("alt") != ["media"] or m["id"] not in self.files:
                return gerror(404, "NOT_FOUND", "File not found.")
            return Reply(200, sample_mp4(), content_type="video/mp4")
        m = _GCS.match(req.path)
        if m:
            if req.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
                return gerror(401, "UNAUTHENTICATED", "Anonymous caller does not have storage.objects.get access.")
            obj = unquote(m["object"])
            with self._jlock:
                known = any(j.outcome.result == "bytes" and f"gs://{m['bucket']}/{obj}" == j.body.get("_gcs")
                            for j in self.jobs.values())
            if not known or req.query.get("alt") != ["media"]:
                return gerror(404, "NOT_FOUND", f"No such object: {m['bucket']}/{obj}")
            return Reply(200, sample_mp4(), content_type="video/mp4")
        return gerror(404, "NOT_FOUND", f"The requested URL {req.path} was not found on this server.")

    def _token(self, req: Recorded) -> Reply:
        """Google's OAuth token endpoint for a service account: a JWT signed with its key (RS256), checked."""
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        # google-auth signs for Google's own token audience, whatever token_uri it posts to.
        problem = self._check_jwt(form["assertion"], "https://oauth2.googleapis.com/token")
        if problem:
            return Reply(400, {"error": "invalid_grant", "error_description": problem})
        with self._jlock:
            self.tokens_issued += 1
        return Reply(200, {"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer",
                           "scope": "https://www.googleapis.com/auth/cloud-platform"})

    def _check_jwt(self, assertion: str, audience: str) -> str | None:
        import json

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def unb64(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        try:
            head, payload, sig = assertion.split(".")
            claims = json.loads(unb64(payload))
            if self.sa_public_key is None:
                return "no service account is known"
            self.sa_public_key.verify(unb64(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                      hashes.SHA256())
        except (ValueError, InvalidSignature):
            return "Invalid JWT Signature."
        if claims.get("aud") != audience or claims.get("iss") != SA_EMAIL:
            return f"Invalid JWT: audience or issuer ({claims.get('aud')}, {claims.get('iss')})."
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return "Invalid JWT: the cloud-platform scope is missing."
        return None

    def service_account_info(self) -> dict:
        """A service-account credentials file for this fake (its token endpoint); the key is made here."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_public_key = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": PROJECT, "private_key_id": "fake-key-1",
                "private_key": pem, "client_email": SA_EMAIL, "client_id": "1234567890",
                "token_uri": f"{self.url}/token"}

    # -- Veo --------------------------------------------------------------------------------------
    def _veo_create(self, model: str, body: dict, project: str | None, location: str | None) -> Reply:
        if model not in VEO3 | VEO2:
            return gerror(404, "NOT_FOUND", f"Publisher Model `projects/{project or PROJECT}/locations/"
                          f"{location or LOCATION}/publishers/google/models/{model}` was not found or your project "
                          "does not have access to it.")
        problem = validate_veo(model, body)
        if problem:
            return gerror(400, "INVALID_ARGUMENT", problem)
        job = self._new_job("veo", model, body, self._next_video())
        storage = (body.get("parameters") or {}).get("storageUri")
        if storage:
            job.body["_gcs"] = storage.rstrip("/") + f"/{job.id}/sample_0.mp4"
        # Google names the operation with the project even in express mode.
        job.name = (f"projects/{project or PROJECT}/locations/{location or LOCATION}/publishers/google/models/"
                    f"{model}/operations/{job.id}")
        with self._jlock:
            self.creates += 1
        return Reply(200, {"name": job.name})

    def _veo_fetch(self, path: str, model: str, body: dict) -> Reply:
        name = body.get("operationName")
        if not isinstance(name, str) or "/operations/" not in name:
            return gerror(400, "INVALID_ARGUMENT", "operationName is required.")
        job_id = name.rsplit("/operations/", 1)[1]
        with self._jlock:
            job = self.jobs.get(job_id)
            if job is None or job.name != name or job.model != model:
                return gerror(404, "NOT_FOUND", f"Operation {name} not found.")
            prefix = "/v1beta1/" + name.rsplit("/operations/", 1)[0]
            if not (path == prefix + ":fetchPredictOperation" or path.endswith(
                    f"/publishers/google/models/{model}:fetchPredictOperation")):
                return gerror(400, "INVALID_ARGUMENT", "The operation does not belong to this resource.")
            job.polls += 1
            if job.polls <= job.outcome.polls:
                return Reply(200, {"name": name})
        out = job.outcome
        if out.result == "error":
            return Reply(200, {"name": name, "done": True,
                               "error": {"code": out.error_code, "message": out.error_message}})
        response: dict = {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"}
        if out.result == "rai":
            response.update(raiMediaFilteredCount=1, raiMediaFilteredReasons=list(out.reasons))
        elif job.body.get("_gcs"):
            response["videos"] = [{"gcsUri": job.body["_gcs"], "mimeType": "video/mp4"}]
        else:
            response["videos"] = [{"bytesBase64Encoded": base64.b64encode(sample_mp4()).decode(),
                                   "mimeType": "video/mp4"}]
        return Reply(200, {"name": name, "done": True, "response": response})

    # -- images --------------------------------------------------------------------------------------
    def _imagen(self, model: str, body: dict) -> Reply:
        if model not in IMAGEN:
            return gerror(404, "NOT_FOUND", f"Publisher Model `publishers/google/models/{model}` was not found.")
        problem = validate_imagen(model, body)
        if problem:
            return gerror(400, "INVALID_ARGUMENT", problem)
        with self._jlock:
            self.creates += 1
        out = self._next_image()
        if out.result == "rai":
            return Reply(200, {"predictions": [{"raiFilteredReason": "Your current safety filter threshold "
                                                "prohibited one or more images (code 39322892)."}]})
        if out.result in ("none", "block"):
            return Reply(200, {})
        return Reply(200, {"predictions": [{"bytesBase64Encoded": base64.b64encode(sample_png()).decode(),
                                            "mimeType": "image/png"}]})

    def _generate_content(self, model: str, body: dict, version: str) -> Reply:
        if model not in GEMINI_IMAGE:
            return gerror(404, "NOT_FOUND", f"models/{model} is not found for API version {version}, or is not "
                          "supported for generateContent. Call ListModels to see the list of available models.")
        problem = validate_generate_content(body)
        if problem:
            return gerror(400, "INVALID_ARGUMENT", problem)
        with self._jlock:
            self.creates += 1
        out = self._next_image()
        usage = {"promptTokenCount": 5, "candidatesTokenCount": 1290, "totalTokenCount": 1295}
        if out.result == "block":
            return Reply(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": usage})
        if out.result == "rai":
            return Reply(200, {"candidates": [{"content": {"role": "model", "parts": []},
                                               "finishReason": "IMAGE_SAFETY",
                                               "finishMessage": "Unable to show the generated image."}],
                               "usageMetadata": usage})
        if out.result == "none":
            return Reply(200, {"candidates": [{"content": {"role": "model", "parts": [
                {"text": "I can only describe this scene."}]}, "finishReason": "STOP"}], "usageMetadata": usage})
        if out.result == "webp":
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (80, 48), (10, 200, 90)).save(buf, format="WEBP")
            data, mime = buf.getvalue(), "image/webp"
        else:
            data, mime = sample_png(), "image/png"
        return Reply(200, {"candidates": [{"content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}]},
            "finishReason": "STOP", "index": 0}], "usageMetadata": usage, "modelVersion": model})

    # -- Omni Flash (Interactions) ----------------------------------------------------------------------
    def _omni_create(self, body: dict) -> Reply:
        model = body.get("model")
        if model not in OMNI:
            return gerror(404, "NOT_FOUND", f"models/{model} is not found for API version v1, or is not "
                          "supported for interactions.")
        problem = validate_omni(body)
        if problem:
            return gerror(400, "INVALID_ARGUMENT", problem)
        job = self._new_job("omni", model, body, self._next_video())
        with self._jlock:
            self.creates += 1
        return Reply(200, {"id": job.id, "status": "in_progress", "object": "interaction", "model": model,
                           "created": "2026-12-01T09:00:00Z"})

    def _omni_get(self, iid: str) -> Reply:
        with self._jlock:
            job = self.jobs.get(iid)
            if job is None or job.api != "omni":
                return gerror(404, "NOT_FOUND", f"Interaction {iid} not found.")
            job.polls += 1
            running = job.polls <= job.outcome.polls
        base = {"id": iid, "object": "interaction", "model": job.model, "created": "2026-12-01T09:00:00Z"}
        if running:
            return Reply(200, {**base, "status": "in_progress"})
        out = job.outcome
        if out.result == "rai":
            return Reply(200, {**base, "status": "failed", "errors": [
                {"code": "safety", "message": "The request was blocked by safety filters."}]})
        if out.result == "error":
            return Reply(200, {**base, "status": "failed", "errors": [{"code": "internal",
                                                                         "message": out.error_message}]})
        if out.result == "cancelled":
            return Reply(200, {**base, "status": "cancelled"})
        if out.result == "uri":
            fid = uuid.uuid4().hex[:12]
            with self._jlock:
                self.files[fid] = iid
            video = {"type": "video", "mime_type": "video/mp4",
                     "uri": f"{self.url}/v1/files/{fid}:download?alt=media"}
        else:
            video = {"type": "video", "mime_type": "video/mp4", "data": base64.b64encode(sample_mp4()).decode()}
        return Reply(200, {**base, "status": "completed", "steps": [
            {"type": "user_input", "content": [{"type": "text", "text": job.body.get("input", "")}]},
            {"type": "model_output", "content": [video]}],
            "usage": {"output_tokens_by_modality": [{"modality": "video", "tokens": 5800}]}})


# --------------------------------------------------------------------------- validation
def _json_body(req: Recorded) -> tuple[dict, Reply | None]:
    try:
        body = req.json()
    except ValueError:
        return {}, gerror(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return {}, gerror(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
    return body, None


def _prompt_of(body: dict) -> str | None:
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        return None
    prompt = instances[0].get("prompt")
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def validate_veo(model: str, body: dict) -> str | None:
    if _prompt_of(body) is None:
        return "instances[0].prompt is required."
    p = body.get("parameters") or {}
    veo3 = model in VEO3
    if p.get("sampleCount", 1) not in (1, 2, 3, 4):
        return "sampleCount must be between 1 and 4."
    duration = p.get("durationSeconds")
    allowed = (4, 6, 8) if veo3 else (5, 6, 7, 8)
    if duration is not None and duration not in allowed:
        return f"Unsupported duration {duration} for {model}: supported durations are {list(allowed)}."
    if p.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
        return f"Unsupported aspect ratio {p.get('aspectRatio')!r}."
    resolution = p.get("resolution")
    if resolution is not None:
        if not veo3 or resolution not in ("720p", "1080p", "4k"):
            return f"Unsupported resolution {resolution!r} for {model}."
        if resolution != "720p" and (duration or 8) != 8:
            return f"Resolution {resolution} is only supported for 8 second videos."
    seed = p.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= 4294967295):
        return "seed must be an unsigned 32-bit integer."
    if p.get("personGeneration") not in (None, "allow_adult", "dont_allow", "allow_all"):
        return f"Invalid personGeneration {p.get('personGeneration')!r}."
    if "generateAudio" in p and (not veo3 or not isinstance(p["generateAudio"], bool)):
        return f"generateAudio is not supported for {model}."
    storage = p.get("storageUri")
    if storage is not None and not (isinstance(storage, str) and storage.startswith("gs://")):
        return "storageUri must be a Cloud Storage URI (gs://)."
    return None


def validate_imagen(model: str, body: dict) -> str | None:
    if _prompt_of(body) is None:
        return "instances[0].prompt is required."
    p = body.get("parameters") or {}
    if p.get("sampleCount", 1) not in (1, 2, 3, 4):
        return "sampleCount must be between 1 and 4."
    if p.get("aspectRatio", "1:1") not in ("1:1", "3:4", "4:3", "9:16", "16:9"):
        return f"Unsupported aspect ratio {p.get('aspectRatio')!r}."
    if "seed" in p and p.get("addWatermark", True) is not False:
        return "Seed is not supported when watermark is enabled (set addWatermark to false)."
    mime = (p.get("outputOptions") or {}).get("mimeType", "image/png")
    if mime not in ("image/png", "image/jpeg"):
        return f"Unsupported output mime type {mime!r}."
    size = p.get("sampleImageSize")
    if size is not None and (size not in ("1K", "2K") or model.startswith("imagen-3")):
        return f"Unsupported sampleImageSize {size!r} for {model}."
    if p.get("personGeneration") not in (None, "DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"):
        return f"Invalid personGeneration {p.get('personGeneration')!r}."
    return None


def validate_generate_content(body: dict) -> str | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    parts = (contents[0] or {}).get("parts") if isinstance(contents[0], dict) else None
    if not isinstance(parts, list) or not any(isinstance(p, dict) and str(p.get("text") or "").strip()
                                              for p in parts):
        return "* GenerateContentRequest.contents[0].parts: contains an empty text part"
    cfg = body.get("generationConfig") or {}
    modalities = cfg.get("responseModalities") or []
    if "IMAGE" not in modalities:
        return "This model only supports responses with IMAGE modality here (responseModalities)."
    if cfg.get("candidateCount", 1) != 1:
        return "Multiple candidates is not enabled for this model."
    image = cfg.get("imageConfig") or {}
    if image.get("aspectRatio", "1:1") not in ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"):
        return f"Unsupported aspect ratio {image.get('aspectRatio')!r}."
    if image.get("imageSize", "1K") not in ("1K", "2K", "4K"):
        return f"Unsupported image size {image.get('imageSize')!r}."
    seed = cfg.get("seed")
    if seed is not None and not (isinstance(seed, int) and -2**31 <= seed < 2**31):
        return "seed must be a 32-bit integer."
    return None


def validate_omni(body: dict) -> str | None:
    if body.get("background") is not True:
        return "Video generation must run in the background (background=true)."
    if not isinstance(body.get("input"), str) or not body["input"].strip():
        return "input is required."
    formats = body.get("response_format")
    formats = formats if isinstance(formats, list) else [formats] if formats else []
    for f in formats:
        if not isinstance(f, dict) or f.get("type") != "video":
            return "response_format must be a video format."
        if f.get("aspect_ratio", "16:9") not in ("16:9", "9:16"):
            return f"Unsupported aspect ratio {f.get('aspect_ratio')!r}."
        m = re.fullmatch(r"(\d+)s", str(f.get("duration", "8s")))
        if not m or not 3 <= int(m.group(1)) <= 10:
            return f"Unsupported duration {f.get('duration')!r}: 3s to 10s."
    if not formats and "video" not in (body.get("response_modalities") or []):
        return "This model only produces video: ask for the video modality."
    return None


__all__ = ["ACCESS_TOKEN", "DEV_KEY", "EXPRESS_KEY", "GeminiFake", "ImageOutcome", "LOCATION", "PROJECT",
           "SA_EMAIL", "VideoOutcome", "gerror", "rate_limited"]
