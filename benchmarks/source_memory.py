"""Peak memory of reading a warehouse table through ``airflow_provider_retl.sources`` (on demand, not a test).

For each source (DuckDB file, PostgreSQL on 127.0.0.1:5432/test) and each size N, a fresh child
process measures peak RSS (``ru_maxrss``) for:

* ``read``: stream the whole table through ``read_query`` and drop each chunk (the reader alone);
* ``noop``: a no-op ``run_sync`` (the checkpoint already holds every row, nothing is sent);
* ``wh``: the same no-op run with ``checkpoint="warehouse"``: the checkpoint is a table in the
  warehouse and the diff runs there in SQL (issue 9), so only changed rows leave it.

``out MB`` is what left the warehouse, as the DataFrames the reader built from it (pandas'
deep memory usage: a stand-in for bytes on the wire that is the same for every mode).

The reader's bound is about chunksize x row width and does not depend on N; the no-op run adds
what the engine keeps per row (key hash, row hash, key text, the loaded checkpoint), which does.

    .venv/bin/python benchmarks/source_memory.py --sizes 1M,10M [--modes read,noop,wh] [--chunksize 50000] [--no-postgres]
        [--duckdb-memory-limit 1GB]   (the DuckDB connection's memory_limit extra: DuckDB runs in this
                                       process, so the warehouse diff's joins count in its RSS)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_DSN = os.environ.get("RETL_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
COLUMNS_SQL = (
    "g as id, 'user' || g || '@example.com' as email, 'Name ' || g as name,"
    " (g % 100000) / 100.0 as score, timestamp '2024-01-01' + g * interval '1 second' as updated_at"
)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * factor)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def create_tables(n: int, workdir: Path, postgres: bool) -> None:
    import duckdb

    path = workdir / f"bench_{n}.duckdb"
    if not path.exists():
        con = duckdb.connect(str(path))
        con.execute(f"create table t as select {COLUMNS_SQL} from range(1, {n + 1}) r(g)")
        con.close()
    if postgres:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("create schema if not exists retl_bench")
            exists = conn.execute("select to_regclass(%s)", [f"retl_bench.t_{n}"]).fetchone()[0]
            if exists is None:
                conn.execute(f"create table retl_bench.t_{n} as select {COLUMNS_SQL} from generate_series(1, {n}) g")


def child(source: str, n: int, mode: str, chunksize: int, workdir: Path) -> dict:
    """Runs in a fresh process: imports, then one measured read or no-op sync."""
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
    if source == "duckdb":
        extra = {"memory_limit": os.environ["RETL_BENCH_DUCKDB_MEMORY_LIMIT"]} if os.environ.get("RETL_BENCH_DUCKDB_MEMORY_LIMIT") else {}
        os.environ["AIRFLOW_CONN_BENCH"] = json.dumps(
            {"conn_type": "duckdb", "host": str(workdir / f"bench_{n}.duckdb"), "extra": extra}
        )
        sql = "select * from t"
    else:
        os.environ["AIRFLOW_CONN_BENCH"] = json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": "test"}
        )
        sql = f"select * from retl_bench.t_{n}"
    from airflow.sdk import BaseHook

    from airflow_provider_retl.checkpoints.warehouse import warehouse_store
    from airflow_provider_retl.sources import read_query
    from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
    from airflow_provider_retl.sync.config import SyncConfig
    from airflow_provider_retl.sync.engine import run_sync
    from tests.unit.fakes import InMemoryDestination

    hook = BaseHook.get_connection("bench").get_hook()
    store = FileCheckpointStore(workdir / f"ck_{source}_{n}_{chunksize}.parquet")

    def config(**kw):
        return SyncConfig(sync_id="bench", object="contacts", primary_key="email", **kw)

    out_bytes = [0]

    def counted(frames):
        for frame in frames:
            out_bytes[0] += int(frame.memory_usage(deep=True).sum())
            yield frame

    if mode == "wh":
        store = warehouse_store(
            "warehouse:retl_bench.ck" if source == "postgres" else "warehouse:ck", hook, sql, sync_id=f"bench_{n}"
        )
        read = store.runner.read
        store.runner.read = lambda statement, **kw: counted(read(statement, **kw))  # type: ignore[method-assign]
        if store.load() is None:
            run_sync(iter(()), InMemoryDestination(), store, config(rebaseline=True))  # prepared in SQL, not measured
            return {"prepared": True}
    if mode == "noop" and not store.path.exists():
        # The checkpoint of an earlier, complete run (built in this process, before the measurement starts).
        run_sync(read_query(hook, sql, chunksize=chunksize), InMemoryDestination(), store, config(rebaseline=True))
        return {"prepared": True}
    baseline = rss_mb()
    started = time.perf_counter()
    if mode == "read":
        rows = 0
        for chunk in counted(read_query(hook, sql, chunksize=chunksize)):
            rows += len(chunk)
        result = {"rows": rows}
    else:
        destination = InMemoryDestination()
        chunks = iter(()) if mode == "wh" else counted(read_query(hook, sql, chunksize=chunksize))
        report = run_sync(chunks, destination, store, config())
        assert report.pushed == 0 and destination.request_count == 0 and report.unchanged == n, report
        result = {"rows": report.rows_read, "unchanged": report.unchanged}
    result["out_mb"] = round(out_bytes[0] / 2**20, 3)
    return {**result, "baseline_mb": round(baseline, 1), "peak_mb": round(rss_mb(), 1),
            "seconds": round(time.perf_counter() - started, 1)}


def run_child(workdir: Path, *args: str) -> dict:
    command = [sys.executable, __file__, "--workdir", str(workdir), "--child", *args]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,3M")
    parser.add_argument("--chunksize", type=int, default=50_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--modes", default="read,noop,wh")
    parser.add_argument("--duckdb-memory-limit", default="")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "retl-source-bench"))
    parser.add_argument("--child", nargs=4, metavar=("SOURCE", "N", "MODE", "CHUNKSIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duckdb_memory_limit:
        os.environ["RETL_BENCH_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit  # children inherit it
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        source, n, mode, chunksize = args.child
        print(json.dumps(child(source, int(n), mode, int(chunksize), workdir)))
        return
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    sources = ["duckdb"] + ([] if args.no_postgres else ["postgres"])
    print(f"chunksize {args.chunksize}; peak RSS of a fresh process (MB); baseline = after imports")
    modes = args.modes.split(",")
    print(f"{'source':9} {'N':>10} {'mode':5} {'baseline':>9} {'peak':>7} {'peak-base':>9} {'B/row':>6} {'s':>6} {'out MB':>9}")
    results = {}
    for n in sizes:
        create_tables(n, workdir, postgres=not args.no_postgres)
        for source in sources:
            for mode in modes:
                if mode in ("noop", "wh"):
                    run_child(workdir, source, str(n), mode, str(args.chunksize))  # prepares the checkpoint if missing
                r = run_child(workdir, source, str(n), mode, str(args.chunksize))
                grown = r["peak_mb"] - r["baseline_mb"]
                results[(source, n, mode)] = grown
                print(f"{source:9} {n:>10,} {mode:5} {r['baseline_mb']:>9} {r['peak_mb']:>7} {grown:>9.1f}"
                      f" {grown * 2**20 / n:>6.0f} {r['seconds']:>6} {r['out_mb']:>9}", flush=True)
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        print(f"\nGrowth from {small:,} to {large:,} rows (peak - baseline), per extra row:")
        for source in sources:
            for mode in modes:
                extra = results[(source, large, mode)] - results[(source, small, mode)]
                print(f"  {source:9} {mode:5} {extra:7.1f} MB  ({extra * 2**20 / (large - small):.0f} B/row)")
        print("read: bounded by the chunk (chunksize x row width); PostgreSQL's is flat in N, DuckDB's grows by its"
              " buffer pool caching the table file's blocks (about the file size, capped by DuckDB's memory_limit).")
        print("noop: grows with N through the"
              " engine's per-row state (diff.py: key hash 8 B + row hash 8 B + key text object ~60-80 B per row,"
              " and the loaded checkpoint's key/row hashes and destination ids).")
        print("wh: the warehouse diffs in SQL; nothing per row is held here and only changed rows leave the warehouse.")


if __name__ == "__main__":
    main()
