"""The CLI through typer's CliRunner: happy path, --json, bad input, exit codes."""

import json
import os
import subprocess
import sys

import pytest

from aigen.config import resolve_home


def test_generate_default_request_on_local_makes_5_videos_and_5_images(cli, home):
    from PIL import Image

    from aigen.media.probe import moov_before_mdat, probe_video

    r = cli("generate", "a red fox at dawn", "--user", "alice", "--seed", "42", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed" and data["user_id"] == "alice"
    assert len(data["images"]) == 5 and len(data["videos"]) == 5
    gid = data["id"]
    for i, path in enumerate(data["images"], 1):
        assert path.endswith(f"generated_content/alice/{gid}/image_{i}.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (1024, 1024)
    pixels = [Image.open(p).convert("RGB").resize((64, 64)).tobytes() for p in data["images"]]
    assert len(set(pixels)) == 5, "the 5 images of one request must differ"
    for i, path in enumerate(data["videos"], 1):
        assert path.endswith(f"generated_content/alice/{gid}/video_{i}.mp4")
        info = probe_video(path)
        assert info.codec == "h264" and info.pix_fmt == "yuv420p"
        assert (info.profile or "").lower().startswith("high")
        assert (info.width, info.height) == (1280, 720)
        assert info.frames == 96 and abs(info.duration - 4.0) < 0.1
        assert moov_before_mdat(path)
    for a in data["assets"]:
        assert a["status"] == "done" and len(a["sha256"]) == 64 and a["bytes"] > 0
        if a["kind"] == "video":
            assert a["poster"].endswith(".poster.jpg")

    # status lists it, as a table and as JSON, and names the home it uses
    r = cli("status")
    assert r.exit_code == 0
    assert gid in r.output and "Completed" in r.output and "from AIGEN_HOME" in r.output
    r = cli("status", "--json")
    st = json.loads(r.output)
    assert st["home"] == str(resolve_home(None).path) and st["home_source"] == "AIGEN_HOME"
    g = st["generations"][0]
    assert (g["id"], g["images_done"], g["videos_done"], g["status"]) == (gid, 5, 5, "Completed")
    r = cli("status", gid, "--json")
    detail = json.loads(r.output)
    assert len(detail["assets"]) == 10 and detail["seed"] == 42
    r = cli("status", gid)
    assert "video 5" in r.output and "image 1" in r.output

    # retry of a completed generation does nothing
    r = cli("retry", gid)
    assert r.exit_code == 0 and "nothing to retry" in r.output


def test_generate_table_output_and_small_sizes(cli, home):
    r = cli("generate", "green forest", "--user", "bob", "--images", "2", "--videos", "1",
            "--image-size", "128x96", "--video-size", "160x120", "--duration", "1", "--fps", "12")
    assert r.exit_code == 0, r.output
    assert "Completed: 3 of 3 assets" in r.output
    assert "image_2.png" in r.output and "video_1.mp4" in r.output


def test_partial_failure_exits_1_and_status_shows_why(cli, home, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_FAIL", "3")
    r = cli("generate", "p", "--user", "carol", "--images", "3", "--videos", "0",
            "--image-provider", "flaky", "--image-size", "64x64", "--json")
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["status"] == "Failed" and "image 3" in data["error"]
    r = cli("status", "--status", "failed", "--json")
    assert [g["id"] for g in json.loads(r.output)["generations"]] == [data["id"]]
    monkeypatch.delenv("AIGEN_TEST_FAIL")
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "Completed"


LONG = "x" * 4001
BAD_INPUTS = [
    (["", "--user", "alice"], "prompt"),
    (["   \n\t ", "--user", "alice"], "prompt"),
    ([LONG, "--user", "alice"], "4001 characters"),
    (["bell \x07 ring", "--user", "alice"], "control character"),
    (["p", "--user", "../../etc"], "'../../etc'"),
    (["p", "--user", "a/b"], "'a/b'"),
    (["p", "--user", ".."], "'..'"),
    (["p", "--user", "has space"], "'has space'"),
    (["p", "--user", "nul\x00byte"], "invalid user_id"),
    (["p", "--user", "a" * 65], "invalid user_id"),
    (["p", "--user", "-leading"], "invalid user_id"),
    (["p", "--user", "alice", "--images", "11"], "invalid --images 11"),
    (["p", "--user", "alice", "--videos", "-1"], "invalid --videos -1"),
    (["p", "--user", "alice", "--images", "0", "--videos", "0"], "nothing to make"),
    (["p", "--user", "alice", "--image-provider", "dalle9"], "unknown provider 'dalle9'"),
    (["p", "--user", "alice", "--image-size", "big"], "invalid --image-size 'big'"),
    (["p", "--user", "alice", "--video-size", "641x480"], "must be even"),
    (["p", "--user", "alice", "--duration", "0"], "invalid --duration 0"),
    (["p", "--user", "alice", "--video-size", "100000x100000"], "between 64 and 4096"),
    (["p", "--user", "alice", "--notify-at", "25:00"], "--notify-at '25:00'"),
    (["p", "--user", "alice", "--notify-at", "2020-01-01T10:00"], "in the past"),
    (["p", "--user", "alice", "--notify-at", "tomorrowish"], "'tomorrowish'"),
    (["p", "--user", "alice", "--seed", "-5"], "invalid seed"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_exits_2_names_the_value_and_writes_nothing(cli, home, args, message):
    r = cli("generate", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not home.exists(), "bad input must not create the home, the database or any file"


def test_bad_input_as_json(cli, home):
    r = cli("generate", "p", "--user", "../../etc", "--json")
    assert r.exit_code == 2
    err = json.loads(r.stdout)
    assert err["error"] == "bad_input" and "../../etc" in err["message"]


def test_unknown_generation_id(cli, home):
    for args in (["retry", "deadbeef"], ["status", "deadbeef"], ["retry", "../../x"]):
        r = cli(*args)
        assert r.exit_code == 2
        assert "unknown generation id" in r.output
    assert not home.exists()
    cli("generate", "p", "--user", "a", "--images", "1", "--videos", "0", "--image-size", "64x64")
    r = cli("retry", "0000ffff")
    assert r.exit_code == 2 and "unknown generation id '0000ffff'" in r.output


def test_status_validates_its_options(cli, home):
    assert cli("status", "--user", "../x").exit_code == 2
    assert cli("status", "--limit", "0").exit_code == 2
    r = cli("status", "--status", "sleeping")
    assert r.exit_code == 2 and "'sleeping'" in r.output
    r = cli("status")
    assert r.exit_code == 0 and "No generations" in r.output


def test_prompt_from_stdin(cli, home):
    r = cli("generate", "-", "--user", "dan", "--images", "1", "--videos", "0", "--image-size", "64x64",
            "--json", input="a prompt read from stdin\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["prompt"] == "a prompt read from stdin"


def test_home_flag_wins_over_environment(cli, home, tmp_path):
    other = tmp_path / "other"
    r = cli("--home", other, "generate", "p", "--user", "erin", "--images", "1", "--videos", "0",
            "--image-size", "64x64", "--json")
    assert r.exit_code == 0
    assert json.loads(r.output)["home"] == str(other)
    assert (other / "aigen.db").exists() and not home.exists()
    r = cli("--home", other, "status", "--json")
    assert json.loads(r.output)["home_source"] == "--home"


def test_notify_at_is_stored_in_utc(cli, home):
    r = cli("generate", "p", "--user", "fay", "--images", "1", "--videos", "0", "--image-size", "64x64",
            "--notify-at", "+2h", "--json")
    assert r.exit_code == 0
    assert json.loads(r.output)["notify_at"].endswith("+00:00")


def test_detach_returns_at_once_and_finishes_in_background(cli, home):
    from aigen.pipeline.run import wait_for
    from aigen.store import Store

    r = cli("generate", "p", "--user", "gus", "--images", "2", "--videos", "1", "--image-size", "64x64",
            "--video-size", "64x64", "--duration", "1", "--detach", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Processing" and data["detached"] is True
    store = Store(resolve_home(None).db_path)
    assert wait_for(lambda: store.get_generation(data["id"])["status"] != "Processing", timeout=120)
    assert store.get_generation(data["id"])["status"] == "Completed"
    # The summary is printed just after the status changes.
    assert wait_for(lambda: "Completed: 3 of 3 assets" in open(data["log"]).read(), timeout=30)


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "sys.argv = ['aigen', '--help']\n"
        "from aigen.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'av', 'PIL', 'bottle', 'openai', 'runwayml', 'requests', 'waitress')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for sub in ("generate", "status", "retry"):
        out = subprocess.run([sys.executable, "-m", "aigen", sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_home_that_is_a_file_or_empty_is_bad_input(cli, home, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = cli("--home", afile, "generate", "p", "--user", "a", "--images", "1", "--videos", "0", "--json")
    assert r.exit_code == 2
    assert "is not a directory" in json.loads(r.stdout)["message"]
    r = cli("--home", "", "status")
    assert r.exit_code == 2 and "invalid --home ''" in r.output


def test_home_and_database_are_private(cli, home):
    import stat

    r = cli("generate", "p", "--user", "a", "--images", "1", "--videos", "0", "--image-size", "64x64", "-q")
    assert r.exit_code == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "aigen.db").stat().st_mode) == 0o600


def test_quiet_prints_one_summary_line(cli, home, monkeypatch):
    # --notify-via none: a console notification is a delivery, not part of the summary.
    r = cli("generate", "p", "--user", "a", "--images", "2", "--videos", "0", "--image-size", "64x64", "-q",
            "--notify-via", "none")
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Completed ") and "2 of 2 assets" in lines[0]
    monkeypatch.setenv("AIGEN_TEST_FAIL", "1")
    r = cli("generate", "p", "--user", "a", "--images", "2", "--videos", "0", "--image-size", "64x64",
            "--image-provider", "flaky", "-q", "--notify-via", "none")
    assert r.exit_code == 1
    assert "Failed" in r.output and "1 of 2 assets" in r.output and "aigen retry" in r.output


def test_made_in_this_run_counts_files_made(cli, home, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_FAIL", "1,2")
    r = cli("generate", "p", "--user", "a", "--images", "3", "--videos", "0", "--image-size", "64x64",
            "--image-provider", "flaky")
    assert r.exit_code == 1 and "(1 made in this run)" in r.output


def test_retry_checks_keys_before_touching_anything(cli, home, monkeypatch):
    from aigen.store import Store

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    h = resolve_home(None)
    h.ensure()
    store = Store(h.db_path)
    gid = store.create_generation({"user_id": "a", "prompt": "p", "image_count": 1, "video_count": 0},
                                  [{"kind": "image", "idx": 1, "provider": "openai", "model": "gpt-image-2",
                                    "seed": 1, "width": 1024, "height": 1024}])
    r = cli("retry", gid)
    assert r.exit_code == 2 and "OPENAI_API_KEY" in r.output
    a = store.assets(gid)[0]
    assert a["attempts"] == 0 and a["status"] == "queued" and a["error"] is None


def test_usage_errors_are_json_with_json(tmp_path):
    env = dict(os.environ, AIGEN_HOME=str(tmp_path / "h"))
    for args in (["generate", "fox", "-u", "a", "--images", "x", "--json"], ["generate", "--json", "-u", "a"]):
        p = subprocess.run([sys.executable, "-m", "aigen", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 2
        assert json.loads(p.stdout)["error"] == "bad_input"
    p = subprocess.run([sys.executable, "-m", "aigen", "generate", "fox"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Missing option" in p.stderr
    assert not (tmp_path / "h").exists()
