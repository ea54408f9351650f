"""The "Reverse ETL" view in the Airflow UI, driven by a real headless Chromium (opt-in: ``make ui-test``).

Two real ``dag.test()`` runs of a sync into the HubSpot emulator in this process (a first
run with rejects, a second with two changed rows), then ``airflow api-server`` (a
subprocess on a free loopback port, the simple auth manager, the same metadata DB and
connections) and Chromium: log in through the form, open "Reverse ETL" from the
navigation, and check what a person sees there: the sync and its runs, the plots (SVG
points), the rejects grouped by reason with example keys, a key search returning that
record's outcomes, acknowledging one reason's rejects, and the "Sync report" tab of the task instance. The sync page is saved
as ``docs/ui-reverse-etl.png`` (the README shows it) and every page under ``build/ui/``.

Deselected unless ``-m ui`` is given (tests/conftest.py). A missing browser or playwright
fails the test, never skips it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse
from tests.ui.test_airflow_ui import chromium_executable, free_port, png_distinct_scanlines, png_size

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "ui-reverse-etl.png"
BUILD = ROOT / "build" / "ui"
USER, PASSWORD = "admin", "retl-ui-test"
TOKEN = "pat-browser-test-token-42"
DAG_ID = "retl_ui_browser"
SYNC_ID = f"{DAG_ID}.contacts"
VIEWPORT = {"width": 1400, "height": 1300}

DAG = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="contacts", conn_id={conn_id!r}, sql={sql!r}, destination_conn_id="hubspot_browser",
                       object="contacts", primary_key="email", checkpoint="variable", max_reject_ratio=1.0)
"""


def start_api_server(home: Path, port: int, env_extra: dict[str, str]) -> subprocess.Popen:
    """``airflow api-server`` on 127.0.0.1:port, on this process's metadata DB, with one simple-auth user."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(env_extra)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            "AIRFLOW__CORE__DAGS_FOLDER": os.environ["AIRFLOW__CORE__DAGS_FOLDER"],
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": "retl-ui-test-jwt-secret-" + "x" * 40,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    log = open(home / "api-server.log", "wb")  # noqa: SIM115 - closed with the process below
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
    )  # fmt: skip


def wait_until_up(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"api-server exited {process.returncode}:\n{tail(log_path)}")
        try:
            if requests.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"api-server not up after {timeout:.0f}s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def test_reverse_etl_view_after_two_real_runs(dag_runner, tmp_path, set_connection):
    chromium = chromium_executable()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("no playwright: `make ui-test` installs it (pip install playwright)", pytrace=False)

    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as hubspot:
        set_connection("hubspot_browser", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"max_retries": 1})
        warehouse = make_warehouse("duckdb", tmp_path, set_connection)
        warehouse.create(customers(20))
        warehouse.insert([("broken@", "x", "y", "z"), ("no at sign", "x", "y", "z")])
        text = DAG.format(dag_id=DAG_ID, conn_id=warehouse.conn_id, sql=warehouse.sql)
        first = dag_runner.run_dag(text, DAG_ID)
        assert first.succeeded and first.return_value("contacts")["rejected"] == 2, first
        warehouse.execute("update {table} set company = 'Changed' where email in (?, ?)",
                          ["user4@example.com", "user9@example.com"])
        second = dag_runner.run_dag(text, DAG_ID)
        report = second.return_value("contacts")
        assert second.succeeded and report["updated"] == 2 and report["rejected"] == 2, second

        connections = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        home = tmp_path / "api-server"
        server = start_api_server(home, port, connections)
        try:
            wait_until_up(url, server, home / "api-server.log")
            BUILD.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
                try:
                    page = browser.new_page(viewport=VIEWPORT)
                    page.set_default_timeout(60_000)
                    expect.set_options(timeout=60_000)
                    see_it_all(page, expect, url, first, second, report)
                finally:
                    browser.close()
        except BaseException:
            print(tail(home / "api-server.log"))
            raise
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)

    data = SCREENSHOT.read_bytes()
    assert png_size(data) == (VIEWPORT["width"], VIEWPORT["height"])
    assert png_distinct_scanlines(data) > 100


def see_it_all(page, expect, url, first, second, report) -> None:
    """Log in, then walk the Reverse ETL view as a person would, asserting on what is on screen."""
    page.goto(f"{url}/")
    page.locator("input[name=username]").fill(USER)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))

    # The navigation entry the plugin adds (under the UI's plugins menu) opens the page in a frame.
    page.goto(f"{url}/plugin/reverse_etl")
    frame = page.frame_locator("iframe[title='Reverse ETL']")
    expect(frame.get_by_role("heading", name="Reverse ETL")).to_be_visible()
    row = frame.locator("table.syncs tr", has_text=SYNC_ID)
    expect(row).to_be_visible()
    expect(row).to_contain_text("success")
    expect(row.locator("td").nth(4)).to_have_text("2")  # rows changed by the last run
    expect(row.locator("td").nth(5)).to_have_text("2")  # its rejects
    page.screenshot(path=str(BUILD / "ui-reverse-etl-syncs.png"))

    row.get_by_role("link", name=SYNC_ID).click()
    expect(frame.get_by_role("heading", name=SYNC_ID)).to_be_visible()
    runs = frame.locator("table.runs tbody tr")
    expect(runs).to_have_count(2)
    expect(frame.locator("table.runs")).to_contain_text(first.run_id)
    expect(frame.locator("table.runs")).to_contain_text(second.run_id)
    charts = frame.locator("svg.chart")
    expect(charts).to_have_count(4)
    rows_chart = frame.locator("svg.chart[aria-label='Rows by operation']")
    expect(rows_chart.locator("circle.point")).to_have_count(4)  # created and updated, one point per run
    expect(rows_chart.locator("polyline")).to_have_count(2)
    expect(frame.locator("svg.chart[aria-label='Rejects'] circle.point")).to_have_count(2)
    rejects = frame.locator("table.rejects")
    expect(rejects.locator("tbody tr")).to_have_count(2)  # two reasons
    broken = rejects.locator("tr", has_text="There must be something after the @-sign")
    expect(broken.locator(".key")).to_have_text(["broken@"])
    expect(rejects.locator("tr", has_text="must have an @-sign").locator(".key")).to_have_text(["no at sign"])

    # The key search: a form in the frame, answered by the history's changelog.
    frame.get_by_label("Record key").fill("user4@example.com")
    frame.get_by_role("button", name="Search").click()
    outcomes = frame.locator("table.outcomes tbody tr")
    expect(outcomes).to_have_count(2)
    expect(outcomes.nth(0)).to_contain_text("update")  # newest first: the second run changed it
    expect(outcomes.nth(0)).to_contain_text(second.run_id)
    expect(outcomes.nth(1)).to_contain_text("create")
    expect(outcomes.nth(1)).to_contain_text(first.run_id)
    frame.locator("table.outcomes").scroll_into_view_if_needed()
    frame.get_by_role("heading", name=SYNC_ID).scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT))
    page.screenshot(path=str(BUILD / "ui-reverse-etl-sync.png"))

    # Acknowledge one reason's rejects: a form posted from the frame, with the UI's session.
    broken.get_by_role("button", name="Acknowledge").click()
    expect(frame.locator(".notice")).to_contain_text("Acknowledged 1 rejected row(s)")

    # The task instance's "Sync report" tab: that try's report.
    page.goto(f"{url}/dags/{DAG_ID}/runs/{second.run_id}/tasks/contacts")
    page.get_by_role("tab", name="Sync report").or_(page.get_by_role("link", name="Sync report")).first.click()
    tab = page.frame_locator("iframe[title='Sync report']")
    expect(tab.get_by_role("heading", name=f"Sync report: {SYNC_ID}")).to_be_visible()
    expect(tab.locator(".stat", has_text="updated")).to_contain_text("2")
    expect(tab.locator(".stat", has_text="rejected")).to_contain_text("2")
    expect(tab.locator(".stat", has_text="rows read")).to_contain_text(str(report["rows_read"]))
    expect(tab.locator("table.rejects")).to_contain_text("broken@")
    page.screenshot(path=str(BUILD / "ui-reverse-etl-ti-tab.png"))
