"""The "Reverse ETL" Airflow plugin: discovered the ways Airflow loads it, behind Airflow's auth, fed by real runs.

The pages are fetched from Airflow's own API server app (``airflow.api_fastapi.app.create_app``,
which mounts every plugin's FastAPI app, as ``airflow api-server`` does) with FastAPI's
TestClient, after real ``dag.test()`` runs of a sync into the HubSpot emulator: a first run
with rejects, a second with changes.
"""

from __future__ import annotations

import html
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pat-ui-test-token-5678"
PLUGIN_CLASS = "airflow_provider_retl.plugins.ReverseETLPlugin"
XSS_KEY = "<script>alert(1)</script>@example.com"

DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    with_history = ReverseETLOperator(
        task_id="contacts", conn_id={conn_id!r}, sql={sql!r}, destination_conn_id="hubspot_ui", object="contacts",
        primary_key="email", checkpoint="variable", max_reject_ratio=1.0)
    # The same sync without history tables: its pages are built from the reports in XCom alone.
    with_history >> ReverseETLOperator(
        task_id="reports_only", conn_id={conn_id!r}, sql={sql!r}, destination_conn_id="hubspot_ui", object="contacts",
        primary_key="email", checkpoint="variable", max_reject_ratio=1.0, history=None)
"""


class TestDiscovery:
    def test_the_entry_point_names_the_plugin_class(self):
        points = {ep.name: ep for ep in importlib.metadata.entry_points(group="airflow.plugins")}
        assert "reverse_etl" in points, "reinstall the package: the airflow.plugins entry point is missing"
        assert f"{points['reverse_etl'].module}.{points['reverse_etl'].attr}" == PLUGIN_CLASS

    def test_airflow_loads_it_from_the_entry_point(self, airflow_db):
        from airflow import plugins_manager

        plugins, errors = plugins_manager._get_plugins()
        ours = [p for p in plugins if p.name == "reverse_etl"]
        assert len(ours) == 1 and "EntryPoint" in str(ours[0].source), [(p.name, str(p.source)) for p in plugins]
        assert "reverse_etl" not in errors
        views = {v["url_route"]: v for v in ours[0].external_views}
        assert views["reverse_etl"]["destination"] == "nav" and views["reverse_etl"]["href"] == "/retl/"
        assert views["retl_sync_report"]["destination"] == "task_instance"
        assert [app["url_prefix"] for app in ours[0].fastapi_apps] == ["/retl"]

    def test_airflow_loads_it_from_the_provider_info(self, airflow_db):
        # The path Airflow takes when [core] lazy_discover_providers is False.
        from airflow import plugins_manager
        from airflow.providers_manager import ProvidersManager

        declared = {p.name: p for p in ProvidersManager().plugins}
        assert declared["reverse_etl"].plugin_class == PLUGIN_CLASS
        assert declared["reverse_etl"].provider_name == "airflow-provider-retl"
        loaded, _ = plugins_manager._load_providers_plugins()
        assert [p.name for p in loaded if p.name == "reverse_etl"] == ["reverse_etl"]

    def test_importing_the_plugin_builds_nothing(self):
        # Every Airflow process loads plugins; only the API server should pay for the app.
        code = (
            "import sys, airflow_provider_retl.plugins as p;"
            "print(sorted(m for m in sys.modules if m.startswith('airflow_provider_retl.plugins.')),"
            " p.ReverseETLPlugin.fastapi_apps[0]['app']._app)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        assert out.stdout.strip().splitlines()[-1] == "[] None", out.stdout + out.stderr


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's API server app (plugins mounted) in a TestClient, and a valid session token."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    client = TestClient(create_app())
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    return client, token


class TestAuth:
    @pytest.mark.parametrize("path", ["/retl/", "/retl/sync?id=x", "/retl/ti?dag_id=d&run_id=r&task_id=t"])
    def test_no_session_is_401_with_a_login_link(self, api, path):
        client, _ = api
        response = client.get(path)
        assert response.status_code == 401
        assert "Log in to Airflow" in response.text and "/auth/" in response.text

    def test_a_forged_token_is_403(self, api):
        client, token = api
        response = client.get("/retl/", headers={"Authorization": "Bearer " + token[:-4] + "AAAA"})
        assert response.status_code == 403

    def test_the_ui_cookie_or_a_bearer_token_gets_the_page(self, api):
        client, token = api
        assert client.get("/retl/", cookies={"_token": token}).status_code == 200
        response = client.get("/retl/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and "<h1>Reverse ETL</h1>" in response.text
        assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no scripts

    def test_the_icon_is_served(self, api):
        client, _ = api
        response = client.get("/retl/static/icon.svg")
        assert response.status_code == 200 and response.text.startswith("<svg")


@pytest.fixture(scope="module")
def two_runs(dag_runner, tmp_path_factory):
    """A sync run twice for real: first with 3 rejects (one key is markup), then with 2 changed rows."""
    import os

    import airflow_harness

    tmp_path = tmp_path_factory.mktemp("ui")
    env = {}

    def set_connection(conn_id, conn_type, **fields):
        name, value = airflow_harness.connection_env(conn_id, conn_type, **fields)
        env[name] = value
        os.environ[name] = value

    try:
        with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as hubspot:
            set_connection("hubspot_ui", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"max_retries": 1})
            warehouse = make_warehouse("duckdb", tmp_path, set_connection)
            warehouse.create(customers(12))
            warehouse.insert([("broken@", "x", "y", "z"), ("also broken", "x", "y", "z"), (XSS_KEY, "x", "y", "z")])
            dag_id = "retl_ui_contacts"
            text = DAG.format(dag_id=dag_id, conn_id=warehouse.conn_id, sql=warehouse.sql)
            first = dag_runner.run_dag(text, dag_id)
            warehouse.execute("update {table} set company = 'Changed' where email in (?, ?)",
                              ["user3@example.com", "user5@example.com"])
            second = dag_runner.run_dag(text, dag_id)
            yield dag_id, first, second, hubspot.url
    finally:
        for name in env:
            os.environ.pop(name, None)


def get(api, path: str, **params) -> str:
    client, token = api
    response = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text[-500:]
    return response.text


def text_of(page: str) -> str:
    """The page as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


class TestPagesAfterRealRuns:
    def test_the_runs_are_what_the_pages_are_about(self, two_runs):
        _, first, second, _ = two_runs
        one, two = first.return_value("contacts"), second.return_value("contacts")
        assert first.succeeded and one["created"] == 12 and one["rejected"] == 3, first
        assert second.succeeded and two["updated"] == 2 and two["rejected"] == 3, second

    def test_the_nav_page_lists_the_sync_with_its_last_run(self, api, two_runs):
        dag_id, _, second, emulator_url = two_runs
        page = get(api, "/retl/")
        row = re.search(r"<tr>\s*<td><a href=\"sync\?id=retl_ui_contacts.contacts\">.*?</tr>", page, re.S)
        assert row, page
        cells = [text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)]
        report = second.return_value("contacts")
        assert cells[0] == f"{dag_id}.contacts" and cells[2] == "success"
        assert cells[4] == "2" and cells[5] == "3"  # rows changed, rejects of the last run
        assert cells[6] == f"{report['seconds']:.1f} s" and cells[7] == "2"  # duration, runs
        assert f'href="{emulator_url}/_emulator/state"' in row.group(0)  # the DestinationLink's URL

    def test_the_sync_page_plots_rejects_and_searches(self, api, two_runs):
        dag_id, first, second, _ = two_runs
        page = get(api, "/retl/sync", id=f"{dag_id}.contacts")
        charts = re.findall(r"<svg class=\"chart\".*?</svg>", page, re.S)
        assert len(charts) == 4
        titles = [re.search(r'aria-label="([^"]+)"', c).group(1) for c in charts]
        assert titles == ["Rows by operation", "Rejects", "Duration (s)", "Requests"]
        rows_chart = charts[0]
        # created: 12 then 0; updated: 0 then 2 -> two series with a point per run.
        assert len(re.findall(r"<circle class=\"point\"", rows_chart)) == 4
        assert re.search(r"<title>[^<]*: created 12</title>", rows_chart)
        assert re.search(r"<title>[^<]*: updated 2</title>", rows_chart)
        assert len(re.findall(r"<circle class=\"point\"", charts[1])) == 2  # rejects per run
        rejects = text_of(re.search(r"<table class=\"rejects\">.*?</table>", page, re.S).group(0))
        assert "broken@" in rejects and "also broken" in rejects and XSS_KEY in rejects
        assert "validation" in rejects
        # The markup in a key is shown as text, never as markup.
        assert "<script>" not in page and html.escape(XSS_KEY, quote=False) in page
        runs = re.search(r"<table class=\"runs\">.*?</table>", page, re.S).group(0)
        assert first.run_id in runs and second.run_id in runs

        found = get(api, "/retl/sync", id=f"{dag_id}.contacts", key="broken@")
        outcomes = re.search(r"<table class=\"outcomes\">.*?</table>", found, re.S)
        assert outcomes, found[-2000:]
        lines = [text_of(r) for r in re.findall(r"<tr>.*?</tr>", outcomes.group(0), re.S)[1:]]
        assert len(lines) == 2 and all("rejected" in line and "email" in line for line in lines), lines
        assert "history: retl_runs and retl_changes (connection wh_duckdb)" in text_of(page)
        changed = get(api, "/retl/sync", id=f"{dag_id}.contacts", key="user3@example.com")
        lines = [text_of(r) for r in re.findall(r"<tr>.*?</tr>", changed.split('class="outcomes"')[1], re.S)[1:3]]
        assert [line.split()[-2:] for line in lines] == [["update", "ok"], ["create", "ok"]], lines  # newest first
        assert second.run_id in lines[0] and first.run_id in lines[1]
        missing = get(api, "/retl/sync", id=f"{dag_id}.contacts", key="nobody@example.com")
        assert "No outcome recorded for" in text_of(missing)

    def test_without_history_the_reports_feed_the_sync_page(self, api, two_runs):
        dag_id, first, second, _ = two_runs
        page = get(api, "/retl/sync", id=f"{dag_id}.reports_only")
        assert "history:" not in text_of(page)
        assert 'action="acknowledge"' not in page  # acknowledgements live in the history tables
        rejects = text_of(re.search(r"<table class=\"rejects\">.*?</table>", page, re.S).group(0))
        assert "broken@" in rejects and "also broken" in rejects and "<script>" not in page
        found = get(api, "/retl/sync", id=f"{dag_id}.reports_only", key="also broken")
        lines = [text_of(r) for r in re.findall(r"<tr>.*?</tr>", found.split('class="outcomes"')[1], re.S)[1:3]]
        assert len(lines) == 2 and all("rejected" in line and "@-sign" in line for line in lines), lines
        assert {second.run_id in lines[0], first.run_id in lines[1]} == {True}

    def test_an_unknown_sync_is_404(self, api, two_runs):
        client, token = api
        response = client.get("/retl/sync", params={"id": "<b>nope</b>"}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 404 and "<b>nope" not in response.text

    def test_acknowledging_one_reason_records_its_keys(self, api, two_runs):
        dag_id, _, second, _ = two_runs
        client, token = api
        page = get(api, "/retl/sync", id=f"{dag_id}.contacts")
        forms = re.findall(r'<form method="post" action="acknowledge".*?</form>', page, re.S)
        assert len(forms) == 3  # one per reason
        # Grouped by the reason's pattern (values blanked), so the form names the pattern, not the key.
        form = next(f for f in forms if "invalid email '…': There must be something after the @-sign" in html.unescape(f))
        fields = {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)" value="([^"]*)"', form)}
        assert fields["id"] == f"{dag_id}.contacts" and fields["run_id"] == second.run_id
        assert client.post("/retl/acknowledge", data=fields).status_code == 401  # no session, no change
        response = client.post("/retl/acknowledge", data=fields, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.history[0].status_code == 303
        assert "Acknowledged 1 rejected row(s)" in text_of(response.text)
        from airflow_provider_retl.plugins.history import open_history

        store = open_history(second.return_value("contacts")["history"])
        acks = store.acknowledgements(f"{dag_id}.contacts")
        assert [(a["record_key"], a["acknowledged_by"]) for a in acks] == [("broken@", "admin")]

    def test_the_task_instance_tab_shows_that_tries_report(self, api, two_runs):
        dag_id, _, second, _ = two_runs
        report = second.return_value("contacts")
        # An unmapped task: the UI leaves the {MAP_INDEX} placeholder in the URL.
        page = get(api, "/retl/ti", dag_id=dag_id, run_id=second.run_id, task_id="contacts", map_index="{MAP_INDEX}")
        text = text_of(page)
        assert f"Sync report: {dag_id}.contacts" in text and "success try 1" in text
        assert "updated 2" in text and "rejected 3" in text and f"rows read {report['rows_read']}" in text
        assert "broken@" in text and "<script>" not in page
        assert TOKEN not in page
        other = get(api, "/retl/ti", dag_id=dag_id, run_id=second.run_id, task_id="missing", map_index="-1")
        assert "not a Reverse ETL sync" in other


RETRY_DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="contacts", conn_id={conn_id!r}, sql={sql!r}, destination_conn_id="hubspot_retry",
                       object="contacts", primary_key="email", checkpoint="variable", batch_size=20,
                       destination_params={{"max_concurrency": 1}}, retries=1, retry_delay=dt.timedelta(seconds=0))
"""


def test_the_task_instance_tab_lists_every_try_from_the_history(api, dag_runner, tmp_path, set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as hubspot:
        set_connection("hubspot_retry", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"max_retries": 1})
        warehouse = make_warehouse("sqlite", tmp_path, set_connection)
        warehouse.create(customers(60))
        # The first batch lands, then the destination fails beyond the hook's one retry: try 1 fails.
        hubspot.faults.fail_next(2, "error", after=1)
        dag_id = "retl_ui_retried"
        result = dag_runner.run_dag(RETRY_DAG.format(dag_id=dag_id, conn_id=warehouse.conn_id, sql=warehouse.sql), dag_id)
    assert result.succeeded and list(result.task("contacts").tries) == ["failed", "success"], result
    report = result.return_value("contacts")
    page = get(api, "/retl/ti", dag_id=dag_id, run_id=result.run_id, task_id="contacts", map_index="{MAP_INDEX}")
    tries = re.search(r"<table class=\"tries\">.*?</table>", page, re.S)
    assert tries, page[-1500:]
    rows = [[text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in re.findall(r"<tr>.*?</tr>", tries.group(0), re.S)[1:]]
    assert [(r[0], r[2]) for r in rows] == [("2", "success"), ("1", "failed")], rows
    created = {r[0]: int(r[3]) for r in rows}
    assert created["2"] == report["created"] and created["1"] + created["2"] == 60 and created["1"] > 0
    assert "Report (try 2)" in text_of(page)
