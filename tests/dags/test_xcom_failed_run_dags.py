"""checkpoint="xcom": the DagRun after a run that failed for good resumes from its progress.

Real DAG runs (dag.test()) against the HubSpot emulator: the failed run's journal lives in
Airflow Variables, so the next DagRun does not send again what the failed run delivered.
"""

from __future__ import annotations

import pytest

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.test_sync_dags import TOKEN, Sync, assert_destination_equals_source
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun


@pytest.fixture
def hubspot(set_connection):
    # As in test_sync_dags.py: the "hubspot_test" connection that Sync uses.
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_test", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


def test_the_run_after_a_failed_run_sends_only_what_it_did_not_deliver(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(450))
    sync = Sync(dag_runner, warehouse, checkpoint="xcom", destination_params={"max_concurrency": 1})
    # 3 batches land, then 2 attempts in a row fail (max_retries=1): the only try fails part-way.
    hubspot.faults.fail_next(2, "error", after=3)
    failed, _ = sync.run(retries=0)
    assert failed.state == "failed", failed
    delivered = len(hubspot.emulator.records("contacts"))
    assert delivered >= 300

    requests_before = hubspot.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded, result
    # Only the rows the failed run did not deliver are sent: its committed batches are known.
    assert report["unchanged"] >= 300 and report["created"] == 450 - report["unchanged"]
    assert report["requests"] == hubspot.emulator.request_count() - requests_before <= 2
    assert_destination_equals_source(hubspot, warehouse)

    # And the run after that plans from the new base alone: nothing left to send.
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 450 and report["requests"] == 0
