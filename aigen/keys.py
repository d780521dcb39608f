"""API keys stored in the home: ``keys.json``, mode 0600, written atomically.

Keys are looked up in the environment first, then here (``Provider.lookup_key``),
so an exported variable always wins over a stored one. The file maps variable
names (as each vendor's SDK names them, e.g. ``OPENAI_API_KEY``) to values.
Nothing in aigen prints, logs or stores a value anywhere else; ``mask`` shows
just enough to tell keys apart (the vendor's prefix and the length).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Mapping

from aigen.errors import BadInput

KEYS_FILE = "keys.json"

# Every variable a provider may read, in the order `aigen keys set` asks for them.
# Pictory takes either an API key or the older OAuth trio; gemini a key and/or its Agent Platform settings.
PROVIDER_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "stability": ("STABILITY_API_KEY",),
    "runway": ("RUNWAYML_API_SECRET",),
    "pictory": ("PICTORY_API_KEY", "PICTORY_CLIENT_ID", "PICTORY_CLIENT_SECRET", "PICTORY_USER_ID"),
    "fal": ("FAL_KEY",),
    # A Gemini API key, or the Agent Platform settings (the SDK's names; credentials themselves stay with gcloud).
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_CLOUD_PROJECT",
               "GOOGLE_CLOUD_LOCATION"),
}

_VAR_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
VALUE_MAX = 4096


class KeysFileError(BadInput):
    """The keys file exists but cannot be used; the message says how to fix it."""

    code = "keys_file"


def keys_path(home: Path) -> Path:
    return Path(home) / KEYS_FILE


def read_keys(home: Path) -> dict[str, str]:
    """The stored keys ({} when there is no file). Raises KeysFileError for a damaged file."""
    path = keys_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise KeysFileError(f"cannot read the keys file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise KeysFileError(
            f"the keys file {path} is not valid JSON",
            hint="fix it, or delete it and store the keys again with `aigen keys set PROVIDER`",
        ) from None
    if not isinstance(data, dict):
        raise KeysFileError(f"the keys file {path} must hold a JSON object of NAME: value")
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str) and v}


def file_mode_problem(home: Path) -> str | None:
    """A warning when the keys file can be read by other users, else None."""
    path = keys_path(home)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if os.name == "posix" and mode & 0o077:
        return f"{path} has mode {mode:04o}; other users may read it (run: chmod 600 {path})"
    return None


def validate_var(var: str) -> str:
    if not _VAR_RE.fullmatch(var or ""):
        raise BadInput(f"invalid variable name {var!r}: use capital letters, digits and '_' (e.g. OPENAI_API_KEY)")
    return var


def validate_value(var: str, value: str) -> str:
    """A key as pasted: surrounding whitespace removed; no inner whitespace or control characters."""
    value = (value or "").strip()
    if not value:
        raise BadInput(f"no value given for {var}: nothing was stored")
    if len(value) > VALUE_MAX:
        raise BadInput(f"the value for {var} is {len(value)} characters; the limit is {VALUE_MAX}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        # The value itself is never echoed, not even in an error.
        raise BadInput(f"the value for {var} contains spaces, line breaks or control characters: "
                       "paste the key alone")
    return value


def _write(home: Path, data: Mapping[str, str]) -> Path:
    """Replace the file atomically; the temporary file is 0600 from its creation."""
    home = Path(home)
    path = keys_path(home)
    tmp = home / f".{KEYS_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise _write_error(e, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(sorted(data.items())), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # umask cannot widen it, but a restrictive ACL default could differ
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_error(e: OSError, path: Path) -> Exception:
    """A full disk or a read-only home, said in one line; the old keys file is untouched."""
    from aigen.errors import describe_os_error

    known = describe_os_error(e, path.parent)
    if known is not None:
        known.message += f"; {path} was not changed"
        return known
    return KeysFileError(f"cannot write the keys file {path}: {e.strerror or e}; it was not changed")


def write_key(home: Path, var: str, value: str) -> Path:
    """Store one key (validated) and return the file's path."""
    validate_var(var)
    value = validate_value(var, value)
    data = read_keys(home)
    data[var] = value
    return _write(home, data)


def remove_keys(home: Path, names: list[str]) -> list[str]:
    """Remove the named variables from the file; returns those that were there."""
    data = read_keys(home)
    removed = [n for n in names if n in data]
    if removed:
        for n in removed:
            del data[n]
        _write(home, data)
    return removed


def mask(value: str) -> str:
    """Enough to tell keys apart without revealing them: a vendor prefix and the length."""
    m = re.match(r"^(sk-|pictai_|key_|sk_|AIza)", value)
    prefix = m.group(1) if m else ""
    return f"{prefix}…({len(value)} chars)"


def provider_vars(provider: str) -> tuple[str, ...]:
    """The variables a provider may read: the table above, else its class's key_env."""
    if provider in PROVIDER_VARS:
        return PROVIDER_VARS[provider]
    from aigen.providers.base import provider_class

    cls = provider_class(provider)  # BadInput for an unknown name
    seen: list[str] = []
    for alternatives in cls.key_env:
        for var in alternatives:
            if var not in seen:
                seen.append(var)
    return tuple(seen)


def key_status(home: Path | None, env: Mapping[str, str], var: str) -> dict:
    """Where a variable is set (environment wins, as in lookup) and its mask; never the value."""
    value = env.get(var)
    if value:
        return {"var": var, "set": True, "source": "environment", "masked": mask(value)}
    stored = read_keys(home).get(var) if home is not None else None
    if stored:
        return {"var": var, "set": True, "source": "file", "masked": mask(stored)}
    return {"var": var, "set": False, "source": None, "masked": None}


__all__ = [
    "KEYS_FILE",
    "KeysFileError",
    "PROVIDER_VARS",
    "file_mode_problem",
    "key_status",
    "keys_path",
    "mask",
    "provider_vars",
    "read_keys",
    "remove_keys",
    "validate_value",
    "validate_var",
    "write_key",
]
