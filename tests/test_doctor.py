"""`aigen doctor`: finds what is wrong with a home, says how to mend it, changes nothing unless asked."""

import hashlib
import gc
import json
import os
import sqlite3

import pytest

from aigen.store import Store


def snapshot(root):
    """Every path under the home with its bytes' hash: any write, creation or removal changes it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def make(cli, home, n=2):
    r = cli("generate", "a fox", "--user", "alice", "--images", n, "--videos", "0", "--image-provider", "flaky",
            "--image-size", "64x64", "--json", "--notify-via", "none")
    assert r.exit_code == 0, r.output
    # CliRunner runs in this process: let the finished command's database connections close (and checkpoint)
    # now, not when the garbage collector happens to run during a later command, after a test damaged the file.
    gc.collect()
    return json.loads(r.stdout)["id"]


def doctor(cli, *args):
    r = cli("doctor", "--json", *args)
    return r.exit_code, json.loads(r.stdout)


def test_a_healthy_home_is_exit_0_and_untouched(cli, home):
    make(cli, home)
    before = snapshot(home)
    code, out = doctor(cli, "--deep")
    assert code == 0, out
    assert out["healthy"] and out["problems"] == []
    assert out["database"]["quick_check"] == ["ok"] and out["database"]["files_checked"] == 2
    assert snapshot(home) == before


def test_doctor_finds_every_kind_of_problem_without_changing_anything(cli, home):
    gid = make(cli, home, n=3)
    gdir = home / "generated_content" / "alice" / gid
    (gdir / "image_1.png").unlink()  # missing
    with open(gdir / "image_2.png", "ab") as fh:  # wrong size
        fh.write(b"x")
    data = bytearray((gdir / "image_3.png").read_bytes())  # same size, other bytes
    data[-20] ^= 0xFF
    (gdir / "image_3.png").write_bytes(bytes(data))
    orphan = home / "generated_content" / "bob" / "0123456789ab"
    orphan.mkdir(parents=True)
    (orphan / "image_1.png").write_bytes(b"png")
    (gdir / f".image_4.png.{2**22 + 12345}.abcd1234.part").write_bytes(b"half")
    (home / "locks" / "notify-daemon.4194999.lock").write_text("4194999\n")
    (home / "locks" / "feedfacecafe.lock").write_text("1\n")
    before = snapshot(home)

    code, out = doctor(cli)
    assert code == 1
    kinds = sorted(p["kind"] for p in out["problems"])
    assert kinds == ["file_missing", "file_size_mismatch", "orphan_folder", "stale_lock", "stale_lock", "temp_file"]
    code, out = doctor(cli, "--deep")
    kinds = sorted(p["kind"] for p in out["problems"])
    assert "file_hash_mismatch" in kinds
    for p in out["problems"]:
        assert p["remedy"]
    assert snapshot(home) == before  # checking wrote nothing, not even a -shm file

    r = cli("doctor")
    assert r.exit_code == 1
    assert "mend: aigen doctor --move-orphans" in r.stdout
    assert f"aigen retry {gid}" in r.stdout
    assert snapshot(home) == before


def test_mend_flags_do_only_what_they_name(cli, home):
    gid = make(cli, home, n=2)
    gdir = home / "generated_content" / "alice" / gid
    part = gdir / f".image_2.png.{2**22 + 12345}.abcd1234.part"
    part.write_bytes(b"half")
    orphan = home / "generated_content" / "alice" / "0123456789ab"
    orphan.mkdir()
    (orphan / "video_1.mp4").write_bytes(b"mp4")
    stale = home / "locks" / "notify-daemon.4194999.lock"
    stale.write_text("4194999\n")

    code, out = doctor(cli, "--remove-temp")
    assert code == 1 and out["mended"] == 1 and out["remaining"] == 2
    assert not part.exists() and orphan.exists() and stale.exists()
    code, out = doctor(cli, "--fix")
    assert code == 0, out
    assert not orphan.exists() and not stale.exists()
    assert (home / "orphans" / "alice" / "0123456789ab" / "video_1.mp4").read_bytes() == b"mp4"
    code, out = doctor(cli)
    assert code == 0 and out["healthy"]


def test_requeue_bad_then_retry_makes_the_file_again(cli, home, calls):
    gid = make(cli, home, n=2)
    gdir = home / "generated_content" / "alice" / gid
    with open(gdir / "image_2.png", "ab") as fh:
        fh.write(b"junk")
    code, out = doctor(cli, "--requeue-bad")
    assert code == 0 and out["mended"] == 1
    assert (gdir / "image_2.png.bad").exists()  # a damaged paid-for file is kept aside, not deleted
    assert Store(home / "aigen.db").get_generation(gid)["status"] == "Failed"
    n = len(calls())
    r = cli("retry", gid, "--quiet")
    assert r.exit_code == 0, r.output
    assert [int(c[2]) for c in calls()[n:]] == [2]
    assert doctor(cli, "--deep")[0] == 0


def test_a_stalled_generation_is_reported_with_retry(cli, home):
    gid = make(cli, home, n=1)
    store = Store(home / "aigen.db")
    store.set_generation_fields(gid, status="Processing")
    store.close()
    code, out = doctor(cli)
    assert code == 1
    [p] = out["problems"]
    assert p["kind"] == "stalled" and p["remedy"] == f"aigen retry {gid}"


def test_folders_left_by_a_lost_write_ahead_log_are_orphans(cli, home):
    gid = make(cli, home, n=1)
    # The rows of a second generation were only in the -wal, which was lost:
    # its folder is there, the database does not know it.
    lost = home / "generated_content" / "alice" / "abcdefabcdef"
    lost.mkdir()
    (lost / "image_1.png").write_bytes((home / "generated_content" / "alice" / gid / "image_1.png").read_bytes())
    code, out = doctor(cli)
    assert code == 1
    assert [p["kind"] for p in out["problems"]] == ["orphan_folder"]
    assert out["problems"][0]["path"] == str(lost)


def test_a_live_write_ahead_log_is_read_from_a_copy(cli, home):
    gid = make(cli, home, n=1)
    # A process with the database open and uncheckpointed writes in its -wal.
    conn = sqlite3.connect(home / "aigen.db")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE generations SET status = 'Processing' WHERE id = ?", (gid,))
    conn.commit()
    try:
        assert (home / "aigen.db-wal").exists()
        before = snapshot(home)
        code, out = doctor(cli)
        assert [p["kind"] for p in out["problems"]] == ["stalled"]  # the log's content was seen
        assert snapshot(home) == before
    finally:
        conn.close()


def test_a_damaged_database_is_a_problem_with_a_remedy(cli, home):
    make(cli, home, n=1)
    db = home / "aigen.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 10 * page
    # Overwrite the b-tree pages of the tables after the schema page: quick_check notices.
    for start in range(3 * page, len(data) - page, 2 * page):
        data[start:start + page] = b"\xab" * page
    db.write_bytes(bytes(data))
    code, out = doctor(cli)
    assert code == 1
    kinds = [p["kind"] for p in out["problems"]]
    assert kinds[0] in ("database_corrupt", "database_unreadable")
    assert ".recover" in out["problems"][0]["remedy"]


def test_a_file_that_is_not_a_database(cli, home):
    make(cli, home, n=1)
    (home / "aigen.db").write_bytes(b"this is not sqlite" * 100)
    for f in ("aigen.db-wal", "aigen.db-shm"):
        (home / f).unlink(missing_ok=True)
    code, out = doctor(cli)
    assert code == 1
    [p] = out["problems"]
    assert p["kind"] == "database_broken" and "restore" in p["remedy"]
    assert "it is not an SQLite database" in p["message"] and ".recover" not in p["remedy"]
    r = cli("doctor")
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_a_directory_or_an_emptied_file_in_place_of_the_database_is_named_with_a_mend_that_fits(cli, home):
    # The same diagnosis the other commands give (exit 2 there), not "disk I/O error" and a .recover that
    # cannot read a directory or an empty file.
    make(cli, home, n=1)
    db = home / "aigen.db"
    for f in ("aigen.db-wal", "aigen.db-shm"):
        (home / f).unlink(missing_ok=True)
    db.write_bytes(b"")
    before = snapshot(home)
    code, out = doctor(cli)
    assert code == 1
    [p] = out["problems"]
    assert p["kind"] == "database_broken" and "looks emptied" in p["message"]
    assert p["remedy"].startswith("move it aside (mv ") and ".recover" not in p["remedy"]
    db.unlink()
    db.mkdir()
    before = snapshot(home)
    code, out = doctor(cli)
    assert code == 1
    [p] = out["problems"]
    assert p["kind"] == "database_broken" and "it is a directory, not a database file" in p["message"]
    assert "disk I/O" not in json.dumps(out) and ".recover" not in p["remedy"]
    assert snapshot(home) == before


def test_a_0_byte_database_in_a_home_without_generations_is_a_new_healthy_one(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "aigen.db").write_bytes(b"")
    assert cli("status").exit_code == 0
    code, out = doctor(cli)
    assert code == 0 and out["healthy"], out


def test_no_home_is_bad_input(cli, home):
    code, out = doctor(cli)
    assert code == 2 and out["error"] == "bad_input"


def test_remedies_name_the_home_given_with_home(cli, home, tmp_path):
    make(cli, home, n=1)
    (home / "locks" / "notify-daemon.4194999.lock").write_text("1")
    r = cli("--home", home, "doctor")
    assert r.exit_code == 1
    assert f"aigen --home {home} doctor --clear-stale-locks" in r.stdout


def test_temporary_files_of_live_processes_are_left_alone(cli, home):
    make(cli, home, n=1)
    live = os.getppid()  # a process that is running
    dead = 2**22 + 4321
    (home / f".keys.json.{live}.ab12cd34.tmp").write_text("{}")
    (home / "locks" / f".notify-daemon.{live}.tmp").write_text("1")
    gone = home / f".keys.json.{dead}.ab12cd34.tmp"
    gone.write_text("{}")
    gone_daemon = home / "locks" / f".notify-daemon.{dead}.tmp"
    gone_daemon.write_text("1")
    code, out = doctor(cli)
    assert code == 1
    assert sorted(p["path"] for p in out["problems"]) == sorted([str(gone), str(gone_daemon)])
    code, out = doctor(cli, "--remove-temp")
    assert code == 0 and not gone.exists() and not gone_daemon.exists()
    assert (home / f".keys.json.{live}.ab12cd34.tmp").exists()
