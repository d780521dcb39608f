"""The pipeline: statuses, failures with reasons, atomic files, kill and resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigen.config import resolve_home
from aigen.errors import Busy
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.pipeline.run import Runner, is_running, run_lock
from aigen.store import Store


def new_generation(home_dir, provider="flaky", images=3, videos=0, **kw):
    home = resolve_home(home_dir)
    home.ensure()
    store = Store(home.db_path)
    spec = RequestSpec(user_id="alice", prompt="a red fox at dawn", images=images, videos=videos,
                       image_provider=provider, video_provider=provider, image_size="64x64",
                       video_size="64x64", duration=1, seed=7, **kw)
    gen, assets = prepare(spec, home=home.path)
    gid = store.create_generation(gen, assets)
    return home, store, gid


def no_partial_files(directory: Path):
    return [p.name for p in directory.rglob("*") if p.name.endswith(".part")]


def test_all_assets_succeed(home, calls):
    h, store, gid = new_generation(home, images=3)
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert result.generation["generated_at"]
    gen_dir = h.content_dir / "alice" / gid
    # Each image and the gallery's two previews of it.
    assert sorted(p.name for p in gen_dir.iterdir()) == sorted(
        f"image_{i}{ext}" for i in (1, 2, 3) for ext in (".png", ".thumb.webp", ".thumb2x.webp"))
    assert result.generation["image_paths"] == [f"generated_content/alice/{gid}/image_{i}.png" for i in (1, 2, 3)]
    for a in result.assets:
        assert a["status"] == "done" and a["attempts"] == 1
        assert a["bytes"] == (h.path / a["path"]).stat().st_size
        assert len(a["sha256"]) == 64 and (a["width"], a["height"]) == (64, 64)
    assert len(calls()) == 3
    assert not is_running(h, gid)


def test_some_assets_fail_with_reasons_then_retry_makes_only_those(home, calls, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_FAIL", "2,4")
    h, store, gid = new_generation(home, images=5)
    result = Runner(store, h).run(gid)
    gen = result.generation
    assert gen["status"] == "Failed"
    assert "2 of 5 assets failed" in gen["error"]
    assert "image 2: flaky: server error 500 for image 2" in gen["error"]
    assert "image 4" in gen["error"]
    assert len(gen["image_paths"]) == 3
    failed = [a for a in result.assets if a["status"] == "failed"]
    assert [a["idx"] for a in failed] == [2, 4]
    assert all(a["error_code"] == "http_500" for a in failed)
    assert not (h.content_dir / "alice" / gid / "image_2.png").exists()
    done_before = {a["idx"]: (a["sha256"], (h.path / a["path"]).stat().st_mtime_ns)
                   for a in result.assets if a["status"] == "done"}

    monkeypatch.delenv("AIGEN_TEST_FAIL")
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert result.generation["error"] is None
    assert len(result.generation["image_paths"]) == 5
    # Only images 2 and 4 were asked for again; the others were not touched.
    assert sorted(int(c[2]) for c in calls()) == [1, 2, 2, 3, 4, 4, 5]
    for a in result.assets:
        if a["idx"] in done_before:
            assert a["attempts"] == 1
            assert (a["sha256"], (h.path / a["path"]).stat().st_mtime_ns) == done_before[a["idx"]]
        else:
            assert a["attempts"] == 2


def test_refusal_is_reported_as_such(home, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_REFUSE", "1")
    h, store, gid = new_generation(home, images=2)
    result = Runner(store, h).run(gid)
    a1 = [a for a in result.assets if a["idx"] == 1][0]
    assert a1["status"] == "failed"
    assert a1["error"] == "refused by flaky: the prompt was flagged by moderation"
    assert a1["error_code"] == "refused"


def test_invalid_media_is_never_kept(home):
    h, store, gid = new_generation(home, provider="garbage", images=2, videos=1)
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Failed"
    for a in result.assets:
        assert a["status"] == "failed"
        assert "not valid" in a["error"]
        assert a["path"] is None
    gen_dir = h.content_dir / "alice" / gid
    assert list(gen_dir.iterdir()) == []


def test_a_complete_file_left_by_a_killed_run_is_adopted_not_regenerated(home, calls):
    h, store, gid = new_generation(home, images=2)
    gen_dir = h.content_dir / "alice" / gid
    gen_dir.mkdir(parents=True)
    # As if a run was killed after os.replace but before the database update:
    from fakes.testproviders import tiny_png

    tiny_png(gen_dir / "image_1.png", 64, 64, 3)
    # ...and a partial file from an asset that was being written.
    (gen_dir / ".image_2.123.abcd.part").write_bytes(b"\x89PNG partial")
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    assert [c[2] for c in calls()] == ["2"]
    assert no_partial_files(gen_dir) == []


def test_a_left_video_with_another_frame_count_is_made_again(home, calls):
    # flaky guarantees the size and length: 1 s at 24 fps is exactly 24 frames. A file of 25 frames
    # (1.04 s: within the duration tolerance) left at the final path is not adopted but made again.
    from aigen.media import probe
    from aigen.media.video import encode_frames, render_frames

    h, store, gid = new_generation(home, images=0, videos=1)
    gen_dir = h.content_dir / "alice" / gid
    gen_dir.mkdir(parents=True)
    left = gen_dir / "video_1.mp4"
    encode_frames(render_frames("x", 1, 1, 64, 64, 24, 25 / 24), left, 64, 64, 24)
    assert probe.check_video(left, width=64, height=64, duration=1.0).frames == 25
    result = Runner(store, h).run(gid)
    [asset] = result.assets
    assert asset["status"] == "done" and asset["duration"] == 1.0
    assert probe.check_video(h.path / asset["path"], frames=24).frames == 24
    assert [c[1] for c in calls()] == ["video"]
    # The poster is the frame the check decoded at 1 s (the last one, for a clip this short).
    poster = h.path / asset["poster_path"]
    assert probe.probe_image(poster) == probe.ImageInfo("jpeg", 64, 64)
    again = gen_dir / "again.jpg"
    probe.make_poster(h.path / asset["path"], again)
    assert poster.read_bytes() == again.read_bytes()


def test_a_second_runner_is_refused_while_the_first_holds_the_generation(home):
    h, store, gid = new_generation(home, images=1)
    with run_lock(h, gid):
        assert is_running(h, gid)
        with pytest.raises(Busy, match="being processed by another aigen process"):
            Runner(store, h).run(gid)
    assert not is_running(h, gid)


def test_sigkill_mid_run_then_retry_completes_without_redoing(home, calls, tmp_path):
    env = dict(os.environ, AIGEN_TEST_DELAY="0.6")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aigen", "generate", "a slow prompt", "--user", "alice", "--images", "6",
         "--videos", "0", "--image-provider", "slow", "--image-size", "64x64", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    h = resolve_home(home)
    deadline = time.monotonic() + 60
    store = None
    gid = None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not h.db_path.exists():
            continue
        store = store or Store(h.db_path)
        rows = store.query("SELECT id FROM generations")
        if not rows:
            continue
        gid = rows[0]["id"]
        done = [a for a in store.assets(gid) if a["status"] == "done"]
        if len(done) >= 2:
            break
    else:  # pragma: no cover
        proc.kill()
        pytest.fail("the run never got going")
    # Kill while an asset is being written (the slow provider holds a partial file).
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    gen = store.get_generation(gid)
    assert gen["status"] == "Processing"
    assert not is_running(h, gid)
    assets = store.assets(gid)
    done_before = {a["idx"]: a["sha256"] for a in assets if a["status"] == "done"}
    assert 2 <= len(done_before) < 6
    gen_dir = h.content_dir / "alice" / gid
    # No partial file ever stands at a final path: every final-named file is a done asset.
    for p in gen_dir.iterdir():
        if not p.name.startswith("."):
            assert int(p.name.split(".")[0].split("_")[1]) in done_before  # a file, or a preview of it
    calls_before = len(calls())

    from typer.testing import CliRunner

    from aigen.cli import app

    r = CliRunner().invoke(app, ["retry", gid[:6]])
    assert r.exit_code == 0, r.output
    gen = store.get_generation(gid)
    assert gen["status"] == "Completed"
    assert len(gen["image_paths"]) == 6
    redone = [int(c[2]) for c in calls()[calls_before:]]
    assert sorted(redone) == sorted(set(range(1, 7)) - set(done_before))
    for a in store.assets(gid):
        if a["idx"] in done_before:
            assert a["sha256"] == done_before[a["idx"]]
            assert a["attempts"] == 1
    assert no_partial_files(gen_dir) == []


def test_ctrl_c_keeps_the_run_lock_until_started_assets_have_stopped(home, calls):
    env = dict(os.environ, AIGEN_TEST_DELAY="0.8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aigen", "generate", "a slow prompt", "--user", "alice", "--images", "4",
         "--videos", "0", "--image-provider", "slow", "--image-size", "64x64", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    h = resolve_home(home)
    deadline = time.monotonic() + 60
    store, gid = None, None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not h.db_path.exists():
            continue
        store = store or Store(h.db_path)
        rows = store.query("SELECT id FROM generations")
        if rows and any(a["status"] == "done" for a in store.assets(rows[0]["id"])):
            gid = rows[0]["id"]
            break
    else:  # pragma: no cover
        proc.kill()
        pytest.fail("the run never got going")
    time.sleep(0.2)  # the next asset is now being written
    proc.send_signal(signal.SIGINT)
    # The run lock is held until the work already started has stopped: when it
    # is free, no asset is still running and nothing more will be written.
    while is_running(h, gid):
        with pytest.raises(Busy):
            with run_lock(h, gid):
                pass
        time.sleep(0.02)
    assert not any(a["status"] == "running" for a in store.assets(gid))
    calls_at_release = len(calls())
    files_at_release = sorted(p.name for p in (h.content_dir / "alice" / gid).iterdir())
    proc.wait(timeout=30)
    assert len(calls()) == calls_at_release
    assert sorted(p.name for p in (h.content_dir / "alice" / gid).iterdir()) == files_at_release
    assert proc.returncode == 130, proc.stderr.read().decode()
    assert "aigen retry" in proc.stderr.read().decode()
    assets = store.assets(gid)
    assert not any(a["status"] == "running" for a in assets)
    gen_dir = h.content_dir / "alice" / gid
    assert no_partial_files(gen_dir) == []
    result = Runner(store, h).run(gid)
    assert result.generation["status"] == "Completed"
    # Every image was asked for exactly once: the interrupted run finished what it had started.
    assert sorted(int(c[2]) for c in calls()) == [1, 2, 3, 4]
