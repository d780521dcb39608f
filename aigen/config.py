"""Where aigen keeps its data, and the limits every input is checked against.

The home directory holds ``aigen.db`` and ``generated_content/``. It is chosen
by the global ``--home`` flag, then ``AIGEN_HOME``, then the per-user data
directory of the platform (platformdirs), so that a pipx install never writes
into whatever directory the user happens to be in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from aigen.errors import BadInput

APP_NAME = "aigen"
DB_NAME = "aigen.db"
CONTENT_DIR = "generated_content"

USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_ID_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
PROMPT_MAX = 4000
MAX_COUNT = 10
DEFAULT_IMAGES = 5
DEFAULT_VIDEOS = 5
DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_VIDEO_SIZE = "1280x720"
DEFAULT_DURATION = 4.0
DEFAULT_FPS = 24


@dataclass(frozen=True)
class Home:
    """The resolved home directory and how it was chosen (shown by `aigen status`)."""

    path: Path
    source: str  # "--home", "AIGEN_HOME" or "default"

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    @property
    def content_dir(self) -> Path:
        return self.path / CONTENT_DIR

    def writable(self) -> bool:
        """Whether files can be created in the home (False on a read-only mount, even for root)."""
        try:
            if os.statvfs(self.path).f_flag & os.ST_RDONLY:
                return False
        except (OSError, AttributeError):
            pass
        return os.access(self.path, os.W_OK | os.X_OK)

    def read_only_mount(self) -> bool:
        try:
            return bool(os.statvfs(self.path).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            return False

    def ensure(self) -> None:
        """Create the home (mode 0700: prompts, emails and files are private) and its content folder."""
        from aigen.errors import describe_os_error, read_only_home

        if self.path.is_dir() and self.read_only_mount():
            raise read_only_home(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.content_dir.mkdir(exist_ok=True, mode=0o700)
        except FileExistsError:
            raise BadInput(f"invalid home {str(self.path)!r} (from {self.source}): it exists and is not a directory",
                           hint="choose a directory with --home DIR or AIGEN_HOME") from None
        except OSError as e:
            known = describe_os_error(e, self.path)
            if known is not None:
                raise known from None
            raise BadInput(f"cannot use home {str(self.path)!r} (from {self.source}): {e.strerror or e}",
                           hint="choose a directory you can write with --home DIR or AIGEN_HOME") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            if self.read_only_mount():
                raise read_only_home(self.path)
            raise BadInput(f"cannot use home {str(self.path)!r} (from {self.source}): it is not writable",
                           hint="choose a directory you can write with --home DIR or AIGEN_HOME")


def default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resolve_home(flag: str | os.PathLike | None = None) -> Home:
    if flag is not None and not str(flag).strip():
        raise BadInput("invalid --home '': give a directory")
    if flag:
        return Home(Path(flag).expanduser().resolve(), "--home")
    env = os.environ.get("AIGEN_HOME")
    if env:
        return Home(Path(env).expanduser().resolve(), "AIGEN_HOME")
    return Home(default_home(), "default")


def validate_user_id(user_id: str) -> str:
    """user_id meets the file system, the database and URLs: accept only a safe alphabet."""
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise BadInput(f"invalid user_id {user_id!r}: must be {USER_ID_RULE}")
    return user_id


# Bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069):
# they make text display in another order than it is stored ("Trojan Source"), so a
# prompt could read as something else in the terminal, the gallery or an email.
_BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
# Characters that are letters or symbols to Unicode but show nothing (fillers, blank
# braille, the combining grapheme joiner, variation selectors).
_INVISIBLE = frozenset(map(chr, [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0,
                                 *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]))
PROMPT_RULE = ("1-4000 characters of visible text; tabs and newlines are allowed (a carriage return, alone "
               "or before a newline, becomes a newline); no other control characters and no bidirectional "
               "controls (U+202A-U+202E, U+2066-U+2069)")


def _is_invisible(ch: str) -> bool:
    import unicodedata

    # Zs/Zl/Zp: spaces and separators; Cf: format characters (zero-width space and
    # joiners, word joiner, soft hyphen, BOM, tags); Cc: tab and newline here.
    return ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) in ("Cf", "Cc", "Zs", "Zl", "Zp")


def validate_prompt(prompt: str) -> str:
    """Check a prompt and return it normalised: CRLF and lone CR become LF, the ends are trimmed.

    One rule for every way a prompt comes in (the argument, standard input, the API
    of `prepare`): see PROMPT_RULE.
    """
    if prompt is None:
        raise BadInput("invalid prompt: it is empty or only whitespace")
    prompt = prompt.replace("\r\n", "\n").replace("\r", "\n")
    for i, ch in enumerate(prompt):
        code = ord(ch)
        if (code < 32 and ch not in "\n\t") or 0x7F <= code <= 0x9F:
            raise BadInput(
                f"invalid prompt: control character {ch!r} at position {i}; "
                "only printable text, tabs and newlines are allowed"
            )
        if ch in _BIDI_CONTROLS:
            raise BadInput(
                f"invalid prompt: bidirectional control character U+{code:04X} at position {i}; it could make "
                "the prompt display as something other than what is sent",
                hint="remove it (it is invisible: retype the prompt or delete the characters around it)",
            )
    if all(_is_invisible(ch) for ch in prompt):
        what = "empty or only whitespace" if all(ch.isspace() for ch in prompt) else \
            "only invisible characters (zero-width, format or blank characters)"
        raise BadInput(f"invalid prompt: it is {what}")
    # Trim whitespace and the zero-width characters an editor or a Windows file leaves at the ends (BOM).
    prompt = prompt.strip().strip("\ufeff\u200b\u2060").strip()
    if len(prompt) > PROMPT_MAX:
        raise BadInput(f"invalid prompt: {len(prompt)} characters, the limit is {PROMPT_MAX}")
    return prompt


def validate_count(name: str, value: int) -> int:
    if not 0 <= value <= MAX_COUNT:
        raise BadInput(f"invalid {name} {value}: must be between 0 and {MAX_COUNT}")
    return value


_SIZE_RE = re.compile(r"^\s*(\d{1,9})\s*[xX×]\s*(\d{1,9})\s*$")


def parse_size(name: str, text: str, *, even: bool = False, lo: int = 64, hi: int = 4096) -> tuple[int, int]:
    """Parse 'WxH'. Videos need even sides because yuv420p halves the chroma planes."""
    m = _SIZE_RE.match(text or "")
    if not m:
        raise BadInput(f"invalid {name} {text!r}: expected WIDTHxHEIGHT, for example 1024x1024")
    w, h = int(m.group(1)), int(m.group(2))
    if not (lo <= w <= hi and lo <= h <= hi):
        raise BadInput(f"invalid {name} {text!r}: each side must be between {lo} and {hi} pixels")
    if even and (w % 2 or h % 2):
        raise BadInput(f"invalid {name} {text!r}: width and height must be even for H.264 yuv420p")
    return w, h


_OPTION_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
PASS_OPTIONS_MAX = 32
PASS_OPTION_VALUE_MAX = 4096


def parse_pass_options(flag: str, items: list[str] | None) -> dict:
    """Parse repeated `--image-option KEY=VALUE` / `--video-option KEY=VALUE` into a dict.

    A value that reads as JSON (a number, true/false, null, a list or an object) is that value; anything else is
    the text as given, so `negative_prompt=blurry, dark` needs no quoting games. A key given twice is refused
    rather than silently taking the last one.
    """
    import json

    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise BadInput(f"invalid {flag} {item!r}: expected KEY=VALUE, for example {flag} steps=30")
        if not _OPTION_KEY_RE.fullmatch(key):
            raise BadInput(
                f"invalid {flag} key {key!r}: letters, digits, _ . - (starting with a letter or _), at most 64"
            )
        if key in out:
            raise BadInput(f"{flag} {key} is given twice")
        if len(value) > PASS_OPTION_VALUE_MAX:
            raise BadInput(f"{flag} {key}: the value is longer than {PASS_OPTION_VALUE_MAX} characters")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    if len(out) > PASS_OPTIONS_MAX:
        raise BadInput(f"too many {flag} values ({len(out)}; at most {PASS_OPTIONS_MAX})")
    return out


def validate_duration(value: float) -> float:
    if not (0.5 <= value <= 60):
        raise BadInput(f"invalid --duration {value:g}: must be between 0.5 and 60 seconds")
    return float(value)


# -- config.toml and the providers' concurrency caps ---------------------------
CONFIG_FILE = "config.toml"
CONCURRENCY_MAX = 64


def read_config_file(home: Path | None) -> tuple[dict, Path | None]:
    """``<home>/config.toml`` as a dict (empty when there is none) and its path."""
    if home is None:
        return {}, None
    path = Path(home) / CONFIG_FILE
    if not path.is_file():
        return {}, None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise BadInput(f"cannot read {path}: reading TOML needs Python 3.11+ or the tomli package") from None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {path}: {exc}", hint="fix or remove the file") from None


def concurrency_env_var(provider: str) -> str:
    return "AIGEN_" + re.sub(r"[^A-Za-z0-9]", "_", provider).upper() + "_CONCURRENCY"


def _parse_cap(value, where: str) -> int:
    text = str(value).strip() if not isinstance(value, bool) else ""
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if not re.fullmatch(r"\d{1,6}", text) or not 1 <= int(text) <= CONCURRENCY_MAX:
        raise BadInput(
            f"invalid concurrency {value!r} in {where}: must be a whole number between 1 and {CONCURRENCY_MAX}",
            hint="how many calls to this provider may run at once; see `aigen providers`",
        )
    return int(text)


def concurrency_cap(provider: str, default: int, *, env=None, home: Path | None = None) -> tuple[int, str]:
    """The cap in force for `provider` and where it came from.

    ``AIGEN_<PROVIDER>_CONCURRENCY`` wins, then ``concurrency`` in the
    ``[providers.<name>]`` table of ``<home>/config.toml``, then the provider's
    own default. A bad value is BadInput (exit 2), never silently ignored.
    """
    env = os.environ if env is None else env
    var = concurrency_env_var(provider)
    value = env.get(var)
    if value not in (None, ""):
        return _parse_cap(value, f"the environment ({var})"), f"env {var}"
    data, path = read_config_file(home)
    table = data.get("providers") or {}
    if not isinstance(table, dict):
        raise BadInput(f"invalid {path}: [providers] must be a table")
    for name in table:
        # A misspelt table is not silently a default: [providers.OpenAI] is not openai's.
        if name != provider and name.lower().replace("-", "_") == provider.lower().replace("-", "_"):
            raise BadInput(f"invalid {path}: [providers.{name}] should be [providers.{provider}]",
                           hint="provider names are written as `aigen providers` lists them")
    entry = table.get(provider)
    if entry is not None and not isinstance(entry, dict):
        raise BadInput(f"invalid {path}: [providers.{provider}] must be a table")
    unknown = sorted(set(entry or {}) - {"concurrency"})
    if unknown:
        raise BadInput(f"invalid {path}: unknown key {unknown[0]!r} in [providers.{provider}]: the only key is "
                       "concurrency", hint=f"e.g. [providers.{provider}] concurrency = 2")
    if entry and "concurrency" in entry:
        return _parse_cap(entry["concurrency"], f"{path} [providers.{provider}]"), "config.toml"
    return max(1, int(default)), "default"


def stored_location(home_path: Path, rel: str, env=None) -> str:
    """Where a stored file (key ``rel``, e.g. generated_content/alice/3/image_1.png) is, for people to read:
    the path in the home, or ``s3://BUCKET/PREFIX/rel`` with AIGEN_STORAGE_URL. Reads only the environment
    (no storage code is loaded: `aigen status` stays light)."""
    env = os.environ if env is None else env
    url = (env.get("AIGEN_STORAGE_URL") or "").strip()
    if url.startswith("s3://"):
        return f"{url.rstrip('/')}/{rel}"
    if url.startswith("file:///"):
        return str(Path(url[len("file://"):]) / rel)
    return str(home_path / rel)


# -- cluster mode: the store on PostgreSQL ---------------------------------------------------------------------
DATABASE_URL_VAR = "AIGEN_DATABASE_URL"


def database_url(env=None, home: Path | None = None) -> str | None:
    """The PostgreSQL store's URL, or None for the embedded SQLite store (aigen.db in the home).

    ``AIGEN_DATABASE_URL`` wins, then ``database_url`` in the ``[cluster]``
    table of ``<home>/config.toml``. Only postgresql:// and postgres:// URLs
    are accepted; anything else is BadInput (exit 2). Messages never show the
    URL's password.
    """
    from aigen.errors import redact_url

    env = os.environ if env is None else env
    value = env.get(DATABASE_URL_VAR)
    where = f"the environment ({DATABASE_URL_VAR})"
    if value is None or not str(value).strip():
        data, path = read_config_file(home)
        table = data.get("cluster")
        if table is None:
            return None
        if not isinstance(table, dict):
            raise BadInput(f"invalid {path}: [cluster] must be a table")
        value = table.get("database_url")
        if value is None:
            return None
        where = f"{path} [cluster] database_url"
        if not isinstance(value, str):
            raise BadInput(f"invalid {where}: it must be a text URL such as postgresql://user@host/aigen")
        if not value.strip():
            return None
    url = str(value).strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        raise BadInput(
            f"invalid database URL {redact_url(url)!r} in {where}: only postgresql:// (or postgres://) URLs are "
            "supported",
            hint="e.g. postgresql://aigen:PASSWORD@db.example:5432/aigen; leave it unset to keep the store in "
                 "aigen.db in the home",
        )
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BadInput(f"invalid database URL {redact_url(url)!r} in {where}: {exc}") from None
    if not (u.path or "").strip("/"):
        raise BadInput(f"invalid database URL {redact_url(url)!r} in {where}: it names no database",
                       hint="end it with /DATABASE, e.g. postgresql://aigen@db.example/aigen")
    return url
