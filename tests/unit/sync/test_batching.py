"""The engine isolates the bad records of a refused batch, once for every destination (sync.batching)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from airflow_provider_retl.sync.batching import isolate
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import BatchRejectedError
from airflow_provider_retl.sync.records import Outcome
from tests.unit.fakes import InMemoryDestination


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"email": [f"u{i}@example.com" for i in range(n)], "name": [f"N{i}" for i in range(n)]})


def _bad(fields) -> str | None:
    return "name is not allowed: BAD" if fields.get("name") == "BAD" else None


@pytest.mark.parametrize("upsert", [True, False], ids=["upsert", "lookup-create"])
def test_one_bad_record_in_a_batch_is_rejected_alone_and_the_rest_land(upsert):
    frame = _frame(100)
    frame.loc[37, "name"] = "BAD"
    dest = InMemoryDestination(upsert=upsert, batch=100, refuse_batch=_bad)
    config = SyncConfig(sync_id="s", object="contacts", primary_key="email", mode="upsert", max_reject_ratio=1.0)
    report = run_sync([frame], dest, MemoryCheckpointStore(), config)
    assert len(dest.records) == 99
    assert [r.key for r in report.rejects] == ["u37@example.com"]
    assert report.rejects[0].reason == "name is not allowed: BAD"
    assert report.rejects[0].code == "INVALID_BATCH"
    write = "upsert" if upsert else "create"
    # 1 refused call, then halves down to the bad record: about 2*log2(100) calls, not 100.
    assert dest.count(write) <= 1 + 2 * math.ceil(math.log2(100))


def test_a_refusal_that_is_not_about_one_record_is_not_split():
    calls = []

    def call(items):
        calls.append(len(items))
        raise BatchRejectedError("404 unknown list", status=404)

    with pytest.raises(BatchRejectedError):
        isolate(list(range(8)), call)
    assert calls == [8]


def test_every_record_refused_alone_gets_its_own_outcome_in_input_order():
    bad = {2, 5}

    def call(items):
        if bad & set(items):
            raise BatchRejectedError("400", status=400, reason=f"bad {sorted(bad & set(items))}")
        return [Outcome.success(str(i)) for i in items]

    outcomes = isolate(list(range(8)), call)
    assert [o.ok for o in outcomes] == [i not in bad for i in range(8)]
    assert [o.dest_id for o in outcomes if o.ok] == ["0", "1", "3", "4", "6", "7"]
    assert outcomes[2].reason == "bad [2]" and outcomes[5].reason == "bad [5]"
    assert outcomes[2].code == "400"
