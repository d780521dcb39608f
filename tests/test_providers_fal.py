"""The `fal` provider against a local fake of fal.ai's queue, with the real fal-client SDK.

The fake (tests/fakes/fal_fake.py) follows the documented contract; the SDK is
pointed at it through aigen's FAL_BASE_URL. Retry waits are recorded instead of
slept (aigen.providers.http.sleep) and polls are spaced 10 ms apart
(AIGEN_POLL_INTERVAL), so no test waits for real.
"""

import json

import pytest

pytest.importorskip("fal_client", reason="fal-client is in the test extra; the floors run installs no extras")

from aigen.config import resolve_home  # noqa: E402
from aigen.errors import BadInput, ProviderError, ProviderTimeout, Refused  # noqa: E402
from aigen.pipeline.plan import RequestSpec, prepare  # noqa: E402
from aigen.pipeline.run import Runner  # noqa: E402
from aigen.providers.base import AssetRequest  # noqa: E402
from aigen.providers.fal import (  # noqa: E402
    DEFAULT_VIDEO_MODEL, FalProvider, build_input, closest_aspect, closest_duration, closest_resolution,
)
from aigen.store import Store  # noqa: E402
from fakes.fal_fake import KEY, FalFake, Outcome  # noqa: E402
from fakes.httpfake import Reply  # noqa: E402

KLING = DEFAULT_VIDEO_MODEL
FLUX = "fal-ai/flux/dev"


# --------------------------------------------------------------------------- fixtures
class RecordingReporter:
    def __init__(self, fake=None, stop_after_save=False, stop_when=None, abandon=False):
        self.fake = fake
        self.job_ids = []
        self.status_gets_before_save = None
        self.fractions = []
        self.stop_after_save = stop_after_save
        self.stop_when = stop_when
        self.abandon = abandon

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)
        if self.fake is not None:
            self.status_gets_before_save = self.fake.status_gets()

    def progress(self, fraction):
        self.fractions.append(fraction)

    def cancel_requested(self):
        return self.abandon

    def check_stop(self):
        stop = self.stop_after_save and self.job_ids
        if self.stop_when is not None and self.job_ids:
            stop = self.stop_when()
        if stop:
            from aigen.pipeline.run import Cancelled

            raise Cancelled("stopped")


@pytest.fixture
def fake():
    with FalFake() as f:
        yield f


@pytest.fixture
def sleeps(monkeypatch):
    """Retry waits, recorded instead of slept."""
    waits = []
    monkeypatch.setattr("aigen.providers.http.sleep", waits.append)
    return waits


@pytest.fixture
def env(fake, home, monkeypatch, sleeps):
    values = {"FAL_KEY": KEY, "FAL_BASE_URL": fake.url, "AIGEN_POLL_INTERVAL": "0.01", "AIGEN_RETRY_ATTEMPTS": "3"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    for var in ("AIGEN_HTTP_TIMEOUT", "AIGEN_JOB_TIMEOUT", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return values


def provider(env, **extra):
    return FalProvider(env={**env, **extra})


def video_req(**kw):
    base = dict(kind="video", prompt="a red fox at dawn", index=1, seed=1234, width=1280, height=720,
                generation_id="g1", model=KLING, duration=4.0)
    base.update(kw)
    return AssetRequest(**base)


def image_req(**kw):
    base = dict(kind="image", prompt="a red fox at dawn", index=1, seed=99, width=1024, height=1024,
                generation_id="g1", model=FLUX)
    base.update(kw)
    return AssetRequest(**base)


def new_generation(home_dir, **kw):
    home = resolve_home(home_dir)
    home.ensure()
    store = Store(home.db_path)
    spec_kw = dict(user_id="alice", prompt="a red fox at dawn", images=0, videos=1, image_provider="fal",
                   video_provider="fal", image_size="1024x1024", video_size="1280x720", duration=4, seed=7)
    spec_kw.update(kw)
    gen, assets = prepare(RequestSpec(**spec_kw), home=home.path)
    return home, store, store.create_generation(gen, assets)


# --------------------------------------------------------------------------- the happy path, through the CLI
def test_cli_makes_fal_images_and_videos(cli, env, fake):
    from PIL import Image

    from aigen.media.probe import probe_video

    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "2", "--videos", "2",
            "--image-provider", "fal", "--video-provider", "fal", "--image-size", "768x512", "--duration", "5",
            "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    assert len(data["images"]) == 2 and len(data["videos"]) == 2
    for p in data["images"]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (768, 512)
    for p in data["videos"]:
        assert probe_video(p).codec == "h264"
    assert fake.submits == 4
    subs = fake.submit_requests()
    assert all(q.headers["authorization"] == f"Key {KEY}" for q in subs)
    assert all(q.headers["user-agent"].startswith("fal-client/") for q in subs)
    images = [q.json() for q in subs if q.path == f"/{FLUX}"]
    videos = [q.json() for q in subs if q.path == f"/{KLING}"]
    assert len(images) == 2 and len(videos) == 2
    for body in images:
        assert body["image_size"] == {"width": 768, "height": 512}
        assert body["num_images"] == 1 and body["output_format"] == "png" and body["prompt"] == "a red fox at dawn"
    assert len({b["seed"] for b in images}) == 2, "the images of one request must get different seeds"
    assert videos[0] == {"prompt": "a red fox at dawn", "aspect_ratio": "16:9", "duration": "5"}
    by_id = set(fake.reqs)
    for a in data["assets"]:
        assert a["status"] == "done" and a["provider"] == "fal" and a["provider_job_id"] in by_id
        assert a["model"] == (FLUX if a["kind"] == "image" else KLING)
    # Status and result are read at fal's URLs without the model's sub-path.
    assert fake.count("GET", "/fal-ai/kling-video/requests/*/status") >= 2


def test_the_request_id_is_saved_before_the_first_poll(env, fake, tmp_path):
    rep = RecordingReporter(fake)
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", rep)
    assert out.format == "mp4" and out.model == KLING
    assert rep.job_ids == list(fake.reqs) and rep.status_gets_before_save == 0
    assert rep.fractions[-1] == pytest.approx(1.0) and max(rep.fractions) <= 1.0


def test_known_models_get_the_size_duration_and_seed_they_take():
    assert closest_aspect(1280, 720, ("16:9", "9:16", "1:1")) == "16:9"
    assert closest_aspect(1000, 1100, ("16:9", "9:16", "1:1")) == "1:1"
    assert closest_aspect(2100, 900, ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")) == "21:9"
    assert closest_duration(4, ("5", "10")) == "5" and closest_duration(8, ("5", "10")) == "10"
    assert closest_duration(7, ("4s", "6s", "8s")) == "8s"  # a tie goes to the longer clip
    assert closest_duration(0.5, tuple(range(3, 31))) == 3
    assert closest_resolution(1280, 720, ("720p", "1080p", "4k")) == "720p"
    assert closest_resolution(1920, 1080, ("720p", "1080p", "4k")) == "1080p"
    assert closest_resolution(3840, 2160, ("720p", "1080p", "4k")) == "4k"
    veo = build_input("video", "fal-ai/veo3.1", prompt="p", width=1080, height=1920, duration=5, seed=77, options={})
    assert veo == {"prompt": "p", "aspect_ratio": "9:16", "duration": "6s", "resolution": "1080p", "seed": 77}
    hailuo = build_input("video", "fal-ai/minimax/hailuo-2.3/standard/text-to-video", prompt="p", width=1280,
                         height=720, duration=9, seed=1, options={"prompt_optimizer": False})
    assert hailuo == {"prompt": "p", "duration": "10", "prompt_optimizer": False}
    seedance = build_input("video", "fal-ai/bytedance/seedance/v1/pro/text-to-video", prompt="p", width=1280,
                           height=720, duration=4, seed=3, options={"duration": 12})
    assert seedance == {"prompt": "p", "aspect_ratio": "16:9", "duration": "12", "resolution": "720p", "seed": 3}
    kling4 = build_input("video", "fal-ai/kling-video/v4/text-to-video", prompt="p", width=1920, height=1080,
                         duration=12, seed=3, options={"negative_prompt": "blur"})
    assert kling4 == {"prompt": "p", "aspect_ratio": "16:9", "duration": 12, "resolution": "1080p",
                      "negative_prompt": "blur"}


def test_every_known_model_is_accepted_by_the_strict_fake(env, fake, tmp_path):
    from aigen.providers.fal import MODELS

    for i, (model, spec) in enumerate(MODELS.items()):
        req = (image_req if spec.kind == "image" else video_req)(model=model, index=i + 1)
        out = provider(env).generate(req, tmp_path / f"{i}.{'png' if spec.kind == 'image' else 'mp4'}",
                                     RecordingReporter())
        assert out.model == model
    assert fake.submits == len(MODELS)


def test_an_unknown_model_gets_the_prompt_and_the_options_only(cli, env, fake):
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--videos", "1", "--video-provider", "fal",
            "--video-model", "someone/new-video-model", "--video-option", "motion=7", "--video-option",
            "style=film noir", "--json")
    assert r.exit_code == 0, r.output
    [sub] = fake.submit_requests()
    assert sub.path == "/someone/new-video-model"
    assert sub.json() == {"prompt": "a fox", "motion": 7, "style": "film noir"}


def test_options_override_the_mapping_and_numbers_are_spelt_as_fal_wants(cli, env, fake):
    r = cli("generate", "a fox", "--user", "alice", "--images", "1", "--videos", "1", "--image-provider", "fal",
            "--video-provider", "fal", "--video-option", "duration=10", "--video-option", "cfg_scale=0.7",
            "--image-option", "num_inference_steps=30", "--image-option", "image_size=landscape_16_9", "--json")
    assert r.exit_code == 0, r.output
    bodies = {q.path: q.json() for q in fake.submit_requests()}
    assert bodies[f"/{KLING}"] == {"prompt": "a fox", "aspect_ratio": "16:9", "duration": "10", "cfg_scale": 0.7}
    assert bodies[f"/{FLUX}"]["image_size"] == "landscape_16_9"
    assert bodies[f"/{FLUX}"]["num_inference_steps"] == 30


@pytest.mark.parametrize("args, words", [
    (["--video-option", "duration=7"], "invalid --video-option duration=7 for fal model"),
    (["--video-option", "steps=3"], "takes no input 'steps'"),
    (["--video-option", "seed=3"], "each asset gets its own seed"),
    (["--video-option", "prompt=x"], "the prompt is the PROMPT argument"),
    (["--video-option", "cfg_scale=high"], "must be a number"),
    (["--video-model", "kling"], "invalid fal video model 'kling'"),
    (["--video-model", FLUX], "makes images, not videos"),
])
def test_bad_options_and_models_are_refused_before_anything_is_written(cli, env, fake, home, args, words):
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--video-provider", "fal", *args)
    assert r.exit_code == 2, r.output
    assert words in " ".join(r.output.split())
    assert fake.requests == []
    h = resolve_home(home)
    assert not h.db_path.exists() or Store(h.db_path).query("SELECT id FROM generations") == []


def test_notes_say_what_differs_from_the_ask(env):
    p = provider(env)
    notes = p.check_request("video", prompt="x", model=KLING, width=1000, height=900, duration=4)
    assert notes == ["fal Kling 2.1 Master makes aspect ratio 1:1 (of 16:9, 9:16, 1:1) for the asked 1000x900; "
                     "5 s, the closest it makes to the asked 4 s"]
    assert p.check_request("video", prompt="x", model=KLING, width=1280, height=720, duration=5) == []
    [note] = p.check_request("video", prompt="x", model="someone/new-video-model", width=1280, height=720,
                             duration=5)
    assert "not in aigen's table" in note and "billed" in note


def test_dry_run_shows_fal_prices_where_published(cli, env, fake):
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "fal", "--video-provider", "fal",
            "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    items = {i["kind"]: i for i in plan["items"]}
    # FLUX.1 [dev]: $0.025 per megapixel; 1024x1024 is 1.048576 MP.
    assert items["image"]["estimate"]["usd_low"] == pytest.approx(5 * 0.025 * 1.048576, abs=1e-4)
    assert items["video"]["estimate"]["text"] == "unknown"
    assert plan["total"]["text"].endswith("+ unknown")
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--video-provider", "fal", "--video-model",
            "fal-ai/kling-video/v4/text-to-video", "--video-size", "1920x1080", "--duration", "0.5", "--dry-run",
            "--json")
    [video] = json.loads(r.output)["items"]
    # Kling 4.0 makes 3 s at least, billed $0.235 a second at 1080p.
    assert video["duration"] == 3 and video["estimate"]["usd_low"] == pytest.approx(5 * 3 * 0.235)
    assert fake.requests == []


def test_providers_lists_fal_and_keys_set_stores_fal_key(cli, home, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.setenv("FAL_BASE_URL", "http://127.0.0.1:9")
    r = cli("providers", "--json")
    rows = {p["name"]: p for p in json.loads(r.output)["providers"]}
    fal = rows["fal"]
    assert fal["makes"] == ["image", "video"] and fal["key_set"] is False and fal["missing"] == ["FAL_KEY"]
    assert fal["default_models"] == {"image": FLUX, "video": KLING}
    assert fal["base_url_env"] == "FAL_BASE_URL" and fal["base_url"] == "http://127.0.0.1:9"
    assert fal["concurrency"] == 4 and fal["concurrency_env"] == "AIGEN_FAL_CONCURRENCY"
    assert fal["price_per_asset"]["image"]["text"].startswith("$0.026 per image")
    r = cli("keys", "set", "fal", "--stdin", input=KEY + "\n")
    assert r.exit_code == 0, r.output and KEY not in r.output
    r = cli("providers", "--json")
    assert {p["name"]: p for p in json.loads(r.output)["providers"]}["fal"]["key_set"] is True
    monkeypatch.setenv("AIGEN_FAL_CONCURRENCY", "2")
    r = cli("providers", "--json")
    assert {p["name"]: p for p in json.loads(r.output)["providers"]}["fal"]["concurrency"] == 2


def test_a_missing_key_or_a_bad_base_url_is_exit_2(cli, env, fake, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--video-provider", "fal")
    assert r.exit_code == 2 and "needs FAL_KEY" in r.output and "aigen keys set fal" in r.output
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("FAL_BASE_URL", "127.0.0.1:8080")
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--video-provider", "fal")
    assert r.exit_code == 2 and "must be a full URL with its scheme" in r.output
    assert fake.requests == []


# --------------------------------------------------------------------------- resume
def test_resume_polls_the_saved_request_without_a_new_submit(env, fake, home, monkeypatch):
    fake.default_outcome = Outcome(steps=("IN_QUEUE",) + ("IN_PROGRESS",) * 10_000)
    monkeypatch.setenv("AIGEN_JOB_TIMEOUT", "0.3")
    h, store, gid = new_generation(home)
    result = Runner(store, h).run(gid)
    [asset] = result.assets
    assert asset["status"] == "failed" and asset["error_code"] == "job_timeout"
    rid = asset["provider_job_id"]
    assert rid in fake.reqs and fake.submits == 1

    fake.reqs[rid].outcome = Outcome(steps=("COMPLETED",))  # it finished at fal meanwhile
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT")
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert fake.submits == 1, "a resume polls the saved request; it never submits a new one"
    assert fake.count("GET", f"/fal-ai/kling-video/requests/{rid}") == 1


def test_a_stopped_run_is_resumed_by_polling_and_a_running_request_is_not_cancelled(env, fake, tmp_path):
    fake.default_outcome = Outcome(steps=("IN_PROGRESS", "IN_PROGRESS", "COMPLETED"))
    p = provider(env)
    rep = RecordingReporter(fake, stop_when=lambda: fake.status_gets() >= 1)
    with pytest.raises(Exception) as e:
        p.generate(video_req(), tmp_path / "v.mp4", rep)
    assert getattr(e.value, "code", None) == "cancelled"
    assert fake.cancels() == 0, "a request that runs is billed anyway: a stop keeps it for the resume"
    [rid] = rep.job_ids
    out = p.generate(video_req(provider_job_id=rid), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.submits == 1


def test_a_stop_while_queued_cancels_the_request_and_a_retry_submits_anew(env, fake, tmp_path):
    fake.default_outcome = Outcome(steps=("IN_QUEUE",) * 5 + ("IN_PROGRESS", "COMPLETED"))
    p = provider(env)
    rep = RecordingReporter(fake, stop_after_save=True)
    with pytest.raises(Exception) as e:
        p.generate(video_req(), tmp_path / "v.mp4", rep)
    assert getattr(e.value, "code", None) == "cancelled"
    [rid] = rep.job_ids
    assert fake.cancels() == 1 and fake.reqs[rid].cancelled
    rep2 = RecordingReporter()
    out = p.generate(video_req(provider_job_id=rid), tmp_path / "v.mp4", rep2)
    assert out.format == "mp4" and fake.submits == 2 and rep2.job_ids and rep2.job_ids[0] != rid


def test_aigen_cancel_cancels_a_running_request(env, fake, tmp_path):
    fake.default_outcome = Outcome(steps=("IN_PROGRESS",) * 5 + ("COMPLETED",))
    rep = RecordingReporter(fake, stop_when=lambda: fake.status_gets() >= 1, abandon=True)
    with pytest.raises(Exception):
        provider(env).generate(video_req(), tmp_path / "v.mp4", rep)
    assert fake.cancels() == 1


# --------------------------------------------------------------------------- bad days: HTTP
def test_429_with_retry_after_is_honoured_then_succeeds(env, fake, sleeps, tmp_path):
    fake.script("POST", "/fal-ai/*", Reply(429, {"detail": "Too many requests"}, headers={"Retry-After": "7"}))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4"
    assert len(fake.submit_requests()) == 2 and fake.submits == 1
    assert sleeps == [7.0], "aigen's retry waits what Retry-After asks (the SDK's own retries are off)"


def test_5xx_on_submit_until_the_retries_run_out(env, fake, sleeps, tmp_path):
    fake.script("POST", "/fal-ai/*", *[Reply(503, {"detail": "Service unavailable",
                                                   "error_type": "runner_scheduling_failure"})] * 5)
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "server error (HTTP 503)" in e.value.message and "gave up after 3 attempts" in e.value.message
    assert "runner_scheduling_failure" in e.value.message
    assert len(fake.submit_requests()) == 3 and fake.submits == 0 and len(sleeps) == 2


def test_polls_and_result_that_fail_for_a_while_are_survived(env, fake, sleeps, tmp_path):
    fake.script("GET", "*/status", Reply(500, {"detail": "Internal error"}),
                Reply(429, {"detail": "Too many requests"}, headers={"Retry-After": "0.05"}))
    fake.script("GET", "/fal-ai/kling-video/requests/*", Reply(502, {"detail": "Bad gateway"}))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.submits == 1
    gets = fake.matching("GET", "*/status")
    assert gets[2].at - gets[1].at >= 0.05, "a poll answered 429 waits what Retry-After asks"


def test_a_slow_submit_is_not_sent_twice(env, fake, tmp_path):
    fake.script("POST", "/fal-ai/*", Reply(200, {"status": "IN_QUEUE"}, delay=5))
    with pytest.raises(ProviderTimeout) as e:
        provider(env, AIGEN_HTTP_TIMEOUT="0.5").generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "no answer within the timeout" in e.value.message and "not retried" in e.value.message
    assert len(fake.submit_requests()) == 1


def test_a_rejected_key_never_shows_up_in_the_error(env, fake, tmp_path):
    wrong = "0000aaaa-1111-2222-3333-444455556666:ffffffffffffffffffffffffffffffff"
    with pytest.raises(ProviderError) as e:
        provider(env, FAL_KEY=wrong).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "rejected the API key (HTTP 401)" in e.value.message and "FAL_KEY" in e.value.hint
    assert wrong not in e.value.message and wrong not in (e.value.hint or "")


def test_a_model_fal_does_not_serve_is_a_clear_error(env, fake, tmp_path):
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(model="someone/missing-model"), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.provider_code == "unknown_model" and "HTTP 404" in e.value.message
    assert fake.submits == 0


# --------------------------------------------------------------------------- bad days: requests
def test_a_content_policy_violation_is_a_refusal_never_resubmitted(cli, env, fake):
    fake.default_outcome = Outcome(end="refused")
    r = cli("generate", "a fox", "--user", "alice", "--images", "0", "--videos", "1", "--video-provider", "fal",
            "--json")
    assert r.exit_code == 1
    data = json.loads(r.output)
    [asset] = data["assets"]
    assert asset["error_code"] == "content_policy_violation" and asset["refused"] is True
    assert "refused by fal: The content was flagged by a content checker. (categories: violence)" in asset["error"]
    assert fake.submits == 1
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 1 and fake.submits == 1, "a refusal is not submitted again unless asked"
    r = cli("retry", data["id"], "--include-refused", "--json")
    assert fake.submits == 2


def test_a_failed_request_fails_the_asset_with_fals_reason(env, fake, home, sleeps):
    fake.default_outcome = Outcome(end="failed")
    h, store, gid = new_generation(home)
    result = Runner(store, h).run(gid)
    [asset] = result.assets
    assert result.generation["status"] == "Failed"
    assert asset["error_code"] == "runner_disconnected"
    assert "Runner disconnected while processing the request" in asset["error"]
    assert asset["provider_job_id"] in fake.reqs
    assert fake.submits == 1 and sleeps == [], "a failed request is reported, not retried"
    fake.default_outcome = Outcome()
    assert Runner(store, h).run(gid).generation["status"] == "Completed"
    assert fake.submits == 2, "`aigen retry` replaces a failed request with a new one"


def test_a_cancelled_request_is_reported_as_cancelled(env, fake, tmp_path):
    fake.default_outcome = Outcome(end="cancelled")
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.provider_code == "CANCELLED" and "was cancelled before it finished" in e.value.message


def test_an_input_fal_refuses_is_billed_and_not_resubmitted(env, fake, tmp_path):
    p = provider(env)
    # Only reachable with a model aigen does not check: fal takes the request and refuses it at the result.
    fake.reqs.clear()
    rid = fake.add_request(KLING, Outcome(steps=("COMPLETED",)))
    fake.reqs[rid].body = {"prompt": "x", "duration": "7"}
    with pytest.raises(ProviderError) as e:
        p.generate(video_req(provider_job_id=rid), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.provider_code == "invalid_input" and "duration" in e.value.message
    assert "bills" in e.value.hint and fake.submits == 0


def test_a_truncated_download_is_retried_then_reported(env, fake, sleeps, tmp_path):
    fake.default_outcome = Outcome(download_fault="truncate")
    dest = tmp_path / "v.mp4"
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), dest, RecordingReporter())
    assert "truncated" in e.value.message and "gave up after 3 attempts" in e.value.message
    assert fake.count("GET", "/files/*") == 3 and fake.submits == 1
    assert not dest.exists()


# --------------------------------------------------------------------------- mixes with other providers
@pytest.mark.parametrize("images, videos", [("fal", "local"), ("local", "fal")])
def test_fal_mixes_with_local(cli, env, fake, images, videos):
    r = cli("generate", "a lighthouse", "--user", "alice", "--images", "2", "--videos", "2", "--image-provider",
            images, "--video-provider", videos, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed" and len(data["images"]) == 2 and len(data["videos"]) == 2
    assert {(a["kind"], a["provider"]) for a in data["assets"]} == {("image", images), ("video", videos)}
    assert fake.submits == 2


def test_check_ready_names_the_missing_package(env, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fal_client" else real(name, *a))
    with pytest.raises(BadInput) as e:
        provider(env).check_ready("image")
    assert "fal-client" in e.value.message and "aigen[fal]" in e.value.hint


def test_refused_is_the_error_class_of_a_refusal(env, fake, tmp_path):
    fake.default_outcome = Outcome(end="refused")
    with pytest.raises(Refused):
        provider(env).generate(image_req(), tmp_path / "i.png", RecordingReporter())


def test_an_exhausted_balance_is_reported_as_quota_and_not_retried(env, fake, sleeps, tmp_path):
    from aigen.errors import QuotaExceeded

    fake.script("POST", "/fal-ai/*", Reply(403, {"detail": "User is locked. Reason: Exhausted balance. "
                                                           "Top up your balance at fal.ai/dashboard/billing."}))
    with pytest.raises(QuotaExceeded, match="fal: out of credit: User is locked"):
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert len(fake.submit_requests()) == 1 and sleeps == []


def test_without_fal_base_url_the_sdk_keeps_its_own_hosts_and_backup_domain(env):
    import fal_client.client as fc

    p = provider({k: v for k, v in env.items() if k != "FAL_BASE_URL"})
    transport = p._client()._client._transport
    assert isinstance(transport._inner, fc.BackupDomainTransport) and transport._rewrite is None
    assert fc.QUEUE_URL_FORMAT == "https://queue.fal.run/", "aigen never patches the SDK's URL constants"
    assert fc.MAX_ATTEMPTS == 1, "the SDK's own retries are off: aigen's retry"
