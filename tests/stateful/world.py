"""The world the stateful tests drive: a source table, a real destination emulator, a checkpoint store.

A ``World`` holds the source rows (the model), runs the REAL engine (``run_sync``) against a
REAL emulator over HTTP with one of the checkpoint stores, and checks the invariants of issue 15
after each run: destination == model, no duplicates, every event once, no secret in any byte
the run emitted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import (
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    ZENDESK_EMAIL,
)

#: Tokens the emulators accept, made unique so a leak of any part of them is recognisable.
HUBSPOT_TOKEN = "pat-na1-SECRETstatefulHUBSPOT0123456789abcd"
ZENDESK_TOKEN = "zdSECRETstatefulZENDESK987654321"
BASE_TS = dt.datetime(2026, 1, 1, 9, 30)


@dataclass(frozen=True)
class Destination:
    """One destination of each kind, with the fields the source columns map to."""

    name: str
    emulator: str
    emulator_options: dict[str, Any]
    hook_path: str
    secret: str
    connection: Callable[[str], dict[str, Any]]
    config: dict[str, Any]
    events: bool = False
    mirror: bool = True

    def hook(self, conn_id: str) -> Any:
        module, _, name = self.hook_path.partition(":")
        return getattr(__import__(module, fromlist=[name]), name)(conn_id)


def _extra(**kw: Any) -> dict[str, Any]:
    # A short read timeout: the "timeout" fault withholds an answer longer than this.
    return {"rate_limit": 0, "batch_size": 3, "max_retries": 2, "timeout": [2.0, 1.0], **kw}


DESTINATIONS = {
    # Native upsert: HubSpot contacts, batch/upsert by email; mirror mode.
    "upsert": Destination(
        "upsert",
        "hubspot",
        {"rate_limit": None, "tokens": (HUBSPOT_TOKEN,)},
        "airflow_provider_retl.hooks.hubspot:HubSpotHook",
        HUBSPOT_TOKEN,
        lambda url: {"conn_type": "retl_hubspot", "host": url, "password": HUBSPOT_TOKEN, "extra": _extra()},
        {
            "object": "contacts",
            "primary_key": "k",
            "match_on": "email",
            "mapping": {"email": "m", "firstname": "v"},
            "mode": "mirror",
        },
    ),
    # Lookup then create: HubSpot companies matched on the (non-unique) domain; mirror mode.
    "lookup": Destination(
        "lookup",
        "hubspot",
        {"rate_limit": None, "tokens": (HUBSPOT_TOKEN,)},
        "airflow_provider_retl.hooks.hubspot:HubSpotHook",
        HUBSPOT_TOKEN,
        lambda url: {"conn_type": "retl_hubspot", "host": url, "password": HUBSPOT_TOKEN, "extra": _extra()},
        {
            "object": "companies",
            "primary_key": "k",
            "match_on": "domain",
            "mapping": {"domain": "m", "name": "v"},
            "mode": "mirror",
        },
    ),
    # Events: Customer.io track events (dedupe id), key = (k, ts).
    "events": Destination(
        "events",
        "customerio",
        {"rate_limit": None},
        "airflow_provider_retl.hooks.customerio:CustomerIoHook",
        CUSTOMERIO_API_KEY,
        lambda url: {
            "conn_type": "retl_customerio",
            "host": url,
            "login": CUSTOMERIO_SITE_ID,
            "password": CUSTOMERIO_API_KEY,
            "extra": _extra(),
        },
        {
            "object": "events",
            "primary_key": ["k", "ts"],
            "mapping": {"id": "m", "name": "v", "event_key": "k"},
            "mode": "insert",
        },
        events=True,
        mirror=False,
    ),
    # Asynchronous jobs: Zendesk users (create_or_update_many / destroy_many jobs) by email; mirror.
    "jobs": Destination(
        "jobs",
        "zendesk",
        {"rate_limit": None, "processing_seconds": 0.0, "api_tokens": {ZENDESK_EMAIL: ZENDESK_TOKEN}},
        "airflow_provider_retl.hooks.zendesk:ZendeskHook",
        ZENDESK_TOKEN,
        lambda url: {
            "conn_type": "retl_zendesk",
            "host": url,
            "login": f"{ZENDESK_EMAIL}/token",
            "password": ZENDESK_TOKEN,
            # Mirror deletes Zendesk users only when asked (the documented default unsets fields instead).
            "extra": _extra(job_poll_interval=0.01, mirror_delete=True),
        },
        {
            "object": "users",
            "primary_key": "k",
            "match_on": "email",
            "mapping": {"email": "m", "name": "v"},
            "mode": "mirror",
        },
    ),
}


def read_back(dest: Destination, emulator: Any) -> list[tuple[str, str]]:
    """Every record (or every processed event) in the destination as (match value, value)."""
    if dest.name == "upsert":
        return [(r["properties"].get("email"), r["properties"].get("firstname")) for r in emulator.records("contacts")]
    if dest.name == "lookup":
        return [(r["properties"].get("domain"), r["properties"].get("name")) for r in emulator.records("companies")]
    if dest.name == "jobs":
        return [(r.get("email"), r.get("name")) for r in emulator.users()]
    return [(e["attributes"].get("event_key"), e.get("name")) for e in emulator.events()]


class Killed(BaseException):
    """A simulated kill: raised at a kill point, like a SIGKILL it is caught by nothing of ours."""


@dataclass
class Store:
    """A checkpoint store slot: ``file`` or ``warehouse`` on a DuckDB/SQLite/PostgreSQL source."""

    kind: str  # file | duckdb | sqlite | postgres
    name: str


@dataclass
class RunResult:
    report: Any = None
    error: BaseException | None = None
    emitted: str = ""


WAREHOUSES = ("duckdb", "sqlite", "postgres")


class World:
    """Source rows + one destination emulator + checkpoint stores; runs and checks one sync."""

    def __init__(self, dest: Destination, store_kind: str, workdir: Path, running: Any, pg_schema: Any = None):
        self.dest = dest
        self.store_kind = store_kind
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.running = running
        self.pg = pg_schema
        self.rows: list[dict[str, Any]] = []
        self.key_type = "int"  # int | decimal | str
        self.aware = False  # ts naive -> aware (UTC)
        self.partitions = 1
        self.sync_id = f"st_{dest.name}_{uuid.uuid4().hex[:6]}"
        self.conn_id = f"st_dest_{uuid.uuid4().hex[:8]}"
        #: Every request goes through a real proxy that can echo the Authorization header in a 500.
        self.proxy = EchoProxy(running.url)
        os.environ[f"AIRFLOW_CONN_{self.conn_id.upper()}"] = json.dumps(dest.connection(self.proxy.url))
        # Two store slots of the configured kind's family: the switch rule moves between them.
        # The second slot is always a file store: a warehouse sync switches to a file and back.
        self.stores = [Store(store_kind, "a"), Store("file", "b")]
        self.current = 0
        self.src_conn = f"st_src_{uuid.uuid4().hex[:8]}"
        if store_kind in WAREHOUSES:
            self._register_source()
        #: Match values a store switch may leave behind (a fresh store does not know them).
        self.orphans_allowed: set[str] = set()
        #: Event key -> times delivered (counted from the emulator after each run).
        self.history: list[str] = []
        self.next_id = 1
        self.next_m = 1
        #: True while concurrent runs read one table written before they started.
        self.source_frozen = False
        #: SyncConfig options of the next runs (the user acknowledging a guardrail).
        self.overrides: dict[str, Any] = {}

    # ---- source model -------------------------------------------------------------------------

    def key_value(self, k: int | None) -> Any:
        if k is None:
            return None
        if self.key_type == "decimal":
            return Decimal(k).quantize(Decimal("0.01"))
        if self.key_type == "str":
            return str(k)
        return k

    def ts_value(self, k: int) -> Any:
        ts = BASE_TS + dt.timedelta(hours=k)
        return ts.replace(tzinfo=dt.UTC) if self.aware else ts

    def frame(self) -> pd.DataFrame:
        cols = {
            "k": [self.key_value(r["k"]) for r in self.rows],
            "ts": [self.ts_value(r["k"] or 0) for r in self.rows],
            "m": [r["m"] for r in self.rows],
            "v": [r["v"] for r in self.rows],
        }
        frame = pd.DataFrame(cols, columns=["k", "ts", "m", "v"])
        if self.key_type == "int":
            frame["k"] = frame["k"].astype("Int64")
        return frame

    def match(self, m: int) -> str:
        if self.dest.name == "lookup":
            return f"d{m}.example.com"
        if self.dest.events:
            return f"person{m}"
        return f"u{m}@example.com"

    # ---- stores -------------------------------------------------------------------------------

    def _register_source(self) -> None:
        if self.store_kind == "duckdb":
            doc = {"conn_type": "duckdb", "host": str(self.workdir / "w.duckdb")}
        elif self.store_kind == "sqlite":
            doc = {"conn_type": "sqlite", "host": str(self.workdir / "w.sqlite")}
        else:
            fields = self.pg.connection_fields()
            doc = {"conn_type": "postgres", **fields}
        os.environ[f"AIRFLOW_CONN_{self.src_conn.upper()}"] = json.dumps(doc)

    def _table(self, name: str) -> str:
        return f"{self.pg.name}.{name}" if self.store_kind == "postgres" else name

    def _sql_exec(self, statements: list[tuple[str, list[tuple] | None]]) -> None:
        if self.store_kind == "postgres":
            with self.pg.connect() as conn, conn.cursor() as cur:
                for sql, many in statements:
                    if many is None:
                        cur.execute(sql)
                    elif many:
                        cur.executemany(sql.replace("?", "%s"), many)
            return
        if self.store_kind == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.workdir / "w.duckdb"))
        else:
            con = sqlite3.connect(self.workdir / "w.sqlite")
        try:
            for sql, many in statements:
                if many is None:
                    con.execute(sql)
                elif many:
                    con.executemany(sql, many)
            con.commit()
        finally:
            con.close()

    def write_source(self) -> None:
        """Materialise the rows as the table ``src`` with the column types of the current retyping."""
        key_sql = {"int": "bigint", "decimal": "numeric(12,2)", "str": "varchar(40)"}[self.key_type]
        if self.store_kind == "sqlite":
            ts_sql = "text"
        elif self.store_kind == "postgres":
            ts_sql = "timestamptz" if self.aware else "timestamp"
        else:
            ts_sql = "timestamptz" if self.aware else "timestamp"
        table = self._table("src")
        rows = []
        for r in self.rows:
            ts = self.ts_value(r["k"] or 0)
            k = self.key_value(r["k"])
            if self.store_kind == "sqlite":
                ts = ts.isoformat(sep=" ")
                k = float(k) if isinstance(k, Decimal) else k
            rows.append((k, ts, r["m"], r["v"]))
        self._sql_exec(
            [
                (f"drop table if exists {table}", None),
                (f"create table {table} (k {key_sql}, ts {ts_sql}, m varchar(200), v varchar(200))", None),
                (f"insert into {table} values (?, ?, ?, ?)", rows),
            ]
        )

    def make_store(self, slot: Store, partition: tuple[int, int] | None) -> Any:
        if slot.kind == "file":
            suffix = "" if partition is None else f".p{partition[0]}of{partition[1]}"
            return FileCheckpointStore(self.workdir / f"ck-{slot.name}{suffix}.parquet")
        from airflow.sdk import BaseHook

        from airflow_provider_retl.checkpoints.warehouse import warehouse_store

        hook = BaseHook.get_connection(self.src_conn).get_hook()
        sync_id = self.sync_id if partition is None else f"{self.sync_id}.p{partition[0]}of{partition[1]}"
        return warehouse_store(
            f"warehouse:{self._table('retl_ck_' + slot.name)}",
            hook,
            f"select * from {self._table('src')}",
            sync_id=sync_id,
            # SQLite has no timestamp type (ts is stored as text): the sync declares it, as a user
            # must, so the warehouse reads the same timestamps the other stores' runs are given.
            column_types={"ts": "timestamp"} if self.store_kind == "sqlite" else None,
        )

    # ---- runs ---------------------------------------------------------------------------------

    def config(self, partition: tuple[int, int] | None) -> SyncConfig:
        return SyncConfig(
            **self.overrides,
            sync_id=self.sync_id,
            destination_identity=self.conn_id,
            commit_interval=0.0,
            progress_interval=0.0,
            partition=partition,
            **self.dest.config,
        )

    def partitions_now(self) -> list[tuple[int, int] | None]:
        return [None] if self.partitions == 1 else [(i, self.partitions) for i in range(self.partitions)]

    def run_once(
        self, partition: tuple[int, int] | None, *, kill: tuple[str, int] | None = None, slot: int | None = None
    ) -> RunResult:
        """One run of the sync (one partition); returns its report or error and every byte it emitted."""
        store_slot = self.stores[self.current if slot is None else slot]
        if store_slot.kind in WAREHOUSES and not self.source_frozen:
            self.write_source()
        store = self.make_store(store_slot, partition)
        hook = self.dest.hook(self.conn_id)
        config = self.config(partition)
        frame = self.frame()
        chunks: Any = (frame.iloc[i : i + 4] for i in range(0, len(frame), 4))
        if kill is not None:
            chunks = _instrument(hook, store, chunks, kill)
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.setLevel(logging.DEBUG)
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(logging.DEBUG)
        rejects: list[Any] = []
        result = RunResult()
        try:
            siblings = self.siblings(store_slot, partition)
            result.report = run_sync(chunks, hook, store, config, on_reject=rejects.append, siblings=siblings)
        except BaseException as exc:  # noqa: BLE001 - Killed and every error is an outcome here
            result.error = exc
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            with contextlib.suppress(Exception):  # a killed run may leave the session half-closed
                hook.close()
        emitted = [buffer.getvalue(), repr(rejects)]
        if result.report is not None:
            emitted.append(json.dumps(result.report.to_dict(), default=str))
        if result.error is not None:
            import traceback

            emitted.append("".join(traceback.format_exception(result.error)))
            report = getattr(result.error, "report", None)
            if report is not None and hasattr(report, "to_dict"):
                emitted.append(json.dumps(report.to_dict(), default=str))
        emitted += [r.path for r in self.running.emulator.requests]
        result.emitted = "\n".join(emitted)
        return result

    def siblings(self, slot: Store, partition: tuple[int, int] | None) -> Any:
        """The other partition layouts' checkpoints of a file slot, as the operator probes them."""
        if slot.kind != "file":
            return None  # the operator probes no siblings for the warehouse store
        own = None if partition is None else partition[1]

        def probe() -> Iterator[Any]:
            for count in (None, *range(1, 9)):
                if count == own:
                    continue
                for part in [None] if count is None else [(i, count) for i in range(count)]:
                    loaded = self.make_store(slot, part).load()
                    if loaded is not None:
                        yield loaded

        return probe

    def run(self, *, kill: tuple[str, int] | None = None) -> list[RunResult]:
        """One run of every partition (the kill, if any, hits the first partition's run only)."""
        return [self.run_once(p, kill=kill if i == 0 else None) for i, p in enumerate(self.partitions_now())]

    # ---- invariants ---------------------------------------------------------------------------

    def live(self) -> tuple[dict[Any, dict[str, Any]], set[str]]:
        """(valid rows by key, match values of rows with a null or duplicated key)."""
        counts = Counter(r["k"] for r in self.rows)
        valid = {r["k"]: r for r in self.rows if r["k"] is not None and counts[r["k"]] == 1}
        invalid = {r["m"] for r in self.rows if r["k"] is None or counts[r["k"]] > 1}
        return valid, invalid

    def check_no_secret(self, results: list[RunResult]) -> None:
        secret = self.dest.secret
        probes = {secret[i : i + 12] for i in range(0, len(secret) - 11, 4)}
        for res in results:
            found = sorted(p for p in probes if p in res.emitted)
            assert not found, f"LEAK: part of the connection's secret was emitted: {found[:1]}"

    def check_destination(self) -> None:
        """Destination == model after a successful run (mirror: same set; events: once each)."""
        found = read_back(self.dest, self.running.emulator)
        valid, invalid = self.live()
        if self.dest.events:
            counts = Counter(m for m, _ in found)
            twice = {k: n for k, n in counts.items() if n > 1}
            assert not twice, f"RESEND: events delivered more than once: {twice}"
            # Every valid event delivered (with the name at its first delivery).
            want = {str(r["k"]) for r in valid.values()}
            have = {_event_key_int(k) for k in counts}
            missing = want - have
            assert not missing, f"LOSS: events never delivered: {sorted(missing)}"
            return
        by_m: dict[str, list[str]] = defaultdict(list)
        for m, v in found:
            by_m[str(m).lower()].append(v)
        dups = {m: vs for m, vs in by_m.items() if len(vs) > 1}
        assert not dups, f"DUP: duplicate records {dups}"
        want: dict[str, set[str]] = defaultdict(set)
        for r in valid.values():
            want[r["m"]].add(r["v"])
        missing = sorted(set(want) - set(by_m))
        assert not missing, f"LOSS: live rows missing from the destination: {missing}"
        wrong = {m: (by_m[m][0], sorted(vs)) for m, vs in want.items() if by_m[m][0] not in vs}
        assert not wrong, f"STALE: destination value differs from the source: {wrong}"
        if self.dest.mirror:
            extra = sorted(set(by_m) - set(want) - invalid - self.orphans_allowed)
            assert not extra, f"ZOMBIE: mirror left records no live row holds: {extra}"


def _event_key_int(value: Any) -> str:
    """An event's ``event_key`` attribute as the integer text it started as ("3", 3, "3.00" -> "3")."""
    try:
        return str(int(Decimal(str(value))))
    except Exception:  # noqa: BLE001
        return str(value)


def _instrument(hook: Any, store: Any, chunks: Iterator[pd.DataFrame], kill: tuple[str, int]) -> Iterator[pd.DataFrame]:
    """Raise ``Killed`` at the ``k``-th pass of a kill point (read, request, after_request, after_commit)."""
    where, k = kill
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def hit(name: str) -> bool:
        with lock:
            n = seen[name]
            seen[name] += 1
        return name == where and n == k

    send = hook._send

    def sending(*args: Any, **kwargs: Any) -> Any:
        if hit("request"):
            raise Killed("request")
        response = send(*args, **kwargs)
        if where == "after_request" and seen["request"] - 1 == k:
            raise Killed("after_request")
        return response

    hook._send = sending
    commit = store.commit

    def committing(*args: Any, **kwargs: Any) -> None:
        commit(*args, **kwargs)
        if hit("after_commit"):
            raise Killed("after_commit")

    store.commit = committing

    def reading() -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            if hit("read"):
                raise Killed("read")
            yield chunk

    return reading()


class EchoProxy:
    """A real HTTP proxy in front of an emulator; when armed, its next answer is a 500 whose body
    echoes the request's Authorization header after ``pad`` characters (a server that echoes
    requests in errors, and a token that straddles any excerpt cut)."""

    def __init__(self, upstream: str) -> None:
        import http.server

        import requests

        self.upstream = upstream.rstrip("/")
        self.armed: list[int] = []
        self.lock = threading.Lock()
        session = requests.Session()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    pad = proxy.armed.pop(0) if proxy.armed else None
                if pad is not None:
                    echo = "x" * pad + " you sent Authorization: " + self.headers.get("Authorization", "")
                    payload = json.dumps({"message": echo, "status": "error", "category": "INTERNAL"}).encode()
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = session.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=30,
                )
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def arm(self, pad: int, n: int = 1) -> None:
        with self.lock:
            self.armed.extend([pad] * n)

    def clear(self) -> None:
        with self.lock:
            self.armed.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
