"""A partitioned sync on a real CeleryExecutor cluster survives the loss of a worker.

Two ``airflow celery worker`` processes (2 slots each) run the four partitions of a
200k-row sync (PostgreSQL -> the HubSpot emulator, a process of its own). When about a
quarter of the rows have been sent, worker1 is SIGKILLed with every task it runs, as if
its machine died. The scheduler notices the missing task heartbeats, fails those tries
and retries them; worker2 runs the retries, which resume from the partitions'
checkpoints (Airflow Variables, in the metadata DB). The run must succeed with the
destination equal to the source, without duplicates, and without re-sending the
partitions from the start.

Opt-in (marker ``celery``): ``pytest -m celery tests/distributed``. ``make test`` runs it
in a pytest invocation of its own after the other suites.
"""

from __future__ import annotations

import time

import pytest

from tests.airflow_harness import connection_env
from tests.distributed.cluster import CeleryCluster, EmulatorProcess

pytestmark = [pytest.mark.celery, pytest.mark.postgres, pytest.mark.timeout(600)]

ROWS = 200_000
PARTITIONS = 4
TOKEN = "pat-cluster-token"
DAG_ID = "retl_cluster_sync"
UPSERT_ROUTE = "POST /crm/v3/objects/contacts/batch/upsert"
#: Kill worker1 once this many upsert calls (of ~ROWS / 100) have been answered.
KILL_AFTER_UPSERTS = ROWS // 100 // 4
COLUMNS = ("email", "firstname", "lastname", "company")
REPORT_FIELDS = ("partition", "rows_in_partition", "unchanged", "plan", "created", "updated", "requests", "seconds")

DAG = f"""
import datetime as dt

from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator, partitions

with DAG(
    dag_id={DAG_ID!r},
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    default_args={{"retries": 3, "retry_delay": dt.timedelta(seconds=2)}},
):
    ReverseETLOperator.partial(
        task_id="sync",
        conn_id="warehouse",
        sql="select email, firstname, lastname, company from customers",
        destination_conn_id="hubspot",
        object="contacts",
        primary_key="email",
        checkpoint="variable",
        sync_name="cluster_contacts",
    ).expand(partition=partitions({PARTITIONS}))
"""


def test_partitioned_sync_survives_a_killed_worker(pg_schema, tmp_path):
    pg_schema.execute(
        "create table customers as select 'user' || i || '@example.com' as email, 'First' || i as firstname, "
        "'Last' || i as lastname, 'Company ' || mod(i, 7) as company from generate_series(0, %s) as i",
        (ROWS - 1,),
    )
    source = {row[0]: row[1:] for row in pg_schema.execute(f"select {', '.join(COLUMNS)} from customers")}
    assert len(source) == ROWS

    hubspot_args = ["--token", TOKEN, "--rate-limit", "none"]
    with EmulatorProcess("hubspot", hubspot_args, log_path=tmp_path / "hubspot-emulator.log") as hubspot:
        env = dict(
            [
                connection_env("warehouse", "postgres", **pg_schema.connection_fields()),
                # No client-side rate limit: the emulator has none, and the test is about the cluster.
                connection_env("hubspot", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"rate_limit": 0}),
            ]
        )
        timeline = Timeline()
        with CeleryCluster(workers=2, concurrency=2, env=env, heartbeat_timeout=20) as cluster:
            timeline.mark(f"cluster up ({', '.join(f'{k} {v:.0f}s' for k, v in cluster.timings.items())})")
            cluster.add_dag_file(f"{DAG_ID}.py", DAG)
            cluster.wait_for_dag(DAG_ID)
            timeline.mark("DAG parsed")
            run_id = cluster.trigger(DAG_ID)
            timeline.mark("run triggered")
            watcher = KillWorker1MidRun(cluster, hubspot, timeline)
            state = cluster.wait_for_run(DAG_ID, run_id, timeout=420, on_poll=watcher)
            timeline.mark(f"run {state}")
            tries = cluster.try_history(DAG_ID, run_id)
            reports = {i: cluster.xcom(DAG_ID, run_id, "sync", i) for i in range(PARTITIONS)}
            killed, ran_on = watcher.killed, watcher.ran_on
            summary = (
                f"{timeline}\nkilled (map_index: try) {killed} at {watcher.upserts_at_kill} upsert calls; "
                f"tries ran on {ran_on}; try states {tries}; emulator log {hubspot.log_path}"
            )
            print(summary)
            for i, report in reports.items():
                print(f"partition {i}: {report and {k: report.get(k) for k in REPORT_FIELDS}}")

            assert killed, f"worker1 was never killed while running a partition: {summary}"
            assert state == "success", summary
            assert cluster.ping_workers(timeout=10) == ["worker2"]

            # The killed tries failed (no heartbeat) and a later try succeeded, on worker2.
            for map_index, killed_try in killed.items():
                history = tries[("sync", map_index)]
                assert (killed_try, "failed") in history, summary
                final_try, final_state = history[-1]
                assert final_try > killed_try and final_state == "success", summary
                assert ran_on.get((map_index, final_try)) == "worker2", summary

            # Every partition reported its own slice; together they cover the table once.
            assert sorted(r["partition"] for r in reports.values()) == [f"{i}/{PARTITIONS}" for i in range(PARTITIONS)]
            assert sum(r["rows_in_partition"] for r in reports.values()) == ROWS
            assert all(r["rejected"] == 0 for r in reports.values()), reports
            # A killed partition resumed from its checkpoint: its last try sent only what was left.
            for map_index in killed:
                report = reports[map_index]
                sent = sum(report["plan"].values())
                assert 0 < sent < report["rows_in_partition"], report
                assert report["unchanged"] + sent == report["rows_in_partition"], report
                assert report["created"] + report["updated"] + report["upserted"] == sent, report

            # Destination == source, and no record twice.
            contacts = hubspot.admin("state")["objects"]["contacts"]
            assert len(contacts) == ROWS
            assert len({c["id"] for c in contacts}) == ROWS
            assert not [c for c in contacts if c["archived"]]
            dest = {c["properties"]["email"]: c["properties"] for c in contacts}
            assert sorted(dest) == sorted(source)
            wrong = [e for e, row in source.items() if tuple(dest[e][c] for c in COLUMNS[1:]) != row]
            assert not wrong, wrong[:5]

            # Re-sent batches are bounded by what was in flight when worker1 died, not by the partitions' sizes.
            upserts = hubspot.admin("requests", last=0)["by_route"].get(UPSERT_ROUTE, 0)
            print(f"upsert calls: {upserts} for {ROWS} rows")
            assert upserts <= ROWS // 100 + PARTITIONS * 8 + len(killed) * 20, upserts


class Timeline:
    """Seconds since the start, per step, for the test's output."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.monotonic() - self.start))

    def __str__(self) -> str:
        return ", ".join(f"{what} at {seconds:.0f}s" for what, seconds in self.marks)


class KillWorker1MidRun:
    """``wait_for_run`` poll callback: notes which worker runs each try, and kills worker1 once,
    when it runs a partition and about a quarter of the upsert calls have been answered."""

    def __init__(self, cluster: CeleryCluster, hubspot: EmulatorProcess, timeline: Timeline) -> None:
        self.cluster = cluster
        self.hubspot = hubspot
        self.timeline = timeline
        self.ran_on: dict[tuple[int, int], str] = {}  # (map_index, try_number) -> worker
        self.killed: dict[int, int] = {}  # map_index -> try_number running on worker1 when it died
        self.upserts_at_kill = 0

    def __call__(self, tis) -> None:
        for ti in tis:
            if ti.state == "running" and ti.pid:
                owner = self.cluster.worker_of(ti.pid)
                if owner:
                    self.ran_on.setdefault((ti.map_index, ti.try_number), owner)
        if self.killed:
            return
        on_worker1 = {
            ti.map_index: ti.try_number
            for ti in tis
            if ti.state == "running" and self.ran_on.get((ti.map_index, ti.try_number)) == "worker1"
        }
        if not on_worker1:
            return
        upserts = self.hubspot.admin("requests", last=0)["by_route"].get(UPSERT_ROUTE, 0)
        if upserts >= KILL_AFTER_UPSERTS:
            self.cluster.kill_worker("worker1")
            self.timeline.mark("worker1 killed")
            self.killed.update(on_worker1)
            self.upserts_at_kill = upserts
