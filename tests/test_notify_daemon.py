"""The notify daemon with an injected clock: due times, exactly once, catch-up, crashes, the loop."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta, timezone

import pytest

from aigen.notify import queue
from aigen.notify.daemon import Notifier
from aigen.notify.desktop import DesktopError, DesktopSupport
from aigen.store import Store
from aigen.store.core import iso
from aigen.web.links import secret_key, verify_magic_token
from fakes.notify import T0, ConsoleRecorder, FakeClock, make_generation, open_home

NO_DESKTOP = DesktopSupport(False, None, "no graphical session: neither DISPLAY nor WAYLAND_DISPLAY is set")
HAS_DESKTOP = DesktopSupport(True, "dbus", "plyer via the dbus Python package")


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    """The home and its store: aigen.db in it, or a fresh PostgreSQL database (cluster mode)."""
    if request.param == "sqlite":
        home, store = open_home(tmp_path / "home")
        yield home, store
        return
    from aigen.config import Home
    from aigen.store.pg import PgStore

    home = Home(tmp_path / "home", "--home")
    home.ensure()
    store = PgStore(request.getfixturevalue("pg_database"))
    yield home, store
    store.close_all()


def own_store(home, store):
    """Another Store on the same database, with connections of its own (as another process would have)."""
    if store.backend == "postgresql":
        from aigen.store.pg import PgStore

        return PgStore(store.url)
    return Store(home.db_path)


def notifier(home, store, console=None, **kw):
    kw.setdefault("settle", timedelta(0))
    kw.setdefault("desktop_detect", lambda: NO_DESKTOP)
    kw.setdefault("tz", timezone.utc)
    return Notifier(store, home, console=console or ConsoleRecorder(), **kw)


def gen_row(store, gid):
    return store.get_generation(gid)


def test_due_on_completion_is_delivered_once_with_a_link_that_opens_it(env):
    home, store = env
    gid = make_generation(store, home)
    rec = ConsoleRecorder()
    n = notifier(home, store, rec)
    done = n.run_once(T0 + timedelta(seconds=3))
    assert [d.generation_id for d in done] == [gid]
    assert done[0].channels[0].status == "sent" and not done[0].late
    notice, context = rec.shown[0]
    assert context == "console"
    assert notice.ok and notice.made == "2 images" and "a red fox at dawn" in notice.text()
    token = notice.link.rsplit("/login/link/", 1)[1]
    assert notice.link.startswith("http://127.0.0.1:8000/login/link/")
    assert verify_magic_token(home, token, now=T0) == {"user_id": "alice", "generation_id": gid}
    # a second step, and a second daemon, find nothing left to send
    assert n.run_once(T0 + timedelta(minutes=5)) == []
    assert notifier(home, store, rec).run_once(T0 + timedelta(hours=5)) == []
    assert len(rec.shown) == 1
    g = gen_row(store, gid)
    assert g["notify_status"] == "sent" and g["notified_at"] == iso(T0 + timedelta(seconds=3))
    assert g["notify_channel"] == "console" and g["notify_error"] is None
    [row] = queue.rows_for(store, gid)
    assert row["attempts"] == 1 and row["claimed_by"] == n.owner and row["delivered_via"] == "console"


def test_nothing_is_sent_before_notify_at_and_it_is_sent_at_notify_at(env):
    home, store = env
    gid = make_generation(store, home, notify_at=T0 + timedelta(hours=6))
    rec = ConsoleRecorder()
    n = notifier(home, store, rec)
    assert n.run_once(T0 + timedelta(hours=5, minutes=59, seconds=59)) == []
    assert gen_row(store, gid)["notify_status"] == "pending"
    assert n.next_wake(T0 + timedelta(hours=1)) == T0 + timedelta(hours=6)
    done = n.run_once(T0 + timedelta(hours=6))
    assert [d.generation_id for d in done] == [gid] and not done[0].late


def test_a_notify_at_before_completion_means_on_completion(env):
    home, store = env
    gid = make_generation(store, home, notify_at=T0 - timedelta(hours=1))
    [row] = (queue.plan(store, T0), queue.rows_for(store, gid))[1]
    assert row["due_at"] == iso(T0)
    assert notifier(home, store).run_once(T0)[0].generation_id == gid


def test_a_generation_still_processing_is_not_notified_until_it_is_final(env):
    home, store = env
    gid = make_generation(store, home, finished=None, notify_at=T0 - timedelta(hours=1))
    n = notifier(home, store)
    assert n.run_once(T0) == []
    assert gen_row(store, gid)["notify_status"] is None
    for a in store.assets(gid):
        store.fail_asset(a["id"], "boom", now=T0)
    store.finalize_generation(gid, now=T0 + timedelta(minutes=1))
    assert [d.generation_id for d in n.run_once(T0 + timedelta(minutes=1))] == [gid]


def test_a_retried_generation_waits_while_processing_again(env):
    home, store = env
    gid = make_generation(store, home, fail=(2,), notify_at=T0 + timedelta(hours=1))
    n = notifier(home, store)
    assert n.run_once(T0 + timedelta(minutes=1)) == []  # planned, not yet due
    store.reopen_generation(gid)  # `aigen retry` started: Processing again
    assert n.run_once(T0 + timedelta(hours=2)) == []
    a2 = [a for a in store.assets(gid) if a["idx"] == 2][0]
    store.complete_asset(a2["id"], {"path": a2["path"] or "x.png", "bytes": 1, "width": 64, "height": 48})
    store.finalize_generation(gid, now=T0 + timedelta(hours=2))
    rec = ConsoleRecorder()
    done = notifier(home, store, rec).run_once(T0 + timedelta(hours=2, seconds=1))
    assert [d.status for d in done] == ["Completed"]
    assert rec.shown[0][0].ok, "the message describes the generation as it is when sent"


def test_settle_leaves_a_just_finished_generation_to_generate_for_a_moment(env):
    home, store = env
    gid = make_generation(store, home)
    daemon = notifier(home, store, settle=timedelta(seconds=5))
    assert daemon.run_once(T0 + timedelta(seconds=2)) == []
    assert daemon.next_wake(T0 + timedelta(seconds=2)) == T0 + timedelta(seconds=5)
    assert [d.generation_id for d in daemon.run_once(T0 + timedelta(seconds=5))] == [gid]


def test_the_foreground_process_takes_its_own_generation_at_once(env):
    home, store = env
    other = make_generation(store, home, user="bob")
    gid = make_generation(store, home)
    fg = notifier(home, store, settle=timedelta(seconds=5), owner=queue.make_owner("generate"))
    done = fg.run_once(T0, generation_id=gid)
    assert [d.generation_id for d in done] == [gid]
    assert gen_row(store, other)["notify_status"] is None, "generate only delivers its own generation"


def test_catch_up_after_a_restart_delivers_what_came_due_and_says_it_is_late(env):
    home, store = env
    g1 = make_generation(store, home, notify_at=T0 + timedelta(hours=1))
    g2 = make_generation(store, home, notify_at=T0 + timedelta(hours=2), user="bob")
    g3 = make_generation(store, home, notify_at=T0 + timedelta(hours=9), user="carol")
    first = notifier(home, store)
    assert first.run_once(T0 + timedelta(minutes=30)) == []
    # ...the daemon is down from 12:30 until 17:00, then a new one starts
    rec = ConsoleRecorder()
    restarted = notifier(home, store, rec)
    done = restarted.run_once(T0 + timedelta(hours=5))
    assert [d.generation_id for d in done] == [g1, g2], "oldest due first; the future one waits"
    assert all(d.late for d in done)
    assert done[0].delay_s == 4 * 3600 and done[1].delay_s == 3 * 3600
    text = rec.shown[0][0].text()
    assert "This notification is late: it was due 2026-11-24 13:00 UTC and is sent 4h 00m later." in text
    assert queue.rows_for(store, g1)[0]["late_s"] == 4 * 3600
    assert gen_row(store, g3)["notify_status"] == "pending"
    assert restarted.next_wake(T0 + timedelta(hours=5)) == T0 + timedelta(hours=9)


def test_a_sender_killed_mid_send_is_taken_over_after_its_lease(env):
    home, store = env
    gid = make_generation(store, home)
    queue.plan(store, T0)
    # A daemon on another machine claims it, then dies before recording anything.
    claim = queue.claim(store, T0, "daemon@elsewhere:4242:abcdef", lease=timedelta(minutes=10))
    assert claim.generation_id == gid and gen_row(store, gid)["notify_status"] == "sending"
    rec = ConsoleRecorder()
    other = notifier(home, store, rec)
    assert other.run_once(T0 + timedelta(minutes=9)) == [], "a live claim is never taken"
    done = other.run_once(T0 + timedelta(minutes=10))
    assert [d.generation_id for d in done] == [gid] and done[0].taken_over
    [row] = queue.rows_for(store, gid)
    assert row["attempts"] == 2 and row["status"] == "sent" and row["claimed_by"] == other.owner
    # the first sender's late record cannot overwrite the outcome
    stale = dict(claim.rows[0])
    assert queue.record(store, stale, queue.Outcome("failed", error="late"), T0 + timedelta(minutes=11)) is False
    assert queue.rows_for(store, gid)[0]["status"] == "sent"


def test_a_claim_by_a_dead_process_on_this_machine_is_taken_over_at_once(env):
    import socket

    home, store = env
    gid = make_generation(store, home)
    queue.plan(store, T0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    owner = f"daemon@{socket.gethostname()}:{int(dead.stdout)}:abcdef"
    assert queue.claim(store, T0, owner) is not None
    done = notifier(home, store).run_once(T0 + timedelta(seconds=1))
    assert [d.generation_id for d in done] == [gid]


def test_two_daemons_against_one_database_send_each_notification_exactly_once(env):
    home, store = env
    ids = [make_generation(store, home, user=f"user{i}", images=1) for i in range(40)]
    shown = ConsoleRecorder(delay=0.002)
    # Create the link-signing secret first: aigen.web.links.secret_key() names
    # its temporary file by pid only, so threads of one process creating it at
    # the same moment collide (separate daemon processes do not).
    secret_key(home)
    barrier = threading.Barrier(4)
    errors = []

    def daemon():
        try:
            own = own_store(home, store)  # its own connection, as a second process would have
            n = notifier(home, own, shown)
            barrier.wait()
            n.run_once(T0 + timedelta(minutes=1))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=daemon) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(shown.ids) == sorted(ids), "every notification once, none twice"
    rows = store.query("SELECT status, attempts FROM notifications")
    assert len(rows) == 40 and {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}


def test_console_and_desktop_fall_back_once_and_record_it_honestly(env):
    home, store = env
    gid = make_generation(store, home, via=["desktop", "console"])
    rec = ConsoleRecorder()
    notifier(home, store, rec).run_once(T0)
    assert len(rec.shown) == 1, "the panel is shown once for both channels"
    rows = {r["channel"]: r for r in queue.rows_for(store, gid)}
    assert rows["desktop"]["delivered_via"] == "console"
    assert "neither DISPLAY nor WAYLAND_DISPLAY" in rows["desktop"]["note"]
    assert rows["console"]["delivered_via"] == "console"
    assert gen_row(store, gid)["notify_channel"] == "console (instead of desktop), console"


def test_desktop_is_used_when_available_and_its_failure_falls_back_to_the_console(env):
    home, store = env
    g1 = make_generation(store, home, via=["desktop"])
    sent = []
    rec = ConsoleRecorder()
    n = notifier(home, store, rec, desktop_detect=lambda: HAS_DESKTOP,
                 desktop_send=lambda title, body, support: sent.append((title, body)))
    n.run_once(T0)
    assert rec.shown == [] and len(sent) == 1
    title, body = sent[0]
    assert title == "aigen: ready - 2 images" and "/login/link/" in body and "a red fox at dawn" in body
    assert queue.rows_for(store, g1)[0]["delivered_via"] == "desktop"

    g2 = make_generation(store, home, via=["desktop"], user="bob")

    def broken(title, body, support):
        raise DesktopError("org.freedesktop.Notifications was not provided by any .service files")

    notifier(home, store, rec, desktop_detect=lambda: HAS_DESKTOP, desktop_send=broken).run_once(T0)
    [row] = queue.rows_for(store, g2)
    assert row["status"] == "sent" and row["delivered_via"] == "console"
    assert "was not provided by any .service files" in row["note"]
    assert "desktop notification failed" in rec.shown[0][1]


def test_a_failed_generation_says_what_failed_why_and_how_to_retry(env):
    home, store = env
    gid = make_generation(store, home, images=3, videos=2, fail=(2,))
    rec = ConsoleRecorder()
    [d] = notifier(home, store, rec).run_once(T0)
    assert d.status == "Failed"
    notice = rec.shown[0][0]
    text = notice.text()
    assert notice.title == "aigen: failed - 1 of 5 assets"
    assert "Your generation failed: 4 of 5 assets (2 of 3 images, 2 of 2 videos) made." in text
    assert "What failed: image 2: flaky: server error 500 for image 2" in text
    assert f"Make the missing assets with: aigen --home {home.path} retry {gid}" in text
    assert "See what was made in the gallery" in text and notice.link in text


def test_the_loop_sleeps_until_the_next_due_time_with_a_cap_and_never_spins(env):
    home, store = env
    gid = make_generation(store, home, notify_at=T0 + timedelta(seconds=100))
    clock = FakeClock(T0)
    stop = threading.Event()
    rec = ConsoleRecorder()
    n = notifier(home, store, rec, settle=timedelta(seconds=5))

    def on_wait(c):
        if c.now >= T0 + timedelta(seconds=200):
            stop.set()

    clock.on_wait = on_wait
    count = n.run(stop, clock, clock.wait, max_sleep=30)
    assert count == 1
    # 5 s until the finished generation has settled, then up to the cap, then exactly to 12:01:40
    assert clock.waits[:5] == [5, 30, 30, 30, 5]
    assert queue.rows_for(store, gid)[0]["sent_at"] == iso(T0 + timedelta(seconds=100))
    assert all(w == 30 for w in clock.waits[5:]), "with nothing scheduled it waits the cap, not zero"


def test_the_loop_notices_a_new_request_while_it_sleeps(env):
    home, store = env
    clock = FakeClock(T0)
    stop = threading.Event()
    rec = ConsoleRecorder()
    n = notifier(home, store, rec)
    added = {}

    def on_wait(c):
        if c.now >= T0 + timedelta(seconds=45) and "gid" not in added:
            # finished and due now, while the daemon sleeps with nothing scheduled
            added["gid"] = make_generation(store, home, finished=c.now)
            added["at"] = c.now
        if c.now >= T0 + timedelta(seconds=300):
            stop.set()

    clock.on_wait = on_wait
    n.run(stop, clock, clock.wait, max_sleep=30)
    sent_at = queue.parse_utc(queue.rows_for(store, added["gid"])[0]["sent_at"])
    assert timedelta(0) <= sent_at - added["at"] <= timedelta(seconds=30)
    assert rec.ids == [added["gid"]]


def test_the_loop_survives_a_failing_step_and_stops_when_asked(env, monkeypatch):
    home, store = env
    make_generation(store, home)
    clock = FakeClock(T0)
    stop = threading.Event()
    rec = ConsoleRecorder()
    n = notifier(home, store, rec)
    real_plan = queue.plan
    calls = {"n": 0}

    def flaky_plan(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return real_plan(*a, **kw)

    monkeypatch.setattr(queue, "plan", flaky_plan)
    clock.on_wait = lambda c: stop.set() if rec.shown else None
    n.run(stop, clock, clock.wait, max_sleep=30)
    assert clock.waits[0] == 5.0, "after an error it pauses instead of spinning"
    assert len(rec.shown) == 1


def test_stop_set_during_a_step_ends_the_loop_without_another_wait(env):
    home, store = env
    make_generation(store, home)
    stop = threading.Event()
    clock = FakeClock(T0)

    def console(notice, context):
        stop.set()  # SIGTERM arrives while the first notification is being shown

    n = notifier(home, store, console)
    assert n.run(stop, clock, clock.wait) == 1
    assert clock.waits == []


def test_no_channels_means_no_notification(env):
    home, store = env
    gid = make_generation(store, home, via=[])
    assert notifier(home, store).run_once(T0) == []
    assert gen_row(store, gid)["notify_status"] == "none"
    assert queue.rows_for(store, gid) == []


def test_default_channel_is_desktop_when_the_generation_did_not_say(env):
    home, store = env
    gid = make_generation(store, home, via=None)
    rec = ConsoleRecorder()
    notifier(home, store, rec).run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["channel"] == "desktop" and row["delivered_via"] == "console" and len(rec.shown) == 1


@pytest.mark.parametrize("text,expected", [
    ("desktop", ["desktop"]),
    ("Email, console", ["email", "console"]),
    ("desktop,desktop,console", ["desktop", "console"]),
    ("none", []),
])
def test_parse_notify_via(text, expected):
    assert queue.parse_notify_via(text) == expected


@pytest.mark.parametrize("text,message", [
    ("sms", "unknown channel 'sms'"),
    ("", "names no channel"),
    (" , ", "names no channel"),
    ("none,email", "'none' cannot be combined"),
])
def test_parse_notify_via_refuses(text, message):
    from aigen.errors import BadInput

    with pytest.raises(BadInput, match=message):
        queue.parse_notify_via(text)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def test_a_claimant_on_another_host_is_judged_by_its_lease_only(env, monkeypatch):
    """A pid means nothing on another machine: the claim of a pid that is not running *here* but ran on
    host machine-b is kept until its lease runs out."""
    home, store = env
    monkeypatch.setenv("AIGEN_HOST_NAME", "machine-a")
    gid = make_generation(store, home)
    queue.plan(store, T0)
    remote = f"daemon@machine-b:{_dead_pid()}:abcdef"
    assert queue.owner_host(remote) == "machine-b"
    assert queue.claim(store, T0, remote, lease=timedelta(seconds=30)) is not None
    n = notifier(home, store)
    assert queue.owner_host(n.owner) == "machine-a"
    assert n.run_once(T0 + timedelta(seconds=29)) == [], "another host's claim is not ended by a pid check"
    done = n.run_once(T0 + timedelta(seconds=30))
    assert [d.generation_id for d in done] == [gid] and done[0].taken_over
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "sent" and row["attempts"] == 2 and row["claimed_by"] == n.owner


def test_the_host_name_override_makes_the_pid_check_apply_to_this_host_only(env, monkeypatch):
    home, store = env
    monkeypatch.setenv("AIGEN_HOST_NAME", "machine-a")
    gid = make_generation(store, home)
    queue.plan(store, T0)
    # Same (overridden) host name, dead pid: taken over at once, without waiting for the lease.
    assert queue.claim(store, T0, f"daemon@machine-a:{_dead_pid()}:abcdef", lease=timedelta(hours=1))
    done = notifier(home, store).run_once(T0 + timedelta(seconds=1))
    assert [d.generation_id for d in done] == [gid]


@pytest.mark.parametrize("raw, expected", [("", 600.0), ("2.5", 2.5), ("86400", 86400.0)])
def test_the_lease_comes_from_the_environment(raw, expected):
    assert queue.lease_from_env({"AIGEN_NOTIFY_LEASE_S": raw}).total_seconds() == expected


@pytest.mark.parametrize("raw", ["soon", "0", "-3", "100000"])
def test_a_bad_lease_is_refused_with_its_name(raw):
    from aigen.errors import BadInput

    with pytest.raises(BadInput, match="AIGEN_NOTIFY_LEASE_S"):
        queue.lease_from_env({"AIGEN_NOTIFY_LEASE_S": raw})


def test_host_names_cannot_break_the_owner_format():
    assert queue.host_name({"AIGEN_HOST_NAME": "a@b:c"}) == "a_b_c"
    assert queue.host_name({"AIGEN_HOST_NAME": "  "})  # falls back to the OS name
