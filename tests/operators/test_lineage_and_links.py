"""OpenLineage datasets, the destination extra link, and dynamic task mapping of the operator."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.operators.lineage import destination_namespace, destination_url, query_tables
from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import make_warehouse


class TestQueryTables:
    def test_joins_schemas_and_ctes(self):
        sql = """
            with recent as (select * from analytics.orders where ordered_at > now() - interval 30 day)
            select c.email, count(*) from customer_traits c join recent r using (customer_id)
            left join raw.events e on e.customer_id = c.customer_id group by 1
        """
        assert query_tables(sql, "duckdb") == [
            (None, None, "customer_traits"), (None, "analytics", "orders"), (None, "raw", "events")
        ]

    def test_unparseable_query_gives_no_tables_not_an_error(self):
        assert query_tables("select from where (((", "postgres") == []

    def test_three_part_names(self):
        assert query_tables('select * from "shop"."main"."customer_traits"', "duckdb") == [
            ("shop", "main", "customer_traits")
        ]


class TestNamespacesAndLinks:
    def test_destination_namespace_has_host_only(self):
        assert destination_namespace("retl_hubspot", "https://api.hubapi.com") == "hubspot://api.hubapi.com"
        assert destination_namespace("retl_webhook", "https://user:pw@hooks.example.com/s3cret/path") == (
            "webhook://hooks.example.com"
        )

    @pytest.mark.parametrize(
        ("conn_type", "base_url", "object", "extra", "expected"),
        [
            ("retl_hubspot", "https://api.hubapi.com", "companies", {"portal_id": 42},
             "https://app.hubspot.com/contacts/42/objects/0-2/views/all/list"),
            ("retl_salesforce", "https://acme.my.salesforce.com", "Contact", {},
             "https://acme.my.salesforce.com/lightning/o/Contact/list"),
            ("retl_zendesk", "https://acme.zendesk.com", "users", {}, "https://acme.zendesk.com/agent/users"),
            ("retl_mailchimp", "https://us6.api.mailchimp.com", "a1b2c3", {},
             "https://us6.admin.mailchimp.com/audience/contacts/"),
            ("retl_customerio", "https://track.customer.io", "events", {}, "https://fly.customer.io/activity"),
            ("retl_hubspot", "http://127.0.0.1:8081", "contacts", {}, "http://127.0.0.1:8081/_emulator/state"),
            ("retl_webhook", "https://hooks.example.com/s3cret", "customers", {}, ""),
            # An alias of an object kind opens the kind's page; a missing extra falls back to the app's home.
            ("retl_zendesk", "https://acme.zendesk.com", "organization", {}, "https://acme.zendesk.com/agent/organizations"),
            ("retl_hubspot", "https://api.hubapi.com", "contacts", {}, "https://app.hubspot.com/"),
            ("retl_hubspot", "https://api.hubapi.com", "2-123", {"portal_id": 7},
             "https://app.hubspot.com/contacts/7/objects/2-123/views/all/list"),
            # Before login, Salesforce's instance is unknown: the login host redirects.
            ("retl_salesforce", "https://login.salesforce.com", "Contact", {}, "https://login.salesforce.com/"),
            ("retl_customerio", "https://track-eu.customer.io", "people", {}, "https://fly-eu.customer.io/people"),
            ("retl_braze", "https://rest.iad-01.braze.com", "users", {}, "https://dashboard.braze.com/"),
            ("retl_unknown", "https://api.example.com", "x", {}, ""),
        ],
    )
    def test_destination_url(self, conn_type, base_url, object, extra, expected):
        assert destination_url(conn_type, base_url, object, extra) == expected


def test_operator_declares_link_and_lineage(tmp_path, set_connection):
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    set_connection("hubspot_lineage", "retl_hubspot", host="http://127.0.0.1:1", password="pat-x")
    op = ReverseETLOperator(
        task_id="sync", conn_id=warehouse.conn_id, destination_conn_id="hubspot_lineage", object="contacts",
        primary_key="email", sql="select email, firstname from customers c join crm.accounts a using (email)",
    )
    assert [link.name for link in op.operator_extra_links] == ["Destination"]
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (f"duckdb://{warehouse.path}", "main.customers"), (f"duckdb://{warehouse.path}", "crm.accounts"),
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("hubspot://127.0.0.1:1", "contacts")]


MAPPED_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator.partial(
        task_id="sync", conn_id={conn_id!r}, destination_conn_id="hubspot_mapped", primary_key="email",
        sql="select email, firstname, lastname from {{{{ task.object }}}}_source",
    ).expand(object=["contacts", "companies_as_contacts"])
"""


def test_partial_expand_over_objects_runs_each_with_its_own_checkpoint_and_link(dag_runner, tmp_path,
                                                                                  set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.execute("create table contacts_source as select 'c' || i || '@example.com' as email, "
                      "'F' || i as firstname, 'L' || i as lastname from range(5) t(i)")
    warehouse.execute("create table companies_as_contacts_source as select 'k' || i || '@example.com' as email, "
                      "'G' || i as firstname, 'M' || i as lastname from range(3) t(i)")
    with start_emulator("hubspot", tokens=["pat-mapped"], rate_limit=None) as hubspot:
        # A second object type with the contacts' schema, so both map indexes write somewhere real.
        from airflow_provider_retl.testing.emulators import custom_object_type

        hubspot.emulator.add_object_type(custom_object_type(
            "companies_as_contacts", [{"name": "email", "hasUniqueValue": True}, "firstname", "lastname"], "2-777"))
        set_connection("hubspot_mapped", "retl_hubspot", host=hubspot.url, password="pat-mapped")
        dag_id = f"mapped_{uuid.uuid4().hex[:8]}"
        result = dag_runner.run_dag(MAPPED_DAG.format(dag_id=dag_id, conn_id=warehouse.conn_id), dag_id)
        assert result.succeeded, result
        reports = [result.return_value("sync", i) for i in (0, 1)]
        assert [r["created"] + r.get("upserted", 0) for r in reports] == [5, 3]
        for i in (0, 1):
            assert result.task("sync", i).xcoms["_link_DestinationLink"] == f"{hubspot.url}/_emulator/state"
        again = dag_runner.run_dag(MAPPED_DAG.format(dag_id=dag_id, conn_id=warehouse.conn_id), dag_id)
        assert [again.return_value("sync", i)["requests"] for i in (0, 1)] == [0, 0]


def test_every_destination_with_an_app_has_a_page_for_each_declared_object():
    from airflow_provider_retl.destinations import REGISTRY

    for spec in REGISTRY.values():
        if spec.app_link is None:
            continue
        host = "https://api" + spec.vendor_hosts[0]
        for declared in spec.objects:
            name = "Contact" if declared.name == "*" else declared.name
            url = destination_url(spec.conn_type, host, name, {"portal_id": 1, "instance_url": "https://a.my.salesforce.com"})
            assert url.startswith("https://") and "{" not in url, (spec.name, declared.name, url)
