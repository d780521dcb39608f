"""The `pictory` provider against a local fake of Pictory's API (requests, PICTORY_BASE_URL)."""

import json

import pytest

from aigen.config import resolve_home
from aigen.errors import BadInput, MediaCheckError, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.pipeline.run import Runner
from aigen.providers.base import AssetRequest
from aigen.providers.pictory import PictoryVideos, aspect_ratio_for
from aigen.store import Store
from fakes.httpfake import Reply
from fakes.pictory_fake import API_KEY, CLIENT_ID, CLIENT_SECRET, USER_ID, JobOutcome, PictoryFake

RENDER = "/v2/video/storyboard/render"
AUTH_VARS = ("PICTORY_API_KEY", "PICTORY_CLIENT_ID", "PICTORY_CLIENT_SECRET", "PICTORY_USER_ID")


class RecordingReporter:
    def __init__(self, fake=None):
        self.fake = fake
        self.job_ids = []
        self.polls_before_save = None
        self.fractions = []

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)
        if self.fake is not None:
            self.polls_before_save = self.fake.count("GET", "/v1/jobs/*")

    def progress(self, fraction):
        self.fractions.append(fraction)


@pytest.fixture
def fake():
    with PictoryFake() as f:
        yield f


@pytest.fixture
def sleeps(monkeypatch):
    waits = []
    monkeypatch.setattr("aigen.providers.http.sleep", waits.append)
    return waits


@pytest.fixture
def env(fake, home, monkeypatch, sleeps):
    for var in AUTH_VARS + ("AIGEN_HTTP_TIMEOUT", "AIGEN_JOB_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    values = {"PICTORY_API_KEY": API_KEY, "PICTORY_BASE_URL": fake.url, "AIGEN_POLL_INTERVAL": "0.01",
              "AIGEN_RETRY_ATTEMPTS": "3"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def oauth_env(env):
    e = {k: v for k, v in env.items() if k != "PICTORY_API_KEY"}
    return {**e, "PICTORY_CLIENT_ID": CLIENT_ID, "PICTORY_CLIENT_SECRET": CLIENT_SECRET, "PICTORY_USER_ID": USER_ID}


def provider(env, **extra):
    return PictoryVideos(env={**env, **extra})


def req(**kw):
    base = dict(kind="video", prompt="A fox wakes at dawn. It runs across the frozen field.", index=2, seed=5,
                width=1280, height=720, generation_id="abc123", model=None, duration=4.0)
    base.update(kw)
    return AssetRequest(**base)


def new_generation(home_dir, videos=1):
    home = resolve_home(home_dir)
    home.ensure()
    store = Store(home.db_path)
    gen, assets = prepare(RequestSpec(user_id="alice", prompt="a red fox at dawn", images=0, videos=videos,
                                      video_provider="pictory", seed=3), home=home.path)
    return home, store, store.create_generation(gen, assets)


# --------------------------------------------------------------------------- success
def test_render_with_an_api_key(env, fake, tmp_path):
    rep = RecordingReporter(fake)
    dest = tmp_path / "v.mp4"
    out = provider(env).generate(req(), dest, rep)
    assert out.format == "mp4"
    assert dest.read_bytes()[4:8] == b"ftyp"
    [render] = fake.matching("POST", RENDER)
    assert render.headers["authorization"] == API_KEY, "the API key goes raw, without Bearer"
    assert render.headers["user-agent"].startswith("Mozilla/")
    body = render.json()
    assert body["aspectRatio"] == "16:9" and body["videoName"] == "aigen abc123 video 2"
    # Without a voiceOver block Pictory renders a silent video; the default narrator is Martin.
    assert body["voiceOver"] == {"enabled": True,
                                 "aiVoices": [{"speaker": "Martin", "speed": 100, "amplificationLevel": 0}]}
    assert fake.unvoiced == [] and not fake.jobs[rep.job_ids[0]].silent
    assert body["scenes"][0]["story"] == "A fox wakes at dawn. It runs across the frozen field."
    assert rep.job_ids == [next(iter(fake.jobs))] and rep.polls_before_save == 0
    assert fake.creations == 1 and fake.count("GET", "/v1/jobs/*") == 3
    assert fake.count("POST", "/v1/oauth2/token") == 0


def test_oauth_token_is_fetched_once_and_sent_with_the_user_id(env, fake, tmp_path):
    p = provider(oauth_env(env))
    p.generate(req(), tmp_path / "a.mp4", RecordingReporter())
    p.generate(req(index=3), tmp_path / "b.mp4", RecordingReporter())
    assert fake.count("POST", "/v1/oauth2/token") == 1
    [token] = fake.tokens_issued
    for r in fake.matching("POST", RENDER) + fake.matching("GET", "/v1/jobs/*"):
        assert r.headers["authorization"] == token and r.headers["x-pictory-user-id"] == USER_ID


def test_a_rejected_oauth_token_is_renewed_once(env, fake, tmp_path):
    p = provider(oauth_env(env))
    p.generate(req(), tmp_path / "a.mp4", RecordingReporter())
    fake.revoked.add(fake.tokens_issued[0])
    p.generate(req(index=3), tmp_path / "b.mp4", RecordingReporter())
    assert fake.count("POST", "/v1/oauth2/token") == 2


def test_a_library_user_agent_would_be_blocked_by_cloudflare(env, fake, tmp_path, monkeypatch):
    # The fake rejects non-browser agents the way Cloudflare does; prove the check bites.
    monkeypatch.setattr("aigen.providers.http.BROWSER_USER_AGENT", "python-requests/2.32")
    with pytest.raises(ProviderError, match="blocked by Cloudflare") as e:
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.provider_code == "blocked" and fake.creations == 0


def test_aspect_ratio_follows_the_asked_size():
    assert aspect_ratio_for(1280, 720) == "16:9"
    assert aspect_ratio_for(720, 1280) == "9:16"
    assert aspect_ratio_for(1000, 1000) == "1:1"
    assert aspect_ratio_for(800, 1000) == "4:5"


def test_cli_makes_pictory_videos(cli, env, fake):
    from aigen.media.probe import probe_video

    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "0", "--videos", "2",
            "--video-provider", "pictory", "--video-size", "720x1280", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed" and len(data["videos"]) == 2
    for p in data["videos"]:
        assert probe_video(p).codec == "h264"
    assert {r.json()["aspectRatio"] for r in fake.matching("POST", RENDER)} == {"9:16"}
    assert {a["provider_job_id"] for a in data["assets"]} == set(fake.jobs)


def test_check_request_says_what_pictory_decides_and_refuses_what_it_cannot(env):
    p = provider(env)
    [note, voice] = p.check_request("video", prompt="x", model=None, width=1280, height=720, duration=4)
    assert "aspect ratio 16:9" in note and "no seed" in note
    assert "narrated by the voice 'Martin' (the default" in voice
    with pytest.raises(BadInput, match="unknown pictory video model 'gen4.5'"):
        p.check_request("video", prompt="x", model="gen4.5", width=1280, height=720)
    with pytest.raises(BadInput, match="pictory cannot make videos from this request's images"):
        p.check_request("video", prompt="x", model=None, width=1280, height=720,
                        options={"video_from_images": True})


# --------------------------------------------------------------------------- voice-over
def test_cli_voice_option_picks_the_narrator_or_turns_it_off(cli, env, fake):
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "0", "--videos", "1",
            "--video-provider", "pictory", "--voice", "Joanna")
    assert r.exit_code == 0, r.output
    assert "narrated by the voice 'Joanna'" in " ".join(r.output.split())
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "0", "--videos", "1",
            "--video-provider", "pictory", "--voice", "None", "--json")
    assert r.exit_code == 0, r.output
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "0", "--videos", "1",
            "--video-provider", "pictory", "--voice", "none", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "pictory videos are silent: no voice-over (--voice none)" in " ".join(r.output.split())
    first, second = (x.json()["voiceOver"] for x in fake.matching("POST", RENDER))
    assert first["aiVoices"][0]["speaker"] == "Joanna" and first["enabled"] is True
    assert second == {"enabled": False}
    assert fake.unvoiced == []
    assert [j.silent for j in fake.jobs.values()] == [False, True]


def test_a_retry_keeps_the_chosen_voice(env, fake, home):
    h = resolve_home(home)
    h.ensure()
    store = Store(h.db_path)
    gen, assets = prepare(RequestSpec(user_id="alice", prompt="a red fox", images=0, videos=1,
                                      video_provider="pictory", options={"voice": "brian"}), home=h.path)
    gid = store.create_generation(gen, assets)
    assert Runner(store, h).run(gid).generation["status"] == "Completed"
    [render] = fake.matching("POST", RENDER)
    assert render.json()["voiceOver"]["aiVoices"][0]["speaker"] == "brian"


@pytest.mark.parametrize("args,message", [
    (["--voice", ""], "invalid --voice ''"),
    (["--voice", "Mar;tin"], "invalid --voice 'Mar;tin'"),
    (["--voice", "x" * 65], "invalid --voice"),
    (["--voice", "Joanna", "--videos", "0", "--images", "1"], "--voice is for the videos"),
    (["--voice", "Joanna", "--video-provider", "local"], "takes no voice-over choice"),
])
def test_a_bad_voice_option_is_exit_2_and_writes_nothing(cli, env, fake, home, args, message):
    base = ["generate", "fox", "--user", "alice", "--images", "0", "--video-provider", "pictory"]
    r = cli(*base, *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert fake.creations == 0 and not (home / "aigen.db").exists()


def test_a_voice_pictory_does_not_know_fails_with_a_hint_and_is_not_rendered_again(env, fake, tmp_path):
    rep = RecordingReporter()
    with pytest.raises(ProviderError) as e:
        provider(env).generate(req(options={"voice": "Timm"}), tmp_path / "v.mp4", rep)
    assert e.value.provider_code == "invalid_voice" and "[Timm] is invalid" in e.value.message
    assert "--voice" in e.value.hint
    # Resuming the failed job (aigen retry) does not pay for a render that would fail the same way.
    with pytest.raises(ProviderError) as e:
        provider(env).generate(req(options={"voice": "Timm"}, provider_job_id=rep.job_ids[0]),
                               tmp_path / "v.mp4", RecordingReporter())
    assert e.value.provider_code == "invalid_voice" and fake.creations == 1


def test_the_fake_flags_silent_renders_and_rejects_bad_voice_blocks(fake):
    import requests

    def render(body):
        return requests.post(fake.url + RENDER, json=body, headers={
            "Authorization": API_KEY, "User-Agent": "Mozilla/5.0"}, timeout=5)

    base = {"videoName": "v", "aspectRatio": "16:9", "scenes": [{"story": "A fox."}]}
    r = render({**base, "voiceover": {"enabled": True}})  # a typo: stripped, so no voice at all
    assert r.status_code == 200 and fake.unvoiced == [r.json()["data"]["jobId"]]
    for vo in ({"enabled": "yes"}, {"enabled": True}, {"enabled": True, "aiVoices": []},
               {"enabled": True, "aiVoices": [{"speaker": "Martin", "speed": 300}]},
               {"enabled": True, "aiVoices": [{"speaker": "Martin"}], "externalVoice": {"voiceUrl": "https://x"}}):
        r = render({**base, "voiceOver": vo})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST_BODY", vo
    r = render({**base, "scenes": [{"story": "x" * 15_001}],
                "voiceOver": {"enabled": False}})
    assert r.status_code == 400


# --------------------------------------------------------------------------- bad days: HTTP
def test_429_with_retry_after_then_success(env, fake, sleeps, tmp_path):
    fake.script("POST", RENDER, Reply(429, {"message": "Too Many Requests"}, headers={"Retry-After": "3"}))
    assert provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter()).format == "mp4"
    assert sleeps == [3.0] and fake.count("POST", RENDER) == 2 and fake.creations == 1


def test_500s_until_the_retries_run_out(env, fake, sleeps, tmp_path):
    fake.script("POST", RENDER, *[Reply(500, {"message": "Internal Server Error"})] * 5)
    with pytest.raises(ProviderError) as e:
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert "server error (HTTP 500)" in e.value.message and "gave up after 3 attempts" in e.value.message
    assert fake.count("POST", RENDER) == 3 and len(sleeps) == 2 and fake.creations == 0


def test_a_bad_request_is_not_retried_and_names_the_fields(env, fake, sleeps, tmp_path):
    fake.script("POST", RENDER, Reply(400, {"code": "INVALID_REQUEST_BODY", "message": "Invalid request body",
                                           "fields": [{"name": "scenes", "errors": ["bad"]}]}))
    with pytest.raises(ProviderError, match="rejected \\(HTTP 400\\): Invalid request body"):
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert sleeps == [] and fake.count("POST", RENDER) == 1


def test_out_of_credits_is_reported_as_quota(env, fake, sleeps, tmp_path):
    fake.script("POST", RENDER, Reply(402, {"message": "Insufficient AI credits"}))
    with pytest.raises(QuotaExceeded, match="out of credits"):
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert sleeps == []


def test_a_slow_render_request_times_out_and_is_not_sent_twice(env, fake, tmp_path):
    fake.script("POST", RENDER, Reply(200, {"success": True, "data": {"jobId": "late"}}, delay=5))
    with pytest.raises(ProviderTimeout, match="no answer within the timeout .the provider may have made and billed"):
        provider(env, AIGEN_HTTP_TIMEOUT="1.0").generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert fake.count("POST", RENDER) == 1


def test_a_render_request_whose_connection_drops_is_not_sent_twice(env, fake, sleeps, tmp_path):
    fake.script("POST", RENDER, Reply(drop=True))
    with pytest.raises(ProviderError, match="connection broke after the request was sent .*may have made and billed"):
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert fake.count("POST", RENDER) == 1 and sleeps == []


def test_a_slow_poll_is_retried(env, fake, sleeps, tmp_path):
    fake.script("GET", "/v1/jobs/*", Reply(200, {}, delay=5))
    out = provider(env, AIGEN_HTTP_TIMEOUT="1.0").generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and sleeps == [] and fake.count("GET", "/v1/jobs/*") == 4


def test_a_rejected_key_is_not_shown(env, fake, tmp_path):
    wrong = "pictai_" + "z" * 40
    with pytest.raises(ProviderError) as e:
        provider(env, PICTORY_API_KEY=wrong).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert "rejected the API key (HTTP 401)" in e.value.message
    assert wrong not in e.value.message and wrong not in (e.value.hint or "")


# --------------------------------------------------------------------------- bad days: jobs
def test_a_moderation_failure_is_a_refusal(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(steps=("in-progress", "failed"), error_code="CONTENT_MODERATION_FAILED",
                                    error_message="The script violates the content policy."))
    with pytest.raises(Refused) as e:
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.message.startswith("refused by pictory: The script violates the content policy.")
    assert e.value.provider_code == "CONTENT_MODERATION_FAILED" and fake.creations == 1


def test_a_failed_job_becomes_an_asset_error_with_pictorys_code(env, fake, home):
    fake.outcomes.append(JobOutcome(steps=("in-progress", "failed")))
    h, store, gid = new_generation(home)
    [asset] = Runner(store, h).run(gid).assets
    assert asset["status"] == "failed" and asset["error_code"] == "TEXT_TO_VIDEO_FAILED"
    assert "Video rendering failed." in asset["error"]
    assert fake.creations == 1


def test_a_cancelled_job_ends_the_wait(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(steps=("in-progress", "cancelled")))
    with pytest.raises(ProviderError) as e:
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert "was cancelled" in e.value.message and e.value.provider_code == "CANCELLED"


def test_polling_gives_up_at_the_deadline_keeping_the_job(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(steps=("in-progress",) * 10_000))
    rep = RecordingReporter()
    with pytest.raises(ProviderTimeout) as e:
        provider(env, AIGEN_JOB_TIMEOUT="0.3").generate(req(), tmp_path / "v.mp4", rep)
    assert e.value.provider_code == "job_timeout" and "aigen retry" in e.value.message
    assert rep.job_ids == [next(iter(fake.jobs))]


# --------------------------------------------------------------------------- downloads
def test_truncated_download(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(download_fault="truncate"))
    dest = tmp_path / "v.mp4"
    with pytest.raises(ProviderError, match="gave up after 3 attempts"):
        provider(env).generate(req(), dest, RecordingReporter())
    assert not dest.exists() and fake.count("GET", "/files/*") == 3


def test_wrong_type_download(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(download_fault="wrong_type"))
    with pytest.raises(MediaCheckError, match="Content-Type 'text/html'"):
        provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter())


def test_an_expired_video_url_is_refreshed(env, fake, tmp_path):
    fake.outcomes.append(JobOutcome(download_fault="expired"))
    assert provider(env).generate(req(), tmp_path / "v.mp4", RecordingReporter()).format == "mp4"
    assert fake.count("GET", "/files/*") == 2 and fake.count("GET", "/v1/jobs/*") == 4


# --------------------------------------------------------------------------- resume
def test_a_resumed_run_polls_the_saved_job_and_renders_nothing_new(env, fake, home):
    job_id = fake.add_job(JobOutcome(steps=("in-progress", "completed")))
    h, store, gid = new_generation(home)
    [asset] = store.assets(gid)
    store.save_job_id(asset["id"], job_id)
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert fake.creations == 0 and fake.polls_of(job_id) >= 1


def test_resuming_a_job_pictory_does_not_know_starts_a_new_render(env, fake, tmp_path):
    rep = RecordingReporter()
    out = provider(env).generate(req(provider_job_id="no-such-job"), tmp_path / "v.mp4", rep)
    assert out.format == "mp4" and fake.creations == 1 and rep.job_ids[0] != "no-such-job"


# --------------------------------------------------------------------------- keys
def test_a_missing_key_stops_the_request_before_anything_is_written(cli, env, home, fake, monkeypatch):
    monkeypatch.delenv("PICTORY_API_KEY")
    r = cli("generate", "fox", "--user", "alice", "--images", "0", "--video-provider", "pictory")
    assert r.exit_code == 2
    assert "needs PICTORY_API_KEY or PICTORY_CLIENT_ID, which is not set" in " ".join(r.output.split())
    monkeypatch.setenv("PICTORY_CLIENT_ID", CLIENT_ID)
    r = cli("generate", "fox", "--user", "alice", "--images", "0", "--video-provider", "pictory")
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert "needs PICTORY_CLIENT_SECRET" in out and "export PICTORY_CLIENT_SECRET=" in out
    monkeypatch.setenv("PICTORY_CLIENT_SECRET", CLIENT_SECRET)
    r = cli("generate", "fox", "--user", "alice", "--images", "0", "--video-provider", "pictory")
    assert r.exit_code == 2 and "needs PICTORY_USER_ID" in " ".join(r.output.split())
    h = resolve_home(home)
    assert not h.db_path.exists() or Store(h.db_path).query("SELECT id FROM generations") == []
    assert fake.requests == []


def test_the_download_limits_come_from_the_providers_own_environment(env, fake, tmp_path):
    # The deadline is set for this provider only (not in os.environ): a trickling video must fail within it.
    import time

    from fakes.pictory_fake import sample_mp4

    fake.script("GET", "/files/*", Reply(200, sample_mp4() + bytes(20_000), content_type="video/mp4",
                                         trickle=(16, 0.25)))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout, match="over its 1 s deadline"):
        provider(env, AIGEN_DOWNLOAD_DEADLINE="1", AIGEN_DOWNLOAD_MIN_RATE="0",
                 AIGEN_RETRY_ATTEMPTS="1").generate(req(), tmp_path / "v.mp4", RecordingReporter())
    assert time.monotonic() - t0 < 1 + 4
    assert not (tmp_path / "v.mp4").exists()


def _trickled_json(obj) -> Reply:
    # ~2 KiB at 64 bytes a second: half a minute, unless the deadline holds while bytes trickle.
    return Reply(200, json.dumps(obj).encode() + b" " * 2000, content_type="application/json", trickle=(16, 0.25))


def test_a_trickling_render_answer_fails_within_the_deadline_and_is_not_sent_twice(env, fake, sleeps, tmp_path):
    import time

    fake.script("POST", RENDER, _trickled_json({"success": True, "data": {"jobId": "late"}}))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as e:
        provider(env, AIGEN_DOWNLOAD_DEADLINE="1", AIGEN_DOWNLOAD_MIN_RATE="0").generate(
            req(), tmp_path / "v.mp4", RecordingReporter())
    assert time.monotonic() - t0 < 1 + 4
    assert "over its 1 s deadline" in e.value.message and "may have made and billed it" in e.value.message
    assert fake.count("POST", RENDER) == 1 and sleeps == []


def test_a_trickling_poll_answer_is_cut_at_the_deadline_and_polled_again(env, fake, sleeps, tmp_path):
    import time

    fake.script("GET", "/v1/jobs/*", _trickled_json({"data": {"status": "in-progress"}}))
    t0 = time.monotonic()
    out = provider(env, AIGEN_DOWNLOAD_DEADLINE="1", AIGEN_DOWNLOAD_MIN_RATE="0").generate(
        req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and time.monotonic() - t0 < 1 + 4
    assert fake.count("POST", RENDER) == 1
