"""Issue 9: a valid file of another size is kept with a note (item 2); refused assets are not
resubmitted by `aigen retry` unless --include-refused (item 3); concurrency caps are configurable
(item 21)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from aigen.errors import BadInput, Refused
from aigen.pipeline import run as pipeline_run
from aigen.pipeline.run import Runner
from fakes.httpfake import Reply, png_bytes
from fakes.openai_fake import KEY, OpenAIFake
from test_pipeline import new_generation
from test_providers_runway import RecordingReporter, env, fake, sleeps, video_req  # noqa: F401 (fixtures)
from test_providers_runway import new_generation as runway_generation
from test_providers_runway import provider as runway_provider

from fakes.runway_fake import Outcome


def gen_id_of(cli) -> str:
    return json.loads(cli("status", "--json").output)["generations"][0]["id"]


def flat(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- item 2: kept, with a note
@pytest.fixture
def openai_fake(home, monkeypatch):
    from aigen.providers import http

    monkeypatch.setattr(http, "sleep", lambda s: None)
    f = OpenAIFake().start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f.base_url)
    yield f
    f.stop()


def test_a_cloud_image_of_another_size_is_kept_with_its_real_size_and_a_note_everywhere(cli, home, openai_fake):
    import base64

    # Asked 1024x1024 (a size gpt-image-2 makes), answered with a valid 512x512 PNG: it was paid for.
    small = base64.b64encode(png_bytes(512, 512)).decode()
    openai_fake.script(Reply(200, {"created": 1, "data": [{"b64_json": small}], "size": "512x512"}))
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--image-provider", "openai", "--images", "1",
            "--videos", "0", "--image-size", "1024x1024", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    [asset] = data["assets"]
    assert data["status"] == "Completed" and asset["status"] == "done"
    assert (asset["width"], asset["height"]) == (512, 512)
    assert asset["note"] == "asked 1024x1024, got 512x512"
    assert openai_fake.calls == 1
    gid = data["id"]
    with sqlite3.connect(home / "aigen.db") as db:
        row = db.execute("SELECT width, height, note, status FROM assets").fetchone()
    assert row == (512, 512, "asked 1024x1024, got 512x512", "done")

    detail = json.loads(cli("status", gid, "--json").output)
    assert detail["assets"][0]["note"] == "asked 1024x1024, got 512x512"
    text = cli("status", gid).output
    assert "asked 1024x1024, got 512x512" in flat(text), text

    from aigen.web.app import WebSettings, make_app
    from fakes.web import Clock, WsgiClient, open_home

    h, store = open_home(home)
    clock = Clock()
    app = make_app(WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic))
    c = WsgiClient(app)
    c.login("alice")
    page = c.get(f"/g/{gid}")
    assert page.status == 200
    assert "asked 1024x1024, got 512x512" in page.text and "512x512" in page.text
    api = c.get(f"/api/generations/{gid}").json()
    assert api["assets"][0]["note"] == "asked 1024x1024, got 512x512"


def test_a_provider_that_does_not_guarantee_the_size_keeps_an_other_sized_video_and_image(home):
    h, store, gid = new_generation(home, provider="offsize", images=1, videos=1)
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed", result.generation["error"]
    by_kind = {a["kind"]: a for a in result.assets}
    assert (by_kind["image"]["width"], by_kind["image"]["height"]) == (32, 32)
    assert by_kind["image"]["note"] == "asked 64x64, got 32x32"
    video = by_kind["video"]
    assert (video["width"], video["height"]) == (32, 32) and abs(video["duration"] - 2.0) < 0.1
    assert video["note"] == "asked 64x64, got 32x32; asked 1 s, got 2.0 s"


def test_a_file_as_asked_has_no_note(home):
    h, store, gid = new_generation(home, provider="flaky", images=1)
    [asset] = Runner(store, h).run(gid).assets
    assert asset["status"] == "done" and asset["note"] is None


def test_only_a_provider_that_guarantees_the_size_refuses_a_file_for_it_whatever_its_name(home, calls):
    from fakes.testproviders import tiny_png

    # flaky declares guarantees_size: a wrong-sized file left at the final path is
    # not adopted but made again, although the provider is not called "local".
    h, store, gid = new_generation(home, provider="flaky", images=1)
    gen_dir = h.content_dir / "alice" / gid
    gen_dir.mkdir(parents=True)
    tiny_png(gen_dir / "image_1.png", 32, 32, 3)
    [asset] = Runner(store, h).run(gid).assets
    assert asset["status"] == "done" and (asset["width"], asset["height"]) == (64, 64)
    assert len(calls()) == 1

    # offsize does not: the same file, paid for, is adopted with a note and nothing is called.
    h, store, gid = new_generation(home, provider="offsize", images=1)
    gen_dir = h.content_dir / "alice" / gid
    gen_dir.mkdir(parents=True)
    tiny_png(gen_dir / "image_1.png", 32, 32, 3)
    [asset] = Runner(store, h).run(gid).assets
    assert asset["status"] == "done" and asset["note"] == "asked 64x64, got 32x32"
    assert len(calls()) == 1


def test_the_rule_is_a_class_attribute_true_only_for_local():
    from aigen.providers.base import Provider, provider_class

    assert Provider.guarantees_size is False
    assert provider_class("local").guarantees_size is True
    for name in ("openai", "stability", "runway", "pictory"):
        assert provider_class(name).guarantees_size is False, name


# --------------------------------------------------------------------------- item 3: refusals not resubmitted
def test_retry_skips_refused_assets_says_so_and_include_refused_submits_them(cli, home, calls, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_REFUSE", "2")
    monkeypatch.setenv("AIGEN_TEST_FAIL", "3")
    r = cli("generate", "a red fox", "--user", "alice", "--image-provider", "flaky", "--images", "3",
            "--videos", "0", "--image-size", "64x64")
    assert r.exit_code == 1
    gid = gen_id_of(cli)
    monkeypatch.delenv("AIGEN_TEST_REFUSE")
    monkeypatch.delenv("AIGEN_TEST_FAIL")
    before = len(calls())

    r = cli("retry", gid, "--json")
    assert r.exit_code == 1  # image 2 is still missing
    data = json.loads(r.output)
    assert [(s["kind"], s["index"], s["reason"]) for s in data["skipped"]] == [("image", 2, "refused")]
    assert data["skipped"][0]["error"].startswith("refused by flaky")
    assert [c[2] for c in calls()[before:]] == ["3"], "the refused image must not be asked for again"
    statuses = {a["index"]: (a["status"], a["refused"]) for a in data["assets"]}
    assert statuses == {1: ("done", False), 2: ("failed", True), 3: ("done", False)}

    # Everything left was refused: say so, exit non-zero with a hint, submit nothing.
    before = len(calls())
    r = cli("retry", gid)
    assert r.exit_code == 1
    out = flat(r.output)
    assert "Skipped 1 refused asset(s)" in out and "image 2 (flaky): refused by flaky" in out
    assert "nothing to retry: every asset left to make was refused" in out
    assert "--include-refused" in out
    r = cli("retry", gid, "--json")
    assert r.exit_code == 1 and json.loads(r.output)["error"] == "all_refused"
    assert len(calls()) == before

    r = cli("retry", gid, "--include-refused")
    assert r.exit_code == 0, r.output
    assert [c[2] for c in calls()[before:]] == ["2"]
    assert json.loads(cli("status", gid, "--json").output)["status"] == "Completed"


def test_a_refusal_is_marked_on_the_asset_and_cleared_when_it_is_made(home, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_REFUSE", "1")
    h, store, gid = new_generation(home, images=1)
    [a] = Runner(store, h).run(gid).assets
    assert a["status"] == "failed" and a["refused"] == 1
    monkeypatch.delenv("AIGEN_TEST_REFUSE")
    [a] = Runner(store, h).run(gid).assets
    assert a["status"] == "failed", "a plain run leaves a refused asset alone"
    [a] = Runner(store, h, include_refused=True).run(gid).assets
    assert a["status"] == "done" and not a["refused"]


@pytest.mark.parametrize("code", ["SAFETY.INPUT.TEXT", "SAFETY.INPUT.IMAGE", "SAFETY.OUTPUT.VIDEO"])
def test_runway_safety_failures_of_every_kind_are_not_resubmitted_on_resume(code, env, fake, tmp_path):
    refused = fake.add_task(Outcome(steps=("FAILED",), failure="Flagged.", failure_code=code), polls=1)
    with pytest.raises(Refused, match=re.escape(code)):
        runway_provider(env).generate(video_req(provider_job_id=refused), tmp_path / "v.mp4", RecordingReporter())
    assert fake.creations == 0
    # --include-refused: the user asked, so a new task is created.
    out = runway_provider(env).generate(video_req(provider_job_id=refused, options={"resubmit_refused": True}),
                                        tmp_path / "w.mp4", RecordingReporter())
    assert out.format == "mp4" and fake.creations == 1


def test_runway_output_refusal_is_kept_failed_by_retry_and_resubmitted_only_when_asked(env, fake, home):
    fake.outcomes.append(Outcome(steps=("PENDING", "FAILED"), failure="Output flagged.",
                                 failure_code="SAFETY.OUTPUT.VIDEO"))
    h, store, gid = runway_generation(home)
    [a] = Runner(store, h).run(gid).assets
    assert a["status"] == "failed" and a["refused"] == 1 and a["error_code"] == "SAFETY.OUTPUT.VIDEO"
    assert fake.creations == 1
    [a] = Runner(store, h).run(gid).assets  # what `aigen retry` runs
    assert a["status"] == "failed" and fake.creations == 1
    [a] = Runner(store, h, include_refused=True).run(gid).assets  # `aigen retry --include-refused`
    assert a["status"] == "done" and fake.creations == 2


# --------------------------------------------------------------------------- item 21: concurrency caps
def test_cap_precedence_env_then_config_toml_then_default(tmp_path):
    from aigen.config import concurrency_cap

    assert concurrency_cap("openai", 4, env={}, home=tmp_path) == (4, "default")
    assert concurrency_cap("openai", 4, env={"AIGEN_OPENAI_CONCURRENCY": ""}, home=tmp_path) == (4, "default")
    (tmp_path / "config.toml").write_text("[providers.openai]\nconcurrency = 8\n[providers.runway]\nconcurrency = 1\n")
    assert concurrency_cap("openai", 4, env={}, home=tmp_path) == (8, "config.toml")
    assert concurrency_cap("runway", 5, env={}, home=tmp_path) == (1, "config.toml")
    assert concurrency_cap("stability", 4, env={}, home=tmp_path) == (4, "default")
    env = {"AIGEN_OPENAI_CONCURRENCY": "12"}
    assert concurrency_cap("openai", 4, env=env, home=tmp_path) == (12, "env AIGEN_OPENAI_CONCURRENCY")


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5", "65", "1e3", " "])
def test_a_bad_cap_in_the_environment_is_refused_with_the_rule(value, tmp_path):
    from aigen.config import concurrency_cap

    with pytest.raises(BadInput, match=r"AIGEN_OPENAI_CONCURRENCY.*between 1 and 64"):
        concurrency_cap("openai", 4, env={"AIGEN_OPENAI_CONCURRENCY": value}, home=tmp_path)


@pytest.mark.parametrize("toml", ["concurrency = 0", "concurrency = 'eight'", "concurrency = true",
                                  "concurrency = 1000"])
def test_a_bad_cap_in_config_toml_is_refused(toml, tmp_path):
    from aigen.config import concurrency_cap

    (tmp_path / "config.toml").write_text(f"[providers.openai]\n{toml}\n")
    with pytest.raises(BadInput, match=r"config.toml \[providers.openai\].*between 1 and 64"):
        concurrency_cap("openai", 4, env={}, home=tmp_path)


@pytest.mark.parametrize("toml, words", [
    ("[providers.openai]\nconcurency = 8\n", "unknown key 'concurency' in [providers.openai]"),
    ("[providers.OpenAI]\nconcurrency = 8\n", "[providers.OpenAI] should be [providers.openai]"),
])
def test_a_misspelt_cap_in_config_toml_is_refused_not_ignored(toml, words, tmp_path):
    from aigen.config import concurrency_cap

    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(BadInput) as e:
        concurrency_cap("openai", 4, env={}, home=tmp_path)
    assert words in e.value.message
    assert concurrency_cap("runway", 5, env={}, home=tmp_path) == (5, "default")  # another provider's is fine


def test_providers_shows_the_cap_in_force_and_where_it_came_from(cli, home, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[providers.runway]\nconcurrency = 1\n")
    monkeypatch.setenv("AIGEN_OPENAI_CONCURRENCY", "8")
    r = cli("providers", "--json")
    assert r.exit_code == 0, r.output
    rows = {p["name"]: p for p in json.loads(r.output)["providers"]}
    assert (rows["openai"]["concurrency"], rows["openai"]["concurrency_source"]) == (8, "env AIGEN_OPENAI_CONCURRENCY")
    assert (rows["runway"]["concurrency"], rows["runway"]["concurrency_source"]) == (1, "config.toml")
    assert (rows["stability"]["concurrency"], rows["stability"]["concurrency_source"]) == (4, "default")
    text = flat(cli("providers").output)
    assert "8 (env)" in text and "1 (config.toml)" in text and "4 (default)" in text
    assert "openai: cap 8 from AIGEN_OPENAI_CONCURRENCY" in text

    monkeypatch.setenv("AIGEN_OPENAI_CONCURRENCY", "zero")
    r = cli("providers")
    assert r.exit_code == 2 and "invalid concurrency 'zero'" in flat(r.output)


def test_a_bad_cap_stops_generate_before_anything_is_written(cli, home, monkeypatch):
    monkeypatch.setenv("AIGEN_FLAKY_CONCURRENCY", "0")
    r = cli("generate", "a red fox", "--user", "alice", "--image-provider", "flaky", "--images", "1",
            "--videos", "0")
    assert r.exit_code == 2
    assert "invalid concurrency '0'" in flat(r.output) and "AIGEN_FLAKY_CONCURRENCY" in r.output
    if (home / "aigen.db").exists():
        with sqlite3.connect(home / "aigen.db") as db:
            assert db.execute("SELECT count(*) FROM generations").fetchone()[0] == 0


def test_the_per_provider_slots_are_sized_to_the_configured_cap(home, monkeypatch):
    h, store, gid = new_generation(home, provider="flaky", images=2)
    monkeypatch.setenv("AIGEN_FLAKY_CONCURRENCY", "7")
    Runner(store, h).run(gid)
    assert pipeline_run._SLOTS["flaky"]._initial_value == 7
    assert pipeline_run._POOLS["flaky"]._max_workers == 7 * pipeline_run.THREADS_PER_SLOT
    monkeypatch.delenv("AIGEN_FLAKY_CONCURRENCY")
    (h.path / "config.toml").write_text("[providers.flaky]\nconcurrency = 5\n")
    h2, store2, gid2 = new_generation(home, provider="flaky", images=1)
    Runner(store2, h2).run(gid2)
    assert pipeline_run._SLOTS["flaky"]._initial_value == 5


class _Gate:
    """Counts a provider's calls in flight (under a cap of 1) and lets a test hold a file's check."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.in_flight = self.most = 0
        self.second_call = threading.Event()
        self.calls: list[int] = []

    def provider(self):
        from fakes.testproviders import FlakyProvider

        gate = self

        class Gated(FlakyProvider):
            def generate(self, req, dest, reporter):
                with gate.lock:
                    gate.in_flight += 1
                    gate.most = max(gate.most, gate.in_flight)
                gate.calls.append(req.index)
                if req.index == 2:
                    gate.second_call.set()
                try:
                    return super().generate(req, dest, reporter)
                finally:
                    with gate.lock:
                        gate.in_flight -= 1

        return Gated()


def test_the_cap_holds_the_providers_calls_not_the_checks_of_what_they_returned(home, monkeypatch):
    """With a cap of 1, the second image's call starts while the first image's file is still being checked
    (its check waits for that call): the slot is given back when the provider returns. Calls in flight never
    pass the cap."""
    monkeypatch.setenv("AIGEN_FLAKY_CONCURRENCY", "1")
    h, store, gid = new_generation(home, provider="flaky", images=3)
    gate = _Gate()
    seen = []
    real_check = Runner._check

    def held_check(self, asset, path, *, exact):
        if asset["idx"] == 1:
            seen.append(gate.second_call.wait(10))
        return real_check(self, asset, path, exact=exact)

    monkeypatch.setattr(Runner, "_check", held_check)
    result = Runner(store, h, providers={"flaky": gate.provider()}).run(gid)
    assert result.generation["status"] == "Completed"
    assert seen == [True]  # image 2 was called while image 1 was in its check
    assert gate.most == 1  # never two calls at once


def test_an_asset_waiting_for_a_slot_when_the_run_stops_is_left_queued(home, monkeypatch):
    """Ctrl-C (the run's stop) while an asset waits for the provider's slot: it is not started, not failed,
    and `aigen retry` makes it."""
    monkeypatch.setenv("AIGEN_FLAKY_CONCURRENCY", "1")
    h, store, gid = new_generation(home, provider="flaky", images=2)
    gate = _Gate()
    runner = Runner(store, h, providers={"flaky": gate.provider()})
    import threading

    entered: list[int] = []
    both_waiting = threading.Event()
    real_slot, real_call = Runner._slot, Runner._call

    def noted_slot(self, asset):
        entered.append(asset["idx"])
        if len(entered) == 2:
            both_waiting.set()
        return real_slot(self, asset)

    def first_call_stops_the_run(self, gen, asset, directory, extra):
        out = real_call(self, gen, asset, directory, extra)
        assert both_waiting.wait(10)  # the other image waits for the slot this call holds
        self.stop.set()
        return out

    monkeypatch.setattr(Runner, "_slot", noted_slot)
    monkeypatch.setattr(Runner, "_call", first_call_stops_the_run)
    runner.run(gid)
    [first] = gate.calls  # the other image was never called
    second = 3 - first
    by_idx = {a["idx"]: a for a in store.assets(gid)}
    assert by_idx[first]["status"] == "done"
    assert by_idx[second]["status"] == "queued" and not by_idx[second]["error"]
    monkeypatch.setattr(Runner, "_call", real_call)
    monkeypatch.setattr(Runner, "_slot", real_slot)
    result = Runner(store, h, providers={"flaky": gate.provider()}).run(gid)
    assert result.generation["status"] == "Completed" and gate.calls == [first, second]


def test_migration_marks_assets_refused_before_it_existed(home):
    h, store, gid = new_generation(home, images=3)
    a1, a2, a3 = store.assets(gid)
    store.fail_asset(a1["id"], "refused by openai: blocked", code="refused")
    store.fail_asset(a2["id"], "refused by runway: Flagged. (SAFETY.OUTPUT.VIDEO)", code="SAFETY.OUTPUT.VIDEO")
    store.fail_asset(a3["id"], "openai: server error 500", code="http_500")
    with store.transaction() as db:  # as a database written before 0006 left them
        db.conn.execute("UPDATE assets SET refused = NULL")
        db.conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0006_asset_notes'")
    from aigen.store import Store

    again = Store(h.db_path)
    assert [a["refused"] for a in again.assets(gid)] == [1, 1, None]


def test_after_an_all_refused_run_every_suggestion_is_a_retry_that_would_submit(cli, home, monkeypatch):
    # `aigen retry ID` refuses when everything left was refused: the notification, the gallery and
    # generate's last lines must not suggest it, but say it was refused and name --include-refused.
    from datetime import datetime, timezone

    from aigen.config import resolve_home
    from aigen.notify.message import compose
    from aigen.store import Store
    from aigen.web.views import shape

    monkeypatch.setenv("AIGEN_TEST_REFUSE", "1")
    r = cli("generate", "a red fox", "--user", "alice", "--image-provider", "flaky", "--images", "1",
            "--videos", "0", "--image-size", "64x64")
    assert r.exit_code == 1
    gid = gen_id_of(cli)
    out = flat(r.output)
    assert "was refused by its provider" in out and f"aigen retry {gid} --include-refused" in out
    assert f"Make the missing assets with: aigen retry {gid}" not in out
    r = cli("generate", "another", "--user", "alice", "--image-provider", "flaky", "--images", "1",
            "--videos", "0", "--image-size", "64x64", "-q")
    assert "were refused" in r.output and "--include-refused" in r.output

    h = resolve_home(home)
    store = Store(h.db_path)
    gen, assets = store.get_generation(gid), store.assets(gid)
    now = datetime.now(timezone.utc)
    notice = compose(h, gen, assets, link="http://x/l", link_valid="7 days", due_at=now, now=now)
    for text in (notice.text(), notice.html()):
        assert "refused by its provider" in text and f"retry {gid} --include-refused" in text
    g = shape(gen, assets)
    assert g["retry_command"] == f"aigen retry {gid} --include-refused" and g["all_refused"]

    # A run with a failure that was not a refusal still gets the plain command.
    monkeypatch.setenv("AIGEN_TEST_REFUSE", "")
    monkeypatch.setenv("AIGEN_TEST_FAIL", "1")
    r = cli("generate", "a third", "--user", "alice", "--image-provider", "flaky", "--images", "1",
            "--videos", "0", "--image-size", "64x64")
    gid3 = gen_id_of(cli)
    assert f"Make the missing assets with: aigen retry {gid3}" in flat(r.output)
    assert "--include-refused" not in r.output
    assert shape(store.get_generation(gid3), store.assets(gid3))["retry_command"] == f"aigen retry {gid3}"

    # The suggested command does what it says.
    monkeypatch.delenv("AIGEN_TEST_REFUSE")
    monkeypatch.delenv("AIGEN_TEST_FAIL")
    r = cli("retry", gid, "--include-refused")
    assert r.exit_code == 0, r.output


def test_the_retry_command_printed_after_a_failed_run_names_the_home_given_with_home(cli, home, tmp_path,
                                                                                     monkeypatch):
    other = tmp_path / "other home"
    monkeypatch.setenv("AIGEN_TEST_FAIL", "1")
    r = cli("--home", str(other), "generate", "a fox", "--user", "ann", "--image-provider", "flaky", "--images",
            "1", "--videos", "0", "--image-size", "64x64", "--notify-via", "none")
    assert r.exit_code == 1
    gid = json.loads(cli("--home", str(other), "status", "--json").output)["generations"][0]["id"]
    assert f"Make the missing assets with: aigen --home '{other}' retry {gid}" in flat(r.output)
    r = cli("--home", str(other), "generate", "a fox", "--user", "ann", "--image-provider", "flaky", "--images",
            "1", "--videos", "0", "--image-size", "64x64", "--notify-via", "none", "-q")
    assert f"aigen --home '{other}' retry " in r.output
