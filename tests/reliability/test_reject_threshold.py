"""No silent success: too many rejects fail the run after committing what succeeded; rejects are grouped.

The real engine with the HubSpot hook and emulator, and one real ``dag.test()`` run of the
operator (the task fails at once, without Airflow retries, and still pushes its report).
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import DEFAULT_MAX_REJECT_RATIO, SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import GuardrailTripped, RejectRatioExceeded
from airflow_provider_retl.sync.records import REJECT_EXAMPLES_PER_REASON, SyncReport
from airflow_provider_retl.testing.emulators import start_emulator


def rows(good: int, bad: int) -> pd.DataFrame:
    emails = [f"good{i}@example.com" for i in range(good)] + [f"bad{i} at example.com" for i in range(bad)]
    return pd.DataFrame({"email": emails, "firstname": "F"})


def sync(hook, store, frame, **kw):
    config = SyncConfig(
        **{"sync_id": "rejects", "object": "contacts", "primary_key": "email", "commit_interval": 0, **kw}
    )
    seen = []
    report = run_sync([frame], hook, store, config, on_reject=seen.append)
    return report, seen


def test_the_default_threshold_fails_a_mostly_rejected_run_after_committing_the_rest(hook, hubspot):
    assert DEFAULT_MAX_REJECT_RATIO == 0.5
    store = MemoryCheckpointStore()
    with pytest.raises(RejectRatioExceeded, match="6 of 10 rows rejected") as caught:
        sync(hook, store, rows(4, 6))
    assert caught.value.report.created == 4 and caught.value.report.rejected == 6
    assert len(hubspot.emulator.records("contacts")) == 4
    # The four accepted rows were checkpointed: the next run (data fixed) sends only the six.
    report, _ = sync(hook, store, rows(10, 0))
    assert report.unchanged == 4 and report.created == 6


def test_rejects_of_the_destination_fail_the_run_after_committing_the_rest(hook, hubspot):
    # Valid locally, refused by HubSpot (not one of the stage's options): known only after sending.
    store = MemoryCheckpointStore()
    frame = rows(10, 0).assign(lifecyclestage=["lead"] * 4 + ["no-such-stage"] * 6)
    with pytest.raises(RejectRatioExceeded, match="6 of 10 rows rejected") as caught:
        sync(hook, store, frame)
    assert caught.value.report.created == 4 and len(store.load()) == 4
    assert len(hubspot.emulator.records("contacts")) == 4


def test_the_check_before_sending_is_opt_in_and_then_sends_nothing(hook, hubspot):
    store = MemoryCheckpointStore()
    with pytest.raises(GuardrailTripped, match="6 of 10 rows are rejected before sending"):
        sync(hook, store, rows(4, 6), max_reject_ratio_before_send=0.5)
    assert hubspot.emulator.request_count() == 0 and store.load() is None


def test_every_row_rejected_is_not_a_success(hook):
    with pytest.raises(RejectRatioExceeded, match="10 of 10"):
        sync(hook, MemoryCheckpointStore(), rows(0, 10))


def test_a_ratio_of_one_disables_the_check_and_half_is_still_allowed(hook):
    report, _ = sync(hook, MemoryCheckpointStore(), rows(0, 10), max_reject_ratio=1.0)
    assert report.rejected == 10
    report, _ = sync(hook, MemoryCheckpointStore(), rows(5, 5))  # exactly the default share: allowed
    assert report.rejected == 5 and report.created == 5


def test_identical_rejects_are_grouped_with_counts_and_examples(hook, caplog):
    store = MemoryCheckpointStore()
    frame = pd.concat([rows(2, 1001), pd.DataFrame({"email": [None, None], "firstname": "F"})], ignore_index=True)
    with caplog.at_level("INFO", logger="airflow_provider_retl.sync"):
        report, seen = sync(hook, store, frame, max_reject_ratio=1.0)
    assert report.rejected == 1003 and len(seen) == 1003  # on_reject (the rejects table) sees every one
    groups = {g["reason"]: g for g in report.reject_reasons}
    invalid = next(g for reason, g in groups.items() if "email" in reason.lower() and g["count"] == 1001)
    assert invalid["stage"] == "validation" and len(invalid["examples"]) == REJECT_EXAMPLES_PER_REASON
    null = next(g for g in groups.values() if g["count"] == 2)
    assert "NULL" in null["reason"] and null["examples"] == ["NULL", "NULL"]
    # Examples, not the whole list: 10 of the 1,001 plus the 2 NULL keys.
    assert len(report.rejects) == REJECT_EXAMPLES_PER_REASON + 2
    data = report.to_dict()
    assert data["rejects_truncated"] is True and SyncReport.from_dict(data).reject_reasons == report.reject_reasons
    summary = report.summary()
    assert "1001 rejected [validation]" in summary and summary.count("bad") <= 5
    assert "1001 rejected" in caplog.text and "bad500 at example.com" not in caplog.text


DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=2, **{kwargs!r})
"""


def test_a_dag_whose_rows_are_all_rejected_fails_without_retries(dag_runner, tmp_path, set_connection):
    from tests.dags.warehouses import customers, make_warehouse

    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(12))
    with start_emulator("hubspot", tokens=["pat-rejects-1"], rate_limit=None) as running:
        set_connection("hubspot_rejects", "retl_hubspot", host=running.url, password="pat-rejects-1")
        dag_id = f"rejects_{uuid.uuid4().hex[:10]}"
        kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": f"select replace(email, '@', ' at ') as email, firstname from {warehouse.table}",
            "destination_conn_id": "hubspot_rejects",
            "object": "contacts",
            "primary_key": "email",
            "checkpoint": "variable",
        }
        result = dag_runner.run_dag(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs), dag_id)
        assert not result.succeeded, result
        task = result.task("sync")
        assert task.state == "failed" and len(task.tries) == 1  # no retry: bad data stays bad
        report = task.xcoms["sync_report"]
        assert report["rejected"] == 12 and report["pushed"] == 0
        assert [g["count"] for g in report["reject_reasons"]] == [12]
        assert running.emulator.records("contacts") == []
