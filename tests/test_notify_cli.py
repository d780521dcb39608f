"""Notifications through the CLI: `generate --notify-via/--email`, and `aigen notify-daemon` as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from aigen.config import resolve_home
from aigen.notify import queue
from aigen.notify.daemon import DaemonMarker, running_daemons
from aigen.store import Store
from aigen.web.links import verify_magic_token
from fakes.notify import make_generation
from fakes.smtp import SmtpServer

SMALL = ["--images", "1", "--videos", "0", "--image-size", "64x64"]
LINK_RE = re.compile(r"http://127\.0\.0\.1:8000/login/link/(\S+)")


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    """Behave like the CI machine (and a server): no display, no SMTP unless a test sets it."""
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "AIGEN_PUBLIC_URL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HOST", "PORT", "USER", "PASSWORD", "FROM", "SECURITY", "RETRY_FOR"):
        monkeypatch.delenv(f"AIGEN_SMTP_{var}", raising=False)


def open_store():
    h = resolve_home(None)
    return h, Store(h.db_path)


def test_generate_delivers_on_completion_on_the_console_with_a_working_link(cli, home):
    r = cli("generate", "a red fox at dawn", "--user", "alice", *SMALL, "--notify-via", "console")
    assert r.exit_code == 0, r.output
    assert "aigen: ready - 1 image" in r.output and "Prompt: a red fox at dawn" in r.output
    token = LINK_RE.search(r.output).group(1)
    h, store = open_store()
    [g] = store.list_generations()
    assert verify_magic_token(h, token) == {"user_id": "alice", "generation_id": g["id"]}
    assert g["notify_status"] == "sent" and g["notified_at"] and g["notify_channel"] == "console"


def test_generate_json_default_channel_falls_back_to_the_console_and_says_why(cli, home):
    r = cli("generate", "p", "--user", "alice", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    note = json.loads(r.output)["notification"]  # the whole output is one JSON document
    assert note["status"] == "sent"
    [ch] = note["channels"]
    assert (ch["channel"], ch["status"], ch["delivered_via"]) == ("desktop", "sent", "console")
    assert "neither DISPLAY nor WAYLAND_DISPLAY" in ch["note"]
    assert "/login/link/" in note["message"]["link"] and note["message"]["title"] == "aigen: ready - 1 image"


def test_generate_due_later_says_when_and_whether_a_daemon_is_running(cli, home):
    r = cli("generate", "p", "--user", "alice", *SMALL, "--notify-via", "console", "--notify-at", "+2h")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert re.search(r"Notification by console due (today|tomorrow) at \d\d:\d\d:\d\d \(in 1h 59m\)", text), text
    assert "No notify daemon is running: start one with `aigen --home" in text
    assert "aigen: ready" not in text, "not delivered before its time"
    h, store = open_store()
    with DaemonMarker(h):
        assert running_daemons(h) == [os.getpid()]
        r = cli("generate", "p", "--user", "alice", *SMALL, "--notify-via", "console", "--notify-at", "+2h")
        assert f"A notify daemon is running (pid {os.getpid()}): it will deliver it." in " ".join(r.output.split())
    assert running_daemons(h) == []
    assert [g["notify_status"] for g in store.list_generations()] == ["pending", "pending"]


def test_generate_a_failed_generation_notifies_what_failed_and_the_retry(cli, home, monkeypatch):
    monkeypatch.setenv("AIGEN_TEST_FAIL", "2")
    r = cli("generate", "p", "--user", "carol", "--images", "2", "--videos", "0", "--image-provider", "flaky",
            "--image-size", "64x64", "--notify-via", "console")
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "aigen: failed - 1 of 2 assets" in text
    assert "What failed: image 2: flaky: server error 500 for image 2" in text
    assert "Make the missing assets with: aigen --home" in text and "retry" in text


BAD = [
    (["--notify-via", "sms"], "invalid --notify-via 'sms': unknown channel 'sms'"),
    (["--notify-via", "email"], "--notify-via email needs an address for user 'alice'"),
    (["--email", "alice"], "invalid --email 'alice'"),
    (["--notify-via", "email", "--email", "alice@example.com"], "needs an SMTP server"),
    (["--notify-via", "none,console"], "'none' cannot be combined"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_notification_options_exit_2_and_write_nothing(cli, home, args, message):
    r = cli("generate", "p", "--user", "alice", *SMALL, *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert not home.exists()


def test_notify_via_none_sends_nothing(cli, home):
    r = cli("generate", "p", "--user", "alice", *SMALL, "--notify-via", "none", "--json")
    assert r.exit_code == 0
    assert json.loads(r.output)["notification"]["status"] == "none"


def test_generate_by_email_remembers_the_address(cli, home, monkeypatch):
    with SmtpServer() as srv:
        for k, v in {"HOST": "127.0.0.1", "PORT": srv.port, "SECURITY": "none", "FROM": "aigen@example.org"}.items():
            monkeypatch.setenv(f"AIGEN_SMTP_{k}", str(v))
        r = cli("generate", "a red fox", "--user", "alice", *SMALL, "--notify-via", "email",
                "--email", "alice@example.com", "--json")
        assert r.exit_code == 0, r.output
        note = json.loads(r.output)["notification"]
        assert note["status"] == "sent" and note["channels"][0]["recipient"] == "alice@example.com"
        h, store = open_store()
        assert store.get_user("alice")["email"] == "alice@example.com"
        # next time the address is known; --email alone adds email to the default desktop
        r = cli("generate", "a blue whale", "--user", "alice", *SMALL, "--notify-via", "email")
        assert r.exit_code == 0 and "Notification emailed to alice@example.com." in r.output
        r = cli("generate", "a green owl", "--user", "bob", *SMALL, "--email", "bob@example.com", "--json")
        chans = {c["channel"] for c in json.loads(r.output)["notification"]["channels"]}
        assert chans == {"desktop", "email"}
        got = srv.received
    assert [m.rcpt_tos for m in got] == [["alice@example.com"], ["alice@example.com"], ["bob@example.com"]]
    assert "a blue whale" in got[1].message["Subject"]


def test_generate_with_the_mail_server_down_says_it_will_be_retried_and_by_whom(cli, home, monkeypatch):
    from fakes.smtp import closed_port

    for k, v in {"HOST": "127.0.0.1", "PORT": closed_port(), "SECURITY": "none"}.items():
        monkeypatch.setenv(f"AIGEN_SMTP_{k}", str(v))
    r = cli("generate", "p", "--user", "alice", *SMALL, "--notify-via", "email", "--email", "alice@example.com")
    assert r.exit_code == 0, "the content was made; the notification is retried separately"
    text = " ".join(r.output.split())
    assert "The email notification is not delivered yet: cannot connect to 127.0.0.1:" in text
    assert "connection refused. Next attempt at" in text and "No notify daemon is running" in text
    h, store = open_store()
    [g] = store.list_generations()
    assert g["notify_status"] == "retrying"


def test_notify_daemon_once_delivers_what_is_due_late_and_only_once(cli, home):
    r = cli("generate", "p", "--user", "alice", *SMALL, "--notify-via", "console", "--notify-at", "+1h")
    assert r.exit_code == 0
    h, store = open_store()
    r = cli("notify-daemon", "--once")
    assert r.exit_code == 0 and "Delivered 0 notification(s); next due at" in r.output
    # an hour and a half later (the daemon was not running at the due time)
    past = queue.iso(datetime.now(timezone.utc) - timedelta(minutes=30))
    store.db.conn.execute("UPDATE notifications SET due_at = ?", (past,))
    r = cli("notify-daemon", "--once")
    assert r.exit_code == 0, r.output
    assert "aigen: ready - 1 image" in r.output and LINK_RE.search(r.output)
    assert "This notification is late" in " ".join(r.output.split())
    assert "Delivered 1 notification(s), 1 late; nothing else is scheduled." in r.output
    r = cli("notify-daemon", "--once", "--json")
    assert json.loads(r.stdout) == {"delivered": [], "not_delivered": [], "waiting": 0, "next_due_at": None}


def test_notify_daemon_once_json(cli, home):
    h, store = open_store()
    gid = make_generation(store, h, finished=datetime.now(timezone.utc) - timedelta(minutes=1))
    r = cli("notify-daemon", "--once", "--json")
    assert r.exit_code == 0
    [d] = json.loads(r.stdout)["delivered"]  # the log goes to stderr
    assert "console notification sent" in r.stderr
    assert d["generation_id"] == gid and d["outcome"] == "sent" and "/login/link/" in d["message"]["link"]


def test_notify_daemon_once_exits_1_when_a_notification_failed(cli, home):
    h, store = open_store()
    make_generation(store, h, via=["email"], finished=datetime.now(timezone.utc) - timedelta(minutes=1))
    r = cli("notify-daemon", "--once")
    assert r.exit_code == 1


def test_notify_daemon_validates_max_sleep(cli, home):
    r = cli("notify-daemon", "--max-sleep", "0")
    assert r.exit_code == 2 and "invalid --max-sleep 0" in r.output


def test_detached_generate_says_who_will_deliver(cli, home):
    from aigen.pipeline.run import wait_for

    r = cli("generate", "p", "--user", "gus", *SMALL, "--notify-via", "console", "--detach", "--json")
    data = json.loads(r.output)
    assert data["notification"] == {"channels": ["console"], "notify_at": None, "email": None, "daemon_pids": []}
    h, store = open_store()
    assert wait_for(lambda: store.get_generation(data["id"])["status"] != "Processing", timeout=120)
    # the background run does not deliver; the daemon does
    assert store.get_generation(data["id"])["notify_status"] is None
    store.db.conn.execute("UPDATE generations SET generated_at = ?",
                          (queue.iso(datetime.now(timezone.utc) - timedelta(minutes=1)),))
    r = cli("notify-daemon", "--once")
    assert data["id"] in r.output and "Delivered 1 notification(s)" in r.output


def _daemon_env():
    env = dict(os.environ)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(var, None)
    return env


def _start_daemon(*extra):
    return subprocess.Popen(
        [sys.executable, "-m", "aigen", "notify-daemon", "--max-sleep", "0.2", *extra],
        env=_daemon_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_process_delivers_and_stops_cleanly_on_a_signal(home, sig):
    h, store = open_store()
    proc = _start_daemon()
    try:
        assert _wait(lambda: running_daemons(h) == [proc.pid]), "the daemon marks itself as running"
        gid = make_generation(store, h, finished=datetime.now(timezone.utc) - timedelta(minutes=1))
        assert _wait(lambda: store.get_generation(gid)["notify_status"] == "sent")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert gid in out and "/login/link/" in out
    assert "notify daemon started" in err and "desktop: no (no graphical session" in err
    assert "stopping (" in err and "notify daemon stopped after delivering 1 notification(s)" in err
    assert running_daemons(h) == [] and not list((h.path / "locks").glob("notify-daemon.*"))


def test_two_daemon_processes_send_each_notification_exactly_once(home):
    h, store = open_store()
    procs = [_start_daemon("--json") for _ in range(2)]
    try:
        assert _wait(lambda: sorted(running_daemons(h)) == sorted(p.pid for p in procs))
        finished = datetime.now(timezone.utc) - timedelta(minutes=1)
        ids = [make_generation(store, h, user=f"u{i}", images=1, finished=finished) for i in range(30)]
        assert _wait(lambda: store.query_one(
            "SELECT count(*) AS n FROM notifications WHERE status = 'sent'")["n"] == 30)
        outs = []
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    delivered = [json.loads(line)["generation_id"] for out in outs for line in out.splitlines() if line.strip()]
    assert sorted(delivered) == sorted(ids), "each once, none twice, across both daemons"
    assert {r["attempts"] for r in store.query("SELECT attempts FROM notifications")} == {1}


def test_notify_daemon_help_stays_light():
    code = (
        "import sys\n"
        "sys.argv = ['aigen', 'notify-daemon', '--help']\n"
        "from aigen.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'av', 'PIL', 'bottle', 'openai', 'runwayml', 'requests', 'waitress',"
        " 'plyer', 'itsdangerous') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "--once" in out
