"""Tests for aigen.notify.when: parsing and describing --notify-at times.

Every test injects ``now`` and an explicit zone, so nothing depends on the
wall clock or on the machine's zone -- except the system-zone tests, which
set TZ themselves and restore it afterwards.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from zoneinfo import ZoneInfo

from aigen.errors import BadInput
from aigen.notify.when import (
    ACCEPTED_FORMS,
    MAX_AHEAD,
    PAST_GRACE,
    describe_when,
    parse_notify_at,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# Tuesday 2026-11-24, 09:02 in Berlin (CET, UTC+1) = 08:02 UTC.
NOW_BERLIN = datetime(2026, 11, 24, 9, 2, tzinfo=BERLIN)
# Saturday 2026-07-04, 12:00 in New York (EDT, UTC-4) = 16:00 UTC.
NOW_NY = datetime(2026, 7, 4, 12, 0, tzinfo=NEW_YORK)
NOW_UTC = datetime(2026, 11, 24, 8, 2, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def assert_utc(value: datetime) -> None:
    """The contract: always an aware datetime whose zone is UTC itself."""
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC
    assert value.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------
# clock times


CLOCK_CASES = [
    # (text, now, tz, expected UTC)
    # -- Berlin, now 09:02 CET: later today
    ("18:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("18:00:30", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0, 30)),
    ("6:30pm", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 30)),
    ("6:30 PM", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 30)),
    ("6:30 p.m.", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 30)),
    ("6pm", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("6 PM", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("09:03", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 8, 3)),
    ("noon", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 11, 0)),
    ("NOON", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 11, 0)),
    ("12pm", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 11, 0)),
    ("12:15pm", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 11, 15)),
    # -- Berlin: already passed today, so tomorrow
    ("08:00", NOW_BERLIN, BERLIN, utc(2026, 11, 25, 7, 0)),
    ("8am", NOW_BERLIN, BERLIN, utc(2026, 11, 25, 7, 0)),
    ("0:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 23, 0)),
    ("12am", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 23, 0)),
    ("12:15am", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 23, 15)),
    ("midnight", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 23, 0)),
    # exactly now is not "after now": the next one is tomorrow
    ("09:02", NOW_BERLIN, BERLIN, utc(2026, 11, 25, 8, 2)),
    ("09:02:00", NOW_BERLIN, BERLIN, utc(2026, 11, 25, 8, 2)),
    # a second later is still today
    ("09:02:01", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 8, 2, 1)),
    # -- across midnight: 23:50 -> 00:10 is 20 minutes later, the next day
    ("00:10", datetime(2026, 11, 24, 23, 50, tzinfo=BERLIN), BERLIN, utc(2026, 11, 24, 23, 10)),
    ("12:10am", datetime(2026, 11, 24, 23, 50, tzinfo=BERLIN), BERLIN, utc(2026, 11, 24, 23, 10)),
    ("23:55", datetime(2026, 11, 24, 23, 50, tzinfo=BERLIN), BERLIN, utc(2026, 11, 24, 22, 55)),
    ("23:45", datetime(2026, 11, 24, 23, 50, tzinfo=BERLIN), BERLIN, utc(2026, 11, 25, 22, 45)),
    # across the end of a month and of a year
    ("00:10", datetime(2026, 12, 31, 23, 50, tzinfo=BERLIN), BERLIN, utc(2026, 12, 31, 23, 10)),
    ("06:00", datetime(2026, 12, 31, 23, 50, tzinfo=BERLIN), BERLIN, utc(2027, 1, 1, 5, 0)),
    # -- New York, now 12:00 EDT
    ("6pm", NOW_NY, NEW_YORK, utc(2026, 7, 4, 22, 0)),
    ("9am", NOW_NY, NEW_YORK, utc(2026, 7, 5, 13, 0)),
    ("noon", NOW_NY, NEW_YORK, utc(2026, 7, 5, 16, 0)),
    ("12:00:01", NOW_NY, NEW_YORK, utc(2026, 7, 4, 16, 0, 1)),
    ("11:59pm", NOW_NY, NEW_YORK, utc(2026, 7, 5, 3, 59)),
    # -- UTC
    ("18:00", NOW_UTC, UTC, utc(2026, 11, 24, 18, 0)),
    ("08:01", NOW_UTC, UTC, utc(2026, 11, 25, 8, 1)),
    ("midnight", NOW_UTC, UTC, utc(2026, 11, 25, 0, 0)),
    # -- "now" given in another zone than the user's: only the instant matters
    ("18:00", NOW_BERLIN.astimezone(NEW_YORK), BERLIN, utc(2026, 11, 24, 17, 0)),
    ("18:00", NOW_BERLIN, NEW_YORK, utc(2026, 11, 24, 23, 0)),
]


@pytest.mark.parametrize("text, now, tz, expected", CLOCK_CASES)
def test_clock_time_is_next_occurrence(text, now, tz, expected):
    got = parse_notify_at(text, now, tz)
    assert got == expected
    assert_utc(got)
    assert got > now


# Europe/Berlin 2026: clocks jump 02:00 CET -> 03:00 CEST on 2026-03-29
# (01:00 UTC), and fall back 03:00 CEST -> 02:00 CET on 2026-10-25 (01:00 UTC).
# America/New_York 2026: 02:00 EST -> 03:00 EDT on 2026-03-08 (07:00 UTC),
# 02:00 EDT -> 01:00 EST on 2026-11-01 (06:00 UTC).
DST_CLOCK_CASES = [
    # gap: 02:30 does not exist on 2026-03-29, the first valid instant after it is 03:00 CEST
    ("02:30", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 1, 0)),
    ("2:00am", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 1, 0)),
    ("02:59:59", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 1, 0)),
    # just outside the gap, both sides
    ("01:59", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 0, 59)),
    ("03:00", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 1, 0)),
    # the day after the change uses the new offset (not one frozen from now)
    ("18:00", datetime(2026, 3, 28, 21, 0, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 16, 0)),
    ("18:00", datetime(2026, 10, 24, 21, 0, tzinfo=BERLIN), BERLIN, utc(2026, 10, 25, 17, 0)),
    # fold: 02:30 happens twice on 2026-10-25; the first occurrence (CEST) wins
    ("02:30", datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN), BERLIN, utc(2026, 10, 25, 0, 30)),
    # ... unless it has already passed: at 02:45 CEST the next 02:30 is the CET one
    ("02:30", utc(2026, 10, 25, 0, 45), BERLIN, utc(2026, 10, 25, 1, 30)),
    # ... and once both have passed, tomorrow's
    ("02:30", utc(2026, 10, 25, 1, 45), BERLIN, utc(2026, 10, 26, 1, 30)),
    # New York gap and fold
    ("2:30am", datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    ("1:30am", datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK), NEW_YORK, utc(2026, 11, 1, 5, 30)),
]


@pytest.mark.parametrize("text, now, tz, expected", DST_CLOCK_CASES)
def test_clock_time_across_dst(text, now, tz, expected):
    got = parse_notify_at(text, now, tz)
    assert got == expected
    assert_utc(got)


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, UTC])
@pytest.mark.parametrize("text", ["00:00", "01:30", "02:30", "03:00", "12:00", "23:59:59"])
def test_clock_time_is_always_within_a_day_or_so_after_now(text, tz):
    """Sweep 'now' through both DST change weeks: always ahead, never >25h ahead."""
    for start in (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 10, 24, tzinfo=UTC)):
        for step in range(0, 10 * 24 * 4):  # every 15 minutes for ten days
            now = start + timedelta(minutes=15 * step)
            got = parse_notify_at(text, now, tz)
            assert_utc(got)
            assert now < got <= now + timedelta(hours=25), (text, now)


# --------------------------------------------------------------------------
# ISO-8601 date-times


ISO_CASES = [
    ("2026-11-24T18:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24 18:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24   18:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24T18:00:45", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0, 45)),
    ("2026-11-24T18:00:45.5", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0, 45, 500000)),
    ("2026-11-24t18:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    # explicit offsets win over tz
    ("2026-11-24T18:00:00+01:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24T18:00:00+01:00", NOW_BERLIN, NEW_YORK, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24T18:00-05:00", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 23, 0)),
    ("2026-11-24T18:00+0530", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 12, 30)),
    ("2026-11-24T18:00+02", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 16, 0)),
    ("2026-11-24T17:00Z", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24t17:00z", NOW_BERLIN, BERLIN, utc(2026, 11, 24, 17, 0)),
    ("2026-11-24T17:00:00Z", NOW_BERLIN, NEW_YORK, utc(2026, 11, 24, 17, 0)),
    # local time in tz uses that date's offset (summer in New York)
    ("2026-07-04T18:00", NOW_NY, NEW_YORK, utc(2026, 7, 4, 22, 0)),
    ("2026-12-24T18:00", NOW_NY, NEW_YORK, utc(2026, 12, 24, 23, 0)),
    ("2026-11-24T18:00", NOW_UTC, UTC, utc(2026, 11, 24, 18, 0)),
    # a valid leap day
    ("2028-02-29T10:00", datetime(2027, 12, 1, tzinfo=UTC), UTC, utc(2028, 2, 29, 10, 0)),
    # DST: gap -> end of the gap, fold -> first occurrence
    ("2026-03-29T02:30", datetime(2026, 3, 28, tzinfo=BERLIN), BERLIN, utc(2026, 3, 29, 1, 0)),
    ("2026-10-25T02:30", datetime(2026, 10, 24, tzinfo=BERLIN), BERLIN, utc(2026, 10, 25, 0, 30)),
    ("2026-03-08T02:30", datetime(2026, 3, 1, tzinfo=NEW_YORK), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    ("2026-11-01T01:30", datetime(2026, 10, 1, tzinfo=NEW_YORK), NEW_YORK, utc(2026, 11, 1, 5, 30)),
    # with an explicit offset, the second pass through the fold is reachable
    ("2026-10-25T02:30+01:00", datetime(2026, 10, 24, tzinfo=BERLIN), BERLIN, utc(2026, 10, 25, 1, 30)),
]


@pytest.mark.parametrize("text, now, tz, expected", ISO_CASES)
def test_iso_datetime(text, now, tz, expected):
    got = parse_notify_at(text, now, tz)
    assert got == expected
    assert_utc(got)


def test_iso_within_grace_is_accepted_as_given():
    # 30 s and exactly 60 s ago: clock skew, accepted (the notification fires at once)
    assert parse_notify_at("2026-11-24T09:01:30", NOW_BERLIN, BERLIN) == utc(2026, 11, 24, 8, 1, 30)
    assert parse_notify_at("2026-11-24T09:01:00", NOW_BERLIN, BERLIN) == NOW_BERLIN - PAST_GRACE
    # exactly now is fine too
    assert parse_notify_at("2026-11-24T09:02", NOW_BERLIN, BERLIN) == utc(2026, 11, 24, 8, 2)


def test_iso_past_beyond_grace_is_refused_and_shown():
    with pytest.raises(BadInput) as exc:
        parse_notify_at("2026-11-24T09:00:59", NOW_BERLIN, BERLIN)
    msg = exc.value.message
    assert "'2026-11-24T09:00:59'" in msg
    assert "in the past" in msg
    assert "2026-11-24 09:00:59 CET" in msg
    assert exc.value.hint == ACCEPTED_FORMS


def test_iso_past_yesterday_is_refused():
    with pytest.raises(BadInput, match="in the past"):
        parse_notify_at("2026-11-23T18:00Z", NOW_BERLIN, BERLIN)


def test_iso_at_the_far_limit():
    limit = NOW_UTC + MAX_AHEAD  # 2027-11-25 08:02 UTC
    assert parse_notify_at("2027-11-25T08:02Z", NOW_UTC, UTC) == limit
    with pytest.raises(BadInput, match="more than 366 days ahead"):
        parse_notify_at("2027-11-25T08:02:01Z", NOW_UTC, UTC)


def test_date_alone_says_to_add_a_time():
    with pytest.raises(BadInput) as exc:
        parse_notify_at("2026-11-25", NOW_BERLIN, BERLIN)
    assert "'2026-11-25'" in exc.value.message
    assert "add a time" in exc.value.message
    assert exc.value.hint == ACCEPTED_FORMS


def test_invalid_calendar_date_names_the_problem():
    with pytest.raises(BadInput) as exc:
        parse_notify_at("2026-02-30T10:00", NOW_BERLIN, BERLIN)
    assert "'2026-02-30T10:00'" in exc.value.message
    assert "day is out of range" in exc.value.message


# --------------------------------------------------------------------------
# delays and "now"


DELAY_CASES = [
    ("now", timedelta(0)),
    ("NOW", timedelta(0)),
    ("+0m", timedelta(0)),
    ("in 0 minutes", timedelta(0)),
    ("+30m", timedelta(minutes=30)),
    ("+2h", timedelta(hours=2)),
    ("+1h30m", timedelta(hours=1, minutes=30)),
    ("+1H30M", timedelta(hours=1, minutes=30)),
    ("+ 1h 30m", timedelta(hours=1, minutes=30)),
    ("+45s", timedelta(seconds=45)),
    ("+1d", timedelta(days=1)),
    ("+1w", timedelta(weeks=1)),
    ("+1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("+30m1h", timedelta(hours=1, minutes=30)),
    ("+2 hours", timedelta(hours=2)),
    ("in 2 hours", timedelta(hours=2)),
    ("In 2 Hours", timedelta(hours=2)),
    ("in 1 hour", timedelta(hours=1)),
    ("in 30 minutes", timedelta(minutes=30)),
    ("in 1 hour 30 minutes", timedelta(hours=1, minutes=30)),
    ("in 1 hour and 30 minutes", timedelta(hours=1, minutes=30)),
    ("in 1 hour, 30 minutes", timedelta(hours=1, minutes=30)),
    ("in 90 min", timedelta(minutes=90)),
    ("in 90 mins", timedelta(minutes=90)),
    ("in 2h", timedelta(hours=2)),
    ("in 2 hrs", timedelta(hours=2)),
    ("in 45 seconds", timedelta(seconds=45)),
    ("in 10 sec", timedelta(seconds=10)),
    ("in 3 days", timedelta(days=3)),
    ("in 2 weeks", timedelta(weeks=2)),
    ("in 366 days", timedelta(days=366)),
    ("+366d", timedelta(days=366)),
    ("+8784h", timedelta(days=366)),
    ("  +30m  ", timedelta(minutes=30)),
    ("\t in 2 hours\n", timedelta(hours=2)),
]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, UTC])
@pytest.mark.parametrize("text, delta", DELAY_CASES)
def test_delay(text, delta, tz):
    got = parse_notify_at(text, NOW_BERLIN, tz)
    assert got == NOW_BERLIN + delta
    assert_utc(got)


def test_delay_counts_elapsed_time_across_dst():
    # The night of 2026-03-29 is 23 h long in Berlin: +1d is still exactly 24 h.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    got = parse_notify_at("+1d", now, BERLIN)
    assert got - now == timedelta(hours=24)
    assert got.astimezone(BERLIN).hour == 13


# --------------------------------------------------------------------------
# bad input


BAD_INPUTS = [
    # (text, a piece of the rule the message must state)
    ("", "empty"),
    ("   ", "empty"),
    ("\n", "empty"),
    ("tomorrowish", "not a time"),
    ("tomorrow", "not a time"),
    ("noonish", "not a time"),
    ("soon", "not a time"),
    ("later today", "not a time"),
    ("18h", "not a time"),
    ("6:30 xm", "not a time"),
    ("12:5", "not a time"),
    ("1:2:3", "not a time"),
    ("18:00:00:00", "not a time"),
    ("at 18:00", "not a time"),
    ("25:00", "hour must be 0-23"),
    ("24:00", "hour must be 0-23"),
    ("99:00", "hour must be 0-23"),
    ("12:60", "minutes must be 00-59"),
    ("12:60pm", "minutes must be 00-59"),
    ("18:00:60", "seconds must be 00-59"),
    ("13pm", "hour must be 1-12"),
    ("0am", "hour must be 1-12"),
    ("00:30am", "hour must be 1-12"),
    ("18:00 pm", "hour must be 1-12"),
    ("18", "bare number"),
    ("6", "bare number"),
    ("\u0661\u0668:\u0660\u0660", "not a time"),  # Arabic-Indic digits
    ("-5m", "negative"),
    ("- 5m", "negative"),
    ("in -5 minutes", "negative"),
    ("+-5m", "negative"),
    ("+30", "without a unit"),
    ("in 30", "without a unit"),
    ("+", "without an amount"),
    ("in", "without an amount"),
    ("in ", "without an amount"),
    ("+5x", "unknown unit 'x'"),
    ("in 5 fortnights", "unknown unit 'fortnights'"),
    ("+1h1h", "twice"),
    ("in 1 hour 2 hours", "twice"),
    ("in 2 hours and", "not a delay"),
    ("+1.5h", "not a delay"),
    ("+1e3m", "unknown unit 'e'"),
    ("in two hours", "not a delay"),
    ("+367d", "more than 366 days"),
    ("in 400 days", "more than 366 days"),
    ("+366d1s", "more than 366 days"),
    ("+99999999999999999999999d", "more than 366 days"),
    ("2026-11-25", "add a time"),
    ("2026-02-30T10:00", "not a real date"),
    ("2026-13-01T10:00", "not a real date"),
    ("2026-11-24T24:00", "not a real date"),
    ("2026-11-24T18:61", "not a real date"),
    ("2026-11-24T18", "not a date-time"),
    ("2026-11-24T6pm", "not a date-time"),
    ("2026-11-24T18:00+25:00", "impossible UTC offset"),
    ("2026-11-24T18:00+01:60", "impossible UTC offset"),
    ("2026-11-24T18:00 Europe/Paris", "not a date-time"),
    ("2026-11-24T08:00Z", "in the past"),  # two minutes before now
    ("2025-11-24T18:00", "in the past"),
    ("0001-01-01T00:00+01:00", "in the past"),
    ("2027-11-26T18:00", "more than 366 days ahead"),
    ("9999-12-31T23:59-05:00", "more than 366 days ahead"),
]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, UTC])
@pytest.mark.parametrize("text, rule", BAD_INPUTS)
def test_bad_input_is_refused_with_value_and_rule(text, rule, tz):
    with pytest.raises(BadInput) as exc:
        parse_notify_at(text, NOW_BERLIN, tz)
    err = exc.value
    assert repr(text) in err.message
    assert rule in err.message
    assert err.hint == ACCEPTED_FORMS
    assert err.exit_code == 2


def test_very_long_input_is_shortened_in_the_message():
    text = "x" * 500
    with pytest.raises(BadInput) as exc:
        parse_notify_at(text, NOW_BERLIN, BERLIN)
    assert repr("x" * 77) + "..." in exc.value.message
    assert len(exc.value.message) < 200


def test_naive_now_is_a_programming_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_notify_at("18:00", datetime(2026, 11, 24, 9, 2), BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        describe_when(utc(2026, 11, 24, 18, 0), datetime(2026, 11, 24, 9, 2), BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        describe_when(datetime(2026, 11, 24, 18, 0), NOW_BERLIN, BERLIN)


def test_non_string_text_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_notify_at(None, NOW_BERLIN, BERLIN)  # type: ignore[arg-type]


def test_accepted_forms_lists_each_kind():
    for example in ("18:00", "6:30pm", "noon", "midnight", "2026-11-24T18:00", "Z", "+30m", "in 2 hours", "now"):
        assert example in ACCEPTED_FORMS


# --------------------------------------------------------------------------
# the system zone (tz=None)


@pytest.fixture
def system_tz(monkeypatch):
    """Switch the process's local zone for one test, then restore it."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def test_system_zone_follows_dst_rules_of_the_target_date(system_tz):
    system_tz("Europe/Berlin")
    # Now is CET (+1); tomorrow is CEST (+2). A frozen offset would give 17:00 UTC.
    now = utc(2026, 3, 28, 20, 0)
    assert parse_notify_at("18:00", now) == utc(2026, 3, 29, 16, 0)
    assert parse_notify_at("2026-03-29T18:00", now) == utc(2026, 3, 29, 16, 0)
    assert parse_notify_at("2026-07-01T18:00", now) == utc(2026, 7, 1, 16, 0)


def test_system_zone_gap_and_fold(system_tz):
    system_tz("Europe/Berlin")
    gap = parse_notify_at("02:30", utc(2026, 3, 28, 12, 0))
    assert gap == utc(2026, 3, 29, 1, 0)
    assert_utc(gap)
    assert parse_notify_at("2026-03-29T02:30", utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert parse_notify_at("2026-10-25T02:30", utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 25, 0, 30)
    assert parse_notify_at("02:30", utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 25, 1, 30)


def test_system_zone_describe(system_tz):
    system_tz("America/New_York")
    now = utc(2026, 7, 4, 16, 0)  # 12:00 EDT
    assert describe_when(utc(2026, 7, 4, 22, 0), now) == "today at 18:00 (in 6h)"


# --------------------------------------------------------------------------
# describe_when


DESCRIBE_CASES = [
    # (at, now, tz, expected)
    (utc(2026, 11, 24, 8, 2), NOW_BERLIN, BERLIN, "now"),
    (utc(2026, 11, 24, 8, 0), NOW_BERLIN, BERLIN, "now"),
    (utc(2026, 11, 24, 8, 2, 45), NOW_BERLIN, BERLIN, "today at 09:02:45 (in 45s)"),
    (utc(2026, 11, 24, 8, 32), NOW_BERLIN, BERLIN, "today at 09:32 (in 30m)"),
    (utc(2026, 11, 24, 17, 0), NOW_BERLIN, BERLIN, "today at 18:00 (in 8h 58m)"),
    (utc(2026, 11, 24, 10, 2), NOW_BERLIN, BERLIN, "today at 11:02 (in 2h)"),
    (utc(2026, 11, 24, 17, 0, 30), NOW_BERLIN, BERLIN, "today at 18:00:30 (in 8h 58m)"),
    (utc(2026, 11, 25, 5, 30), NOW_BERLIN, BERLIN, "tomorrow at 06:30 (in 21h 28m)"),
    (utc(2026, 11, 25, 22, 0), NOW_BERLIN, BERLIN, "tomorrow at 23:00 (in 37h 58m)"),
    (utc(2026, 12, 1, 17, 0), NOW_BERLIN, BERLIN, "2026-12-01 18:00 (in 7 days)"),
    (utc(2026, 11, 26, 8, 2), NOW_BERLIN, BERLIN, "2026-11-26 09:02 (in 2 days)"),
    # the same instant described in other zones
    (utc(2026, 11, 24, 17, 0), NOW_BERLIN, NEW_YORK, "today at 12:00 (in 8h 58m)"),
    (utc(2026, 11, 24, 17, 0), NOW_BERLIN, UTC, "today at 17:00 (in 8h 58m)"),
    # in New York it is still the 23rd at 03:02, so midnight there is "tomorrow"
    (utc(2026, 11, 25, 5, 0), NOW_BERLIN, NEW_YORK, "tomorrow at 00:00 (in 20h 58m)"),
    # across midnight
    (utc(2026, 11, 24, 23, 10), datetime(2026, 11, 24, 23, 50, tzinfo=BERLIN), BERLIN,
     "tomorrow at 00:10 (in 20m)"),
    # durations round down: 59.9 seconds is still "59s"
    (utc(2026, 11, 24, 8, 2, 59, 900000), NOW_BERLIN, BERLIN, "today at 09:02:59 (in 59s)"),
]


@pytest.mark.parametrize("at, now, tz, expected", DESCRIBE_CASES)
def test_describe_when(at, now, tz, expected):
    assert describe_when(at, now, tz) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18:00", "today at 18:00 (in 8h 58m)"),
        ("6:30am", "tomorrow at 06:30 (in 21h 28m)"),
        ("2026-12-01T18:00", "2026-12-01 18:00 (in 7 days)"),
        ("+90m", "today at 10:32 (in 1h 30m)"),
        ("now", "now"),
    ],
)
def test_parse_then_describe(text, expected):
    at = parse_notify_at(text, NOW_BERLIN, BERLIN)
    assert describe_when(at, NOW_BERLIN, BERLIN) == expected
