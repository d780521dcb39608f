"""Error types and the exit code each maps to.

Every error a user can cause or meet carries a message that names the value and
the rule, and optionally a hint saying what to do next. The CLI maps them to
exit codes: 2 for bad input (nothing was written), 1 for work that failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class AigenError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = EXIT_FAILED
    code = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        d = {"error": self.code, "message": self.message}
        if self.hint:
            d["hint"] = self.hint
        return d


class BadInput(AigenError):
    """The user gave a value that breaks a rule. Nothing has been written."""

    exit_code = EXIT_BAD_INPUT
    code = "bad_input"


class NotFound(BadInput):
    code = "not_found"


class MissingKey(BadInput):
    code = "missing_key"


class Busy(AigenError):
    """Another process is already working on the same generation."""

    code = "busy"


class MediaCheckError(AigenError):
    """A file that should be an image or a video is not a valid one."""

    code = "media_invalid"


class ProviderError(AigenError):
    """A provider call failed.

    ``retryable`` says whether trying again later may help (429, 5xx, network);
    ``provider_code`` carries the vendor's own failure code when there is one.
    """

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retryable: bool = False,
        provider_code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint)
        self.provider = provider
        self.retryable = retryable
        self.provider_code = provider_code
        self.status = status
        self.retry_after = retry_after


class Refused(ProviderError):
    """The provider refused the prompt or the output (moderation). Never retried."""

    code = "refused"

    def __init__(self, provider: str, reason: str, **kw):
        kw.setdefault("provider_code", "refused")
        super().__init__(f"refused by {provider}: {reason}", provider=provider, retryable=False, **kw)
        self.reason = reason


class QuotaExceeded(ProviderError):
    """The account has no credit or quota left: retrying will not help."""

    code = "quota_exceeded"


class ProviderTimeout(ProviderError):
    code = "timeout"
