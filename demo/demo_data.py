"""The demo's warehouse table (``customers``) and its connections, shared by `make demo` and `make airflow`.

``dags/retl_demo.py`` reads ``customers`` through the ``demo_warehouse`` connection and
pushes it to ``hubspot_default`` and ``webhook_default``. Two of its 200 rows share a
key and one has an invalid email, so every run shows three rejected rows with their reasons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WAREHOUSE_CONN_ID = "demo_warehouse"
WEBHOOK_SECRET = "demo-webhook-secret"
WEBHOOK_PATH = "/hooks/customers"
CUSTOMERS = 200
#: Rows no destination can take: 2 rows share customer7's email (a duplicate key), 1 has no valid email.
REJECTED_ROWS = 3


def build_warehouse(path: Path) -> None:
    """Create ``customers`` (200 rows, 3 of them bad on purpose) in the DuckDB file ``path``, anew."""
    import duckdb

    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute(
            """
            create table customers as
            select
                i as customer_id,
                'customer' || i || '@example.com' as email,
                'First' || i as first_name,
                'Last' || i as last_name,
                '+1 555 01' || lpad(cast(i as varchar), 2, '0') as phone,
                ['lead', 'customer', 'subscriber', 'opportunity'][1 + i % 4] as plan,
                round(i * 12.5, 2) as lifetime_value,
                i % 9 as orders_count
            from range(1, 201) r(i)
            """
        )
        # Rows HubSpot cannot take: they are reported with key and reason, not silently dropped.
        con.execute("update customers set email = 'not-an-email' where customer_id = 13")
        con.execute("update customers set email = 'customer7@example.com' where customer_id = 77")  # duplicate key
    finally:
        con.close()


def change_some_rows(path: Path) -> None:
    """Three rows change, one is deleted and one added: what the demo's third run sends."""
    import duckdb

    con = duckdb.connect(str(path))
    try:
        con.execute(
            "update customers set plan = 'customer', lifetime_value = lifetime_value + 100 "
            "where customer_id in (5, 42, 150)"
        )
        con.execute("delete from customers where customer_id = 199")
        con.execute(
            "insert into customers values (201, 'newcomer@example.com', 'New', 'Comer', '+1 555 0201', 'lead', 0, 0)"
        )
    finally:
        con.close()


def warehouse_connection(path: Path, *, read_only: bool = False) -> dict[str, Any]:
    """The ``demo_warehouse`` connection (JSON form) for the DuckDB file ``path``."""
    conn: dict[str, Any] = {"conn_type": "duckdb", "host": str(path)}
    if read_only:
        # Airflow runs the demo's two syncs in parallel: DuckDB lets many processes read a file, one write it.
        conn["extra"] = {"read_only": True}
    return conn


def webhook_connection(url: str) -> dict[str, Any]:
    """The ``webhook_default`` connection for the webhook receiver at ``url``."""
    return {"conn_type": "retl_webhook", "host": f"{url}{WEBHOOK_PATH}", "password": WEBHOOK_SECRET}


def connection_env(conn_id: str, fields: dict[str, Any]) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)}
