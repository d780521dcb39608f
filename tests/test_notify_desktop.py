"""The desktop decision (a pure function of platform, environment and what is installed) and sending."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aigen.notify.desktop import DesktopError, DesktopSupport, detect, send


def which_none(name):
    return None


def which_notify_send(name):
    return "/usr/bin/notify-send" if name == "notify-send" else None


def imports(*names):
    return lambda name: name in names


CASES = [
    # platform, env, which, importable, exists, expected backend (None: unavailable), words in the reason
    ("linux", {}, which_notify_send, imports("dbus"), [], None, "neither DISPLAY nor WAYLAND_DISPLAY"),
    ("linux", {"DISPLAY": ":0"}, which_notify_send, imports("dbus"), [], None, "no session D-Bus"),
    ("linux", {"DISPLAY": ":0", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}, which_none,
     imports("dbus"), [], "dbus", "dbus Python package"),
    ("linux", {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}, which_notify_send,
     imports(), ["/run/user/1000/bus"], "notify-send", "notify-send"),
    ("linux", {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}, which_notify_send,
     imports(), [], None, "no session D-Bus"),
    ("linux", {"DISPLAY": ":0", "DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus"}, which_none, imports(),
     [], None, "libnotify-bin"),
    ("freebsd14", {"DISPLAY": ":0", "DBUS_SESSION_BUS_ADDRESS": "x"}, which_notify_send, imports(), [],
     "notify-send", "notify-send"),
    ("darwin", {}, which_none, imports(), [], None, "pyobjus"),
    ("darwin", {}, which_none, imports("pyobjus"), [], "macos", "pyobjus"),
    ("win32", {}, which_none, imports(), [], "windows", "Windows"),
    ("emscripten", {"DISPLAY": ":0"}, which_notify_send, imports("dbus"), [], None, "'emscripten'"),
]


@pytest.mark.parametrize("platform,env,which,can_import,paths,backend,words", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_desktop_decision(platform, env, which, can_import, paths, backend, words):
    s = detect(platform, env, which, can_import, lambda p: p in paths)
    assert s.available is (backend is not None)
    assert s.backend == backend
    assert words in s.reason


def test_this_machine_without_a_display_is_detected_as_such():
    s = detect()
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith("linux"):
        assert not s.available and "DISPLAY" in s.reason
    else:  # pragma: no cover - a developer's desktop
        assert isinstance(s, DesktopSupport)


def test_an_unavailable_desktop_is_never_sent_to():
    called = []
    with pytest.raises(DesktopError, match="no graphical session"):
        send("t", "b", DesktopSupport(False, None, "no graphical session"), plyer_notify=lambda **kw: called.append(kw))
    assert called == []


def test_plyer_is_called_and_its_failures_become_desktop_errors():
    seen = []
    send("aigen: ready", "body", DesktopSupport(True, "dbus", "x"), plyer_notify=lambda **kw: seen.append(kw))
    assert seen == [{"title": "aigen: ready", "message": "body", "app_name": "aigen", "timeout": 15}]

    def not_implemented(**kw):
        raise NotImplementedError()

    with pytest.raises(DesktopError, match="no notification backend"):
        send("t", "b", DesktopSupport(True, "dbus", "x"), plyer_notify=not_implemented)

    def dbus_error(**kw):
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")

    with pytest.raises(DesktopError, match="ServiceUnknown"):
        send("t", "b", DesktopSupport(True, "dbus", "x"), plyer_notify=dbus_error)


def test_notify_send_exit_status_is_checked(tmp_path, monkeypatch):
    """plyer ignores notify-send's exit status; aigen must not report a failure as sent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    script = bin_dir / "notify-send"
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" >> {log}\n"
        "if [ -n \"$FAKE_NOTIFY_FAIL\" ]; then echo 'GDBus.Error: no notification server' >&2; exit 1; fi\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    support = DesktopSupport(True, "notify-send", "x")
    send("aigen: ready", "the body\nhttp://127.0.0.1:8000/login/link/abc", support)
    args = log.read_text().splitlines()
    assert "aigen: ready" in args and "http://127.0.0.1:8000/login/link/abc" in args
    monkeypatch.setenv("FAKE_NOTIFY_FAIL", "1")
    with pytest.raises(DesktopError, match="exited with status 1: GDBus.Error: no notification server"):
        send("t", "b", support)


def test_notify_send_that_hangs_or_is_missing_is_an_error():
    def hangs(*a, **kw):
        raise subprocess.TimeoutExpired(a[0], 15)

    with pytest.raises(DesktopError, match="could not run"):
        send("t", "b", DesktopSupport(True, "notify-send", "x"), run=hangs)

    def missing(*a, **kw):
        raise FileNotFoundError(2, "No such file or directory", "notify-send")

    with pytest.raises(DesktopError, match="could not run"):
        send("t", "b", DesktopSupport(True, "notify-send", "x"), run=missing)
