"""The `runway` provider against a local fake of Runway's API, with the real runwayml SDK.

The fake (tests/fakes/runway_fake.py) follows the documented contract; the SDK
is pointed at it through RUNWAYML_BASE_URL. Retry waits are recorded instead of
slept (aigen.providers.http.sleep), polls are spaced 10 ms apart
(AIGEN_POLL_INTERVAL), so no test waits for real.
"""

import base64
import io
import json

import pytest

from aigen.config import resolve_home
from aigen.errors import BadInput, MediaCheckError, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.pipeline.run import Runner
from aigen.providers.base import AssetRequest
from aigen.providers.runway import RunwayProvider, closest_duration, closest_ratio, image_data_uri
from aigen.store import Store
from fakes.httpfake import Reply
from fakes.runway_fake import KEY, Outcome, RunwayFake, decoded_prompt_image


# --------------------------------------------------------------------------- fixtures
class RecordingReporter:
    def __init__(self, fake=None, stop_after_save=False):
        self.fake = fake
        self.job_ids = []
        self.gets_before_save = None
        self.fractions = []
        self.stop_after_save = stop_after_save

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)
        if self.fake is not None:
            self.gets_before_save = self.fake.retrieves()

    def progress(self, fraction):
        self.fractions.append(fraction)

    def check_stop(self):
        if self.stop_after_save and self.job_ids:
            from aigen.pipeline.run import Cancelled

            raise Cancelled("stopped")


@pytest.fixture
def fake():
    with RunwayFake() as f:
        yield f


@pytest.fixture
def sleeps(monkeypatch):
    """Retry waits, recorded instead of slept."""
    waits = []
    monkeypatch.setattr("aigen.providers.http.sleep", waits.append)
    return waits


@pytest.fixture
def env(fake, home, monkeypatch, sleeps):
    values = {
        "RUNWAYML_API_SECRET": KEY,
        "RUNWAYML_BASE_URL": fake.url,
        "AIGEN_POLL_INTERVAL": "0.01",
        "AIGEN_RETRY_ATTEMPTS": "3",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AIGEN_HTTP_TIMEOUT", raising=False)
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT", raising=False)
    return values


def provider(env, **extra):
    return RunwayProvider(env={**env, **extra})


def video_req(**kw):
    base = dict(kind="video", prompt="a red fox at dawn", index=1, seed=1234, width=1280, height=720,
                generation_id="g1", model="gen4.5", duration=4.0)
    base.update(kw)
    return AssetRequest(**base)


def image_req(**kw):
    base = dict(kind="image", prompt="a red fox at dawn", index=1, seed=99, width=1024, height=1024,
                generation_id="g1", model="gen4_image")
    base.update(kw)
    return AssetRequest(**base)


def new_generation(home_dir, **kw):
    home = resolve_home(home_dir)
    home.ensure()
    store = Store(home.db_path)
    spec_kw = dict(user_id="alice", prompt="a red fox at dawn", images=0, videos=1, image_provider="runway",
                   video_provider="runway", image_size="1024x1024", video_size="1280x720", duration=4, seed=7)
    spec_kw.update(kw)
    gen, assets = prepare(RequestSpec(**spec_kw), home=home.path)
    return home, store, store.create_generation(gen, assets)


# --------------------------------------------------------------------------- success
def test_text_to_video_success_saves_the_task_id_before_polling(env, fake, tmp_path):
    rep = RecordingReporter(fake)
    dest = tmp_path / "v.mp4"
    out = provider(env).generate(video_req(), dest, rep)
    assert out.format == "mp4" and out.model == "gen4.5"
    assert out.cost == pytest.approx(0.25)  # 25 credits at $0.01
    assert dest.read_bytes()[4:8] == b"ftyp"
    [create] = fake.create_requests()
    assert create.path == "/v1/text_to_video"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.headers["x-runway-version"] == "2024-11-06"
    assert create.json() == {"model": "gen4.5", "promptText": "a red fox at dawn", "ratio": "1280:720",
                             "duration": 4, "seed": 1234}
    assert rep.job_ids == [next(iter(fake.tasks))]
    assert rep.gets_before_save == 0, "the task id must be saved before the first poll"
    assert fake.retrieves() == 3 and fake.creations == 1
    assert rep.fractions[-1] == pytest.approx(1.0) and max(rep.fractions) <= 1.0


def test_text_to_image_success(env, fake, tmp_path):
    dest = tmp_path / "i.png"
    out = provider(env).generate(image_req(width=1920, height=1080), dest, RecordingReporter())
    assert out.format == "png" and out.model == "gen4_image"
    [create] = fake.create_requests()
    assert create.path == "/v1/text_to_image"
    assert create.json() == {"model": "gen4_image", "promptText": "a red fox at dawn", "ratio": "1920:1080",
                             "seed": 99}
    from PIL import Image

    with Image.open(dest) as im:
        assert im.format == "PNG"


def test_a_webp_image_is_kept_as_png(env, fake, tmp_path):
    from PIL import Image

    fake.outcomes.append(Outcome(download_fault="webp"))
    dest = tmp_path / "i.png"
    out = provider(env).generate(image_req(), dest, RecordingReporter())
    assert out.format == "png"
    with Image.open(dest) as im:
        assert im.format == "PNG" and im.size == (80, 48)


def test_cli_makes_runway_images_and_videos_with_a_seed_per_index(cli, env, fake):
    from aigen.media.probe import probe_video

    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "3", "--videos", "3",
            "--image-provider", "runway", "--video-provider", "runway", "--video-size", "720x1280",
            "--duration", "5", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    assert len(data["images"]) == 3 and len(data["videos"]) == 3
    for path in data["videos"]:
        info = probe_video(path)
        assert info.codec == "h264"
    bodies = [q.json() for q in fake.create_requests()]
    assert sorted(q.path for q in fake.create_requests()) == ["/v1/text_to_image"] * 3 + ["/v1/text_to_video"] * 3
    video_bodies = [b for b in bodies if "duration" in b]
    assert {b["ratio"] for b in video_bodies} == {"720:1280"}
    assert {b["duration"] for b in video_bodies} == {5}
    assert len({b["seed"] for b in video_bodies}) == 3, "the videos of one request must get different seeds"
    assert len({b["seed"] for b in bodies if "duration" not in b}) == 3
    for a in data["assets"]:
        assert a["provider_job_id"] in fake.tasks
        assert a["status"] == "done"


# --------------------------------------------------------------------------- sizes, durations, models
def test_sizes_and_durations_map_to_the_closest_allowed():
    assert closest_ratio(1024, 576, ("1280:720", "720:1280")) == "1280:720"
    assert closest_ratio(600, 1000, ("1280:720", "720:1280")) == "720:1280"
    assert closest_ratio(1000, 1000, ("1280:720", "720:1280", "960:960")) == "960:960"
    assert closest_ratio(2300, 1000, ("1920:1080", "1808:768", "2112:912", "1024:1024")) == "2112:912"
    assert closest_ratio(2000, 1000, ("1920:1080", "1808:768", "2112:912", "1024:1024")) == "1920:1080"
    assert closest_duration(4.0, tuple(range(2, 11))) == 4
    assert closest_duration(0.5, tuple(range(2, 11))) == 2
    assert closest_duration(30, tuple(range(2, 11))) == 10
    assert closest_duration(5, (4, 6, 8)) == 6  # a tie goes to the longer clip
    assert closest_duration(4.9, (4, 6, 8)) == 4


def test_check_request_explains_what_differs_and_refuses_what_runway_would(env):
    p = provider(env)
    notes = p.check_request("video", prompt="x", model="veo3.1", width=1024, height=1024, duration=5)
    assert any("1280x720 is the closest to the asked 1024x1024" in n for n in notes)
    assert any("6 s is the closest to the asked 5 s" in n for n in notes)
    assert p.check_request("video", prompt="x", model="gen4.5", width=1280, height=720, duration=4) == []
    with pytest.raises(BadInput, match="unknown runway video model 'gen3a_turbo'"):
        p.check_request("video", prompt="x", model="gen3a_turbo", width=1280, height=720, duration=4)
    with pytest.raises(BadInput, match="cannot make videos from text") as e:
        p.check_request("video", prompt="x", model="gen4_turbo", width=1280, height=720, duration=4)
    assert "--video-from-images" in e.value.hint
    assert p.check_request("video", prompt="x", model="gen4_turbo", width=1280, height=720, duration=4,
                           options={"video_from_images": True}) == []
    with pytest.raises(BadInput, match="prompt too long for runway: 1001 UTF-16 units"):
        p.check_request("image", prompt="y" * 1001, model="gen4_image", width=1024, height=1024)


def test_cli_refuses_an_unknown_model_before_writing_anything(cli, env, home, fake):
    r = cli("generate", "fox", "--user", "alice", "--video-provider", "runway", "--images", "0",
            "--video-model", "sora-2")
    assert r.exit_code == 2
    assert "unknown runway video model 'sora-2'" in r.output
    assert fake.requests == []
    h = resolve_home(home)
    assert not h.db_path.exists() or Store(h.db_path).query("SELECT id FROM generations") == []


def test_cli_shows_the_size_note(cli, env, fake):
    r = cli("generate", "fox", "--user", "alice", "--images", "0", "--videos", "1", "--video-provider", "runway",
            "--video-size", "640x480")
    assert r.exit_code == 0, r.output
    assert "Note: runway gen4.5 makes videos of fixed sizes: 1280x720 is the closest to the asked 640x480" in \
        " ".join(r.output.split())


# --------------------------------------------------------------------------- bad days: HTTP
def test_429_with_retry_after_is_honoured_then_succeeds(env, fake, sleeps, tmp_path):
    fake.script("POST", "/v1/text_to_video",
                Reply(429, {"error": "Too many requests"}, headers={"Retry-After": "7"}))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4"
    assert fake.count("POST", "/v1/text_to_video") == 2
    assert fake.creations == 1
    assert sleeps == [7.0]


def test_500s_until_the_retries_run_out(env, fake, sleeps, tmp_path):
    fake.script("POST", "/v1/text_to_video", *[Reply(502, {"error": "Bad gateway"})] * 5)
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "server error (HTTP 502)" in e.value.message
    assert "gave up after 3 attempts" in e.value.message
    assert e.value.retryable is False
    assert fake.count("POST", "/v1/text_to_video") == 3
    assert len(sleeps) == 2 and all(0 <= s <= 30 for s in sleeps)
    assert fake.creations == 0


def test_other_4xx_are_not_retried(env, fake, sleeps, tmp_path):
    fake.script("POST", "/v1/text_to_video", Reply(400, {"error": "promptText: Invalid input"}))
    with pytest.raises(ProviderError, match="rejected \\(HTTP 400\\): promptText: Invalid input"):
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert fake.count("POST", "/v1/text_to_video") == 1 and sleeps == []


def test_out_of_credits_is_reported_as_quota(env, fake, sleeps, tmp_path):
    fake.script("POST", "/v1/text_to_video",
                Reply(400, {"error": "You do not have enough credits to run this task."}))
    with pytest.raises(QuotaExceeded, match="runway: out of credits: You do not have enough credits"):
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert sleeps == []


def test_a_slow_create_times_out_and_is_not_retried(env, fake, tmp_path):
    # A timed-out create may have made (and billed) a task: never send it twice.
    fake.script("POST", "/v1/text_to_video", Reply(200, {"id": "late"}, delay=5))
    with pytest.raises(ProviderTimeout) as e:
        provider(env, AIGEN_HTTP_TIMEOUT="1.0").generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "no answer within the timeout" in e.value.message
    assert "check the Runway developer portal" in e.value.hint
    assert fake.count("POST", "/v1/text_to_video") == 1


def test_a_slow_poll_times_out_and_is_retried(env, fake, sleeps, tmp_path):
    fake.script("GET", "/v1/tasks/*", Reply(200, {}, delay=5))
    out = provider(env, AIGEN_HTTP_TIMEOUT="1.0").generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4"
    # The poll loop itself tries again at its own interval: no backoff sleep.
    assert fake.creations == 1 and fake.retrieves() == 4 and sleeps == []


def test_polls_that_fail_for_a_while_are_survived(env, fake, sleeps, tmp_path):
    fake.script("GET", "/v1/tasks/*", Reply(503, {"error": "Service unavailable"}),
                Reply(429, {"error": "Too many requests"}, headers={"Retry-After": "0.05"}))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.retrieves() == 5 and fake.creations == 1
    gets = fake.matching("GET", "/v1/tasks/*")
    assert gets[2].at - gets[1].at >= 0.05, "a poll answered 429 waits what Retry-After asks"


def test_polls_that_keep_failing_end_the_wait_but_keep_the_task(env, fake, tmp_path):
    fake.script("GET", "/v1/tasks/*", *[Reply(500, {"error": "Internal error"})] * 20)
    rep = RecordingReporter()
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", rep)
    assert e.value.message.startswith(f"lost track of runway task {rep.job_ids[0]}: 6 polls in a row failed")
    assert "aigen retry" in e.value.message
    assert fake.retrieves() == 6 and fake.creations == 1


def test_a_rejected_key_never_shows_up_in_the_error(env, fake, tmp_path):
    wrong = "key_" + "f" * 128
    with pytest.raises(ProviderError) as e:
        provider(env, RUNWAYML_API_SECRET=wrong).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "rejected the API key (HTTP 401)" in e.value.message
    assert "RUNWAYML_API_SECRET" in e.value.hint
    assert wrong not in e.value.message and wrong not in (e.value.hint or "")


# --------------------------------------------------------------------------- bad days: tasks
def test_a_moderation_failure_is_a_refusal_and_is_not_retried(env, fake, tmp_path):
    fake.outcomes.append(Outcome(steps=("PENDING", "FAILED"), failure="Prompt flagged by moderation.",
                                 failure_code="SAFETY.INPUT.TEXT"))
    with pytest.raises(Refused) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert e.value.message == "refused by runway: Prompt flagged by moderation. (SAFETY.INPUT.TEXT)"
    assert e.value.provider_code == "SAFETY.INPUT.TEXT"
    assert fake.creations == 1


def test_a_failed_task_becomes_an_asset_error_with_runways_code(env, fake, home):
    fake.outcomes.append(Outcome(steps=("PENDING", "RUNNING", "FAILED"), failure="An unexpected error occurred.",
                                 failure_code="INTERNAL.BAD_OUTPUT.CODE01"))
    h, store, gid = new_generation(home)
    result = Runner(store, h).run(gid)
    [asset] = result.assets
    assert result.generation["status"] == "Failed"
    assert asset["status"] == "failed" and asset["error_code"] == "INTERNAL.BAD_OUTPUT.CODE01"
    assert "An unexpected error occurred." in asset["error"] and "aigen retry" in asset["error"]
    assert asset["provider_job_id"] in fake.tasks
    assert fake.creations == 1, "a failed task is reported, never resubmitted silently"


def test_a_cancelled_task_ends_the_wait_with_an_error(env, fake, tmp_path):
    fake.outcomes.append(Outcome(steps=("PENDING", "RUNNING", "CANCELLED")))
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert "was cancelled" in e.value.message and e.value.provider_code == "CANCELLED"
    assert fake.retrieves() == 3


def test_throttled_tasks_are_waited_for(env, fake, tmp_path):
    fake.outcomes.append(Outcome(steps=("THROTTLED", "THROTTLED", "PENDING", "RUNNING", "SUCCEEDED")))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.retrieves() == 5


def test_polling_has_an_overall_deadline_and_retry_then_polls_the_same_task(env, fake, home, monkeypatch):
    fake.outcomes.append(Outcome(steps=("RUNNING",) * 10_000))
    monkeypatch.setenv("AIGEN_JOB_TIMEOUT", "0.3")
    h, store, gid = new_generation(home)
    result = Runner(store, h).run(gid)
    [asset] = result.assets
    assert asset["status"] == "failed" and asset["error_code"] == "job_timeout"
    assert "did not finish within 0.3 s" in asset["error"] and "aigen retry" in asset["error"]
    task_id = asset["provider_job_id"]
    assert task_id in fake.tasks

    fake.tasks[task_id].outcome = Outcome(steps=("SUCCEEDED",))  # it finished at Runway meanwhile
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT")
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert fake.creations == 1


def test_production_polling_is_spaced_and_bounded_without_waiting_for_real():
    from aigen.providers.jobs import PollPolicy, poll_job

    now = [0.0]
    polls = []

    def sleep(s):
        now[0] += s

    def fetch():
        polls.append(now[0])
        return "RUNNING"

    policy = PollPolicy.from_env({}, interval=5.0, max_interval=15.0, timeout=15 * 60.0)
    with pytest.raises(ProviderTimeout, match="did not finish within 15 min"):
        poll_job(fetch, lambda s: s != "RUNNING", policy=policy, reporter=None, provider="runway",
                 what="runway task t", clock=lambda: now[0], sleep=sleep)
    gaps = [round(b - a, 3) for a, b in zip(polls, polls[1:])]
    assert polls[0] == pytest.approx(5.0)  # Runway: no updates more often than every 5 s
    assert gaps[:3] == [6.25, 7.812, 9.766] and max(gaps) == pytest.approx(15.0)
    assert polls[-1] == pytest.approx(900.0) and 60 < len(polls) < 70

    fixed = PollPolicy.from_env({"AIGEN_POLL_INTERVAL": "2", "AIGEN_JOB_TIMEOUT": "60"}, interval=5.0,
                                max_interval=15.0, timeout=900.0)
    assert (fixed.interval, fixed.max_interval, fixed.timeout) == (2.0, 2.0, 60.0)
    assert PollPolicy.from_env({"AIGEN_POLL_INTERVAL": "0"}, interval=5.0).interval == 5.0


# --------------------------------------------------------------------------- downloads
def test_a_truncated_download_is_retried_then_reported(env, fake, sleeps, tmp_path):
    fake.outcomes.append(Outcome(download_fault="truncate"))
    dest = tmp_path / "v.mp4"
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), dest, RecordingReporter())
    assert "truncated" in e.value.message or "connection" in e.value.message
    assert "gave up after 3 attempts" in e.value.message
    assert fake.count("GET", "/files/*") == 3
    assert not dest.exists()


def test_a_download_of_the_wrong_type_is_refused(env, fake, tmp_path):
    fake.outcomes.append(Outcome(download_fault="wrong_type"))
    dest = tmp_path / "v.mp4"
    with pytest.raises(MediaCheckError, match="Content-Type 'text/html'"):
        provider(env).generate(video_req(), dest, RecordingReporter())
    assert not dest.exists()


def test_an_expired_output_url_is_refreshed_by_fetching_the_task_again(env, fake, tmp_path):
    fake.outcomes.append(Outcome(download_fault="expired"))
    out = provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4"
    assert fake.count("GET", "/files/*") == 2
    assert fake.retrieves() == 4  # 3 polls, then 1 more for a fresh URL
    assert fake.creations == 1


def test_an_output_url_that_stays_gone_fails_after_one_refresh(env, fake, tmp_path):
    fake.outcomes.append(Outcome(download_fault="gone"))
    with pytest.raises(ProviderError, match="HTTP 404"):
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert fake.count("GET", "/files/*") == 2 and fake.retrieves() == 4


# --------------------------------------------------------------------------- resume
def test_a_resumed_run_polls_the_saved_task_and_creates_none(env, fake, home):
    task_id = fake.add_task(Outcome(steps=("RUNNING", "SUCCEEDED")))
    h, store, gid = new_generation(home)
    [asset] = store.assets(gid)
    store.save_job_id(asset["id"], task_id)
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert fake.creations == 0
    assert fake.retrieves(task_id) >= 1
    assert result.assets[0]["provider_job_id"] == task_id


def test_a_run_stopped_after_the_create_is_resumed_by_polling(env, fake, home):
    h, store, gid = new_generation(home)
    fake.outcomes.append(Outcome(steps=("PENDING",) * 3 + ("RUNNING", "SUCCEEDED")))
    runner = Runner(store, h)

    def stop_on_first_poll(req, srv):
        runner.stop.set()  # as if Ctrl-C arrived while the task was being polled
        return Reply(200, fake._task_json(fake.tasks[req.path.rsplit("/", 1)[1]]))

    fake.script("GET", "/v1/tasks/*", stop_on_first_poll)
    result = runner.run(gid)
    [asset] = result.assets
    assert result.generation["status"] == "Processing"
    assert asset["status"] == "queued" and asset["provider_job_id"] in fake.tasks
    assert fake.creations == 1

    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert fake.creations == 1, "the resumed run must poll the saved task, not pay for a new one"
    assert fake.retrieves(asset["provider_job_id"]) >= 3


def test_resuming_a_task_that_failed_submits_a_new_one_but_not_after_a_refused_prompt(env, fake, tmp_path):
    failed = fake.add_task(Outcome(steps=("FAILED",), failure_code="INTERNAL.BAD_OUTPUT.CODE01"), polls=1)
    rep = RecordingReporter()
    out = provider(env).generate(video_req(provider_job_id=failed), tmp_path / "v.mp4", rep)
    assert out.format == "mp4" and fake.creations == 1 and rep.job_ids and rep.job_ids[0] != failed

    refused = fake.add_task(Outcome(steps=("FAILED",), failure="Input flagged.", failure_code="SAFETY.INPUT.TEXT"),
                            polls=1)
    with pytest.raises(Refused, match="refused by runway: Input flagged."):
        provider(env).generate(video_req(provider_job_id=refused), tmp_path / "w.mp4", RecordingReporter())
    assert fake.creations == 1


def test_resuming_a_task_runway_no_longer_knows_creates_a_new_one(env, fake, tmp_path):
    out = provider(env).generate(video_req(provider_job_id="0000-gone"), tmp_path / "v.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.creations == 1


def test_a_stop_is_noticed_while_polling(env, fake, tmp_path):
    from aigen.pipeline.run import Cancelled

    fake.outcomes.append(Outcome(steps=("RUNNING",) * 10_000))
    rep = RecordingReporter(stop_after_save=True)
    with pytest.raises(Cancelled):
        provider(env).generate(video_req(), tmp_path / "v.mp4", rep)
    assert len(rep.job_ids) == 1 and fake.retrieves() == 0


# --------------------------------------------------------------------------- keys
def test_a_missing_key_stops_the_request_before_anything_is_written(cli, env, home, fake, monkeypatch):
    monkeypatch.delenv("RUNWAYML_API_SECRET")
    r = cli("generate", "fox", "--user", "alice", "--video-provider", "runway", "--images", "0")
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert "provider 'runway' needs RUNWAYML_API_SECRET, which is not set" in out
    assert "export RUNWAYML_API_SECRET=" in out
    h = resolve_home(home)
    assert not h.db_path.exists() or Store(h.db_path).query("SELECT id FROM generations") == []
    assert fake.requests == []


def test_the_key_never_reaches_the_database_or_the_output(cli, env, home, fake, caplog):
    caplog.set_level("DEBUG")
    fake.outcomes.append(Outcome(steps=("FAILED",), failure="boom", failure_code="INTERNAL"))
    r = cli("generate", "fox", "--user", "alice", "--video-provider", "runway", "--image-provider", "runway",
            "--images", "1", "--videos", "1", "--json")
    assert r.exit_code == 1
    h = resolve_home(home)
    for p in h.path.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in r.output
    assert KEY not in caplog.text


# --------------------------------------------------------------------------- video from images
def test_video_from_images_animates_this_requests_own_images(cli, env, fake):
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "2", "--videos", "3",
            "--image-provider", "runway", "--video-provider", "runway", "--video-from-images", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    i2v = [q.json() for q in fake.matching("POST", "/v1/image_to_video")]
    assert len(i2v) == 3 and fake.count("POST", "/v1/text_to_video") == 0
    images = [open(p, "rb").read() for p in data["images"]]
    sent = sorted(decoded_prompt_image(b) for b in i2v)
    # video i uses image ((i-1) % 2) + 1: image 1 twice, image 2 once
    assert sent == sorted([images[0], images[1], images[0]])
    for b in i2v:
        assert b["promptImage"].startswith("data:image/png;base64,")
        assert b["model"] == "gen4.5" and b["ratio"] == "1280:720" and b["duration"] == 4
        assert b["promptText"] == "a red fox at dawn"
    assert len({b["seed"] for b in i2v}) == 3


def test_video_from_images_fails_a_video_whose_image_failed(cli, env, fake, home):
    h, store, gid = new_generation(home, images=2, videos=3, options={"video_from_images": True})
    seed_of_image_1 = [a["seed"] for a in store.assets(gid) if a["kind"] == "image" and a["idx"] == 1][0]
    fake.outcome_for = lambda endpoint, body: (
        Outcome(steps=("FAILED",), failure="Image flagged.", failure_code="SAFETY.OUTPUT.IMAGE")
        if endpoint == "text_to_image" and body["seed"] == seed_of_image_1 else None)
    result = Runner(store, h).run(gid)
    by = {(a["kind"], a["idx"]): a for a in result.assets}
    assert by[("image", 1)]["error"] == "refused by runway: Image flagged. (SAFETY.OUTPUT.IMAGE)"
    assert by[("image", 2)]["status"] == "done" and by[("video", 2)]["status"] == "done"
    for i in (1, 3):
        v = by[("video", i)]
        assert v["status"] == "failed" and v["error_code"] == "source_image_failed"
        assert v["error"].startswith("source image 1 failed: refused by runway")
    assert fake.count("POST", "/v1/image_to_video") == 1


def test_retry_resubmits_a_failed_image_to_video_task_with_its_image(env, fake, home):
    h, store, gid = new_generation(home, images=1, videos=1, options={"video_from_images": True})
    fake.outcome_for = lambda endpoint, body: (
        Outcome(steps=("FAILED",), failure="Bad output.", failure_code="INTERNAL.BAD_OUTPUT.CODE01")
        if endpoint == "image_to_video" and fake.count("POST", "/v1/image_to_video") == 1 else None)
    result = Runner(store, h).run(gid)
    video = [a for a in result.assets if a["kind"] == "video"][0]
    assert video["error_code"] == "INTERNAL.BAD_OUTPUT.CODE01" and video["provider_job_id"]

    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    image = [a for a in result.assets if a["kind"] == "image"][0]
    sent = [decoded_prompt_image(q.json()) for q in fake.matching("POST", "/v1/image_to_video")]
    assert sent == [(h.path / image["path"]).read_bytes()] * 2
    assert fake.count("POST", "/v1/text_to_image") == 1


def test_video_from_images_needs_a_provider_that_can(cli, env, fake):
    r = cli("generate", "fox", "--user", "alice", "--video-provider", "local", "--video-from-images")
    assert r.exit_code == 2
    assert "video provider 'local' cannot make videos from images" in r.output
    r = cli("generate", "fox", "--user", "alice", "--video-provider", "runway", "--images", "0",
            "--video-from-images")
    assert r.exit_code == 2 and "needs at least one image and one video" in r.output


def test_a_large_source_image_is_re_encoded_as_jpeg_to_fit(tmp_path):
    import numpy as np
    from PIL import Image

    noisy = np.random.default_rng(1).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    src = tmp_path / "image_1.png"
    Image.fromarray(noisy).save(src)
    assert src.stat().st_size > 300_000
    small = image_data_uri(src, limit=60_000)
    assert small.startswith("data:image/jpeg;base64,") and len(small) <= 60_000
    raw = base64.b64decode(small.partition(",")[2])
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "JPEG"
    fits = image_data_uri(src)  # within Runway's 5 MB: sent as is
    assert fits.startswith("data:image/png;base64,")
    assert base64.b64decode(fits.partition(",")[2]) == src.read_bytes()


def test_the_fake_refuses_what_runway_refuses():
    from fakes.runway_fake import sample_png, validate

    png = base64.b64encode(sample_png()).decode()
    good = {"model": "gen4_turbo", "promptImage": f"data:image/png;base64,{png}", "promptText": "x",
            "ratio": "1280:720", "duration": 5}
    assert validate("image_to_video", good) is None
    html = base64.b64encode(b"<html>not an image</html>").decode()
    assert "not a valid image/png" in validate("image_to_video", {**good, "promptImage": f"data:image/png;base64,{html}"})
    assert "not a valid image/jpeg" in validate("image_to_video", {**good, "promptImage": f"data:image/jpeg;base64,{png}"})
    assert validate("image_to_video", {**good, "contentModeration": {"publicFigureThreshold": "none"}})
    t2v = {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5}
    assert validate("text_to_video", t2v) is None
    assert "audio" in validate("text_to_video", {**t2v, "audio": True})
    assert validate("text_to_video", {**t2v, "model": "veo3.1", "duration": 4, "audio": True}) is None
    t2i = {"model": "gen4_image", "promptText": "x", "ratio": "1024:1024"}
    assert "referenceImages" in validate("text_to_image", {**t2i, "referenceImages": [{"uri": "https://a", "tag": "ab"}]})
    assert validate("text_to_image", {**t2i, "referenceImages": [{"uri": "https://a", "tag": "fox"}]}) is None
    for retired in ("gen3a_turbo", "veo3"):
        assert "Invalid enum value" in validate("image_to_video", {**good, "model": retired})


def test_the_download_limits_come_from_the_providers_own_environment(env, fake, tmp_path):
    # The deadline is set for this provider only (not in os.environ): a trickling output must fail within it.
    import time

    from fakes.runway_fake import sample_mp4

    fake.script("GET", "/files/*", Reply(200, sample_mp4() + bytes(20_000), content_type="video/mp4",
                                         trickle=(16, 0.25)))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout, match="over its 1 s deadline"):
        provider(env, AIGEN_DOWNLOAD_DEADLINE="1", AIGEN_DOWNLOAD_MIN_RATE="0",
                 AIGEN_RETRY_ATTEMPTS="1").generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert time.monotonic() - t0 < 1 + 4
    assert not (tmp_path / "v.mp4").exists()


def test_a_create_lost_after_sending_says_it_may_have_been_billed_like_every_provider(env, fake, sleeps, tmp_path):
    from aigen.providers.http import BILLED_NOTE

    fake.script("POST", "/v1/text_to_video", Reply(drop=True))
    with pytest.raises(ProviderError) as e:
        provider(env).generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert BILLED_NOTE in e.value.message and not e.value.retryable
    assert "check the Runway developer portal" in e.value.hint
    assert fake.count("POST", "/v1/text_to_video") == 1 and sleeps == []
    fake.script("POST", "/v1/text_to_video", Reply(200, {"id": "late"}, delay=5))
    with pytest.raises(ProviderTimeout) as e:
        provider(env, AIGEN_HTTP_TIMEOUT="1.0").generate(video_req(), tmp_path / "v.mp4", RecordingReporter())
    assert BILLED_NOTE in e.value.message and "no answer within the timeout" in e.value.message
