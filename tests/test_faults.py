"""Faults of the machine (issue 9, items 6, 7, 9): a full disk, a broken database, a read-only home.

Each ends in one line naming the path, the cause and what to do; never a
traceback; the database is never modified; a generation stopped by a full disk
is completed by `aigen retry` once space is freed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aigen.config import resolve_home
from fakes.serve import Browser, aigen_serve

SMALL = ["--images", "3", "--videos", "0", "--image-size", "64x64"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def aigen_proc(*args, timeout=60, input=None):
    """The real console entry point in a subprocess (the environment comes from the `home` fixture)."""
    return subprocess.run([sys.executable, "-m", "aigen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=input)


def make_generation(cli) -> str:
    r = cli("generate", "a quiet lake", "--user", "ann", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    import gc

    # The in-process command's connections close (and checkpoint) now, not during a later step that
    # compares the database's bytes.
    gc.collect()
    return json.loads(r.output)["id"]


# -- 6. disk full ----------------------------------------------------------------

def test_no_space_for_a_file_is_said_so_and_retry_completes_once_space_is_freed(cli, home, monkeypatch):
    import aigen.pipeline.run as run_mod

    real_place = run_mod.place
    placed = []

    def place(tmp, final):
        if len(placed) >= 1:  # the first file fits, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))
        placed.append(final)
        real_place(tmp, final)

    monkeypatch.setattr(run_mod, "place", place)
    r = cli("generate", "a quiet lake", "--user", "ann", *SMALL)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    content = resolve_home(None).content_dir
    assert "no space left on the device holding" in r.output and str(content) in r.output
    assert "aigen retry" in r.output
    gid = r.output.split("aigen retry ")[-1].split("`")[0].strip()

    r = cli("status", gid, "--json")
    data = json.loads(r.output)
    assert data["status"] == "Processing"  # not finalised: resumable
    errors = [a.get("error") or "" for a in data["assets"]]
    assert any("no space left on the device holding" in e for e in errors), errors
    assert not any("internal error" in e for e in errors)
    assert sum(a["status"] == "done" for a in data["assets"]) == 1

    monkeypatch.setattr(run_mod, "place", real_place)  # space is freed
    r = cli("retry", gid, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed" and len(data["images"]) == 3


def test_no_space_in_the_database_is_said_so_and_retry_completes(cli, home, monkeypatch):
    from aigen.store.core import Store

    real = Store.complete_asset

    def full(self, asset_id, info, **kw):
        with self.transaction():
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "complete_asset", full)
    r = cli("generate", "a quiet lake", "--user", "ann", *SMALL, "--json")
    assert r.exit_code == 1, r.output
    err = json.loads(r.output)
    db = resolve_home(None).db_path
    assert err["error"] == "no_space" and str(db) in err["message"] and "aigen retry" in err["hint"]
    gid = err["hint"].split("aigen retry ")[1].split("`")[0]

    monkeypatch.setattr(Store, "complete_asset", real)
    r = cli("retry", gid, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["status"] == "Completed"


def test_no_space_writing_the_keys_file_is_one_line_and_keeps_the_old_file(cli, home, monkeypatch):
    r = cli("keys", "set", "openai", input="sk-first-key-123\n")
    assert r.exit_code == 0, r.output
    keys = resolve_home(None).path / "keys.json"
    before = keys.read_bytes()
    import aigen.keys as keys_mod

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keys_mod.os, "replace", replace)
    r = cli("keys", "set", "openai", input="sk-second-key-456\n")
    assert r.exit_code == 1 and "no space left on the device holding" in r.output and "Traceback" not in r.output
    monkeypatch.undo()
    assert keys.read_bytes() == before
    assert not [p for p in keys.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_unexpected_os_error_outside_any_command_check_is_one_line(cli, home, monkeypatch):
    """The top-level net: ENOSPC met where no command expected it (here the run lock file)."""
    import aigen.pipeline.run as run_mod

    gid = make_generation(cli)

    def run_lock(home, gen_id):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(home.path / "locks"))

    monkeypatch.setattr(run_mod, "run_lock", run_lock)
    r = cli("generate", "x", "--user", "ann", *SMALL)
    assert r.exit_code == 1 and "no space left on the device holding" in r.output, r.output
    assert gid


# -- 7. a broken database ------------------------------------------------------------

COMMANDS = [
    ("status",),
    ("status", "abcd"),
    ("events",),
    ("generate", "p", "--user", "ann", *SMALL),
    ("retry", "abcd"),
    ("notify-daemon", "--once"),
    ("user", "code", "ann"),
    ("serve", "--port", "0"),
]


def settle(db: Path) -> None:
    """As a cleanly closed database is: everything in the main file, no -wal/-shm left."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def _garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * 100)


def _truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2 + 100])


def _damaged(db: Path) -> None:
    # Overwrite every page after the first: the schema still reads, every table is garbage.
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes([0x5A]) * (len(data) - page)
    db.write_bytes(bytes(data))


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()
    (db / "something").write_text("x")


def _emptied(db: Path) -> None:
    db.write_bytes(b"")


BREAKERS = {"garbage": _garbage, "truncated": _truncated, "damaged": _damaged, "directory": _directory,
            "emptied": _emptied}


def _fingerprint(db: Path) -> str:
    if db.is_dir():
        return "dir:" + ",".join(sorted(p.name + sha(p) for p in db.iterdir()))
    return sha(db)


@pytest.mark.parametrize("breaker", sorted(BREAKERS))
def test_a_broken_database_is_refused_by_every_command_and_never_modified(cli, home, breaker):
    make_generation(cli)  # a real home with a generation folder beside the database
    db = resolve_home(None).db_path
    settle(db)
    BREAKERS[breaker](db)
    before = _fingerprint(db)
    for args in COMMANDS:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert str(db) in r.output and "cannot be used" in r.output, (args, r.output)
        assert "move it aside" in r.output and "Traceback" not in r.output
        assert _fingerprint(db) == before, args
    r = cli("status", "--json")
    assert json.loads(r.output)["error"] == "database_broken"
    if breaker == "emptied":
        assert "emptied" in r.output


def test_a_broken_database_in_a_real_process_no_traceback(home):
    from aigen.config import resolve_home as rh

    h = rh(None)
    h.ensure()
    _garbage(h.db_path)
    before = sha(h.db_path)
    for args in (["status"], ["generate", "p", "--user", "ann", *SMALL], ["notify-daemon", "--once"],
                 ["serve", "--port", "0"]):
        p = aigen_proc(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr and str(h.db_path) in p.stderr, p.stderr
    assert sha(h.db_path) == before


def test_an_unreadable_database_is_refused_untouched(cli, home, monkeypatch):
    make_generation(cli)
    db = resolve_home(None).db_path
    before = sha(db)
    import aigen.store.core as core

    real_open = os.open
    monkeypatch.setattr(core, "_HEADER_FDS", {})  # as in a new process

    def deny(file, *a, **kw):
        if str(file) == str(db):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *a, **kw)

    monkeypatch.setattr(core.os, "open", deny)
    r = cli("status")
    assert r.exit_code == 2 and "cannot be read" in r.output and str(db) in r.output, r.output
    monkeypatch.undo()
    assert sha(db) == before


def test_an_empty_database_without_generations_is_a_new_one(cli, home):
    h = resolve_home(None)
    h.ensure()
    h.db_path.write_bytes(b"")
    r = cli("status")
    assert r.exit_code == 0, r.output
    make_generation(cli)


def test_sqlite_errors_are_translated_by_the_store(tmp_path):
    from aigen.errors import BrokenDatabase, NoSpace, ReadOnlyHome, describe_sqlite_error

    db = tmp_path / "aigen.db"
    assert isinstance(describe_sqlite_error(sqlite3.OperationalError("database or disk is full"), db), NoSpace)
    assert isinstance(describe_sqlite_error(sqlite3.OperationalError("attempt to write a readonly database"), db),
                      ReadOnlyHome)
    assert isinstance(describe_sqlite_error(sqlite3.DatabaseError("database disk image is malformed"), db),
                      BrokenDatabase)
    assert describe_sqlite_error(sqlite3.OperationalError("no such column: x"), db) is None  # a bug stays a bug


# -- 9. a read-only home -----------------------------------------------------------------

@pytest.fixture
def ro_mount():
    """Make a directory a real read-only mount (a bind mount of itself); undone afterwards."""
    mounted = []

    def make(path: Path) -> None:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        p = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"bind mounts are not permitted here: {p.stderr.strip()}")
        mounted.append(path)
        p = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot remount read-only: {p.stderr.strip()}")

    yield make
    import gc

    gc.collect()  # close the connections the in-process commands left open on the mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def backup_copy(tmp_path, monkeypatch, *, with_wal: bool) -> Path:
    """Copy the home as a backup would, and use the copy as the home.

    with_wal: copied while the database was open, so -wal and -shm come along;
    else a cleanly closed database (a WAL database without -shm, which SQLite
    cannot open read-only in a read-only folder unless told it is immutable).
    """
    src = resolve_home(None).path
    dst = tmp_path / ("backup_wal" if with_wal else "backup")
    shutil.copytree(src, dst)
    if with_wal:
        assert (dst / "aigen.db-wal").exists() and (dst / "aigen.db-shm").exists()
    else:
        settle(dst / "aigen.db")
    monkeypatch.setenv("AIGEN_HOME", str(dst))
    return dst


@pytest.mark.parametrize("with_wal", [False, True], ids=["closed", "copied_open"])
def test_read_only_home_reads_work_and_writes_say_read_only(cli, home, ro_mount, tmp_path, monkeypatch, with_wal):
    gid = make_generation(cli)
    monkeypatch.setenv("AIGEN_TEST_FAIL", "2")
    r = cli("generate", "half made", "--user", "ann", *SMALL, "--image-provider", "flaky", "--json")
    assert r.exit_code == 1
    failed = json.loads(r.output)["id"]
    monkeypatch.delenv("AIGEN_TEST_FAIL")
    r = cli("keys", "set", "openai", input="sk-stored-key-123\n")
    assert r.exit_code == 0
    backup_copy(tmp_path, monkeypatch, with_wal=with_wal)
    h = resolve_home(None)
    before = sha(h.db_path)
    listing = sorted(p.name for p in h.path.iterdir())
    ro_mount(h.path)
    with pytest.raises(OSError):
        (h.path / "probe").write_text("x")

    for args in (("status",), ("status", gid), ("events",), ("providers",), ("keys", "list"),
                 ("status", "--json")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
    assert gid in cli("status").output
    assert json.loads(cli("status", gid, "--json").output)["status"] == "Completed"

    for args, kw in ((("generate", "p", "--user", "ann", *SMALL), {}), (("retry", failed), {}),
                     (("user", "code", "ann"), {}), (("keys", "set", "openai"), {"input": "sk-new-key-456\n"}),
                     (("keys", "remove", "openai"), {}), (("notify-daemon", "--once"), {})):
        r = cli(*args, **kw)
        assert r.exit_code == 2, (args, r.output)
        assert "is read-only" in r.output and "Traceback" not in r.output, (args, r.output)
    assert sha(h.db_path) == before
    assert sorted(p.name for p in h.path.iterdir()) == listing
    r = cli("keys", "set", "openai")  # refused before the key is asked for
    assert r.exit_code == 2 and "OPENAI_API_KEY" not in r.output, r.output

    # The real process too: no traceback, same answers.
    p = aigen_proc("status")
    assert p.returncode == 0 and gid in p.stdout, p.stderr
    p = aigen_proc("generate", "p", "--user", "ann", *SMALL)
    assert p.returncode == 2 and "is read-only" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_read_only_home_can_be_served_for_viewing(cli, home, ro_mount, tmp_path, monkeypatch):
    gid = make_generation(cli)
    backup_copy(tmp_path, monkeypatch, with_wal=False)
    h = resolve_home(None)
    before = sha(h.db_path)
    ro_mount(h.path)
    with aigen_serve() as served:
        # Sign in by user_id (loopback) and see the generation.
        browser = Browser(served.url)
        browser.login("ann")
        status, body = browser.get("/")
        assert status == 200 and gid.encode() in body, body[:2000]
    assert sha(h.db_path) == before


def test_read_only_home_without_secret_is_served_and_logout_ends_the_session(cli, home, ro_mount, tmp_path,
                                                                           monkeypatch):
    """A backup that left secret.key out (it is a secret) is still served for viewing: log in, log out, and
    the old cookie opens nothing; a magic link of the original home is refused as not valid, not a 500."""
    import http.client
    import re
    import urllib.parse

    from aigen.web.links import magic_token

    gid = make_generation(cli)
    token = magic_token(resolve_home(None).path, "ann", gid)
    dst = backup_copy(tmp_path, monkeypatch, with_wal=False)
    (dst / "secret.key").unlink()
    h = resolve_home(None)
    before = sha(h.db_path)
    ro_mount(h.path)
    with aigen_serve() as served:
        port = served.port
        cookie = {}

        def req(method, path, form=None, jar=cookie):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Cookie": jar["c"]} if jar.get("c") else {}
            body = None
            if form is not None:
                body = urllib.parse.urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            text = r.read().decode()
            if r.getheader("Set-Cookie"):
                jar["c"] = r.getheader("Set-Cookie").split(";")[0]
            c.close()
            return r.status, text

        def csrf(path):
            return re.search(r'name="csrf_token" value="([^"]+)"', req("GET", path)[1]).group(1)

        assert req("POST", "/login", {"user_id": "ann", "csrf_token": csrf("/login")})[0] == 303
        status, page = req("GET", "/")
        assert status == 200 and gid in page
        logged_in = cookie["c"]
        assert req("POST", "/logout", {"csrf_token": csrf("/")})[0] == 303
        replay = {"c": logged_in}
        assert req("GET", "/api/generations", jar=replay)[0] == 401
        status, page = req("GET", f"/login/link/{token}", jar={})
        assert status == 403 and "not valid" in page
    assert sha(h.db_path) == before
    assert not (h.path / "secret.key").exists()


def test_read_only_store_api(tmp_path, home):
    """Store(path, readonly=True): the API `aigen doctor` and others use to look without writing."""
    from aigen.errors import BrokenDatabase, ReadOnlyHome
    from aigen.store.core import Store

    db = tmp_path / "aigen.db"
    s = Store(db)
    s.ensure_user("ann")
    s.close()
    before = sha(db)
    ro = Store(db, readonly=True)
    assert ro.get_user("ann")["user_id"] == "ann"
    with pytest.raises(ReadOnlyHome):
        ro.ensure_user("bob")
    ro.close()
    assert sha(db) == before
    with pytest.raises(BrokenDatabase):
        Store(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_a_really_full_disk_on_a_small_tmpfs_then_retry_completes(cli, home, tmp_path, monkeypatch):
    """The real thing, not a patch: a 16 MB tmpfs as the home, filled up mid-way."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        monkeypatch.setenv("AIGEN_HOME", str(mnt))
        r = cli("generate", "warm up", "--user", "ann", "--images", "1", "--videos", "0", "--image-size", "64x64")
        assert r.exit_code == 0, r.output
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:  # take every free byte
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
            try:
                while True:
                    fh.write(b"\0" * 512)
                    fh.flush()
            except OSError:
                pass
        r = cli("generate", "a quiet lake", "--user", "ann", "--images", "2", "--videos", "0",
                "--image-size", "512x512", "--json")
        assert r.exit_code == 1, r.output
        err = json.loads(r.output)
        assert err["error"] == "no_space" and str(mnt) in err["message"], err
        filler.unlink()  # space is freed
        import re

        m = re.search(r"aigen retry ([0-9a-f]{12})", err.get("hint", ""))
        if m:  # the run had started: complete it
            r = cli("retry", m.group(1), "--json")
            assert r.exit_code == 0, r.output
            assert json.loads(r.output)["status"] == "Completed"
        else:  # the database was full before the generation was written: nothing half-made, do it again
            r = cli("status", "--json")
            assert json.loads(r.output)["counts"]["Completed"] == 1
            assert json.loads(r.output)["counts"]["Processing"] == 0
            r = cli("generate", "a quiet lake", "--user", "ann", "--images", "2", "--videos", "0",
                    "--image-size", "512x512", "--json")
            assert r.exit_code == 0, r.output
    finally:
        import gc

        gc.collect()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)



@pytest.mark.parametrize("with_wal", [False, True], ids=["closed", "copied_open"])
def test_doctor_checks_a_read_only_home_and_its_mends_say_read_only(cli, home, ro_mount, tmp_path, monkeypatch,
                                                                    with_wal):
    make_generation(cli)
    backup_copy(tmp_path, monkeypatch, with_wal=with_wal)
    h = resolve_home(None)
    orphan = h.content_dir / "ann" / "0123456789ab"
    orphan.mkdir(parents=True)
    (orphan / "image_01.png").write_bytes(b"x")
    before = sha(h.db_path)
    listing = sorted(p.name for p in h.path.iterdir())
    ro_mount(h.path)

    r = cli("doctor")
    assert r.exit_code == 1, r.output
    assert "belongs to no generation" in " ".join(r.output.split()) and "Traceback" not in r.output
    r = cli("doctor", "--deep", "--json")
    assert r.exit_code == 1, r.output
    data = json.loads(r.output)
    assert [p["kind"] for p in data["problems"]] == ["orphan_folder"], data
    assert data["database"]["quick_check"] == ["ok"]
    # An orphan folder (copied in before the mount) is found; mending it there is refused as read-only.
    for mend in ("--fix", "--remove-temp", "--clear-stale-locks", "--move-orphans", "--requeue-bad"):
        r = cli("doctor", mend)
        assert r.exit_code == 2, (mend, r.output)
        assert "is read-only" in " ".join(r.output.split()) and "without a mend flag" in " ".join(r.output.split()), (mend, r.output)
        assert "Traceback" not in r.output, (mend, r.output)
    p = aigen_proc("doctor", "--deep")
    assert p.returncode == 1 and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    p = aigen_proc("doctor", "--move-orphans")
    assert p.returncode == 2 and "is read-only" in p.stderr and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    assert orphan.is_dir()
    assert sha(h.db_path) == before
    assert sorted(p.name for p in h.path.iterdir()) == listing


def test_a_home_that_fills_up_on_its_first_run_is_completed_by_retry_once_space_is_freed(cli, home, tmp_path,
                                                                                          monkeypatch):
    """A full disk can leave aigen.db shorter than its header says while the write-ahead log holds the rest
    (a checkpoint cut short): SQLite reads it whole, so it is not 'cut short', and `aigen retry` completes
    the generation once the device has room again."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    # Room for a fresh database (its size grows with every migration) plus 256 KiB (96 KiB stopped being enough
    # when the prompt search index came: the first write's log now carries its pages too): the first run creates its
    # generation, then the disk fills while it writes the images.
    fresh = tmp_path / "fresh"
    from aigen.store import Store

    opened = Store(fresh / "aigen.db")  # measured open: the write-ahead log holds the migrations until closed
    footprint = sum(f.stat().st_size for f in fresh.iterdir())
    opened.close()
    size_k = -(-footprint // 4096) * 4 + 256
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        monkeypatch.setenv("AIGEN_HOME", str(mnt / "h"))
        # A real process: its database is closed (and checkpointed into the full device) when it exits.
        p = aigen_proc("generate", "a fox in snow", "--user", "ann", "--image-provider", "local", "--images", "5",
                       "--videos", "1", "--video-provider", "local", "--image-size", "1024x1024",
                       "--notify-via", "none", "--json")
        assert p.returncode == 1, (p.stdout, p.stderr)
        err = json.loads(p.stdout)
        assert err["error"] == "no_space", err
        import re

        m = re.search(r"aigen retry ([0-9a-f]{12})", err["hint"])
        assert m, err
        gid = m.group(1)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space is freed
        p = aigen_proc("status", gid, "--json")
        assert p.returncode == 0, (p.stdout, p.stderr)
        p = aigen_proc("retry", gid, "--json")
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert json.loads(p.stdout)["status"] == "Completed"
        p = aigen_proc("doctor")
        assert p.returncode == 0, (p.stdout, p.stderr)
    finally:
        import gc

        gc.collect()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES], ids=["EIO", "EACCES"])
def test_another_error_of_the_machine_writing_a_file_is_named_not_internal(cli, home, monkeypatch, err):
    import aigen.pipeline.run as run_mod

    def place(tmp, final):
        raise OSError(err, os.strerror(err), str(final))

    monkeypatch.setattr(run_mod, "place", place)
    r = cli("generate", "a quiet lake", "--user", "ann", *SMALL, "--json")
    assert r.exit_code == 1, r.output
    data = json.loads(r.output)
    errors = [a.get("error") or "" for a in data["assets"]]
    assert errors and all(f"cannot use {resolve_home(None).content_dir}" in e for e in errors), errors
    assert all(os.strerror(err) in e for e in errors)
    assert not any("internal error" in e for e in errors), errors
