"""A sync split into hash partitions with ``.partial().expand(partition=partitions(3))``, run by dag.test().

Three mapped task instances each own a third of the keys and keep their own checkpoint;
the HubSpot emulator's state must be exactly the source, with no key sent twice.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun

TOKEN = "pat-partition-token-1234"
N = 3

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl import ReverseETLOperator, partitions

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator.partial(task_id="sync", **{kwargs!r}).expand(partition=partitions({n}))
"""


def owner(email: str) -> int:
    """The partition of an email key: the engine's key hash of the case-folded key, mod N."""
    return int(fp.key_hashes(fp.fold_case(np.array([email], dtype=object)))[0] % np.uint64(N))


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_part", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


def contacts_in(hubspot, *, include_archived: bool = False) -> list[dict]:
    return hubspot.emulator.records("contacts", include_archived=include_archived)


@pytest.mark.parametrize("checkpoint", ["variable", "xcom"])
def test_partitions_sync_each_key_once_and_resync_only_the_changed_slice(
    dag_runner, hubspot, tmp_path, set_connection, checkpoint
):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(90))
    dag_id = f"part_{uuid.uuid4().hex[:10]}"
    kwargs = {
        "conn_id": warehouse.conn_id,
        "sql": warehouse.sql,
        "destination_conn_id": "hubspot_part",
        "object": "contacts",
        "primary_key": "email",
        "mode": "mirror",
        "checkpoint": checkpoint,
    }
    text = DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs, n=N)

    def run():
        result = dag_runner.run_dag(text, dag_id)
        assert result.succeeded, result
        reports = [result.return_value("sync", i) for i in range(N)]
        assert [r["partition"] for r in reports] == [f"{i}/{N}" for i in range(N)]
        return reports

    reports = run()
    emails = [c["properties"]["email"] for c in contacts_in(hubspot)]
    assert len(emails) == len(set(emails)) == 90 and set(emails) == set(warehouse.rows())
    assert [r["created"] for r in reports] == [sum(owner(e) == i for e in warehouse.rows()) for i in range(N)]
    assert all(0 < r["created"] < 90 for r in reports) and all(r["rows_read"] == 90 for r in reports)
    if checkpoint == "variable":
        assert sorted(dag_runner.variables(f"retl_checkpoint__{dag_id}.")) == [
            f"retl_checkpoint__{dag_id}.sync.{i}.p{i}of{N}" for i in range(N)
        ]

    changed = "user42@example.com"
    warehouse.execute("update {table} set company = 'Changed' where email = ?", [changed])
    requests_before = hubspot.emulator.request_count()
    reports = run()
    assert [r["pushed"] for r in reports] == [int(i == owner(changed)) for i in range(N)]
    assert reports[owner(changed)]["updated"] == 1 and sum(r["requests"] for r in reports) == 1
    assert hubspot.emulator.request_count() == requests_before + 1
    assert sum(r["unchanged"] for r in reports) == 89
    by_email = {c["properties"]["email"]: c["properties"] for c in contacts_in(hubspot)}
    assert by_email[changed]["company"] == "Changed"

    removed = "user7@example.com"
    warehouse.execute("delete from {table} where email = ?", [removed])
    reports = run()
    assert [r["deleted"] for r in reports] == [int(i == owner(removed)) for i in range(N)]
    archived = [c["properties"]["email"] for c in contacts_in(hubspot, include_archived=True) if c["archived"]]
    assert archived == [removed]
    emails = [c["properties"]["email"] for c in contacts_in(hubspot)]
    assert len(emails) == len(set(emails)) == 89 and set(emails) == set(warehouse.rows())
