"""What a sync tells Airflow beyond its report: OpenLineage datasets and a link to the destination.

* Lineage: the input datasets are the tables the query reads (parsed with sqlglot, in the
  warehouse connection's dialect), in the warehouse's namespace (``postgres://host:5432``,
  ``duckdb:///path/file.duckdb`` ...); the output dataset is the destination object
  (``contacts``, ``Contact``, an audience id) in the destination's namespace
  (``<conn type>://<host>``, no path, no credentials). Airflow's lineage then shows
  warehouse table -> app object.
* ``DestinationLink``: the task's "Destination" button opens the synced object in the app
  (HubSpot object list, Salesforce sObject tab, ...); for an emulator or a proxy, whose
  host is not the vendor's, it opens the emulator's state page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_provider_retl.destinations import by_conn_type

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

#: Airflow connection type -> sqlglot dialect (None: sqlglot's generic SQL).
SQL_DIALECTS: Mapping[str, str] = {
    "duckdb": "duckdb",
    "postgres": "postgres",
    "sqlite": "sqlite",
    "snowflake": "snowflake",
    "gcpbigquery": "bigquery",
    "google_cloud_platform": "bigquery",
    "redshift": "redshift",
    "mysql": "mysql",
    "mssql": "tsql",
    "oracle": "oracle",
    "trino": "trino",
    "databricks": "databricks",
}

#: The schema an unqualified table is in, per connection type.
DEFAULT_SCHEMAS: Mapping[str, str] = {"postgres": "public", "duckdb": "main", "sqlite": "main"}


def query_tables(sql: str, dialect: str | None = None) -> list[tuple[str | None, str | None, str]]:
    """``(database, schema, table)`` of every table ``sql`` reads, CTE names left out, sorted.

    Returns ``[]`` when sqlglot is not installed or cannot parse the query: lineage is a
    courtesy and never fails a sync.
    """
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:
        return []
    try:
        statements = sqlglot.parse(sql, read=dialect)
    except Exception as exc:  # noqa: BLE001 - sqlglot raises several error types; any means "no lineage"
        log.info("Lineage: could not parse the query (%s); no input datasets", exc)
        return []
    found: list[tuple[str | None, str | None, str]] = []
    for statement in statements:
        if statement is None:
            continue
        ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            if not table.name or (not table.db and table.name in ctes):
                continue
            key = (table.catalog or None, table.db or None, table.name)
            if key not in found:
                found.append(key)
    return sorted(found, key=lambda k: (k[0] or "", k[1] or "", k[2]))


def warehouse_namespace(connection: Any, hook: Any | None = None) -> tuple[str, str | None]:
    """``(namespace, database)`` of a warehouse connection, as OpenLineage names them."""
    if hook is not None:
        try:
            info = hook.get_openlineage_database_info(connection)
        except Exception:  # noqa: BLE001 - optional provider parts missing, or the hook has none
            info = None
        if info is not None and getattr(info, "scheme", None):
            authority = getattr(info, "authority", None) or ""
            return f"{info.scheme}://{authority}", getattr(info, "database", None)
    conn_type = connection.conn_type or "unknown"
    host = connection.host or ""
    if conn_type in ("duckdb", "sqlite"):  # the host is a file path
        return f"{conn_type}://{host}", None
    port = f":{connection.port}" if connection.port else ""
    return f"{conn_type}://{host}{port}", connection.schema or None


def destination_namespace(conn_type: str, base_url: str) -> str:
    """``retl_hubspot`` + ``https://api.hubapi.com/...`` -> ``hubspot://api.hubapi.com``."""
    kind = conn_type.removeprefix("retl_") or "destination"
    netloc = urlsplit(base_url).netloc.rpartition("@")[2]  # never credentials, never the path
    return f"{kind}://{netloc}"


def facets_on_complete(operator: Any) -> Any:
    """``OperatorLineage`` of a finished sync (``None`` without the OpenLineage provider)."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    inputs = []
    try:
        hook = operator.sql_hook
        connection = hook.get_connection(operator.conn_id)
        namespace, database = warehouse_namespace(connection, hook)
        conn_type = connection.conn_type or ""
        default_schema = DEFAULT_SCHEMAS.get(conn_type)
        for catalog, schema, table in query_tables(operator.sql, SQL_DIALECTS.get(conn_type)):
            parts = [catalog or database, schema or default_schema, table]
            inputs.append(Dataset(namespace=namespace, name=".".join(p for p in parts if p)))
    except Exception as exc:  # noqa: BLE001 - lineage never fails the task
        log.info("Lineage: no input datasets (%s)", exc)
    outputs = []
    try:
        destination = operator.destination_hook
        if not getattr(destination, "base_url", None):
            destination.get_conn()
        namespace = destination_namespace(destination.conn_type, destination.base_url)
        outputs.append(Dataset(namespace=namespace, name=str(operator.object)))
    except Exception as exc:  # noqa: BLE001 - lineage never fails the task
        log.info("Lineage: no output dataset (%s)", exc)
    return OperatorLineage(inputs=inputs, outputs=outputs)


# ---------------------------------------------------------------------- extra link


def _is_vendor_host(vendor_hosts: tuple[str, ...], netloc: str) -> bool:
    host = netloc.rpartition("@")[2].split(":")[0].lower()
    return any(host.endswith(suffix) for suffix in vendor_hosts)


def destination_url(conn_type: str, base_url: str, object: str, extra: Mapping[str, Any] | None = None) -> str:
    """Web page of ``object`` at the destination, or ``""`` when there is none to show.

    Where the page is comes from the destination's spec (``AppLink``). Destinations
    without one (a webhook, whose URL often carries a secret) show nothing. For a host
    that is not the vendor's (an emulator, a proxy), the page is ``/_emulator/state``.
    """
    spec = by_conn_type(conn_type)
    if spec is None or spec.app_link is None or not base_url:
        return ""
    link = spec.app_link
    parts = urlsplit(base_url)
    netloc = parts.netloc.rpartition("@")[2]
    origin = f"{parts.scheme}://{netloc}"
    if not _is_vendor_host(spec.vendor_hosts, parts.netloc):
        return f"{origin}/_emulator/state"
    declared = spec.object(object)
    context: dict[str, Any] = {str(k): v for k, v in (extra or {}).items() if v not in (None, "")}
    instance = str(context.get("instance_url") or origin).rstrip("/")
    context.update(
        origin=origin,
        dc=netloc.split(".")[0],
        object=object,
        page=(declared.app_page if declared and declared.app_page else object),
        app=link.app_hosts.get(netloc, link.default_app),
        instance_url=instance,
    )
    if any(host in instance for host in link.login_hosts):
        return link.fallback.format_map(context)  # the instance is known only after login
    try:
        return link.template.format_map(context)
    except KeyError:  # an extra the page needs (HubSpot's portal_id) is not set
        return link.fallback.format_map(context)


def operator_destination_url(operator: Any) -> str:
    """``destination_url`` of a ReverseETLOperator's object, from its destination hook and connection.

    Raises what building the hook or reading the connection raises; callers decide what a
    missing link means (the task's button and the history's run row both show none).
    """
    hook = operator.destination_hook
    if not getattr(hook, "base_url", None):
        hook.get_conn()
    extra = hook.get_connection(operator.destination_conn_id).extra_dejson
    return destination_url(hook.conn_type, hook.base_url, str(operator.object), extra)


class DestinationLink(BaseOperatorLink):
    """The task's "Destination" button: the synced object in the destination app."""

    name = "Destination"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Called in the worker when the task ends (Airflow 3 stores the result in XCom), with
        # the rendered operator: its destination hook is the one the sync used.
        try:
            return operator_destination_url(operator)
        except Exception as exc:  # noqa: BLE001 - a link never fails the task
            log.info("No destination link: %s", exc)
            return ""
