"""Parse and describe the time given to ``aigen generate ... --notify-at WHEN``.

The user types a clock time (``18:00``, ``6:30pm``, ``noon``), an ISO-8601
date-time (``2026-11-24T18:00``, ``2026-11-24T17:00Z``) or a delay (``+30m``,
``in 2 hours``, ``now``). :func:`parse_notify_at` turns that text into an aware
UTC datetime, or refuses it with :class:`aigen.errors.BadInput`;
:func:`describe_when` turns the result back into a short phrase for CLI output.

Local wall-clock times are interpreted in the user's zone, following that
zone's daylight-saving rules for the day in question (never an offset frozen
from "now"). A wall time that falls in a spring-forward gap resolves to the
first valid instant after the gap; a wall time that happens twice in a
fall-back fold resolves to its first occurrence.

Both functions take ``now`` as an argument instead of reading the clock, so
callers (and tests) decide what "now" is.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

from aigen.errors import BadInput

__all__ = ["ACCEPTED_FORMS", "MAX_AHEAD", "PAST_GRACE", "describe_when", "parse_notify_at"]

ACCEPTED_FORMS = (
    "accepted forms: a clock time, meaning the next one to come "
    "(18:00, 18:00:30, 6:30pm, 6pm, 12am, noon, midnight); "
    "a date and time, local unless an offset is given "
    "(2026-11-24T18:00, 2026-11-24 18:00, 2026-11-24T18:00+01:00, 2026-11-24T17:00Z); "
    "a delay (+30m, +1h30m, +45s, +1d, in 2 hours, in 1 hour 30 minutes, in 90 min); "
    "or now"
)

# An explicit date-time may lie slightly in the past: the user's clock and
# ours can disagree by a few seconds, and typing the command takes time too.
# Within this grace the notification simply fires at once; beyond it the user
# most likely got the date or time wrong, so we refuse rather than guess.
PAST_GRACE = timedelta(seconds=60)

# Nobody waits more than a year for a generation; anything beyond is a typo
# (wrong year, extra digit) and is refused as impossible.
MAX_AHEAD = timedelta(days=366)

_UTC = timezone.utc

# Strict ASCII patterns: ``\d`` would also accept Arabic-Indic and other
# Unicode digits, which int() happily converts, letting odd text through.
_CLOCK_RE = re.compile(
    r"(?P<h>[0-9]{1,2})(?::(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?)?"
    r"\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?",
    re.ASCII,
)
_DATE_ONLY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATETIME_RE = re.compile(
    r"(?P<Y>[0-9]{4})-(?P<M>[0-9]{2})-(?P<D>[0-9]{2})"
    r"(?:t|\s+)"
    r"(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<frac>[0-9]{1,6}))?)?"
    r"\s*(?P<off>z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.ASCII,
)
# One "<number> <unit>" part of a delay; a "," or "and" may join it to the
# next part (the lookahead keeps "in 2 hours and" from passing as complete).
_DELAY_PART_RE = re.compile(
    r"\s*(?P<n>-?[0-9]+)\s*(?P<unit>[a-z]+)(?:\s*(?:,|\band\b)(?=\s*-?[0-9]))?",
    re.ASCII,
)

_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}

_NAMED_TIMES = {"noon": (12, 0, 0), "midnight": (0, 0, 0)}


# --------------------------------------------------------------------------
# public API


def parse_notify_at(text: str, now: datetime, tz: tzinfo | None = None) -> datetime:
    """Return the instant meant by ``text``, as an aware datetime in UTC.

    ``now`` is the reference instant and must be timezone-aware (a naive one
    is a programming error and raises ``ValueError``). ``tz`` is the user's
    local zone, used for clock times and for date-times without an offset;
    ``None`` means the system's local zone, with its daylight-saving rules
    applied to the date in question.

    Accepted forms (case-insensitive, surrounding whitespace ignored):

    * a clock time -- ``18:00``, ``18:00:30``, ``6:30pm``, ``6 PM``, ``12am``,
      ``noon``, ``midnight`` -- meaning the next such local wall-clock time
      strictly after ``now`` (today if still ahead, else tomorrow);
    * an ISO-8601 date-time -- ``2026-11-24T18:00``, ``2026-11-24 18:00``,
      ``2026-11-24T18:00:00+01:00``, ``2026-11-24T17:00Z``; without an offset
      it is a local time in ``tz``;
    * a delay -- ``+30m``, ``+1h30m``, ``+45s``, ``+1d``, ``in 2 hours``,
      ``in 1 hour 30 minutes``, ``in 90 min``, ``in 2h`` -- counted as elapsed
      time, so ``+1d`` is exactly 24 hours even across a DST change; a zero
      delay is the same as ``now``;
    * ``now``.

    A local wall time that does not exist (spring-forward gap) resolves to the
    first valid instant after it, i.e. the end of the gap; one that happens
    twice (fall-back fold) resolves to the first occurrence -- except that a
    clock time whose first occurrence has already passed today resolves to
    the second one if that is still ahead, since it is the next one to come.

    Raises :class:`BadInput` (with ``hint=ACCEPTED_FORMS``) for empty or
    unreadable text, out-of-range clock fields, a date without a time, an
    impossible calendar date, a negative delay, a date-time more than
    :data:`PAST_GRACE` in the past, and anything more than :data:`MAX_AHEAD`
    after ``now``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    _require_aware(now, "now")

    s = text.strip().lower()
    if not s:
        raise _bad(text, "is empty: say when to notify")
    if s == "now":
        return now.astimezone(_UTC)
    if s[0] == "+" or re.match(r"-\s*[0-9]", s) or s == "in" or s.startswith("in "):
        return _parse_delay(text, s, now)
    if s[:1].isdigit() and _DATE_ONLY_RE.match(s):
        return _parse_datetime(text, s, now, tz)
    if s in _NAMED_TIMES:
        return _next_wall_time(_NAMED_TIMES[s], now, tz)
    hms = _parse_clock(text, s)
    if hms is not None:
        return _next_wall_time(hms, now, tz)
    raise _bad(text, "is not a time aigen understands")


def describe_when(at: datetime, now: datetime, tz: tzinfo | None = None) -> str:
    """Describe ``at`` relative to ``now`` in a few words, for CLI messages.

    Times are shown in ``tz`` (``None``: the system's local zone). Examples::

        "now"                            (at <= now)
        "today at 18:00 (in 8h 58m)"
        "tomorrow at 06:30 (in 21h 28m)"
        "2026-12-01 18:00 (in 7 days)"

    Seconds are shown only when ``at`` has some (``today at 18:00:30``).
    Durations are rounded down, so a notification never seems later than it is.
    """
    _require_aware(at, "at")
    _require_aware(now, "now")
    if at <= now:
        return "now"
    at_local = _to_local(at, tz)
    now_local = _to_local(now, tz)
    clock = at_local.strftime("%H:%M:%S" if at_local.second else "%H:%M")
    days_apart = (at_local.date() - now_local.date()).days
    if days_apart == 0:
        where = f"today at {clock}"
    elif days_apart == 1:
        where = f"tomorrow at {clock}"
    else:
        where = f"{at_local:%Y-%m-%d} {clock}"
    return f"{where} (in {_format_duration(at - now)})"


# --------------------------------------------------------------------------
# the three forms


def _parse_clock(text: str, s: str) -> tuple[int, int, int] | None:
    """Read ``s`` as a clock time; return (hour, minute, second) in 24-hour form.

    Returns None when ``s`` does not look like a clock time at all, and raises
    BadInput when it does but a field is out of range, so the message can say
    which rule was broken rather than just "not understood".
    """
    m = _CLOCK_RE.fullmatch(s)
    if m is None:
        return None
    hour = int(m["h"])
    minute = int(m["m"] or 0)
    second = int(m["s"] or 0)
    ampm = m["ampm"]
    if ampm is None and m["m"] is None:
        # "18" could be 18:00, 6pm, or 18 minutes: refuse rather than guess.
        raise _bad(text, "is a bare number: write a clock time such as '18:00' or '6pm', or a delay such as '+18m'")
    if ampm is None:
        if hour > 23:
            raise _bad(text, "is not a clock time: the hour must be 0-23 (24-hour clock)")
    elif not 1 <= hour <= 12:
        raise _bad(text, "is not a clock time: with am/pm the hour must be 1-12")
    if minute > 59:
        raise _bad(text, "is not a clock time: the minutes must be 00-59")
    if second > 59:
        raise _bad(text, "is not a clock time: the seconds must be 00-59")
    if ampm is not None:
        # 12am is midnight and 12pm is noon; other hours shift by 12 in the afternoon.
        hour %= 12
        if ampm.startswith("p"):
            hour += 12
    return hour, minute, second


def _parse_datetime(text: str, s: str, now: datetime, tz: tzinfo | None) -> datetime:
    """Read ``s`` (which starts with YYYY-MM-DD) as an ISO-8601 date-time."""
    if _DATE_ONLY_RE.fullmatch(s):
        raise _bad(
            text,
            f"is a date without a time, which is ambiguous: add a time, e.g. '{s}T18:00' or '{s} 09:00'",
        )
    m = _DATETIME_RE.fullmatch(s)
    if m is None:
        raise _bad(text, "is not a date-time aigen understands: write e.g. '2026-11-24T18:00' or '2026-11-24T17:00Z'")
    frac = (m["frac"] or "").ljust(6, "0")
    try:
        wall = datetime(
            int(m["Y"]), int(m["M"]), int(m["D"]),
            int(m["h"]), int(m["m"]), int(m["s"] or 0), int(frac or 0),
        )
    except ValueError as exc:
        # datetime's own message names the field: "day is out of range for month".
        raise _bad(text, f"is not a real date and time: {exc}") from None

    off = m["off"]
    try:
        if off is None:
            at = _resolve_local(wall, tz)
        else:
            at = wall.replace(tzinfo=_parse_offset(text, off)).astimezone(_UTC)
    except (OverflowError, OSError):
        # Only reachable near year 1 or 9999, far outside the accepted window,
        # so the year alone tells which way it is wrong.
        if wall.year < now.year:
            raise _bad(text, "is in the past") from None
        raise _bad(text, f"is more than {MAX_AHEAD.days} days ahead: that is too far to schedule") from None

    if at < now - PAST_GRACE:
        raise _bad(
            text,
            f"is in the past: it means {_show_instant(at, tz)}, which is before now ({_show_instant(now, tz)})",
        )
    if at - now > MAX_AHEAD:
        raise _bad(
            text,
            f"is more than {MAX_AHEAD.days} days ahead ({_show_instant(at, tz)}): that is too far to schedule",
        )
    return at


def _parse_offset(text: str, off: str) -> tzinfo:
    """Turn ``z``, ``+01:00``, ``+0100`` or ``+01`` into a fixed-offset zone."""
    if off == "z":
        return _UTC
    sign = -1 if off[0] == "-" else 1
    digits = off[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    # Real offsets stay within +-14:00; 23:59 is what timezone() itself allows.
    if hours > 23 or minutes > 59:
        raise _bad(text, f"has an impossible UTC offset {off!r}: it must be between -23:59 and +23:59")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse_delay(text: str, s: str, now: datetime) -> datetime:
    """Read ``+1h30m`` / ``in 1 hour 30 minutes`` style delays as elapsed time."""
    if s[0] == "-":
        raise _bad(text, "is a negative delay: the notification must be in the future")
    body = s[1:] if s[0] == "+" else s[2:]
    body = body.strip()
    if not body:
        raise _bad(text, "is a delay without an amount: write e.g. '+30m' or 'in 2 hours'")

    total = 0
    seen: set[int] = set()
    pos = 0
    while pos < len(body):
        m = _DELAY_PART_RE.match(body, pos)
        if m is None or m.end() == pos:
            if re.fullmatch(r"[0-9]+", body[pos:].strip(), re.ASCII):
                raise _bad(text, "is a delay without a unit: write e.g. '+30m', '+2h' or 'in 30 minutes'")
            raise _bad(text, "is not a delay aigen understands: write e.g. '+1h30m' or 'in 1 hour 30 minutes'")
        n, unit = int(m["n"]), m["unit"]
        if n < 0:
            raise _bad(text, "is a negative delay: the notification must be in the future")
        size = _UNIT_SECONDS.get(unit)
        if size is None:
            raise _bad(text, f"has an unknown unit {unit!r}: use s, m, h, d or w (or seconds, minutes, hours, days, weeks)")
        if size in seen:
            # "+1h1h" is almost certainly a typo; summing it silently would hide it.
            raise _bad(text, f"gives the unit {unit!r} twice")
        seen.add(size)
        total += n * size
        pos = m.end()

    # Compare plain integers first: timedelta() itself overflows on absurd values.
    if total > MAX_AHEAD.total_seconds():
        raise _bad(text, f"is a delay of more than {MAX_AHEAD.days} days: that is too far to schedule")
    return now.astimezone(_UTC) + timedelta(seconds=total)


# --------------------------------------------------------------------------
# local wall time <-> UTC


def _next_wall_time(hms: tuple[int, int, int], now: datetime, tz: tzinfo | None) -> datetime:
    """Return the first instant strictly after ``now`` whose local clock reads ``hms``."""
    today = _to_local(now, tz).date()
    # Two days always suffice (tomorrow's occurrence is after now); the third
    # is a safety net for zones that skip a whole calendar day (Samoa, 2011).
    for day in range(3):
        d = today + timedelta(days=day)
        wall = datetime(d.year, d.month, d.day, *hms)
        occurrences = _local_occurrences(wall, tz) or [_gap_end(wall, tz)]
        for at in occurrences:
            if at > now:
                return at
    raise AssertionError(f"no occurrence of {hms} within three days of {now}")  # pragma: no cover


def _resolve_local(wall: datetime, tz: tzinfo | None) -> datetime:
    """Return the UTC instant for a naive local wall time in ``tz``.

    A time in a fold resolves to its first occurrence; a time in a gap
    resolves to the first valid instant after the gap.
    """
    occurrences = _local_occurrences(wall, tz)
    return occurrences[0] if occurrences else _gap_end(wall, tz)


def _local_occurrences(wall: datetime, tz: tzinfo | None) -> list[datetime]:
    """Return every UTC instant whose local wall time in ``tz`` is ``wall``, earliest first.

    That is one instant normally, two in a fall-back fold, none in a
    spring-forward gap. PEP 495 gives the candidates through ``fold=0`` and
    ``fold=1``; a candidate counts only if converting it back yields the same
    wall time, which is how a gap is recognised without zone-specific code.
    """
    candidates = {_from_local(wall, tz, fold) for fold in (0, 1)}
    return sorted(u for u in candidates if _to_local(u, tz).replace(tzinfo=None) == wall)


def _gap_end(wall: datetime, tz: tzinfo | None) -> datetime:
    """Return the first instant after the spring-forward gap that contains ``wall``.

    The fold=1 candidate uses the offset after the transition, landing before
    it (its local time reads earlier than ``wall``); the fold=0 candidate uses
    the offset before, landing after it. The transition is between them, so
    bisect down to a microsecond: cheap (about 32 steps) and independent of
    how ``tz`` stores its rules.
    """
    a, b = sorted({_from_local(wall, tz, 0), _from_local(wall, tz, 1)})
    if a == b:  # pragma: no cover - a tzinfo without PEP 495 support
        return b
    step = timedelta(microseconds=1)
    while b - a > step:
        mid = a + (b - a) // 2
        if _to_local(mid, tz).replace(tzinfo=None) > wall:
            b = mid
        else:
            a = mid
    return b


def _from_local(wall: datetime, tz: tzinfo | None, fold: int) -> datetime:
    """Convert a naive local wall time to UTC, using ``fold`` to pick an offset."""
    if tz is None:
        # A naive datetime's astimezone() reads it as system local time via
        # mktime, so the system's DST rules for that date apply.
        return wall.replace(fold=fold).astimezone(_UTC)
    return wall.replace(tzinfo=tz, fold=fold).astimezone(_UTC)


def _to_local(at: datetime, tz: tzinfo | None) -> datetime:
    """Convert an aware datetime to ``tz`` (``None``: the system zone, DST-aware)."""
    # astimezone() without an argument uses the system's offset for *that*
    # instant (via localtime), not the offset in force today.
    return at.astimezone(tz) if tz is not None else at.astimezone()


# --------------------------------------------------------------------------
# small helpers


def _bad(text: str, rule: str) -> BadInput:
    """Build the BadInput for ``text``: the value (repr) followed by the broken rule."""
    shown = repr(text) if len(text) <= 80 else repr(text[:77]) + "..."
    return BadInput(f"--notify-at {shown} {rule}", hint=ACCEPTED_FORMS)


def _require_aware(value: datetime, name: str) -> None:
    """Refuse naive datetimes: they are a caller's bug, not a user's mistake."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


def _show_instant(at: datetime, tz: tzinfo | None) -> str:
    """Format an instant in the user's zone, with the zone name, for error messages."""
    local = _to_local(at, tz)
    zone = local.tzname() or local.strftime("%z")
    fmt = "%Y-%m-%d %H:%M:%S" if local.second or local.microsecond else "%Y-%m-%d %H:%M"
    return f"{local.strftime(fmt)} {zone}"


def _format_duration(delta: timedelta) -> str:
    """Format a positive duration coarsely: '45s', '30m', '8h 58m', '7 days'."""
    secs = int(delta.total_seconds())
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    # Up to two days hours stay meaningful ("tomorrow at 23:00 (in 37h 10m)").
    if secs < 2 * 86400:
        hours, minutes = divmod(secs // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{secs // 86400} days"
