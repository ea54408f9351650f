"""The retry policy on its own: exact call counts with an injected sleep."""

from __future__ import annotations

import email.utils

import pytest
import requests

from airflow_provider_retl.hooks.retrying import (
    RetryPolicy,
    RetryStats,
    error_from_exception,
    parse_retry_after,
    request_surely_not_sent,
)
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
)

from .support import SleepRecorder


def run(policy: RetryPolicy, errors: list[BaseException | None], stats: RetryStats | None = None):
    """Call a function that raises ``errors`` in turn (None: succeed); return (result, calls)."""
    calls = []

    def call():
        calls.append(1)
        error = errors[len(calls) - 1] if len(calls) <= len(errors) else None
        if error is not None:
            raise error
        return "ok"

    for attempt in policy.retrying(stats):
        with attempt:
            return call(), len(calls)
    raise AssertionError("unreachable")


def retryable(retry_after=None):
    return RetryableDestinationError("503", retry_after=retry_after, status=503)


class TestRetryPolicy:
    def test_retries_retryable_errors_until_success(self):
        sleep = SleepRecorder()
        stats = RetryStats()
        result, calls = run(RetryPolicy(max_attempts=5, sleep=sleep), [retryable(), retryable(), None], stats)
        assert (result, calls) == ("ok", 3)
        assert len(sleep.calls) == 2
        assert stats.retries == 2

    def test_stops_after_max_attempts_and_reraises_the_error(self):
        sleep = SleepRecorder()
        policy = RetryPolicy(max_attempts=4, sleep=sleep)
        calls = []

        def always_fails():
            calls.append(1)
            raise retryable()

        with pytest.raises(RetryableDestinationError):
            for attempt in policy.retrying():
                with attempt:
                    always_fails()
        assert len(calls) == 4
        assert len(sleep.calls) == 3

    def test_retry_after_is_honoured(self):
        sleep = SleepRecorder()
        run(RetryPolicy(sleep=sleep), [retryable(retry_after=7), retryable(retry_after=0), None])
        assert sleep.calls == [7, 0]

    def test_backoff_is_exponential_with_jitter_and_capped(self):
        sleep = SleepRecorder()
        policy = RetryPolicy(max_attempts=7, initial_wait=1, max_wait=8, jitter=0.5, deadline=None, sleep=sleep)
        run(policy, [retryable()] * 6)
        for n, waited in enumerate(sleep.calls):
            base = min(8, 2**n)
            assert base <= waited <= base + 0.5

    @pytest.mark.parametrize(
        "error",
        [
            FatalDestinationError("401", status=401),
            BatchRejectedError("400", status=400),
            OutcomeUnknownError("lost", status=None),
            ValueError("a bug"),
        ],
        ids=["fatal", "rejected", "outcome-unknown", "other"],
    )
    def test_other_errors_are_not_retried(self, error):
        sleep = SleepRecorder()
        calls = []

        def fails():
            calls.append(1)
            raise error

        with pytest.raises(type(error)):
            for attempt in RetryPolicy(sleep=sleep).retrying():
                with attempt:
                    fails()
        assert len(calls) == 1
        assert sleep.calls == []

    def test_a_retry_after_beyond_the_policy_surfaces_at_once(self):
        sleep = SleepRecorder()
        with pytest.raises(RetryableDestinationError):
            run(RetryPolicy(max_retry_after=60, sleep=sleep), [retryable(retry_after=3600)])
        assert sleep.calls == []

    def test_deadline_stops_before_a_wait_that_would_cross_it(self):
        sleep = SleepRecorder()
        policy = RetryPolicy(max_attempts=100, deadline=10, sleep=sleep)
        with pytest.raises(RetryableDestinationError):
            run(policy, [retryable(retry_after=4)] * 100)
        assert sleep.calls == [4, 4]  # a third wait would end at 12 s

    def test_disabled_means_one_attempt(self):
        with pytest.raises(RetryableDestinationError):
            for attempt in RetryPolicy(sleep=SleepRecorder()).retrying(enabled=False):
                with attempt:
                    raise retryable()


class TestRetryAfter:
    @pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), (" 1.5 ", 1.5), ("0", 0.0), ("-3", 0.0)])
    def test_delta_seconds(self, value, seconds):
        assert parse_retry_after(value) == seconds

    def test_http_date(self):
        now = 1_700_000_000.0
        value = email.utils.formatdate(now + 30, usegmt=True)
        assert parse_retry_after(value, now=lambda: now) == pytest.approx(30)
        past = email.utils.formatdate(now - 30, usegmt=True)
        assert parse_retry_after(past, now=lambda: now) == 0

    @pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo"])
    def test_absent_or_garbled(self, value):
        assert parse_retry_after(value) is None


class TestClassification:
    def test_connect_timeout_was_surely_not_sent(self):
        assert request_surely_not_sent(requests.exceptions.ConnectTimeout("connect timed out"))

    def test_read_timeout_may_have_landed(self):
        exc = requests.exceptions.ReadTimeout("read timed out")
        assert not request_surely_not_sent(exc)
        assert type(error_from_exception(exc, idempotent=True, what="x")) is RetryableDestinationError
        assert type(error_from_exception(exc, idempotent=False, what="x")) is OutcomeUnknownError

    def test_refused_connection_is_retryable_even_for_a_create(self):
        cause = ConnectionRefusedError(111, "Connection refused")
        exc = requests.exceptions.ConnectionError(cause)
        assert type(error_from_exception(exc, idempotent=False, what="x")) is RetryableDestinationError
