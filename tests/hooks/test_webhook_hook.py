"""WebhookHook against the webhook receiver emulator (and a scripted server for odd answers)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pandas as pd
import pytest

from airflow_provider_retl.hooks.webhook import WebhookHook, sign
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import FatalDestinationError, OutcomeUnknownError
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import start_emulator

from .support import eventually, no_sleep

SECRET = "whsec-test-secret-42"


def users(*keys: str, **overrides) -> list[Record]:
    return [Record(key=k, fields={"email": f"{k}@example.com", "plan": overrides.get(k, "pro")}) for k in keys]


@pytest.fixture
def start_receiver(add_connection):
    running = []

    def start(*, conn_secret: str = SECRET, path: str = "/hooks/retl", extra: dict | None = None, **options):
        options.setdefault("secret", SECRET)
        receiver = start_emulator("webhook", **options)
        running.append(receiver)
        add_connection("webhook_default", "retl_webhook", receiver.url + path, conn_secret, **(extra or {}))
        return receiver

    yield start
    for receiver in running:
        receiver.stop()


@pytest.fixture
def wh(start_receiver):
    return start_receiver()


@pytest.fixture
def hook(wh):
    return WebhookHook(sync_id="users_to_crm", sleep=no_sleep)


class TestIdentity:
    def test_airflow_attributes_and_capabilities(self, add_connection):
        add_connection("webhook_default", "retl_webhook", "https://example.com/hook")
        hook = WebhookHook()
        assert (hook.conn_name_attr, hook.default_conn_name, hook.conn_type) == (
            "webhook_conn_id", "webhook_default", "retl_webhook")
        assert hook.webhook_conn_id == "webhook_default"
        assert hook.needs_lookup("users") is False
        assert hook.supports_upsert("users", "anything") and hook.supports_upsert("users", None)
        assert hook.supports_delete("users")
        assert hook.max_batch_size == 100
        assert hook.get_conn().headers.get("Authorization") is None  # the secret is never sent

    def test_signature_matches_the_protocol(self):
        body = b'{"a":1}'
        expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
        assert sign(SECRET, "1700000000", body) == f"sha256={expected}"


class TestDelivery:
    def test_signed_upsert_is_accepted_and_applied(self, wh, hook):
        outcomes = hook.upsert("users", users("ann", "bob"))
        assert all(o.ok for o in outcomes)
        assert [o.dest_id for o in outcomes] == [wh.emulator.record_id("ann"), wh.emulator.record_id("bob")]
        assert wh.emulator.records("users") == {
            "ann": {"email": "ann@example.com", "plan": "pro"},
            "bob": {"email": "bob@example.com", "plan": "pro"},
        }
        assert wh.emulator.signature_failures == 0
        [batch] = wh.emulator.batches
        assert (batch["sync"], batch["object"], batch["action"]) == ("users_to_crm", "users", "upsert")
        assert batch["size"] == 2
        assert batch["batch_id"] == batch["idempotency_key"]

    def test_the_idempotency_key_is_stable_so_a_resend_is_applied_once(self, wh, hook):
        first = hook.upsert("users", users("ann"))
        again = hook.upsert("users", users("ann"))
        assert first == again
        assert wh.emulator.batches_applied == 1 and wh.emulator.replays == 1
        assert hook.idempotency_key("users", "upsert", [{"key": "ann", "fields": {"a": 1, "b": 2}}]) == \
            hook.idempotency_key("users", "upsert", [{"fields": {"b": 2, "a": 1}, "key": "ann"}])
        hook.upsert("users", users("ann", ann="free"))  # other content: another key, applied
        assert wh.emulator.batches_applied == 2

    def test_lost_response_is_resent_and_deduplicated_by_the_receiver(self, wh, hook):
        wh.faults.fail_next(1, "lost_response")
        outcomes = hook.upsert("users", users("ann"))
        assert outcomes[0].ok and outcomes[0].dest_id == wh.emulator.record_id("ann")
        assert wh.emulator.batches_applied == 1 and wh.emulator.replays == 1
        assert hook.retry_count == 1

    def test_5xx_and_timeouts_are_retried(self, start_receiver):
        wh = start_receiver(extra={"timeout": 0.3})
        hook = WebhookHook(sleep=no_sleep)
        wh.faults.fail_next(2, "error")
        wh.faults.update(slow_seconds=1.0)
        wh.faults.fail_next(1, "timeout")
        assert all(o.ok for o in hook.upsert("users", users("ann", "bob")))
        assert hook.retry_count == 3
        assert eventually(lambda: wh.emulator.batches_applied == 1)

    def test_per_record_failures_keep_their_reasons(self, start_receiver):
        wh = start_receiver(reject_marker="BANNED")
        outcomes = WebhookHook(sleep=no_sleep).upsert("users", users("ann", "bob", "cy", bob="BANNED"))
        assert [o.ok for o in outcomes] == [True, False, True]
        assert outcomes[1].reason == "rejected: a field contains 'BANNED'"
        assert set(wh.emulator.records("users")) == {"ann", "cy"}

    def test_a_4xx_rejects_the_batch_with_status_and_excerpt(self, wh, hook):
        outcomes = hook.upsert("users", [Record(key="", fields={}), *users("ann")])
        assert [o.ok for o in outcomes] == [False, False]
        assert outcomes[0].code == "400"
        assert outcomes[0].reason.startswith("webhook receiver answered 400:") and "key must be" in outcomes[0].reason

    def test_delete_by_the_ids_the_receiver_returned(self, wh, hook):
        ids = [o.dest_id for o in hook.upsert("users", users("ann", "bob"))]
        outcomes = hook.delete("users", [ids[0], None])
        assert outcomes[0].ok and outcomes[0].dest_id == ids[0]
        assert not outcomes[1].ok and "never returned an id" in outcomes[1].reason
        assert wh.emulator.deleted_ids == [ids[0]]
        assert set(wh.emulator.records("users")) == {"bob"}

    def test_batches_follow_batch_size(self, start_receiver, tmp_path):
        # The engine cuts batches of the hook's max_batch_size (the connection's batch_size); one call each.
        wh = start_receiver(extra={"batch_size": 2})
        hook = WebhookHook(sync_id="sizes", sleep=no_sleep)
        assert hook.max_batch_size == 2
        frame = pd.DataFrame({"key": ["a", "b", "c", "d", "e"], "name": ["a", "b", "c", "d", "e"]})
        config = SyncConfig(sync_id="sizes", object="users", primary_key="key", mode="upsert")
        report = run_sync([frame], hook, FileCheckpointStore(tmp_path / "ck.parquet"), config)
        assert report.rejected == 0 and set(wh.emulator.records("users")) == {"a", "b", "c", "d", "e"}
        assert sorted(b["size"] for b in wh.emulator.batches) == [1, 2, 2]

    def test_an_answer_without_results_means_all_ok_ids_unknown(self, server, add_connection):
        server.then((204, {}, b""), (200, {}, b'{"results": [{"ok": true}]}'))
        add_connection("webhook_default", "retl_webhook", server.url, SECRET)
        hook = WebhookHook(sync_id="s", sleep=no_sleep)
        outcomes = hook.upsert("users", users("ann", "bob"))
        assert [(o.ok, o.dest_id) for o in outcomes] == [(True, None), (True, None)]
        seen = server.seen[0]
        body = json.loads(seen.body)
        assert body["records"] == [{"key": "ann", "fields": {"email": "ann@example.com", "plan": "pro"}},
                                   {"key": "bob", "fields": {"email": "bob@example.com", "plan": "pro"}}]
        assert seen.headers["Idempotency-Key"] == body["batch_id"]
        assert seen.headers["X-Retl-Signature"] == sign(SECRET, seen.headers["X-Retl-Timestamp"], seen.body)
        # One result for two records breaks the contract: the batch's outcome is unknown (issue 15, class 7).
        with pytest.raises(OutcomeUnknownError, match="1 entries for 2 records"):
            hook.upsert("users", users("cy", "dee"))


class TestSecretsAndConnectionTest:
    def test_wrong_secret_is_fatal_and_not_retried(self, start_receiver):
        wh = start_receiver(conn_secret="whsec-wrong-secret-00")
        hook = WebhookHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError) as info:
            hook.upsert("users", users("ann"))
        assert info.value.status == 401
        assert "whsec-wrong-secret-00" not in str(info.value)
        assert wh.emulator.signature_failures == 1

    def test_connection_test_sends_a_signed_ping(self, wh, hook):
        assert hook.test_connection() == (True, f"Connected to Webhook at {wh.url}/...")  # the path may be secret
        assert wh.emulator.stats.pings == 1

    def test_connection_test_with_a_wrong_secret(self, start_receiver):
        start_receiver(conn_secret="whsec-wrong-secret-00")
        ok, message = WebhookHook().test_connection()
        assert not ok and "401" in message and "signature does not match" in message


def test_a_secret_in_the_webhook_path_stays_out_of_messages(add_connection):
    add_connection("slackish", "retl_webhook", "https://hooks.example.com/services/T00/B00/XyZsecret", SECRET)
    hook = WebhookHook("slackish")
    hook.get_conn()
    assert "XyZsecret" not in repr(hook)
    assert hook.display_url == "https://hooks.example.com/..."
    assert "XyZsecret" not in hook._call_name("POST", hook.base_url)
