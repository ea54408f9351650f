"""The Airflow UI of ``make airflow``, driven by a real headless Chromium (opt-in: ``make ui-test``).

Starts what ``make airflow`` starts (``demo/airflow_standalone.py``: ``airflow standalone``
with the example DAGs, emulators, pools and connections), but in a temporary
``AIRFLOW_HOME`` with the API server and the emulators on free loopback ports. It checks that
every example DAG parsed without an import error, that the example connections are in the
metadata DB (listed in the UI) and that the connection list's Test button answers for each
destination connection, triggers ``shop_dbt_to_apps`` and then ``retl_demo`` through the REST
API, waits for the runs to succeed, then logs in through the login form (admin and the
password ``make airflow`` generated and printed) and loads the
run's page (grid + task instances), a finished sync's log (the report summary), its Details
tab (the "Destination" extra link) and its XCom (the report), taking a screenshot of each into
``build/ui/``. The first run sends every row; all its tasks must succeed in one try.

Deselected unless ``-m ui`` is given (tests/conftest.py); it needs Debian's ``chromium``
(or ``RETL_CHROMIUM=/path/to/chrome``) and the ``playwright`` Python package, which
``make ui-test`` installs when missing. A missing browser fails the test, never skips it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import airflow_harness
import pytest
import requests

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "ui"
DAG_ID = "shop_dbt_to_apps"
SYNC_TASK = "marketing.traits_to_mailchimp"  # an unmapped sync: its page has no map index
CUSTOMERS = 40  # rows of customer_traits the dbt project builds
VIEWPORT = {"width": 1400, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_executable() -> str:
    candidates = [os.environ.get("RETL_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("no Chromium: `make ui-test` installs Debian's chromium (or set RETL_CHROMIUM)", pytrace=False)


def load_standalone_module():
    spec = importlib.util.spec_from_file_location("retl_airflow_standalone", ROOT / "demo" / "airflow_standalone.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_distinct_scanlines(data: bytes) -> int:
    """How many different (filtered) scanlines the image has: a blank page has a handful."""
    width, height = png_size(data)
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    return len({raw[i * stride:(i + 1) * stride] for i in range(height)})


class Api:
    """The Airflow REST API (v2) with a token from the simple auth manager's login route."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        response = requests.post(f"{base_url}/auth/token", json={"username": username, "password": password},
                                 timeout=30)
        assert response.status_code == 201, response.text
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def wait_for(self, what: str, check, timeout: float, interval: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except requests.RequestException as exc:  # a busy SQLite-backed api-server can be slow to answer
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _dag_parsed(api: Api) -> bool:
    response = api.session.get(f"{api.base_url}/api/v2/dags/{DAG_ID}", timeout=30)
    return response.status_code == 200


def test_a_finished_run_and_its_sync_report_in_the_ui(tmp_path, monkeypatch):
    chromium = chromium_executable()
    # conftest.py pointed this process at a unit-test Airflow (UNIT_TEST_MODE: a fresh JWT secret
    # per process, its own SQLite DB); the standalone must configure itself like `make airflow`.
    for name in airflow_harness.airflow_env(tmp_path):
        monkeypatch.delenv(name, raising=False)
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("no playwright: `make ui-test` installs it (pip install playwright)", pytrace=False)
    standalone = load_standalone_module()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    timings: dict[str, float] = {}
    start = time.monotonic()
    extra_env = {
        # Nothing of this Airflow may collide with a `make airflow` running beside it.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    with standalone.running_standalone(tmp_path / "airflow", port, fixed_ports=False, extra_env=extra_env,
                                       timeout=300) as af:
        timings["standalone up"] = time.monotonic() - start
        try:
            assert af.password != "admin" and len(af.password) >= 12
            api = Api(af.url, standalone.USER, af.password)
            api.wait_for(f"the dag processor to parse {DAG_ID}", lambda: _dag_parsed(api), timeout=240)
            timings["dag parsed"] = time.monotonic() - start
            check_examples_parsed_and_connections_listed(api, af)
            # Trigger while paused, then unpause. Unpausing also makes the scheduler start the daily
            # run (as `make airflow` does); queued runs start in run_after order, so an early
            # run_after makes ours the first run: the one that sends everything.
            run = api.call("POST", f"/dags/{DAG_ID}/dagRuns",
                           json={"logical_date": None, "run_after": "2026-01-01T00:00:00Z", "note": "ui test"})
            run_id = run["dag_run_id"]
            api.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})

            def finished():
                state = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
                return state if state in ("success", "failed") else None

            assert api.wait_for(f"run {run_id} to finish", finished, timeout=600) == "success", _tail(af.log_path)
            timings["run finished"] = time.monotonic() - start

            tis = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
            states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
            assert states[(SYNC_TASK, -1)] == "success", states
            assert set(states.values()) == {"success"}, states
            report = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{SYNC_TASK}"
                                     "/xcomEntries/return_value")["value"]
            assert report["rows_read"] == CUSTOMERS and report["rejected"] == 0, report
            assert report["planned"]["new"] == CUSTOMERS and report["pushed"] == CUSTOMERS, report
            # Every task in one try: the parallel syncs share the DuckDB file read-only (no lock conflict).
            retried = {f"{ti['task_id']}[{ti['map_index']}]": _first_try_log_tail(api, run_id, ti)
                       for ti in tis if ti["try_number"] > 1}
            assert not retried, retried
            members = af.emulators["mailchimp"].emulator.members()
            assert len(members) == CUSTOMERS
            links = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{SYNC_TASK}/links")
            mailchimp_url = af.emulators["mailchimp"].url
            assert links["extra_links"] == {"Destination": f"{mailchimp_url}/_emulator/state"}, links

            check_retl_demo_runs(api)
            timings["retl_demo finished"] = time.monotonic() - start
            shots = screenshots(af.url, run_id, chromium, standalone.USER, af.password, expect,
                                sync_playwright)
            timings["screenshots taken"] = time.monotonic() - start
        except BaseException:
            print(_tail(af.log_path))
            raise
    for name, path in shots.items():
        data = path.read_bytes()
        assert png_size(data) == (VIEWPORT["width"], VIEWPORT["height"]), (name, png_size(data))
        assert len(data) > 20_000, (name, len(data))
        assert png_distinct_scanlines(data) > 100, (name, png_distinct_scanlines(data))
    print("ui test timings (s):", {k: round(v, 1) for k, v in timings.items()}, "screenshots:", sorted(shots))


EXAMPLE_DAGS = {"retl_demo", "shop_dbt_to_apps", "shop_dbt_build", "shop_syncs_on_asset"}
DESTINATION_CONNECTIONS = {"hubspot_default", "mailchimp_default", "salesforce_default", "zendesk_default",
                           "customerio_default", "webhook_default"}


def check_examples_parsed_and_connections_listed(api: Api, af: Any) -> None:
    """Every example DAG parsed without an import error; the connections are in the DB; Test answers."""
    dags = api.wait_for("every example DAG to be parsed", lambda: EXAMPLE_DAGS <= {
        d["dag_id"] for d in api.call("GET", "/dags?limit=100")["dags"]} or None, timeout=240)
    assert dags
    errors = api.call("GET", "/importErrors")
    assert errors["total_entries"] == 0, errors
    listed = {c["connection_id"]: c for c in api.call("GET", "/connections?limit=100")["connections"]}
    assert DESTINATION_CONNECTIONS | {"warehouse", "demo_warehouse", "retl_history", "retl_alerts_smtp"} <= set(listed), sorted(listed)
    for conn_id in sorted(DESTINATION_CONNECTIONS):
        conn = listed[conn_id]
        assert "pat-example" not in str(conn["password"])  # the API never shows a stored secret
        # What the connection list's Test button posts (the UI sends port as Number(port)).
        body = {"connection_id": conn_id, "conn_type": conn["conn_type"], "host": conn["host"],
                "login": conn["login"] or "", "password": conn["password"] or "", "schema": conn["schema"] or "",
                "port": int(conn["port"] or 0), "extra": conn["extra"] or "{}", "description": ""}
        result = api.call("POST", "/connections/test", json=body)
        assert result["status"] is True, (conn_id, result)


def check_retl_demo_runs(api: Api) -> None:
    """``retl_demo`` (its table and connections come with `make airflow`) succeeds from a trigger."""
    demo = "retl_demo"
    api.call("PATCH", f"/dags/{demo}", json={"is_paused": False})
    run_id = api.call("POST", f"/dags/{demo}/dagRuns", json={"logical_date": None, "note": "ui test"})["dag_run_id"]

    def finished():
        state = api.call("GET", f"/dags/{demo}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    assert api.wait_for(f"{demo} run {run_id} to finish", finished, timeout=300) == "success"
    report = api.call("GET", f"/dags/{demo}/dagRuns/{run_id}/taskInstances/contacts_to_hubspot"
                             "/xcomEntries/return_value")["value"]
    assert report["rows_read"] == 200 and report["rejected"] == 3 and report["created"] == 197, report


def screenshots(base_url, run_id, chromium, username, password, expect, sync_playwright) -> dict[str, Path]:
    """Log in through the form, then load and photograph the run and the sync task's pages."""
    task_url = f"{base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/{SYNC_TASK}"
    shots: dict[str, Path] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a busy machine renders slowly; 5 s is the default
            page.goto(f"{base_url}/dags/{DAG_ID}/runs/{run_id}")
            # Not logged in yet: the simple auth manager's form, then back to the page asked for.
            page.locator("input[name=username]").fill(username)
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/**")
            expect(page.get_by_text(run_id).first).to_be_visible()
            expect(page.get_by_text(DAG_ID).first).to_be_visible()
            shots["run"] = _shot(page, "ui-dag-run")

            page.goto(task_url)  # the task's page opens on its log
            expect(page.get_by_role("heading", name=SYNC_TASK)).to_be_visible()
            # The report summary the sync logs at its end (SyncReport.summary()).
            expect(page.get_by_text(re.compile(rf"read {CUSTOMERS} rows: {CUSTOMERS} new")).first).to_be_visible()
            shots["task log"] = _shot(page, "ui-task-log")

            page.goto(f"{task_url}/details")  # extra links are listed on the Details tab
            link = page.get_by_role("link", name="Destination")
            expect(link).to_be_visible()
            assert link.get_attribute("href").endswith("/_emulator/state")
            expect(page.get_by_text("ReverseETLOperator").first).to_be_visible()  # the details have loaded
            shots["task details"] = _shot(page, "ui-task-details")

            page.goto(f"{task_url}/xcom")  # Storage -> XCom: the report (return_value, shown folded)
            expect(page.get_by_text("return_value", exact=True)).to_be_visible()
            # ... and the extra link's URL, which Airflow 3 resolves when the task ends and keeps here.
            expect(page.get_by_text("_link_DestinationLink", exact=True)).to_be_visible()
            expect(page.locator("a[href$='/_emulator/state']")).to_be_visible()
            shots["task xcom"] = _shot(page, "ui-task-xcom")
        finally:
            browser.close()
    return shots


def _shot(page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(path))
    return path


def _first_try_log_tail(api: Api, run_id: str, ti: dict[str, Any], lines: int = 15) -> str:
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/1"
    if ti["map_index"] >= 0:
        path += f"?map_index={ti['map_index']}"
    try:
        content = api.session.get(f"{api.base_url}/api/v2{path}", timeout=60,
                                  headers={"Accept": "application/json"}).json().get("content", [])
    except (requests.RequestException, ValueError) as exc:
        return f"(no log: {exc})"
    events = [c.get("event", "") if isinstance(c, dict) else str(c) for c in content]
    return " | ".join(e for e in events[-lines:] if e)


def _tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no standalone log: {exc})"
