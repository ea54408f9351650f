"""The webhook receiver: signatures, body shape, idempotent replays, per-record rejects."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import RunningEmulator, sign, signed_headers, start_emulator

SECRET = "s3cret"


def payload(action: str = "upsert", records: list[Any] | None = None, batch_id: str = "b1") -> dict[str, Any]:
    if records is None:
        records = [{"key": "k1", "fields": {"name": "Ann"}}, {"key": "k2", "fields": {"name": "Bob"}}]
    return {"sync": "users", "object": "user", "action": action, "batch_id": batch_id, "records": records}


def send(url: str, body: dict[str, Any], key: str = "idem-1", secret: str = SECRET, **kw: Any) -> requests.Response:
    raw = json.dumps(body).encode()
    return requests.post(url + "/hooks/retl", data=raw, headers=signed_headers(secret, raw, key), timeout=5, **kw)


class TestSignature:
    """HMAC signatures over timestamp and raw body."""

    def test_valid_signature_applies_the_batch(self, webhook: RunningEmulator) -> None:
        response = send(webhook.url, payload())
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["ok"] for r in results] == [True, True]
        assert webhook.emulator.records("user") == {"k1": {"name": "Ann"}, "k2": {"name": "Bob"}}
        assert webhook.emulator.batches_applied == 1

    def test_signature_is_hmac_sha256_of_timestamp_dot_body(self) -> None:
        import hashlib
        import hmac

        expected = hmac.new(b"k", b"1700000000." + b'{"a":1}', hashlib.sha256).hexdigest()
        assert sign("k", 1700000000, b'{"a":1}') == f"sha256={expected}"

    @pytest.mark.parametrize("problem", ["wrong-secret", "tampered", "missing", "stale"])
    def test_bad_signatures_are_401(self, webhook: RunningEmulator, problem: str) -> None:
        raw = json.dumps(payload()).encode()
        headers = signed_headers("other" if problem == "wrong-secret" else SECRET, raw, "k")
        if problem == "tampered":
            raw = raw.replace(b"Ann", b"Eve")
        if problem == "missing":
            del headers["X-Retl-Signature"]
        if problem == "stale":
            old = int(time.time()) - 3600
            headers.update({"X-Retl-Timestamp": str(old), "X-Retl-Signature": sign(SECRET, old, raw)})
        response = requests.post(webhook.url + "/x", data=raw, headers=headers, timeout=5)
        assert response.status_code == 401 and "error" in response.json()
        assert webhook.emulator.signature_failures == 1
        assert webhook.emulator.records() == {}


class TestBodyShape:
    """Bodies of the wrong shape are 400 with the offending path."""

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            (payload(action="merge"), "action"),
            ({**payload(), "sync": ""}, "sync"),
            (payload(records=[{"fields": {}}]), "records[0].key"),
            (payload(records=[{"key": "k", "fields": []}]), "records[0].fields"),
            (payload(action="delete", records=[{"key": "k"}]), "records[0].id"),
            ({**payload(), "records": {}}, "records"),
        ],
    )
    def test_wrong_shapes_are_400_with_a_path(self, webhook: RunningEmulator, body: dict, path: str) -> None:
        response = send(webhook.url, body)
        assert response.status_code == 400
        assert response.json()["path"] == path
        assert webhook.emulator.batches_applied == 0

    def test_missing_idempotency_key_is_400(self, webhook: RunningEmulator) -> None:
        raw = json.dumps(payload()).encode()
        headers = signed_headers(SECRET, raw, "k")
        del headers["Idempotency-Key"]
        assert requests.post(webhook.url + "/x", data=raw, headers=headers, timeout=5).status_code == 400

    def test_ping(self, webhook: RunningEmulator) -> None:
        response = send(webhook.url, payload(action="ping", records=[]))
        assert response.json() == {"results": []}
        assert webhook.emulator.stats.pings == 1 and webhook.emulator.batches_applied == 0


class TestIdempotency:
    """Idempotency-Key replays answer without applying twice."""

    def test_same_key_replays_the_stored_answer(self, webhook: RunningEmulator) -> None:
        first = send(webhook.url, payload(), key="batch-7")
        second = send(webhook.url, payload(), key="batch-7")
        assert first.json() == second.json()
        assert webhook.emulator.batches_applied == 1 and webhook.emulator.replays == 1
        assert webhook.emulator.stats.records_upserted == 2

    def test_same_key_with_another_body_is_422(self, webhook: RunningEmulator) -> None:
        send(webhook.url, payload(), key="batch-7")
        other = send(webhook.url, payload(records=[{"key": "k9", "fields": {}}]), key="batch-7")
        assert other.status_code == 422
        assert webhook.emulator.batches_applied == 1

    def test_lost_response_then_retry_applies_once(self, webhook: RunningEmulator) -> None:
        webhook.faults.fail_next(1, "lost_response")
        with pytest.raises(requests.ConnectionError):
            send(webhook.url, payload(), key="batch-9")
        retry = send(webhook.url, payload(), key="batch-9")
        assert retry.status_code == 200 and all(r["ok"] for r in retry.json()["results"])
        assert webhook.emulator.batches_applied == 1 and webhook.emulator.replays == 1

    def test_ids_are_stable_per_key(self, webhook: RunningEmulator) -> None:
        first = send(webhook.url, payload(), key="a").json()["results"]
        again = send(webhook.url, payload(records=[{"key": "k1", "fields": {"name": "Ann B"}}]), key="b").json()
        assert again["results"][0]["id"] == first[0]["id"]
        assert webhook.emulator.records("user")["k1"] == {"name": "Ann B"}
        assert webhook.emulator.record_id("k1") == first[0]["id"]


class TestRecordsAndRejects:
    """Stored records, deletes and per-record rejections."""

    def test_delete_removes_by_id_and_is_idempotent(self, webhook: RunningEmulator) -> None:
        ids = [r["id"] for r in send(webhook.url, payload(), key="a").json()["results"]]
        deleted = send(
            webhook.url, payload(action="delete", records=[{"key": "k1", "id": ids[0]}, {"key": None, "id": "nope"}]),
            key="b",
        )
        assert deleted.json()["results"] == [{"ok": True, "id": ids[0]}, {"ok": True, "id": "nope"}]
        assert webhook.emulator.records("user") == {"k2": {"name": "Bob"}}
        assert webhook.emulator.deleted_ids == [ids[0], "nope"]

    def test_marker_rejects_single_records(self, webhook: RunningEmulator) -> None:
        records = [{"key": "k1", "fields": {"name": "ok"}}, {"key": "k2", "fields": {"note": "REJECT-ME please"}}]
        results = send(webhook.url, payload(records=records)).json()["results"]
        assert results[0]["ok"] is True
        assert results[1]["ok"] is False and "REJECT-ME" in results[1]["error"]
        assert set(webhook.emulator.records("user")) == {"k1"}
        assert webhook.emulator.stats.records_rejected == 1

    def test_custom_reject_rule(self) -> None:
        def no_minors(record: dict) -> str | None:
            return "too young" if record["fields"].get("age", 99) < 18 else None

        with start_emulator("webhook", secret=SECRET, reject=no_minors) as hook:
            records = [{"key": "a", "fields": {"age": 30}}, {"key": "b", "fields": {"age": 12}}]
            results = send(hook.url, payload(records=records)).json()["results"]
            assert [r["ok"] for r in results] == [True, False]
            assert results[1]["error"] == "too young"
