"""The `gemini` provider against a local fake of Google's APIs, with the real google-genai SDK.

The fake (tests/fakes/gemini_fake.py) speaks the Gemini Developer API and the Agent Platform REST shapes the SDK
sends; the SDK is pointed at it through GOOGLE_GEMINI_BASE_URL / GOOGLE_VERTEX_BASE_URL. Application Default
Credentials come from an `authorized_user` file whose token endpoint is the fake. Retry waits are recorded
instead of slept (aigen.providers.http.sleep) and polls are 10 ms apart (AIGEN_POLL_INTERVAL).
"""

import json

import pytest

pytest.importorskip("google.genai")

from aigen.errors import BadInput, MissingKey, ProviderError, QuotaExceeded, Refused  # noqa: E402
from aigen.providers.base import AssetRequest  # noqa: E402
from aigen.providers.gemini import GeminiProvider, resolve_mode  # noqa: E402
from fakes.gemini_fake import (  # noqa: E402
    ACCESS_TOKEN, DEV_KEY, EXPRESS_KEY, LOCATION, PROJECT, GeminiFake, ImageOutcome, VideoOutcome,
    gerror, rate_limited,
)
from fakes.httpfake import Reply  # noqa: E402


# --------------------------------------------------------------------------- fixtures
class RecordingReporter:
    def __init__(self, fake=None):
        self.fake = fake
        self.job_ids = []
        self.polls_before_save = None
        self.fractions = []

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)
        if self.fake is not None:
            self.polls_before_save = len(self.fake.polls())

    def progress(self, fraction):
        self.fractions.append(fraction)


@pytest.fixture
def fake():
    with GeminiFake() as f:
        yield f


@pytest.fixture
def sleeps(monkeypatch):
    waits = []
    monkeypatch.setattr("aigen.providers.http.sleep", waits.append)
    return waits


@pytest.fixture(autouse=True)
def clean_google_env(monkeypatch):
    """The SDK also reads these from os.environ: none may leak in from the machine running the tests."""
    for var in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_GENAI_USE_VERTEXAI",
                "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
                "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_GENAI_API_VERSION", "STORAGE_EMULATOR_HOST",
                "AIGEN_HTTP_TIMEOUT", "AIGEN_JOB_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)


BASE = {"AIGEN_POLL_INTERVAL": "0.01", "AIGEN_RETRY_ATTEMPTS": "3"}


@pytest.fixture
def dev_env(fake, sleeps):
    return {**BASE, "GEMINI_API_KEY": DEV_KEY, "GOOGLE_GEMINI_BASE_URL": fake.url}


@pytest.fixture
def express_env(fake, sleeps):
    return {**BASE, "GOOGLE_API_KEY": EXPRESS_KEY, "GOOGLE_GENAI_USE_ENTERPRISE": "true",
            "GOOGLE_VERTEX_BASE_URL": fake.url}


@pytest.fixture
def adc_file(fake, tmp_path):
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(fake.service_account_info()))
    return path


@pytest.fixture
def adc_env(fake, sleeps, adc_file):
    return {**BASE, "GOOGLE_GENAI_USE_ENTERPRISE": "true", "GOOGLE_CLOUD_PROJECT": PROJECT,
            "GOOGLE_CLOUD_LOCATION": LOCATION, "GOOGLE_VERTEX_BASE_URL": fake.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(adc_file), "STORAGE_EMULATOR_HOST": fake.url}


def video_req(**kw):
    base = dict(kind="video", prompt="a red fox at dawn", index=1, seed=1234, width=1280, height=720,
                generation_id="g1", model=None, duration=4.0)
    base.update(kw)
    return AssetRequest(**base)


def image_req(**kw):
    base = dict(kind="image", prompt="a red fox at dawn", index=1, seed=99, width=1024, height=1024,
                generation_id="g1", model=None)
    base.update(kw)
    return AssetRequest(**base)


def opts(kind, **values):
    return {f"{kind}_options": values}


def is_mp4(path):
    return path.read_bytes()[4:8] == b"ftyp"


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- modes
def test_modes_follow_the_sdk_settings():
    def mode(env):
        return resolve_mode(env, env.get)

    m, _ = mode({"GEMINI_API_KEY": "k1"})
    assert (m.platform, m.key_var) == ("developer", "GEMINI_API_KEY")
    m, _ = mode({"GEMINI_API_KEY": "k1", "GOOGLE_API_KEY": "k2"})
    assert (m.key, m.key_var) == ("k2", "GOOGLE_API_KEY"), "GOOGLE_API_KEY wins, as in the SDK"
    m, _ = mode({"GOOGLE_API_KEY": "k", "GOOGLE_GENAI_USE_ENTERPRISE": "true"})
    assert (m.platform, m.adc, m.key) == ("agent", False, "k")
    m, _ = mode({"GOOGLE_API_KEY": "k", "GOOGLE_GENAI_USE_VERTEXAI": "1", "GOOGLE_CLOUD_PROJECT": "p"})
    assert (m.platform, m.adc, m.project, m.location) == ("agent", True, "p", "global")
    m, _ = mode({"GOOGLE_API_KEY": "k", "GOOGLE_GENAI_USE_ENTERPRISE": "false", "GOOGLE_GENAI_USE_VERTEXAI": "true"})
    assert m.platform == "developer", "ENTERPRISE wins over the legacy VERTEXAI"
    m, why = mode({"GOOGLE_CLOUD_PROJECT": "p"})
    assert m is None and "GOOGLE_GENAI_USE_ENTERPRISE=true" in why
    m, why = mode({"GOOGLE_GENAI_USE_ENTERPRISE": "true"})
    assert m is None and "GOOGLE_CLOUD_PROJECT" in why


def test_no_configuration_is_a_missing_key_before_anything_is_written(sleeps):
    p = GeminiProvider(env={})
    with pytest.raises(MissingKey) as e:
        p.check_ready("video")
    assert "GEMINI_API_KEY" in e.value.message and "aigen keys set gemini" in e.value.hint


def test_models_are_checked_against_the_mode(dev_env, express_env):
    dev = GeminiProvider(env=dev_env)
    assert dev.model_for("video", None) == "gemini-omni-flash-preview"
    assert dev.model_for("image", None) == "gemini-3.1-flash-image"
    with pytest.raises(BadInput, match="only on Agent Platform"):
        dev.model_for("video", "veo-3.1-generate-001")
    with pytest.raises(BadInput, match="only on Agent Platform"):
        dev.model_for("image", "imagen-4.0-generate-001")
    agent = GeminiProvider(env=express_env)
    assert agent.model_for("video", None) == "veo-3.1-generate-001"
    with pytest.raises(BadInput, match="Developer API model"):
        agent.model_for("video", "gemini-omni-flash-preview")
    with pytest.raises(BadInput, match="shut down on 2026-10-02"):
        agent.model_for("image", "gemini-2.5-flash-image")
    with pytest.raises(BadInput, match="invalid --video-model"):
        agent.model_for("video", "sora-2")
    assert agent.model_for("video", "veo-4.0-generate-001") == "veo-4.0-generate-001", "a newer Veo by family"


def test_check_request_maps_sizes_and_durations_and_checks_options(express_env):
    p = GeminiProvider(env=express_env)
    notes = p.check_request("video", prompt="x", model="veo-3.1-generate-001", width=1920, height=1080, duration=5)
    assert any("6 s is the closest" in n for n in notes)
    assert any("1080p only for 8 s" in n for n in notes)
    assert p.check_request("video", prompt="x", model="veo-3.1-generate-001", width=1920, height=1080,
                           duration=8) == []
    with pytest.raises(BadInput, match="it takes negative_prompt"):
        p.check_request("video", prompt="x", model=None, width=1280, height=720, duration=4,
                        options=opts("video", steps=30))
    with pytest.raises(BadInput, match="needs 8 s"):
        p.check_request("video", prompt="x", model=None, width=1280, height=720, duration=4,
                        options=opts("video", resolution="1080p"))
    with pytest.raises(BadInput, match="makes no sound"):
        p.check_request("video", prompt="x", model="veo-2.0-generate-001", width=1280, height=720, duration=5,
                        options=opts("video", generate_audio=True))
    notes = p.check_request("image", prompt="x", model="imagen-4.0-generate-001", width=1000, height=600)
    assert any("16:9" in n for n in notes)
    assert p.describe_output("video", None, 720, 1280) == "720x1280 (9:16, 720p)"


# --------------------------------------------------------------------------- images
def test_gemini_image_with_a_developer_key(dev_env, fake, tmp_path):
    dest = tmp_path / "i.png"
    out = GeminiProvider(env=dev_env).generate(image_req(width=1280, height=720), dest, RecordingReporter())
    assert (out.format, out.model, out.cost) == ("png", "gemini-3.1-flash-image", None)
    assert is_png(dest)
    [create] = fake.create_requests()
    assert create.path == "/v1/models/gemini-3.1-flash-image:generateContent"
    assert create.headers["x-goog-api-key"] == DEV_KEY
    body = create.json()
    assert body["contents"][0]["parts"][0]["text"] == "a red fox at dawn"
    assert body["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert body["generationConfig"]["seed"] == 99
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "1K"}
    assert fake.creates == 1


def test_imagen_on_agent_platform_express(express_env, fake, tmp_path):
    dest = tmp_path / "i.png"
    p = GeminiProvider(env=express_env)
    out = p.generate(image_req(model="imagen-4.0-generate-001"), dest, RecordingReporter())
    assert out.format == "png" and is_png(dest)
    [create] = fake.create_requests()
    assert create.path == "/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict"
    assert create.headers["x-goog-api-key"] == EXPRESS_KEY
    params = create.json()["parameters"]
    assert params["sampleCount"] == 1 and params["aspectRatio"] == "1:1" and params["includeRaiReason"] is True
    assert "seed" not in params, "Imagen takes no seed while its watermark is on"
    fake.clear()
    p.generate(image_req(model="imagen-4.0-generate-001", options=opts("image", add_watermark=False,
                                                                       negative_prompt="blur")),
               dest, RecordingReporter())
    params = fake.create_requests()[0].json()["parameters"]
    assert params["seed"] == 99 and params["addWatermark"] is False and params["negativePrompt"] == "blur"


def test_gemini_image_on_agent_platform_with_adc(adc_env, fake, tmp_path):
    dest = tmp_path / "i.png"
    GeminiProvider(env=adc_env).generate(image_req(), dest, RecordingReporter())
    [create] = fake.create_requests()
    assert create.path == (f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/"
                           "gemini-3.1-flash-image:generateContent")
    assert create.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert "x-goog-api-key" not in create.headers
    assert fake.tokens_issued == 1


@pytest.mark.parametrize("model,outcome,reason", [
    ("gemini-3.1-flash-image", "rai", "IMAGE_SAFETY"),
    ("gemini-3.1-flash-image", "block", "PROHIBITED_CONTENT"),
    ("imagen-4.0-generate-001", "rai", "safety filter threshold"),
    ("imagen-4.0-generate-001", "none", "no image"),
])
def test_image_safety_blocks_are_refusals_never_retried(express_env, fake, tmp_path, model, outcome, reason):
    fake.image_outcomes.append(ImageOutcome(outcome))
    with pytest.raises(Refused) as e:
        GeminiProvider(env=express_env).generate(image_req(model=model), tmp_path / "i.png", RecordingReporter())
    assert reason in e.value.message and not e.value.retryable
    assert len(fake.create_requests()) == 1


def test_gemini_answer_without_an_image_is_not_a_refusal(dev_env, fake, tmp_path):
    fake.image_outcomes.append(ImageOutcome("none"))
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert not isinstance(e.value, Refused)
    assert "without an image (finish reason STOP)" in e.value.message and "describe this scene" in e.value.message


def test_a_webp_answer_is_kept_as_png(dev_env, fake, tmp_path):
    fake.image_outcomes.append(ImageOutcome("webp"))
    dest = tmp_path / "i.png"
    assert GeminiProvider(env=dev_env).generate(image_req(), dest, RecordingReporter()).format == "png"
    assert is_png(dest)


def test_rate_limit_then_success_honours_retry_info(dev_env, fake, tmp_path, sleeps):
    fake.script("POST", "/v1/models/*", rate_limited("2s"))
    dest = tmp_path / "i.png"
    GeminiProvider(env=dev_env).generate(image_req(), dest, RecordingReporter())
    assert sleeps == [2.0], "the RetryInfo delay is the wait"
    assert len(fake.create_requests()) == 2 and fake.creates == 1 and is_png(dest)


def test_retry_after_header_wins(dev_env, fake, tmp_path, sleeps):
    fake.script("POST", "/v1/models/*", gerror(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.",
                                               headers={"Retry-After": "3"}))
    GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert sleeps == [3.0]


def test_a_daily_quota_is_not_retried(dev_env, fake, tmp_path, sleeps):
    fake.script("POST", "/v1/models/*", rate_limited("30s", per_day=True))
    with pytest.raises(QuotaExceeded) as e:
        GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert "RESOURCE_EXHAUSTED" in e.value.message and not e.value.retryable
    assert sleeps == [] and len(fake.create_requests()) == 1


def test_server_errors_are_retried_then_reported(dev_env, fake, tmp_path, sleeps):
    fake.script("POST", "/v1/models/*", gerror(503, "UNAVAILABLE", "The model is overloaded."),
                gerror(500, "INTERNAL", "An internal error has occurred."))
    GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert len(sleeps) == 2 and fake.creates == 1
    fake.script("POST", "/v1/models/*", *[gerror(503, "UNAVAILABLE", "The model is overloaded.")] * 3)
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert "HTTP 503 UNAVAILABLE" in e.value.message and "gave up after 3 attempts" in e.value.message


def test_a_wrong_key_and_an_unknown_model_are_final(dev_env, fake, tmp_path, sleeps):
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env={**dev_env, "GEMINI_API_KEY": "AIzaWRONG"}).generate(
            image_req(), tmp_path / "i.png", RecordingReporter())
    assert "gemini rejected the API key (HTTP 400 INVALID_ARGUMENT): API key not valid" in e.value.message
    assert "GEMINI_API_KEY" in e.value.hint and "AIzaWRONG" not in e.value.message
    assert sleeps == []
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=dev_env).generate(image_req(model="gemini-9-image"), tmp_path / "i.png",
                                             RecordingReporter())
    assert e.value.status == 404 and "NOT_FOUND" in e.value.message and fake.creates == 0


def test_a_trickling_image_answer_is_reported_not_resent(dev_env, fake, tmp_path, sleeps):
    import base64

    from fakes.runway_fake import sample_png

    body = json.dumps({"candidates": [{"content": {"parts": [{"inlineData": {
        "mimeType": "image/png", "data": base64.b64encode(sample_png()).decode()}}]}}]})
    fake.script("POST", "/v1/models/*", Reply(200, body, content_type="application/json", trickle=(16, 0.05)))
    env = {**dev_env, "AIGEN_DOWNLOAD_DEADLINE": "0.3"}
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert "may have made and billed it" in e.value.message and not e.value.retryable
    assert len(fake.create_requests()) == 1


def test_a_paid_answer_lost_after_sending_is_not_resent(dev_env, fake, tmp_path, sleeps):
    fake.script("POST", "/v1/models/*", Reply(drop=True))
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=dev_env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert "may have made and billed it" in e.value.message and not e.value.retryable
    assert len(fake.create_requests()) == 1 and sleeps == []


def test_a_server_that_is_not_running_is_retried_then_reported(dev_env, tmp_path, sleeps):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**dev_env, "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{port}"}
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=env).generate(image_req(), tmp_path / "i.png", RecordingReporter())
    assert "could not reach the API" in e.value.message and len(sleeps) == 2


# --------------------------------------------------------------------------- Veo videos
def test_veo_video_saves_the_operation_name_before_polling(express_env, fake, tmp_path):
    fake.video_outcomes.append(VideoOutcome(polls=2))
    rep = RecordingReporter(fake)
    dest = tmp_path / "v.mp4"
    out = GeminiProvider(env=express_env).generate(video_req(), dest, rep)
    assert (out.format, out.model) == ("mp4", "veo-3.1-generate-001") and is_mp4(dest)
    [create] = fake.create_requests()
    assert create.path == "/v1beta1/publishers/google/models/veo-3.1-generate-001:predictLongRunning"
    assert create.json() == {"instances": [{"prompt": "a red fox at dawn"}], "parameters": {
        "sampleCount": 1, "durationSeconds": 4, "seed": 1234, "aspectRatio": "16:9", "resolution": "720p"}}
    [name] = rep.job_ids
    assert name.endswith("/operations/" + next(iter(fake.jobs)))
    assert rep.polls_before_save == 0, "the operation name is saved before the first poll"
    polls = fake.polls()
    assert len(polls) == 3 and all(json.loads(p.body) == {"operationName": name} for p in polls)
    assert polls[0].path == "/v1beta1/" + name.rsplit("/operations/", 1)[0] + ":fetchPredictOperation"
    assert rep.fractions[-1] == 1.0


def test_resume_polls_the_saved_operation_without_a_new_create(express_env, fake, tmp_path):
    name = fake.add_operation(outcome=VideoOutcome(polls=1))
    rep = RecordingReporter()
    dest = tmp_path / "v.mp4"
    GeminiProvider(env=express_env).generate(video_req(provider_job_id=name), dest, rep)
    assert fake.create_requests() == [] and fake.creates == 0 and rep.job_ids == []
    assert len(fake.polls()) == 2 and is_mp4(dest)


def test_resume_of_a_refused_operation_reports_it_again(express_env, fake, tmp_path):
    name = fake.add_operation(outcome=VideoOutcome(polls=0, result="rai"))
    with pytest.raises(Refused):
        GeminiProvider(env=express_env).generate(video_req(provider_job_id=name), tmp_path / "v.mp4",
                                                 RecordingReporter())
    assert fake.creates == 0
    rep = RecordingReporter()
    GeminiProvider(env=express_env).generate(video_req(provider_job_id=name, options={"resubmit_refused": True}),
                                             tmp_path / "v.mp4", rep)
    assert fake.creates == 1 and len(rep.job_ids) == 1


def test_resume_of_an_unknown_operation_creates_a_new_one(express_env, fake, tmp_path):
    gone = f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/veo-3.1-generate-001/operations/9"
    rep = RecordingReporter()
    GeminiProvider(env=express_env).generate(video_req(provider_job_id=gone), tmp_path / "v.mp4", rep)
    assert fake.creates == 1 and rep.job_ids and rep.job_ids[0] != gone


def test_veo_safety_filter_is_a_refusal_with_google_reason(express_env, fake, tmp_path):
    fake.video_outcomes.append(VideoOutcome(result="rai"))
    with pytest.raises(Refused) as e:
        GeminiProvider(env=express_env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "Responsible AI practices" in e.value.message and fake.creates == 1


def test_a_failed_operation_is_reported(express_env, fake, tmp_path):
    fake.video_outcomes.append(VideoOutcome(result="error", error_code=3, error_message="Prompt is too long."))
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=express_env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "Prompt is too long. (code 3)" in e.value.message and e.value.provider_code == "op_3"
    assert fake.creates == 1


def test_polling_survives_server_errors(express_env, fake, tmp_path):
    fake.script("POST", "*:fetchPredictOperation", gerror(503, "UNAVAILABLE", "try later"),
                gerror(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted."))
    dest = tmp_path / "v.mp4"
    GeminiProvider(env=express_env).generate(video_req(), dest, RecordingReporter())
    assert is_mp4(dest) and fake.creates == 1


def test_a_create_rate_limited_is_retried_and_made_once(express_env, fake, tmp_path, sleeps):
    fake.script("POST", "*:predictLongRunning", gerror(429, "RESOURCE_EXHAUSTED", "Resource exhausted.",
                                                       headers={"Retry-After": "1"}))
    rep = RecordingReporter()
    GeminiProvider(env=express_env).generate(video_req(), tmp_path / "v.mp4", rep)
    assert sleeps == [1.0] and fake.creates == 1 and len(rep.job_ids) == 1


def test_bad_parameters_are_refused_by_the_fake_like_google(express_env, fake):
    from google import genai
    from google.genai import errors, types

    client = genai.Client(vertexai=True, api_key=EXPRESS_KEY, http_options=types.HttpOptions(base_url=fake.url))
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_videos(model="veo-3.1-generate-001", source=types.GenerateVideosSource(prompt="x"),
                                      config=types.GenerateVideosConfig(duration_seconds=5))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_videos(model="veo-9", source=types.GenerateVideosSource(prompt="x"))
    assert e.value.code == 404
    no_key = genai.Client(vertexai=True, api_key=EXPRESS_KEY, http_options=types.HttpOptions(
        base_url=fake.url, headers={"x-goog-api-key": ""}))
    with pytest.raises(errors.ClientError) as e:
        no_key.models.generate_content(model="gemini-3.1-flash-image", contents="x")
    assert e.value.code == 401 and fake.creates == 0


def test_veo_on_adc_with_a_cloud_storage_output(adc_env, fake, tmp_path):
    dest = tmp_path / "v.mp4"
    rep = RecordingReporter()
    GeminiProvider(env=adc_env).generate(
        video_req(duration=8, width=1920, height=1080, options=opts("video", output_gcs_uri="gs://my-bucket/out/",
                                                                    generate_audio=False)), dest, rep)
    [create] = fake.create_requests()
    assert create.path.startswith(f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/")
    params = create.json()["parameters"]
    assert params["storageUri"] == "gs://my-bucket/out/" and params["resolution"] == "1080p"
    assert params["durationSeconds"] == 8 and params["generateAudio"] is False
    [download] = fake.matching("GET", "/download/storage/v1/b/my-bucket/o/*")
    assert download.headers["authorization"] == f"Bearer {ACCESS_TOKEN}" and download.query["alt"] == ["media"]
    assert is_mp4(dest)


def test_cloud_storage_output_without_credentials_says_where_the_video_is(express_env, fake, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud ADC file to be found
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    env = {**express_env, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
    rep = RecordingReporter()
    with pytest.raises(ProviderError) as e:
        GeminiProvider(env=env).generate(video_req(options=opts("video", output_gcs_uri="gs://my-bucket/o/")),
                                         tmp_path / "v.mp4", rep)
    assert "Application Default Credentials" in e.value.message and len(rep.job_ids) == 1


# --------------------------------------------------------------------------- Omni Flash videos
@pytest.mark.parametrize("delivery", ["bytes", "uri"])
def test_omni_flash_video_with_a_developer_key(dev_env, fake, tmp_path, delivery):
    fake.video_outcomes.append(VideoOutcome(polls=1, result=delivery))
    rep = RecordingReporter(fake)
    dest = tmp_path / "v.mp4"
    out = GeminiProvider(env=dev_env).generate(video_req(duration=5), dest, rep)
    assert out.model == "gemini-omni-flash-preview" and is_mp4(dest)
    [create] = fake.create_requests()
    assert create.path == "/v1/interactions"
    body = create.json()
    assert body["background"] is True and body["input"] == "a red fox at dawn"
    assert body["response_format"] == {"type": "video", "aspect_ratio": "16:9", "duration": "5s"}
    assert rep.job_ids == [next(iter(fake.jobs))] and rep.polls_before_save == 0
    if delivery == "uri":
        [dl] = fake.matching("GET", "/v1/files/*")
        assert dl.headers["x-goog-api-key"] == DEV_KEY


def test_omni_resume_and_refusal(dev_env, fake, tmp_path):
    iid = fake.add_interaction(VideoOutcome(polls=1))
    GeminiProvider(env=dev_env).generate(video_req(provider_job_id=iid), tmp_path / "v.mp4", RecordingReporter())
    assert fake.creates == 0
    fake.video_outcomes.append(VideoOutcome(result="rai"))
    with pytest.raises(Refused, match="safety filters"):
        GeminiProvider(env=dev_env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    fake.video_outcomes.append(VideoOutcome(result="error", error_message="Backend failure."))
    with pytest.raises(ProviderError, match="Backend failure") as e:
        GeminiProvider(env=dev_env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert not isinstance(e.value, Refused)


# --------------------------------------------------------------------------- CLI
def _providers_json(cli, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = cli("providers", "--json")
    assert res.exit_code == 0, res.output
    return next(r for r in json.loads(res.output)["providers"] if r["name"] == "gemini")


def test_providers_says_what_each_configuration_can_use(cli, monkeypatch, fake, adc_file):
    row = _providers_json(cli, monkeypatch, {})
    assert row["key_set"] is False and row["configuration"]["mode"] is None
    row = _providers_json(cli, monkeypatch, {"GEMINI_API_KEY": DEV_KEY})
    conf = row["configuration"]
    assert conf["mode"] == "developer" and conf["models"]["video"] == ["gemini-omni-flash-preview"]
    assert "veo-3.1-generate-001" not in conf["models"]["video"]
    assert row["default_models"] == {"image": "gemini-3.1-flash-image", "video": "gemini-omni-flash-preview"}
    assert row["price_per_asset"]["video"]["text"] == "unknown"
    assert DEV_KEY not in json.dumps(row)
    row = _providers_json(cli, monkeypatch, {"GOOGLE_GENAI_USE_ENTERPRISE": "true",
                                             "GOOGLE_VERTEX_BASE_URL": fake.url})
    conf = row["configuration"]
    assert conf["mode"] == "agent" and "express" in conf["label"] and conf["base_url"] == fake.url
    assert "imagen-4.0-generate-001" in conf["models"]["image"] and "veo-3.1-generate-001" in conf["models"]["video"]
    row = _providers_json(cli, monkeypatch, {"GOOGLE_CLOUD_PROJECT": PROJECT})
    assert "Application Default Credentials" in row["configuration"]["label"]
    res = cli("providers")
    assert "can use videos: veo-3.1-generate-001" in " ".join(res.output.split())


def test_keys_set_gemini_stores_the_key_for_the_provider(cli, home, monkeypatch, sleeps):
    res = cli("keys", "set", "gemini", "--var", "GEMINI_API_KEY", "--stdin", input=DEV_KEY + "\n")
    assert res.exit_code == 0, res.output
    assert DEV_KEY not in res.output
    mode, _ = GeminiProvider(env={}, home=home).mode()
    assert mode.platform == "developer" and mode.key == DEV_KEY
    listed = json.loads(cli("keys", "list", "--json").output)
    [row] = [k for k in listed["keys"] if k["var"] == "GEMINI_API_KEY"]
    assert row["set"] and row["masked"] == "AIza…(39 chars)" and DEV_KEY not in json.dumps(listed)


def test_google_key_shapes_are_scrubbed_from_messages():
    from aigen.providers.http import scrub

    assert DEV_KEY not in scrub(f"API key {DEV_KEY} not valid")


@pytest.mark.parametrize("image_provider,video_provider", [("local", "gemini"), ("gemini", "local")])
def test_generate_through_the_cli_mixed_with_local(cli, home, monkeypatch, fake, sleeps, image_provider,
                                                   video_provider):
    for k, v in {**BASE, "GOOGLE_API_KEY": EXPRESS_KEY, "GOOGLE_GENAI_USE_ENTERPRISE": "true",
                 "GOOGLE_VERTEX_BASE_URL": fake.url}.items():
        monkeypatch.setenv(k, v)
    res = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "2", "--videos", "2",
              "--image-provider", image_provider, "--video-provider", video_provider, "--video-size", "640x360",
              "--image-size", "256x256", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["status"] == "Completed"
    assert fake.creates == 2
    from aigen.store import Store

    store = Store(home / "aigen.db")
    rows = store.query("SELECT kind, provider, model, provider_job_id, status, note FROM assets")
    gem = [r for r in rows if r["provider"] == "gemini"]
    assert len(gem) == 2 and all(r["status"] == "done" for r in gem)
    if video_provider == "gemini":
        assert all(r["model"] == "veo-3.1-generate-001" and "/operations/" in r["provider_job_id"] for r in gem)
        assert all("asked 640x360" in (r["note"] or "") for r in gem)


def test_dry_run_shows_gemini_with_an_unknown_price(cli, monkeypatch, fake):
    monkeypatch.setenv("GEMINI_API_KEY", DEV_KEY)
    res = cli("generate", "a fox", "--user", "alice", "--video-provider", "gemini", "--image-provider", "gemini",
              "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    video = next(i for i in plan["items"] if i["kind"] == "video")
    assert video["model"] == "gemini-omni-flash-preview" and video["estimate"]["text"] == "unknown"
    assert "Google's prices" in video["estimate"]["note"]
    assert plan["total"]["text"] == "unknown" and fake.requests == []


def test_generate_refuses_veo_with_a_developer_key_before_writing(cli, home, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", DEV_KEY)
    res = cli("generate", "a fox", "--user", "alice", "--video-provider", "gemini", "--video-model",
              "veo-3.1-generate-001")
    assert res.exit_code == 2 and "only on Agent Platform" in res.output
    assert not (home / "generated_content").exists()


def test_retry_polls_the_saved_operation_after_a_deadline(cli, home, monkeypatch, fake, sleeps):
    for k, v in {**BASE, "GOOGLE_API_KEY": EXPRESS_KEY, "GOOGLE_GENAI_USE_ENTERPRISE": "true",
                 "GOOGLE_VERTEX_BASE_URL": fake.url, "AIGEN_JOB_TIMEOUT": "0.3"}.items():
        monkeypatch.setenv(k, v)
    fake.default_video = VideoOutcome(polls=100_000)
    res = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "0", "--videos", "1",
              "--video-provider", "gemini", "--json")
    assert res.exit_code == 1, res.output
    gid = json.loads(res.output)["id"]
    from aigen.store import Store

    [asset] = Store(home / "aigen.db").query("SELECT status, error_code, provider_job_id FROM assets")
    assert asset["status"] == "failed" and asset["error_code"] == "job_timeout"
    [job] = fake.jobs.values()
    assert asset["provider_job_id"] == job.name

    job.outcome = VideoOutcome(polls=0)  # it finished at Google meanwhile
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT")
    res = cli("retry", gid, "--json")
    assert res.exit_code == 0, res.output
    assert fake.creates == 1, "the retry polled the saved operation instead of creating another"
