"""Email notifications against a real SMTP server (aiosmtpd on 127.0.0.1), with an injected clock."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta, timezone

import pytest

from aigen.errors import BadInput
from aigen.notify import mail, queue
from aigen.notify.daemon import Notifier
from aigen.notify.desktop import DesktopSupport
from aigen.web.links import verify_magic_token
from fakes.notify import T0, ConsoleRecorder, make_generation, open_home
from fakes.smtp import SmtpServer, closed_port

SMTP_VARS = ("HOST", "PORT", "USER", "PASSWORD", "FROM", "SECURITY", "TIMEOUT", "RETRY_FOR", "SSL", "STARTTLS")


@pytest.fixture(autouse=True)
def clean_smtp_env(monkeypatch):
    for v in SMTP_VARS:
        monkeypatch.delenv(f"AIGEN_SMTP_{v}", raising=False)


@pytest.fixture
def smtp():
    with SmtpServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path):
    return open_home(tmp_path / "home")


def point_at(monkeypatch, port, **extra):
    monkeypatch.setenv("AIGEN_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("AIGEN_SMTP_PORT", str(port))
    monkeypatch.setenv("AIGEN_SMTP_SECURITY", "none")
    monkeypatch.setenv("AIGEN_SMTP_FROM", "aigen@example.org")
    monkeypatch.setenv("AIGEN_SMTP_TIMEOUT", "10")
    for k, v in extra.items():
        monkeypatch.setenv(f"AIGEN_SMTP_{k.upper()}", str(v))


def notifier(home, store, **kw):
    return Notifier(store, home, console=kw.pop("console", ConsoleRecorder()), settle=timedelta(0),
                    desktop_detect=lambda: DesktopSupport(False, None, "headless"), tz=timezone.utc, **kw)


def parts(msg):
    return {p.get_content_type(): p for p in msg.walk()}


def test_email_reaches_the_server_with_recipient_subject_link_and_thumbnail(env, smtp, monkeypatch):
    from PIL import Image

    home, store = env
    point_at(monkeypatch, smtp.port)
    gid = make_generation(store, home, via=["email"], email="alice@example.com", images=3, videos=2,
                          image_size=(512, 384))
    [d] = notifier(home, store).run_once(T0 + timedelta(seconds=1))
    assert d.channels[0].status == "sent"
    [got] = smtp.received
    assert got.rcpt_tos == ["alice@example.com"] and got.mail_from == "aigen@example.org"
    msg = got.message
    assert msg["To"] == "alice@example.com"
    assert msg["Subject"] == "aigen: “a red fox at dawn” is ready (3 images and 2 videos)"
    assert msg["Message-ID"] == f"<aigen.{gid}.1@example.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    p = parts(msg)
    text = p["text/plain"].get_content()
    html = p["text/html"].get_content()
    link = next(line for line in text.splitlines() if "/login/link/" in line).strip()
    assert link.startswith("http://127.0.0.1:8000/login/link/")
    assert f'href="{link}"' in html
    assert verify_magic_token(home, link.rsplit("/", 1)[1], now=T0) == {"user_id": "alice", "generation_id": gid}
    assert "a red fox at dawn" in text and "3 images and 2 videos" in text
    jpeg = p["image/jpeg"]
    cid = jpeg["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    with Image.open(io.BytesIO(jpeg.get_content())) as im:
        assert im.format == "JPEG" and im.size == (256, 192), "a small thumbnail of the first image"
        assert im.getpixel((128, 96))[0] > 150, "made from image 1 (red)"
    g = store.get_generation(gid)
    assert g["notify_status"] == "sent" and g["notify_channel"] == "email"


def test_the_address_remembered_on_the_user_is_used(env, smtp, monkeypatch):
    home, store = env
    point_at(monkeypatch, smtp.port)
    store.ensure_user("alice", email="alice@example.net")
    make_generation(store, home, via=["email"])
    notifier(home, store).run_once(T0)
    assert smtp.received[0].rcpt_tos == ["alice@example.net"]


def test_login_is_used_and_the_password_never_reaches_logs_database_or_errors(env, monkeypatch, caplog):
    home, store = env
    password = "s3cret-Pa55word"
    with SmtpServer(auth={"bob": password}) as srv:
        point_at(monkeypatch, srv.port, user="bob", password=password)
        make_generation(store, home, via=["email"], email="alice@example.com")
        caplog.set_level(logging.DEBUG, logger="aigen")
        notifier(home, store).run_once(T0)
        assert srv.handler.auth == [("bob", password)] and len(srv.received) == 1

        monkeypatch.setenv("AIGEN_SMTP_PASSWORD", "wrong-" + password)
        gid = make_generation(store, home, via=["email"], email="alice@example.com", user="carol")
        [d] = notifier(home, store).run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "failed", "535 is permanent: retrying with a wrong password cannot help"
    assert "rejected the login of 'bob': 535" in row["error"]
    dump = json.dumps(store.query("SELECT * FROM notifications")) + json.dumps(store.query("SELECT * FROM generations"))
    assert password not in dump and password not in caplog.text
    settings = mail.load_smtp_settings()
    assert password not in repr(settings) and password not in settings.describe()
    assert settings.scrub(f"echo {settings.password}") == "echo ***"


def test_smtp_down_then_up_is_retried_with_backoff_and_delivered_once(env, monkeypatch):
    home, store = env
    down = closed_port()
    point_at(monkeypatch, down)
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    n = notifier(home, store)
    [d] = n.run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "retrying" and "connection refused" in row["error"]
    assert row["next_attempt_at"] == queue.iso(T0 + timedelta(seconds=30))
    g = store.get_generation(gid)
    assert g["notify_status"] == "retrying" and "connection refused" in g["notify_error"]
    assert n.run_once(T0 + timedelta(seconds=29)) == [], "waits for its backoff"
    assert n.next_wake(T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=30)

    with SmtpServer() as srv:
        point_at(monkeypatch, srv.port)  # the server is back, but first answers 421
        srv.fail_next(1)
        n.run_once(T0 + timedelta(seconds=30))
        [row] = queue.rows_for(store, gid)
        assert row["status"] == "retrying" and "answered 421" in row["error"] and row["attempts"] == 2
        assert row["next_attempt_at"] == queue.iso(T0 + timedelta(seconds=90)), "the delay doubles"
        assert srv.received == []
        assert n.run_once(T0 + timedelta(seconds=89)) == []
        n.run_once(T0 + timedelta(seconds=90))
        n.run_once(T0 + timedelta(hours=1))
        assert len(srv.received) == 1
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "sent" and row["attempts"] == 3 and row["error"] is None
    g = store.get_generation(gid)
    assert g["notify_status"] == "sent" and g["notify_error"] is None


def test_a_server_down_for_good_is_given_up_after_the_bounded_time_and_shown_in_status(env, monkeypatch, cli):
    home, store = env
    point_at(monkeypatch, closed_port(), retry_for=300)
    gid = make_generation(store, home, via=["email"], email="alice@example.com",
                          notify_at=T0 + timedelta(minutes=1), finished=T0)
    n = notifier(home, store)
    now = T0 + timedelta(minutes=1)
    attempts_at = []
    while True:
        for d in n.run_once(now):
            attempts_at.append(int((now - T0).total_seconds()) - 60)
        nxt = n.next_wake(now)
        if nxt is None:
            break
        now = nxt
    # 0, +30 s, +60 s, +120 s, then one last try at the 300 s limit
    assert attempts_at == [0, 30, 90, 210, 300]
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "failed"
    assert row["error"].startswith("gave up after 5 attempts over 5 min: cannot connect to 127.0.0.1:")
    r = cli("--home", home.path, "status", "--json")
    [g] = json.loads(r.output)["generations"]
    assert g["id"] == gid and g["notify_status"] == "failed"
    r = cli("--home", home.path, "status", gid, "--json")
    assert json.loads(r.output)["notify_error"].startswith("email: gave up after 5 attempts")
    r = cli("--home", home.path, "status", gid)
    assert "failed" in r.output and "gave up after 5 attempts" in " ".join(r.output.split())


def test_a_permanent_refusal_fails_at_once(env, smtp, monkeypatch):
    home, store = env
    point_at(monkeypatch, smtp.port)
    smtp.fail_next(1, "550 5.7.1 Message rejected as spam")
    gid = make_generation(store, home, via=["email", "console"], email="alice@example.com")
    rec = ConsoleRecorder()
    notifier(home, store, console=rec).run_once(T0)
    rows = {r["channel"]: r for r in queue.rows_for(store, gid)}
    assert rows["email"]["status"] == "failed" and "550 5.7.1 Message rejected as spam" in rows["email"]["error"]
    assert rows["console"]["status"] == "sent" and len(rec.shown) == 1
    g = store.get_generation(gid)
    assert g["notify_status"] == "partial" and g["notify_error"].startswith("email: ")


def test_email_for_a_failed_generation(env, smtp, monkeypatch):
    home, store = env
    point_at(monkeypatch, smtp.port)
    gid = make_generation(store, home, via=["email"], email="alice@example.com", images=2, fail=(1,))
    notifier(home, store).run_once(T0)
    msg = smtp.received[0].message
    assert msg["Subject"] == "aigen: “a red fox at dawn” failed (1 of 2 assets failed)"
    text = parts(msg)["text/plain"].get_content()
    assert "Your generation failed: 1 of 2 images made." in text
    assert "What failed: image 1: flaky: server error 500 for image 1" in text
    assert f"retry {gid}" in text and "/login/link/" in text
    assert "image/jpeg" in parts(msg), "the thumbnail comes from the first image that was made"


def test_no_smtp_configured_in_the_daemon_is_retried_then_fails_visibly(env, monkeypatch):
    home, store = env
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    notifier(home, store).run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "retrying" and "AIGEN_SMTP_HOST" in row["error"]


def test_no_address_at_all_fails_with_the_fix(env, monkeypatch):
    home, store = env
    point_at(monkeypatch, closed_port())
    gid = make_generation(store, home, via=["email"])
    notifier(home, store).run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "failed" and "--email ADDRESS" in row["error"]


@pytest.mark.parametrize("env_vars,expected", [
    ({"HOST": "smtp.example.com"}, ("smtp.example.com", 587, "starttls")),
    ({"HOST": "smtp.example.com", "PORT": "465"}, ("smtp.example.com", 465, "ssl")),
    ({"HOST": "smtp.example.com", "SECURITY": "SSL"}, ("smtp.example.com", 465, "ssl")),
    ({"HOST": "smtp.example.com", "SSL": "1"}, ("smtp.example.com", 465, "ssl")),
    ({"HOST": "relay", "SECURITY": "none"}, ("relay", 25, "none")),
    ({"HOST": "relay", "STARTTLS": "0"}, ("relay", 25, "none")),
    ({"HOST": "smtp.example.com", "PORT": "2525", "SECURITY": "starttls"}, ("smtp.example.com", 2525, "starttls")),
])
def test_smtp_settings_from_the_environment(monkeypatch, env_vars, expected):
    for k, v in env_vars.items():
        monkeypatch.setenv(f"AIGEN_SMTP_{k}", v)
    s = mail.load_smtp_settings()
    assert (s.host, s.port, s.security) == expected


@pytest.mark.parametrize("env_vars,message", [
    ({"HOST": "h", "PORT": "0"}, "invalid AIGEN_SMTP_PORT '0'"),
    ({"HOST": "h", "PORT": "smtp"}, "invalid AIGEN_SMTP_PORT 'smtp'"),
    ({"HOST": "h", "SECURITY": "tls1.3"}, "invalid AIGEN_SMTP_SECURITY 'tls1.3'"),
    ({"HOST": "h", "FROM": "not an address"}, "invalid AIGEN_SMTP_FROM"),
    ({"HOST": "h", "TIMEOUT": "-1"}, "invalid AIGEN_SMTP_TIMEOUT"),
])
def test_bad_smtp_settings_are_refused(monkeypatch, env_vars, message):
    for k, v in env_vars.items():
        monkeypatch.setenv(f"AIGEN_SMTP_{k}", v)
    with pytest.raises(BadInput, match=message):
        mail.load_smtp_settings()


def test_no_host_means_not_configured():
    assert mail.load_smtp_settings(env={}) is None


def test_config_file_with_environment_overrides(tmp_path, monkeypatch):
    try:
        import tomllib  # noqa: F401
    except ImportError:  # Python 3.10: aigen reads TOML with tomli when it is installed
        pytest.importorskip("tomli")
    (tmp_path / "config.toml").write_text(
        '[smtp]\nhost = "mail.example.com"\nport = 2525\nuser = "bob@example.com"\npassword = "pw"\n'
        'security = "starttls"\n'
    )
    s = mail.load_smtp_settings(home=tmp_path)
    assert (s.host, s.port, s.user, s.sender, s.security) == (
        "mail.example.com", 2525, "bob@example.com", "bob@example.com", "starttls")
    assert s.source.endswith("config.toml")
    monkeypatch.setenv("AIGEN_SMTP_PORT", "587")
    assert mail.load_smtp_settings(home=tmp_path).port == 587


def test_starttls_is_required_before_a_password_is_sent(env, smtp, monkeypatch):
    home, store = env
    point_at(monkeypatch, smtp.port, security="starttls", user="bob", password="pw")
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    notifier(home, store).run_once(T0)
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "failed" and "does not support STARTTLS" in row["error"]
    assert smtp.received == [] and smtp.handler.auth == []


@pytest.mark.parametrize("address", ["alice", "a@b", "a b@example.com", "alice@example.com\nBcc: x@y.z", ""])
def test_bad_email_addresses_are_refused(address):
    with pytest.raises(BadInput, match="invalid --email"):
        mail.validate_email(address)


def test_backoff_doubles_up_to_a_cap():
    assert [mail.backoff_delay(i) for i in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def _drive(n, start, *, until=timedelta(hours=2)):
    """Run the daemon's steps at each next due time (no sleeping), as the loop would."""
    now, out = start, []
    while now <= start + until:
        out += n.run_once(now)
        nxt = n.next_wake(now)
        if nxt is None:
            break
        now = max(nxt, now + timedelta(seconds=1))
    return out


@pytest.mark.parametrize("reply", ["451 4.3.0 Temporary failure after end of data",
                                   "421 4.3.2 Shutting down, try again later"])
def test_a_temporary_error_after_data_is_resent_at_most_once(env, smtp, monkeypatch, caplog, reply):
    home, store = env
    point_at(monkeypatch, smtp.port)
    smtp.store_then_fail(10, reply)  # it keeps every copy, and says it failed each time
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    n = notifier(home, store)
    with caplog.at_level(logging.INFO, logger="aigen.notify"):
        steps = _drive(n, T0)
    got = smtp.received
    assert len(got) == 2, "the first send and one resend, never once per retry step"
    assert {g.message["Message-ID"] for g in got} == {f"<aigen.{gid}.1@example.org>"}
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "failed" and row["unconfirmed_sends"] == 2 and row["attempts"] == 2
    assert row["error"].startswith("not confirmed: ") and reply.split()[0] in row["error"]
    assert "check the inbox of alice@example.com" in row["error"]
    assert "it will be sent once more, with the same Message-ID" in caplog.text
    assert "not sending the email again" in caplog.text
    assert [d.delivered for d in steps] == [False, False]


def test_a_resend_that_is_confirmed_is_one_delivery(env, smtp, monkeypatch, caplog):
    home, store = env
    point_at(monkeypatch, smtp.port)
    smtp.store_then_fail(1)
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    n = notifier(home, store)
    with caplog.at_level(logging.INFO, logger="aigen.notify"):
        steps = _drive(n, T0)
    assert len(smtp.received) == 2
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "sent" and row["unconfirmed_sends"] == 1
    assert "resent once after a send the server did not confirm" in row["note"]
    assert "sending the email once more (same Message-ID" in caplog.text
    assert sum(d.delivered for d in steps) == 1 and len(steps) == 2


def test_a_temporary_error_before_data_is_still_retried_until_it_goes_through(env, smtp, monkeypatch):
    home, store = env
    point_at(monkeypatch, smtp.port)
    smtp.fail_rcpt_next(3)  # greylisted before any data: nothing stored, so retrying makes no copy
    gid = make_generation(store, home, via=["email"], email="alice@example.com")
    _drive(notifier(home, store), T0)
    assert len(smtp.received) == 1
    [row] = queue.rows_for(store, gid)
    assert row["status"] == "sent" and row["attempts"] == 4 and row["unconfirmed_sends"] == 0


def test_the_daemon_loop_counts_deliveries_not_attempts(env, smtp, monkeypatch):
    import threading

    home, store = env
    point_at(monkeypatch, smtp.port)
    smtp.fail_rcpt_next(2)
    make_generation(store, home, via=["email"], email="alice@example.com")
    clock = {"now": T0}
    stop = threading.Event()
    waits = []

    def wait(seconds):
        waits.append(seconds)
        clock["now"] += timedelta(seconds=max(seconds, 1))
        if len(waits) > 20:
            stop.set()

    count = notifier(home, store).run(stop, clock=lambda: clock["now"], wait=wait, max_sleep=600)
    assert len(smtp.received) == 1
    assert count == 1  # three attempts, one delivery


def test_with_files_in_s3_the_email_has_its_thumbnail_read_from_the_store_and_names_the_s3_location(
        env, smtp, monkeypatch, s3_env, caplog):
    """AIGEN_STORAGE_URL: nothing in the home's folder; the thumbnail is read from the real S3 server and the
    email names s3://BUCKET/PREFIX/generated_content/<user>/<generation>, not a local folder."""
    from PIL import Image

    from aigen.storage import from_config

    home, store = env
    point_at(monkeypatch, smtp.port)
    gid = make_generation(store, home, via=["email"], email="alice@example.com", images=2, image_size=(512, 384))
    st = from_config(None, s3_env)
    for a in store.assets(gid):  # the files go to the bucket (put_file removes the local copy), as the pipeline does
        st.put_file(home.path / a["path"], a["path"])
    assert not any(p.is_file() for p in home.content_dir.rglob("*"))
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.WARNING, logger="aigen.notify")
    [d] = notifier(home, store).run_once(T0 + timedelta(seconds=1))
    assert d.channels[0].status == "sent"
    [got] = smtp.received
    p = parts(got.message)
    text, html = p["text/plain"].get_content(), p["text/html"].get_content()
    where = f"{s3_env['AIGEN_STORAGE_URL']}/generated_content/alice/{gid}"
    assert f"Files: {where}" in text.splitlines() and f"<code>{where}</code>" in html
    assert str(home.path) not in text and str(home.path) not in html
    jpeg = p["image/jpeg"]
    assert f'src="cid:{jpeg["Content-ID"].strip("<>")}"' in html
    with Image.open(io.BytesIO(jpeg.get_content())) as im:
        assert im.format == "JPEG" and im.size == (256, 192)
        assert im.getpixel((128, 96))[0] > 150, "made from image 1 (red)"
    assert "no thumbnail" not in caplog.text


def test_a_stored_image_over_the_size_cap_or_missing_sends_the_email_without_a_thumbnail(tmp_path, s3_env, caplog):
    from aigen.notify import message
    from aigen.storage import from_config

    st = from_config(None, s3_env)
    (tmp_path / "big.bin").write_bytes(b"\0" * 2048)
    st.put_file(tmp_path / "big.bin", "generated_content/alice/g1/image_1.png")
    caplog.set_level(logging.WARNING, logger="aigen.notify")
    big = message.StoredImage(tmp_path, "generated_content/alice/g1/image_1.png", s3_env)
    orig = message.THUMBNAIL_MAX_BYTES
    try:
        message.THUMBNAIL_MAX_BYTES = 1024
        assert message.thumbnail_jpeg(message.StoredImage(tmp_path, big.key, s3_env)) is None
    finally:
        message.THUMBNAIL_MAX_BYTES = orig
    assert "more than the 1024 read for a thumbnail" in caplog.text
    missing = message.StoredImage(tmp_path, "generated_content/alice/g1/image_2.png", s3_env)
    assert message.thumbnail_jpeg(missing) is None
    assert "no object is stored under generated_content/alice/g1/image_2.png" in caplog.text
    assert str(missing) == f"{s3_env['AIGEN_STORAGE_URL']}/generated_content/alice/g1/image_2.png"
