"""DestinationHook: connection -> session, typed errors, retries on the wire, secrets, bisect.

Transport tests use a real local HTTP server (``ScriptedServer``) and an injected no-op sleep.
"""

from __future__ import annotations

import email.utils
import pickle
import time

import pytest
import requests

from airflow_provider_retl.hooks import destination as destination_module
from airflow_provider_retl.hooks.destination import DestinationHook
from airflow_provider_retl.hooks.ratelimit import RollingWindowLimiter
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    ConfigurationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
)
from airflow_provider_retl.sync.records import Outcome, Record

from .support import TOKEN, SleepRecorder, closed_port_url, no_sleep

JSON = {"Content-Type": "application/json"}


def hook_for(url: str, add_connection, conn_id: str = "dest", **kwargs) -> DestinationHook:
    extra = kwargs.pop("extra", {})
    add_connection(conn_id, "retl_destination", url, **extra)
    kwargs.setdefault("sleep", no_sleep)
    return DestinationHook(conn_id, **kwargs)


class TestConfiguration:
    def test_full_url_bare_host_port_and_default_host(self, add_connection, monkeypatch):
        assert hook_for("http://127.0.0.1:9/api/", add_connection).get_conn() and True
        hook = hook_for("http://127.0.0.1:9/api/", add_connection)
        hook.get_conn()
        assert hook.base_url == "http://127.0.0.1:9/api"

        hook = hook_for("api.example.com", add_connection)
        hook.get_conn()
        assert hook.base_url == "https://api.example.com"

        monkeypatch.setenv("AIRFLOW_CONN_PORTED", '{"conn_type": "x", "host": "h.example.com", "port": 8443}')
        hook = DestinationHook("ported")
        hook.get_conn()
        assert hook.base_url == "https://h.example.com:8443"

        class Vendor(DestinationHook):
            default_host = "https://api.vendor.test"

        add_connection("nohost", "x", None)
        hook = Vendor("nohost")
        hook.get_conn()
        assert hook.base_url == "https://api.vendor.test"

    def test_no_host_and_no_default_is_a_configuration_error(self, add_connection):
        add_connection("nohost", "x", None)
        with pytest.raises(ConfigurationError, match="no host"):
            DestinationHook("nohost").get_conn()

    def test_extras_configure_the_session_and_knobs(self, add_connection):
        extra = {
            "timeout": [3, 30],
            "verify": "false",
            "proxies": {"https": "http://proxy:3128"},
            "headers": {"X-Team": "data"},
            "rate_limit": 190,
            "rate_window": "10",
            "max_retries": 2,
            "max_concurrency": 8,
            "batch_size": 50,
        }
        hook = hook_for("http://127.0.0.1:9", add_connection, extra=extra)
        session = hook.get_conn()
        assert hook.timeout == (3.0, 30.0)
        assert session.verify is False
        assert session.proxies["https"] == "http://proxy:3128"
        assert session.headers["X-Team"] == "data"
        assert session.headers["Authorization"] == f"Bearer {TOKEN}"
        assert (hook.limiter.limit, hook.limiter.window) == (190, 10.0)
        assert hook.retry_policy.max_attempts == 3
        assert (hook.max_concurrency, hook.max_batch_size) == (8, 50)
        assert isinstance(hook, Destination)

    def test_caller_options_beat_extras_and_extras_are_not_mutated(self, add_connection):
        extra = {"timeout": 5, "batch_size": 50, "extra__retl_destination__max_concurrency": 3}
        hook = hook_for("http://127.0.0.1:9", add_connection, extra=extra, timeout=(1, 2), batch_size=20)
        before = dict(hook.connection.extra_dejson)
        hook.get_conn()
        assert hook.timeout == (1.0, 2.0)
        assert hook.max_batch_size == 20
        assert hook.max_concurrency == 3  # the prefixed spelling of older forms works too
        assert hook.connection.extra_dejson == before

    def test_batch_size_is_capped_at_the_api_limit(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection, extra={"batch_size": 1000})
        assert hook.max_batch_size == DestinationHook.api_batch_limit

    @pytest.mark.parametrize("extra", [{"rate_limit": "many"}, {"max_retries": -1}, {"timeout": [1, 2, 3]},
                                       {"proxies": "http://proxy"}])
    def test_bad_extras_are_configuration_errors(self, add_connection, extra):
        with pytest.raises(ConfigurationError):
            hook_for("http://127.0.0.1:9", add_connection, extra=extra).get_conn()

    def test_the_injected_adapter_is_mounted(self, add_connection):
        adapter = requests.adapters.HTTPAdapter()
        session = hook_for("http://127.0.0.1:9", add_connection, adapter=adapter).get_conn()
        assert session.get_adapter("https://x") is adapter
        assert session.get_adapter("http://x") is adapter

    def test_the_session_is_built_once(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection)
        assert hook.get_conn() is hook.get_conn()

    def test_hooks_of_one_account_share_a_limiter(self, add_connection):
        a = hook_for("http://127.0.0.1:9", add_connection, "one", extra={"rate_limit": 10})
        b = hook_for("http://127.0.0.1:9", add_connection, "two", extra={"rate_limit": 10})
        add_connection("other", "x", "http://127.0.0.1:9", password="another-token-123", rate_limit=10)
        c = DestinationHook("other")
        assert a.limiter is b.limiter  # same base URL and token: same account
        assert a.limiter is not c.limiter

    def test_the_token_is_registered_with_the_masker(self, add_connection, monkeypatch):
        masked = []
        monkeypatch.setattr(destination_module, "mask_secret", lambda secret, name=None: masked.append(secret))
        hook_for("http://127.0.0.1:9", add_connection).get_conn()
        # The token, then its fragments (issue 15: a token cut short is still masked in the logs).
        assert masked == [TOKEN, [TOKEN[i : i + 8] for i in range(len(TOKEN) - 7) if not TOKEN[i : i + 8].isalpha()]]

    def test_repr_names_the_connection_not_the_token(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection)
        hook.get_conn()
        assert repr(hook) == "<DestinationHook destination_conn_id='dest' url='http://127.0.0.1:9'>"


class TestDefaults:
    def test_capabilities_say_no_and_writes_name_destination_and_capability(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection)
        assert hook.supports_upsert("contacts", "email") is False
        assert hook.supports_delete("contacts") is False
        assert hook.needs_lookup("contacts") is True
        assert hook.default_match_field("contacts") is None
        assert hook.validate("contacts", {"email": "x"}) == []
        for call, args in [
            (hook.upsert, ("contacts", [], "email")),
            (hook.lookup, ("contacts", "email", [])),
            (hook.create, ("contacts", [])),
            (hook.update, ("contacts", [])),
            (hook.delete, ("contacts", [])),
        ]:
            with pytest.raises(NotImplementedError, match=rf"Reverse ETL destination .* {call.__name__} of 'contacts'"):
                call(*args)

    def test_base_has_no_connection_test(self, add_connection):
        assert hook_for("http://127.0.0.1:9", add_connection).test_connection() == (
            False,
            "Reverse ETL destination has no connection test",
        )


class TestRetriesOnTheWire:
    def test_5xx_on_an_idempotent_call_is_retried(self, server, add_connection):
        server.then((503, {}, b"{}"), (502, {}, b"{}"), (200, JSON, b'{"ok": true}'))
        hook = hook_for(server.url, add_connection)
        assert hook.request("GET", "/thing").json() == {"ok": True}
        assert (len(server.seen), hook.request_count, hook.retry_count) == (3, 3, 2)

    def test_attempts_stop_at_max_retries_plus_one(self, server, add_connection):
        server.script.default = (500, {}, b'{"message": "boom"}')
        hook = hook_for(server.url, add_connection, max_retries=3)
        with pytest.raises(RetryableDestinationError) as info:
            hook.request("PUT", "/thing", json={"a": 1})
        assert len(server.seen) == 4
        assert info.value.status == 500
        assert info.value.response.json() == {"message": "boom"}

    def test_429_waits_what_retry_after_says(self, server, add_connection):
        when = email.utils.formatdate(time.time() + 20, usegmt=True)
        server.then((429, {"Retry-After": "7"}, b"{}"), (429, {"Retry-After": when}, b"{}"), (200, JSON, b"{}"))
        sleep = SleepRecorder()
        hook = hook_for(server.url, add_connection, sleep=sleep)  # no rate limit: nothing else pauses
        hook.request("POST", "/things", json={}, idempotent=False)  # 429: surely not applied
        assert len(server.seen) == 3
        assert sleep.calls[0] == 7
        assert 18 <= sleep.calls[1] <= 20

    def test_429_with_retry_after_pauses_the_shared_limiter(self, server, add_connection):
        server.then((429, {"Retry-After": "30"}, b"{}"), (200, JSON, b"{}"))
        clock = [100.0]
        limiter = RollingWindowLimiter(
            100, 1.0, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s)
        )
        hook = hook_for(server.url, add_connection, limiter=limiter)
        hook.request("GET", "/things")
        assert clock[0] == pytest.approx(130.0)  # the retry waited for the pause every task sees

    def test_5xx_on_a_create_is_outcome_unknown_and_not_resent(self, server, add_connection):
        server.then((503, {}, b"{}"))
        hook = hook_for(server.url, add_connection)
        with pytest.raises(OutcomeUnknownError) as info:
            hook.request("POST", "/things", json={"a": 1})
        assert len(server.seen) == 1
        assert info.value.response.status_code == 503

    def test_reset_after_sending_a_create_is_outcome_unknown(self, server, add_connection):
        server.then("reset")
        hook = hook_for(server.url, add_connection)
        with pytest.raises(OutcomeUnknownError, match="may or may not have been applied"):
            hook.request("POST", "/things", json={"a": 1})
        assert len(server.seen) == 1

    def test_reset_on_an_idempotent_call_is_retried(self, server, add_connection):
        server.then("reset", (200, JSON, b"{}"))
        hook = hook_for(server.url, add_connection)
        hook.request("POST", "/things/batch/update", json={"a": 1}, idempotent=True)
        assert len(server.seen) == 2

    def test_read_timeout_on_a_create_is_outcome_unknown(self, server, add_connection):
        server.then(("sleep", 0.5, (200, JSON, b"{}")))
        hook = hook_for(server.url, add_connection, timeout=(1, 0.1))
        with pytest.raises(OutcomeUnknownError):
            hook.request("POST", "/things", json={"a": 1})

    def test_refused_connection_is_retried_even_for_a_create(self, add_connection):
        hook = hook_for(closed_port_url(), add_connection, max_retries=2)
        with pytest.raises(RetryableDestinationError, match="nothing was sent") as info:
            hook.request("POST", "/things", json={"a": 1})
        assert type(info.value) is RetryableDestinationError
        assert hook.request_count == 3

    def test_garbled_json_is_resent_when_idempotent_and_unknown_for_a_create(self, server, add_connection):
        server.then((200, JSON, b'{"results": ['), (200, JSON, b'{"results": []}'))
        hook = hook_for(server.url, add_connection)
        assert hook.response_json(hook.request("GET", "/things")) == {"results": []}
        server.then((200, JSON, b'{"results": ['))
        with pytest.raises(OutcomeUnknownError):
            hook.request("POST", "/things", json={})

    def test_401_is_fatal_not_retried_and_never_shows_the_token(self, server, add_connection):
        server.then((401, {}, f'{{"message": "bad token {TOKEN}"}}'.encode()))
        hook = hook_for(server.url, add_connection)
        with pytest.raises(FatalDestinationError) as info:
            hook.request("GET", "/things")
        err = info.value
        assert len(server.seen) == 1
        assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
        assert err.status == 401 and err.response.status_code == 401
        for text in (str(err), repr(err), repr(hook), repr(err.response.request.headers)):
            assert TOKEN not in text
        assert TOKEN.encode() not in pickle.dumps(err.request.headers)

    def test_the_token_stays_out_of_retry_logs_even_when_a_server_echoes_it(
        self, server, add_connection, monkeypatch, capfd, caplog
    ):
        monkeypatch.setattr(destination_module, "mask_secret", lambda secret, name=None: None)  # our own redaction
        echo = f'{{"message": "upstream said Bearer {TOKEN}"}}'.encode()
        server.then((500, {}, echo), (502, {}, echo), (200, JSON, b"{}"))
        hook = hook_for(server.url, add_connection)
        hook.request("GET", "/things")
        out, err = capfd.readouterr()
        assert hook.retry_count == 2 and "retry 2" in out + err + caplog.text
        assert TOKEN not in out + err + caplog.text

    def test_the_token_is_masked_by_airflows_masker(self, add_connection):
        from airflow.sdk.log import redact

        token = "pat-na1-only-for-the-masker-test-5551"
        add_connection("masked", "x", "http://127.0.0.1:9", password=token)
        DestinationHook("masked").get_conn()
        assert token not in str(redact(f"Authorization: Bearer {token}"))

    def test_other_4xx_rejects_the_batch_with_the_response(self, server, add_connection):
        server.then((400, {}, b'{"category": "VALIDATION_ERROR", "message": "bad input"}'))
        hook = hook_for(server.url, add_connection)
        with pytest.raises(BatchRejectedError, match="VALIDATION_ERROR: bad input") as info:
            hook.request("POST", "/things", json={}, idempotent=True)
        assert info.value.response.status_code == 400
        assert len(server.seen) == 1

    def test_accepted_statuses_are_returned(self, server, add_connection):
        server.then((404, {}, b"{}"))
        assert hook_for(server.url, add_connection).request("GET", "/x", accept=(404,)).status_code == 404


class TestBisect:
    def test_isolates_each_bad_record_with_its_own_reason(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection)
        calls = []

        def send(items):
            calls.append(list(items))
            bad = [i for i in items if i in (3, 6)]
            if bad:
                raise BatchRejectedError(f"record {bad[0]} is bad", status=400)
            return [Outcome.success(str(i)) for i in items]

        outcomes = hook.bisect(list(range(8)), send)
        assert [o.ok for o in outcomes] == [True, True, True, False, True, True, False, True]
        assert [o.reason for o in outcomes if not o.ok] == ["record 3 is bad", "record 6 is bad"]
        assert [o.dest_id for o in outcomes if o.ok] == ["0", "1", "2", "4", "5", "7"]
        assert len(calls) < 2 * 8

    def test_a_refusal_that_is_not_about_records_is_raised(self, add_connection):
        hook = hook_for("http://127.0.0.1:9", add_connection)

        def send(items):
            raise BatchRejectedError("nope", status=404)

        with pytest.raises(BatchRejectedError):
            hook.bisect([1, 2], send)


def test_records_are_plain_dataclasses():
    assert Record(key="k", fields={}).dest_id is None
