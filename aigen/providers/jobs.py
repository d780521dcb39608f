"""Polling a provider's asynchronous job (Runway tasks, Pictory render jobs).

The rules every async provider follows:

* the job id is saved through the reporter the moment the create call returns,
  so a killed or stopped run is resumed by polling that job, never by paying
  for a new one;
* polls are spaced sensibly: a first wait of a few seconds, then intervals that
  grow towards a cap, because long jobs do not need a request every 5 s;
* an overall deadline bounds the wait; hitting it is not a loss, since the job
  id is still saved and `aigen retry` picks the same job up again;
* a stop request (Ctrl-C, a stopping runner) is noticed within a fraction of a
  second, even in the middle of a long wait;
* a few transient polling errors in a row (network, 5xx after the HTTP retries)
  are survived: the job goes on at the provider whether or not we can see it.

Tests shorten the waits with AIGEN_POLL_INTERVAL (seconds) and the deadline
with AIGEN_JOB_TIMEOUT (seconds); both are read from the provider's env.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from aigen.errors import ProviderError, ProviderTimeout

log = logging.getLogger("aigen.providers.jobs")

POLL_INTERVAL_ENV = "AIGEN_POLL_INTERVAL"
JOB_TIMEOUT_ENV = "AIGEN_JOB_TIMEOUT"

# Longest single sleep before the stop flag is looked at again.
_STOP_CHECK_S = 0.2

T = TypeVar("T")


def _env_seconds(env: dict, name: str, default: float, *, lo: float, hi: float) -> float:
    raw = (env or {}).get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of seconds", name, raw)
        return default
    if not lo <= value <= hi:
        log.warning("ignoring %s=%r: must be between %s and %s seconds", name, raw, lo, hi)
        return default
    return value


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:g} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class PollPolicy:
    """How often and for how long to poll one job."""

    interval: float = 5.0  # first wait, and the starting interval
    max_interval: float = 15.0  # intervals grow towards this
    growth: float = 1.25
    timeout: float = 15 * 60.0  # overall deadline, from the first poll
    max_transient_errors: int = 5  # consecutive failed polls tolerated

    @classmethod
    def from_env(cls, env: dict | None, **defaults) -> "PollPolicy":
        base = cls(**defaults)
        # Not below 10 ms: a zero interval would hammer the provider.
        interval = _env_seconds(env or {}, POLL_INTERVAL_ENV, base.interval, lo=0.01, hi=600.0)
        timeout = _env_seconds(env or {}, JOB_TIMEOUT_ENV, base.timeout, lo=0.05, hi=7 * 24 * 3600.0)
        # An explicit interval is used as is, without growth: that is what a
        # user (or a test) setting it expects.
        max_interval = base.max_interval if interval == base.interval else interval
        return cls(
            interval=interval,
            max_interval=max_interval,
            growth=base.growth,
            timeout=timeout,
            max_transient_errors=base.max_transient_errors,
        )

    def intervals(self) -> Iterator[float]:
        wait = self.interval
        while True:
            yield wait
            wait = min(self.max_interval, wait * self.growth)


def wait_or_stop(reporter, seconds: float, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Sleep up to `seconds`, raising the reporter's Cancelled as soon as a stop is asked."""
    check = getattr(reporter, "check_stop", None)
    end = clock() + max(0.0, seconds)
    while True:
        if check is not None:
            check()
        left = end - clock()
        if left <= 0:
            return
        sleep(min(left, _STOP_CHECK_S))


def poll_job(
    fetch: Callable[[], T],
    finished: Callable[[T], bool],
    *,
    policy: PollPolicy,
    reporter,
    provider: str,
    what: str,
    on_update: Callable[[T], None] | None = None,
    first_wait: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call fetch() until finished(result) is true, and return that result.

    `what` names the job in messages ("runway task 1b2c…"). fetch() raises
    ProviderError for failures; retryable ones are tolerated up to
    policy.max_transient_errors times in a row. Non-retryable ones end the poll.
    `first_wait` is False when resuming a job that may already be finished.
    """
    started = clock()
    deadline = started + policy.timeout
    intervals = policy.intervals()
    transient = 0
    wait = next(intervals) if first_wait else 0.0
    while True:
        # Never sleep past the deadline: the last poll happens at the deadline.
        wait_or_stop(reporter, min(wait, max(0.0, deadline - clock())), sleep=sleep, clock=clock)
        try:
            result = fetch()
        except ProviderError as e:
            if not e.retryable:
                raise
            transient += 1
            if transient > policy.max_transient_errors:
                raise ProviderError(
                    f"lost track of {what}: {transient} polls in a row failed, the last with: {e.message}. "
                    "Its id is saved; `aigen retry` polls it again",
                    provider=provider,
                    retryable=True,
                    provider_code=e.provider_code,
                    status=e.status,
                ) from e
            log.warning("polling %s failed (%s); trying again", what, e.message)
            result = None
            retry_after = e.retry_after or 0.0
        else:
            retry_after = 0.0
            transient = 0
            if on_update is not None:
                on_update(result)
            if finished(result):
                return result
        now = clock()
        if now >= deadline:
            raise ProviderTimeout(
                f"{what} did not finish within {human_seconds(policy.timeout)}; it may still be running at "
                f"{provider}. Its id is saved, so `aigen retry` polls the same job instead of starting a new one",
                provider=provider,
                retryable=True,
                provider_code="job_timeout",
            )
        # A poll answered 429 waits at least as long as the server asked.
        wait = max(next(intervals), retry_after)
