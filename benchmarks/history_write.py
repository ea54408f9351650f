"""Writing a run's changelog to the history tables: ``HistoryStore.write_changes`` vs a bare bulk insert.

    .venv/bin/python benchmarks/history_write.py [--rows 100k] [--reps 3] [--targets duckdb,sqlite,postgres]

Not a test. A first sync of N rows records N changelog rows (one per record created). Both sides
write the same N rows (17 columns, as ``retl_changes`` holds them) into a fresh table of the same
database, in this process, interleaved, best of ``--reps``:

- baseline: the cheapest bulk path of the database itself, the rows built once up front
  (DuckDB: one ``INSERT ... SELECT`` from a registered DataFrame; SQLite and PostgreSQL: one
  ``executemany`` in one transaction on the driver's connection);
- ours: ``HistoryStore.write_changes`` from the engine's ``RecordOutcomes`` through the Airflow
  hook (redaction of reasons, reason patterns, row hashes formatted, 5,000-row chunks).

PostgreSQL is the local server (127.0.0.1:5432, database ``test``); it is skipped with a note
when unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(text: str) -> int:
    text = text.lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100k")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--targets", default="duckdb,sqlite,postgres")
    args = parser.parse_args()
    n = _rows(args.rows)

    workdir = Path(tempfile.mkdtemp(prefix="retl-history-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
    os.environ["AIRFLOW_CONN_BENCH_DUCKDB"] = json.dumps({"conn_type": "duckdb", "host": str(workdir / "h.duckdb")})
    os.environ["AIRFLOW_CONN_BENCH_SQLITE"] = json.dumps({"conn_type": "sqlite", "host": str(workdir / "h.sqlite")})
    os.environ["AIRFLOW_CONN_BENCH_POSTGRES"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": "test"}
    )

    import pandas as pd

    from airflow_provider_retl.history.store import CHANGE_COLUMNS, HistoryStore
    from airflow_provider_retl.sync.outcomes import RecordOutcomes

    columns = [name for name, _ in CHANGE_COLUMNS]
    outcomes = RecordOutcomes()
    keys = [f"user{i}@example.com" for i in range(n)]
    outcomes.pushed("create", keys, [str(10_000_000 + i) for i in range(n)], list(range(n)))
    at = "2026-12-08T00:00:00.000000+00:00"
    prebuilt = [
        ("bench", "run", 1, at, k, "create", "ok", None, None, None, None, None, None, None, str(i), f"{i:016x}", None)
        for i, k in enumerate(keys)
    ]
    assert len(prebuilt[0]) == len(columns)

    def hooks(target: str):
        if target == "duckdb":
            from airflow.providers.duckdb.hooks.duckdb import DuckDBHook

            return DuckDBHook(duckdb_conn_id="bench_duckdb")
        if target == "sqlite":
            from airflow.providers.sqlite.hooks.sqlite import SqliteHook

            return SqliteHook(sqlite_conn_id="bench_sqlite")
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id="bench_postgres")

    print(f"{n:,} changelog rows, best of {args.reps}")
    print(f"{'target':<10} {'baseline s':>11} {'ours s':>9} {'ours/baseline':>14}")
    for target in args.targets.split(","):
        hook = hooks(target)
        try:
            hook.get_records("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - a benchmark: say what is missing and go on
            print(f"{target:<10} unreachable ({type(exc).__name__}); skipped")
            continue
        best = {"baseline": float("inf"), "ours": float("inf")}
        for rep in range(args.reps):
            for side in ("baseline", "ours"):
                prefix = f"b{rep}{side[0]}_"
                store = HistoryStore(hook, prefix=prefix)
                store.ensure_tables()
                hook.run(f"DELETE FROM {store.changes_table}")
                started = time.perf_counter()
                if side == "ours":
                    written = store.write_changes("bench", "run", 1, outcomes, at=at)
                elif target == "duckdb":
                    conn = hook.get_conn()
                    conn.register("bench_rows", pd.DataFrame.from_records(prebuilt, columns=columns))
                    conn.execute(f"INSERT INTO {store.changes_table} SELECT * FROM bench_rows")
                    conn.close()
                    written = n
                else:
                    conn = hook.get_conn()
                    marks = ", ".join(["%s" if target == "postgres" else "?"] * len(columns))
                    cursor = conn.cursor()
                    cursor.executemany(f"INSERT INTO {store.changes_table} VALUES ({marks})", prebuilt)
                    conn.commit()
                    conn.close()
                    written = n
                best[side] = min(best[side], time.perf_counter() - started)
                count = hook.get_records(f"SELECT COUNT(*) FROM {store.changes_table}")[0][0]
                assert written == n and count == n, (side, target, written, count)
                hook.run([f"DROP TABLE {t}" for t in (store.runs_table, store.changes_table, store.acks_table)])
        ratio = best["ours"] / best["baseline"]
        print(f"{target:<10} {best['baseline']:>11.2f} {best['ours']:>9.2f} {ratio:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
