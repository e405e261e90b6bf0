"""Retries within a total time budget, shared by the store readers (:mod:`.client`).

A read that meets connection errors or an overloaded server (429/5xx-unavailable) waits and
tries again, with jittered exponential backoff or the server's ``Retry-After``, until its budget
of total time is spent; each wait is logged at WARNING with the reason and the time left, and
a spent budget raises :class:`RetryBudgetError` with one line naming the request.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time

log = logging.getLogger("distill.client")
_MAX_RETRY_AFTER_S = 60.0


class StoreClientError(OSError):
    """A request to a store failed for good (after retries, or with a non-retryable status)."""

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RetryBudgetError(StoreClientError):
    """The store stayed unreachable (or overloaded) for the whole retry budget."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - time.time(), 0.0), _MAX_RETRY_AFTER_S)


class RetryPolicy:
    """Retries within a total time budget: exponential backoff (jittered, capped at
    ``max_backoff_s``) or the server's Retry-After; ``attempts`` optionally caps the count."""

    def __init__(
        self,
        total_s: float = 600.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        attempts: int | None = None,
    ) -> None:
        if total_s < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(
                f"the retry budget and backoff must be >= 0 s (got {total_s}, {backoff_s})"
            )
        if attempts is not None and attempts < 1:
            raise ValueError(f"retries must allow at least 1 attempt, got {attempts}")
        self.total_s, self.backoff_s, self.max_backoff_s = total_s, backoff_s, max_backoff_s
        self.attempts = attempts

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (1.0 + 0.25 * random.random())

    def start(self, what: str) -> Tries:
        """A fresh budget for one operation (``what`` names it in logs and errors)."""
        return Tries(self, what)


class Tries:
    """The attempts of one operation against its :class:`RetryPolicy`."""

    def __init__(self, policy: RetryPolicy, what: str) -> None:
        self.policy, self.what, self.n, self.t0 = policy, what, 0, time.monotonic()

    def again(self, reason: str, retry_after: float | None = None) -> bool:
        """After a failed attempt: wait and return True, or False when the budget is spent."""
        p, self.n = self.policy, self.n + 1
        left = p.total_s - (time.monotonic() - self.t0)
        if (p.attempts is not None and self.n >= p.attempts) or left <= 0:
            return False
        wait = min(p.delay(self.n - 1, retry_after), left)
        log.warning(
            "%s: %s; retrying in %.1f s (%.0f s of the %.0f s retry budget left)",
            self.what, reason, wait, left, p.total_s,
        )  # fmt: skip
        time.sleep(wait)
        return True

    def error(self, reason: str, url: str) -> RetryBudgetError:
        spent = time.monotonic() - self.t0
        why = " ".join(reason.split())  # one line, whatever the library's message held
        return RetryBudgetError(
            f"{self.what} failed after {self.n} attempts in {spent:.1f} s ({why}); the retry "
            f"budget ({self.policy.total_s:g} s) is spent: check the service, or raise "
            "--retry-budget-s",
            url,
        )
