"""SIGKILL a real Airflow task whose checkpoint is in Variables or XCom, then retry it like Airflow would.

Each trial (one seed): version 1 of the source syncs cleanly in its own DAG; version 2 runs in a
forked child (``airflow_crash.AirflowForkServer``: a warm process with Airflow imported, the
metadata DB migrated and one ``dag.test()`` run behind it) that SIGKILLs itself at a seeded
kill point; 30% of trials kill the first retry too. The dead task instance is reaped (failed,
as the scheduler does on a lost heartbeat) and retried:

* ``variable`` store: a NEW DagRun (the checkpoint lives in Variables, across runs);
* ``xcom`` store: the SAME DagRun cleared and run again (its journal is in the run's
  ``task_state_store``), like "Clear" in the UI or an Airflow retry.

After the retry: the HubSpot emulator (in this process, never in the fork server) holds exactly
the source rows, no duplicates, and the stored checkpoint (read back from the metadata DB)
equals a clean run's: same keys and row hashes, and each id is the destination's.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_retl.testing.crash import KILL_POINTS, KillPoint
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

from .airflow_crash import AirflowForkServer, RunRequest

SEEDS = range(20)
STORES = ("variable", "xcom")

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=0, **{kwargs!r})
"""


def _versions(n1: int = 120):
    """v1: 120 contacts; v2: 20 removed, 30 changed, 40 new (mirror mode deletes the removed)."""

    def make(i: int, ver: str) -> tuple[str, str, str]:
        return (f"c{i}@example.com", f"F{i}{ver}", f"L{i}")

    v1 = [make(i, "a") for i in range(n1)]
    v2 = [make(i, "b" if i < 30 else "a") for i in range(100)] + [make(i, "a") for i in range(n1, n1 + 40)]
    return v1, v2


V1, V2 = _versions()


class Bench:
    """One store's emulator, warehouse, fork server and logical-date clock."""

    def __init__(self, store: str, emulator, server: AirflowForkServer, workdir: Path) -> None:
        self.store, self.emulator, self.server, self.workdir = store, emulator, server, workdir
        self.warehouse = workdir / "warehouse.sqlite"
        self.env = {
            "AIRFLOW_CONN_CRASH_WH": json.dumps({"conn_type": "sqlite", "host": str(self.warehouse)}),
            "AIRFLOW_CONN_CRASH_HUBSPOT": json.dumps({
                "conn_type": "retl_hubspot", "host": emulator.url, "password": DEFAULT_TOKEN,
                "extra": {"rate_limit": 0, "batch_size": 20},
            }),
        }
        self._clock = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        self.runs = 0

    def load_source(self, rows) -> None:
        con = sqlite3.connect(self.warehouse)
        try:
            con.execute("drop table if exists contacts")
            con.execute("create table contacts (email text, firstname text, lastname text)")
            con.executemany("insert into contacts values (?, ?, ?)", rows)
            con.commit()
        finally:
            con.close()

    def dag(self, dag_id: str) -> str:
        kwargs = {
            "conn_id": "crash_wh", "sql": "select email, firstname, lastname from contacts",
            "destination_conn_id": "crash_hubspot", "object": "contacts", "primary_key": "email",
            "mode": "mirror", "checkpoint": self.store, "chunksize": 40,
        }
        return DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs)

    def run(self, dag_id: str, *, retry: bool = False, kill: KillPoint | None = None, commit_interval: float = 0.0,
            inspect: bool = False):
        # The Variable store's retry is a new run; the XCom store's is the same run cleared.
        mode = "rerun" if retry and self.store == "xcom" else "new"
        self._clock += dt.timedelta(minutes=1)  # later runs sort after earlier ones
        self.runs += 1
        request = RunRequest(
            dag_text=self.dag(dag_id), dag_id=dag_id, mode=mode, logical_date=self._clock.isoformat(),
            env=self.env, kill=vars(kill) if kill else None, result=str(self.workdir / f"{dag_id}-{self.runs}.json"),
            commit_interval=commit_interval, inspect=self.store if inspect else None,
        )
        return self.server.run(request)


def _ok(result) -> dict:
    assert result.exitcode == 0 and result.outcome and result.outcome.get("ok"), (
        result.outcome.get("traceback") or result.outcome if result.outcome else result
    )
    return result.outcome


@pytest.fixture(scope="module")
def airflow_fork_server():
    log = tempfile.NamedTemporaryFile(prefix="retl-airflow-crash-", suffix=".log", delete=False)  # noqa: SIM115
    with AirflowForkServer(stderr=log) as server:
        assert server.threads_at_fork == [], f"fork server is not single-threaded: {server.threads_at_fork}"
        yield server
    log.close()
    Path(log.name).unlink(missing_ok=True)


@pytest.fixture(scope="module", params=STORES)
def bench(request, airflow_fork_server, tmp_path_factory):
    store = request.param
    with start_emulator("hubspot", rate_limit=None) as running:
        bench = Bench(store, running, airflow_fork_server, tmp_path_factory.mktemp(f"crash-{store}"))
        # Reference: v1 then v2, no kills; counts the kill points of the v2 run.
        running.emulator.reset()
        bench.load_source(V1)
        _ok(bench.run(f"crash_{store}_ref"))
        bench.load_source(V2)
        ref = _ok(bench.run(f"crash_{store}_ref", inspect=True))
        bench.reference = ref["checkpoint"]
        bench.counters = ref["counters"]
        assert bench.counters["request"] > 0 and bench.counters["commit"] > 0
        bench.tally = Counter()
        yield bench
        print(f"\n{store}: kills fired {dict(bench.tally)}")


def _kill_point(where: str, counters: dict, rng: random.Random) -> KillPoint:
    available = {
        "read": counters["read"], "request": counters["request"], "after_request": counters["request"],
        "commit_torn": counters["commit"], "after_commit": counters["commit"], "finalize": counters["finalize"],
    }[where]
    return KillPoint(where, rng.randrange(max(1, available)))


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_task_retries_to_a_clean_state(bench, seed):
    rng = random.Random(seed)
    where = KILL_POINTS[seed % len(KILL_POINTS)]
    kills = [_kill_point(where, bench.counters, rng)]
    if rng.random() < 0.3:  # the first retry dies too, somewhere else
        kills.append(_kill_point(rng.choice(KILL_POINTS), bench.counters, rng))
    # Grouped commits make the number of journal writes timing-dependent: kills aimed at a
    # journal write use one write per batch, so the k-th write exists in every run.
    commit_interval = rng.choice([0.0, 0.5]) if where not in ("commit_torn", "after_commit") else 0.0
    dag_id = f"crash_{bench.store}_s{seed}"
    what = f"{bench.store} seed {seed} kills {kills}"

    bench.emulator.emulator.reset()
    bench.load_source(V1)
    _ok(bench.run(dag_id))
    bench.load_source(V2)
    for i, kill in enumerate(kills):
        result = bench.run(dag_id, retry=i > 0, kill=kill, commit_interval=commit_interval)
        if result.killed:
            bench.tally[kill.where] += 1
        elif i == 0:
            pytest.fail(f"{what}: the first kill did not fire: {result}")
        else:
            _ok(result)  # the second kill point was not reached: that retry finished
    final = _ok(bench.run(dag_id, retry=True, inspect=True))
    report = final["report"]
    assert report["rejected"] == 0, f"{what}: rejects {report['rejects']}"
    if bench.store == "xcom":
        assert final["tries"][-1] == "success" and len(final["tries"]) >= 2, f"{what}: not a re-run: {final['tries']}"

    # Destination == source, no duplicates.
    records = bench.emulator.emulator.records("contacts")
    emails = [r["properties"]["email"] for r in records]
    dupes = {e: n for e, n in Counter(emails).items() if n > 1}
    assert not dupes, f"{what}: duplicate contacts {dupes}"
    found = {r["properties"]["email"]: r for r in records}
    source = {email: (first, last) for email, first, last in V2}
    assert set(found) == set(source), f"{what}: destination keys differ from the source"
    for email, (first, last) in source.items():
        props = found[email]["properties"]
        assert (props.get("firstname"), props.get("lastname")) == (first, last), f"{what}: {email}"

    # The checkpoint a clean run writes: same keys and row hashes; each id is the destination's.
    ck, ref = final["checkpoint"], bench.reference
    if bench.store == "variable":
        assert ck["journal_left"] == 0, f"{what}: {ck['journal_left']} journal Variables left after finalize"
    assert sorted(ck["keys"]) == sorted(ref["keys"]), f"{what}: checkpoint keys differ from a clean run's"
    assert dict(zip(ck["keys"], ck["rows"])) == dict(zip(ref["keys"], ref["rows"])), f"{what}: row hashes differ"
    ids = set(ck["ids"])
    assert len(ids) == len(ck["ids"]) and ids == {r["id"] for r in records}, f"{what}: checkpoint ids != destination ids"
