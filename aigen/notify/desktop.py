"""Desktop notifications through plyer, and the up-front check of whether they can work.

plyer does not say when it cannot show anything: on Linux without the dbus
module or ``notify-send`` it falls back to a facade that raises
NotImplementedError, and with ``notify-send`` it ignores the program's exit
status. So the decision is made before sending, from facts that can be
checked (a display, a session bus, a backend), and a desktop notification is
only reported as sent when the backend said so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

log = logging.getLogger("aigen.notify")

APP_NAME = "aigen"
SEND_TIMEOUT_S = 15


class DesktopError(Exception):
    """The desktop backend failed; the caller falls back to the console."""


@dataclass(frozen=True)
class DesktopSupport:
    available: bool
    backend: str | None  # dbus | notify-send | macos | windows
    reason: str  # why not (or which backend), for logs and notes


def _can_import(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect(
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    can_import: Callable[[str], bool] = _can_import,
    exists: Callable[[str], bool] = os.path.exists,
) -> DesktopSupport:
    """Decide whether desktop notifications can be shown here; a pure function of its arguments."""
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    if platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
            return DesktopSupport(False, None, "no graphical session: neither DISPLAY nor WAYLAND_DISPLAY is set")
        runtime = env.get("XDG_RUNTIME_DIR")
        has_bus = bool(env.get("DBUS_SESSION_BUS_ADDRESS")) or bool(runtime and exists(os.path.join(runtime, "bus")))
        if not has_bus:
            return DesktopSupport(
                False, None,
                "no session D-Bus (DBUS_SESSION_BUS_ADDRESS is not set), so no notification service can be reached",
            )
        if can_import("dbus"):
            return DesktopSupport(True, "dbus", "plyer via the dbus Python package")
        if which("notify-send"):
            return DesktopSupport(True, "notify-send", "plyer's notify-send backend")
        return DesktopSupport(
            False, None,
            "no notification sender: plyer needs the dbus Python package (python3-dbus) or the notify-send "
            "program (libnotify-bin)",
        )
    if platform == "darwin":
        if can_import("pyobjus"):
            return DesktopSupport(True, "macos", "plyer via pyobjus")
        return DesktopSupport(False, None, "plyer's macOS backend needs pyobjus (pip install pyobjus)")
    if platform in ("win32", "cygwin"):
        return DesktopSupport(True, "windows", "plyer's Windows backend")
    return DesktopSupport(False, None, f"no desktop notifications on platform {platform!r}")


def send(title: str, body: str, support: DesktopSupport, *,
         run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
         plyer_notify: Callable[..., object] | None = None) -> None:
    """Show one notification or raise DesktopError saying why it was not shown."""
    if not support.available:
        raise DesktopError(support.reason)
    if support.backend == "notify-send":
        # The same program plyer's NotifySendNotification runs, called directly
        # because plyer discards its exit status.
        try:
            done = run(
                ["notify-send", "--app-name", APP_NAME, "--expire-time", "15000", title, body],
                capture_output=True, text=True, timeout=SEND_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise DesktopError(f"notify-send could not run: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise DesktopError(
                f"notify-send exited with status {done.returncode}" + (f": {detail[-1]}" if detail else "")
            )
        return
    if plyer_notify is None:
        from plyer import notification

        plyer_notify = notification.notify
    try:
        plyer_notify(title=title, message=body, app_name=APP_NAME, timeout=15)
    except NotImplementedError as exc:
        raise DesktopError("plyer has no notification backend for this system") from exc
    except Exception as exc:  # dbus errors, pyobjus errors: whatever the backend raises
        raise DesktopError(f"{type(exc).__name__}: {exc}") from exc
