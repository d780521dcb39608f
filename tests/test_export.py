"""`aigen export`: the gallery's Download all from a shell; the same zip, written atomically, logged."""

from __future__ import annotations

import io
import json
import zipfile

import pytest


@pytest.fixture
def made(cli, home):
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--images", "2", "--videos", "1",
            "--image-size", "128x128", "--video-size", "128x96", "--duration", "0.5", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_export_writes_the_zip_of_the_gallery_and_logs_it(cli, home, made, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("export", made["id"], "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["files"] == 3 and out["path"].endswith(f"-{made['id']}.zip")
    with zipfile.ZipFile(out["path"]) as z:
        names = sorted(n.split("/", 1)[1] for n in z.namelist())
        assert names == ["image_1.png", "image_2.png", "prompt.txt", "video_1.mp4"]
        folder = z.namelist()[0].split("/", 1)[0]
        assert folder == out["path"].rsplit("/", 1)[-1][:-4]
        assert z.read(f"{folder}/prompt.txt").decode() == "a red fox at dawn\n"
        for p in made["images"] + made["videos"]:
            name = p.rsplit("/", 1)[-1]
            assert z.read(f"{folder}/{name}") == open(p, "rb").read()
    assert not list(tmp_path.glob(".*.part"))
    r = cli("events", "--kind", "zip_download", "--json")
    events = json.loads(r.output)
    rows = events if isinstance(events, list) else events.get("events", [])
    assert any("by aigen export: 3 file(s)" in (e.get("detail") or "") for e in rows), rows


def test_export_to_a_folder_to_stdout_and_no_overwrite(cli, home, made, tmp_path):
    r = cli("export", made["id"], "-o", str(tmp_path))
    assert r.exit_code == 0, r.output
    [written] = list(tmp_path.glob("aigen-*.zip"))
    r = cli("export", made["id"], "-o", str(written))
    assert r.exit_code == 2 and "exists" in r.output and "--force" in r.output
    r = cli("export", made["id"], "-o", str(written), "--force")
    assert r.exit_code == 0, r.output


def test_export_to_standard_output_is_the_same_zip(home, made, tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "aigen", "--home", str(home), "export", made["id"], "-o", "-"],
                          capture_output=True, env={**os.environ}, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    with zipfile.ZipFile(io.BytesIO(proc.stdout)) as z:
        assert len(z.namelist()) == 4 and z.testzip() is None


def test_export_refuses_unknown_ids_and_generations_without_files(cli, home, made):
    r = cli("export", "ffffffffffff")
    assert r.exit_code == 2 and "unknown generation" in r.output
    r = cli("export", made["id"], "-o", "/nonexistent-folder/x.zip")
    assert r.exit_code == 2 and "no folder" in r.output
