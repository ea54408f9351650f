"""A webhook 2xx whose ``results`` is not the documented list is an UNKNOWN outcome (issue 15, class 7).

The contract (hooks/webhook.py, README): an empty 2xx body means every record was applied;
any other body must be ``{"results": [{"ok": true, "id": ...} | {"ok": false, "error": ...}]}``,
one entry per record in request order. Before, a body without ``results`` (or with too few)
counted as success, so the rows were checkpointed as sent although the receiver may have
applied none of them. Now the call raises ``OutcomeUnknownError``: the engine stops without
checkpointing the batch, and the next try re-sends it under the same idempotency key.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from airflow_provider_retl.hooks.webhook import WebhookHook
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import OutcomeUnknownError
from airflow_provider_retl.sync.records import Record

from .support import no_sleep

SECRET = "whsec-contract-secret-77"
JSON = {"Content-Type": "application/json"}


def records(*keys: str) -> list[Record]:
    return [Record(key=k, fields={"email": f"{k}@example.com"}) for k in keys]


@pytest.fixture
def hook(server, add_connection):
    add_connection("webhook_default", "retl_webhook", f"{server.url}/hooks/in", SECRET, max_retries=0)
    return WebhookHook(sync_id="contract", sleep=no_sleep)


OFF_CONTRACT = {
    "empty object": (JSON, b"{}", "no 'results'"),
    "other fields": (JSON, b'{"status": "ok", "received": 2}', "no 'results'"),
    "results null": (JSON, b'{"results": null}', "'results' is a NoneType"),
    "results object": (JSON, b'{"results": {"ok": true}}', "'results' is a dict"),
    "results string": (JSON, b'{"results": "ok"}', "'results' is a str"),
    "too few": (JSON, b'{"results": [{"ok": true, "id": "1"}]}', "1 entries for 2 records"),
    "too many": (JSON, b'{"results": [{"ok": true}, {"ok": true}, {"ok": true}]}', "3 entries for 2 records"),
    "empty list": (JSON, b'{"results": []}', "0 entries for 2 records"),
    "item not an object": (JSON, b'{"results": [{"ok": true}, "ok"]}', "results[1] is a str"),
    "item without ok": (JSON, b'{"results": [{"ok": true}, {"id": "2"}]}', "results[1] has no boolean 'ok'"),
    "ok not a boolean": (JSON, b'{"results": [{"ok": "yes"}, {"ok": true}]}', "results[0] has no boolean 'ok'"),
    "id not a string": (JSON, b'{"results": [{"ok": true, "id": {"x": 1}}, {"ok": true}]}', "results[0] has an 'id'"),
    "a JSON list": (JSON, b'[{"ok": true}, {"ok": true}]', "not a JSON object"),
    "plain text": ({"Content-Type": "text/plain"}, b"OK", "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(OFF_CONTRACT))
def test_a_2xx_outside_the_contract_is_an_unknown_outcome(case, hook, server):
    headers, body, problem = OFF_CONTRACT[case]
    server.then((200, headers, body))
    with pytest.raises(OutcomeUnknownError) as info:
        hook.upsert("users", records("ann", "bob"))
    message = str(info.value)
    assert problem in message
    assert "unknown" in message and "results" in message
    assert info.value.status == 200 and info.value.response is not None
    assert len(server.seen) == 1  # not retried blindly within the call
    assert "/hooks/in" not in message  # the URL's path may be a secret


@pytest.mark.parametrize("status", [200, 201, 202])
def test_a_2xx_with_documented_results_gives_per_record_outcomes(status, hook, server):
    server.then((status, JSON, b'{"results": [{"ok": true, "id": "7"}, {"ok": false, "error": "bad plan"}]}'))
    outcomes = hook.upsert("users", records("ann", "bob"))
    assert [(o.ok, o.dest_id, o.reason) for o in outcomes] == [(True, "7", None), (False, None, "bad plan")]


@pytest.mark.parametrize("status", [200, 202, 204])
def test_an_empty_2xx_body_is_documented_as_all_applied(status, hook, server):
    server.then((status, {}, b""))
    outcomes = hook.upsert("users", records("ann", "bob"))
    assert [(o.ok, o.dest_id) for o in outcomes] == [(True, None), (True, None)]


def test_a_delete_answered_off_contract_is_unknown_too(hook, server):
    server.then((200, JSON, b'{"deleted": 2}'))
    with pytest.raises(OutcomeUnknownError, match="no 'results'"):
        hook.delete("users", ["id-1", "id-2"])


def test_the_run_does_not_checkpoint_the_batch_and_the_next_try_resends_it_under_the_same_key(
    hook, server, tmp_path
):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "plan": ["pro", "free", "pro"]})
    config = SyncConfig(sync_id="contract", object="users", primary_key="id", mode="upsert")
    store = FileCheckpointStore(tmp_path / "ck.parquet")

    server.then((200, JSON, b'{"status": "accepted"}'))
    with pytest.raises(OutcomeUnknownError):
        run_sync([frame], hook, store, config)
    first = server.seen[-1]
    assert json.loads(first.body)["records"][0]["key"] == "a"

    # The retry: nothing was checkpointed, so the same batch goes out again with the same key,
    # and a receiver that already applied it answers its stored result instead of applying twice.
    server.then((200, JSON, b'{"results": [{"ok": true, "id": "1"}, {"ok": true, "id": "2"}, {"ok": true, "id": "3"}]}'))
    retry = WebhookHook(sync_id="contract", sleep=no_sleep)
    report = run_sync([frame], retry, FileCheckpointStore(tmp_path / "ck.parquet"), config)
    second = server.seen[-1]
    assert json.loads(second.body)["records"] == json.loads(first.body)["records"]
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert report.upserted + report.created == 3 and report.rejected == 0

    # And only now is the batch checkpointed: a third run sends nothing.
    requests_before = len(server.seen)
    again = run_sync([frame], WebhookHook(sync_id="contract", sleep=no_sleep),
                     FileCheckpointStore(tmp_path / "ck.parquet"), config)
    assert again.pushed == 0 and len(server.seen) == requests_before
