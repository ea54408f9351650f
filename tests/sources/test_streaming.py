"""Each source streams: chunks of ``chunksize`` rows, from a server-side cursor where the server has one."""

from __future__ import annotations

import pytest

from airflow_provider_retl.sources import read_query, source_kind


def _hook(conn_id):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook()


def _waiting_fetches(pg_schema) -> list[str]:
    rows = pg_schema.execute(
        "select query from pg_stat_activity where state = 'idle in transaction' and query like 'FETCH FORWARD %%'"
    )
    return [r[0] for r in rows]


def test_postgres_reads_through_a_server_side_cursor(pg_schema, set_connection):
    pg_schema.execute("create table big as select g as id, md5(g::text) as payload from generate_series(1, 25000) g")
    set_connection("src", "postgres", **pg_schema.connection_fields())
    hook = _hook("src")
    assert source_kind(hook) == "postgres"
    chunks = read_query(hook, "select * from big order by id", chunksize=10_000)
    try:
        first = next(chunks)
        # While the first chunk is in our hands, the rest waits on the server: the reader's session
        # last ran FETCH FORWARD 10000 on its named cursor and holds the transaction open.
        # (pg_stat_activity is server-wide: other workers' readers may wait there too, at the default 50,000.)
        ours = [q for q in _waiting_fetches(pg_schema) if q.startswith('FETCH FORWARD 10000 FROM "retl_')]
        assert len(ours) == 1
        sizes = [len(first), *(len(c) for c in chunks)]
    finally:
        chunks.close()
    assert sizes == [10_000, 10_000, 5_000]
    assert first["id"].tolist()[:3] == [1, 2, 3] and str(first["id"].dtype) == "Int64"
    assert ours[0] not in _waiting_fetches(pg_schema)  # the cursor's transaction ended with the read


def test_postgres_cursor_is_named_and_fetches_chunk_by_chunk(pg_schema, set_connection, monkeypatch):
    """The reader's own session shows a DECLAREd cursor in pg_cursors between fetches."""
    pg_schema.execute("create table big as select g as id from generate_series(1, 3000) g")
    set_connection("src", "postgres", **pg_schema.connection_fields())
    hook = _hook("src")
    conn = hook.get_conn()
    monkeypatch.setattr(hook, "get_conn", lambda: conn)
    chunks = read_query(hook, "select id from big", chunksize=1000)
    try:
        next(chunks)
        with conn.cursor() as probe:  # same session, other (client-side) cursor
            probe.execute("select name, statement from pg_cursors")
            open_cursors = probe.fetchall()
        rest = sum(len(c) for c in chunks)
    finally:
        chunks.close()
    assert len(open_cursors) == 1
    name, statement = open_cursors[0]
    assert name.startswith("retl_") and "select id from big" in statement
    assert rest == 2000


def test_postgres_empty_result_and_parameters(pg_schema, set_connection):
    pg_schema.execute("create table t (id int)")
    pg_schema.execute("insert into t values (1), (2), (3)")
    set_connection("src", "postgres", **pg_schema.connection_fields())
    assert list(read_query(_hook("src"), "select * from t where id > %(n)s", {"n": 5})) == []
    (only,) = list(read_query(_hook("src"), "select * from t where id > %(n)s", {"n": 1}))
    assert only["id"].tolist() == [2, 3]


def test_duckdb_and_sqlite_stream_in_chunks(tmp_path, set_connection):
    import sqlite3

    import duckdb

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table t as select range as id from range(2500)")
    con.close()
    lite = sqlite3.connect(str(tmp_path / "w.sqlite"))
    lite.execute("create table t (id integer)")
    lite.executemany("insert into t values (?)", [(i,) for i in range(2500)])
    lite.commit()
    lite.close()
    set_connection("duck", "duckdb", host=str(tmp_path / "w.duckdb"))
    set_connection("lite", "sqlite", host=str(tmp_path / "w.sqlite"))
    for conn_id in ("duck", "lite"):
        sizes = [len(c) for c in read_query(_hook(conn_id), "select id from t order by id", chunksize=1000)]
        assert sizes == [1000, 1000, 500], conn_id


@pytest.mark.parametrize("client", ["mysqlclient", "mysql-connector-python"])
def test_mariadb_streams_through_an_unbuffered_cursor(mariadb_table, set_connection, client):
    mariadb_table.execute(
        "create table {table} (id bigint primary key, pad varchar(200))",
        # More than the socket buffers hold, so an unbuffered read leaves the server mid-send.
        "insert into {table} select seq, repeat('x', 200) from seq_1_to_150000",
    )
    set_connection("src", "mysql", **mariadb_table.connection_fields(client))
    hook = _hook("src")
    assert source_kind(hook) == "mysql"
    chunks = read_query(hook, f"select id, pad from {mariadb_table.name} order by id", chunksize=50_000)
    try:
        first = next(chunks)
        # An unbuffered read keeps the statement running on the server until the last row is fetched.
        seen = [_running_selects(mariadb_table)]
        sizes = [len(first), *(len(c) for c in chunks)]
    finally:
        chunks.close()
    assert sizes == [50_000, 50_000, 50_000]
    assert seen == [1]


def _running_selects(table) -> int:
    conn = table.connect()
    try:
        cur = conn.cursor()
        cur.execute(
            "select count(*) from information_schema.processlist where info like %s and command = 'Query'",
            [f"select id, pad from {table.name}%"],
        )
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_bad_column_types_fail_clearly(tmp_path, set_connection):
    import duckdb

    duckdb.connect(str(tmp_path / "w.duckdb")).execute("create table t as select 1 as id").close()
    set_connection("duck", "duckdb", host=str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError, match="use one of json"):
        list(read_query(_hook("duck"), "select * from t", column_types={"id": "jsonb"}))
    with pytest.raises(ValueError, match=r"does not return; columns are: \['id'\]"):
        list(read_query(_hook("duck"), "select * from t", column_types={"nope": "json"}))
