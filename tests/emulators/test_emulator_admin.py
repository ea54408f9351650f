"""The /_emulator admin routes, driven over HTTP as the demo or a UI user would."""

from __future__ import annotations

import requests

from airflow_provider_retl.testing.emulators import RunningEmulator


class TestAdminRoutes:
    """Admin routes answer without auth and never count as API requests."""

    def test_state_lists_stored_records(self, hubspot: RunningEmulator, client) -> None:
        client.post("/crm/v3/objects/contacts/batch/create", {"inputs": [{"properties": {"email": "a@x.com"}}]})
        state = requests.get(hubspot.url + "/_emulator/state", timeout=5).json()
        (record,) = state["objects"]["contacts"]
        assert record["properties"]["email"] == "a@x.com" and record["archived"] is False

    def test_requests_counts_per_route_and_recent(self, hubspot, client) -> None:
        client.get("/crm/v3/objects/contacts")
        client.get("/crm/v3/objects/contacts")
        client.post("/crm/v3/objects/contacts/batch/create", {"inputs": [{"properties": {"email": "bad"}}]})
        summary = requests.get(hubspot.url + "/_emulator/requests", timeout=5).json()
        assert summary["total"] == 3
        assert summary["by_route"] == {
            "GET /crm/v3/objects/contacts": 2,
            "POST /crm/v3/objects/contacts/batch/create": 1,
        }
        assert summary["by_status"] == {"200": 2, "400": 1}
        assert [(r["method"], r["status"]) for r in summary["recent"]] == [("GET", 200), ("GET", 200), ("POST", 400)]
        # The same numbers from Python; admin calls themselves are never counted.
        assert hubspot.emulator.request_count() == 3
        assert hubspot.emulator.request_count("/crm/v3/objects/contacts") == 2
        assert hubspot.emulator.request_count("POST /crm/v3/objects/contacts/batch/create", status=400) == 1

    def test_faults_can_be_flipped_over_http(self, hubspot, client) -> None:
        answer = requests.post(
            hubspot.url + "/_emulator/faults", json={"fail_next": {"n": 1, "kind": "error"}, "latency": 0}, timeout=5
        )
        assert answer.status_code == 200 and answer.json()["queued"] == ["error"]
        assert client.get("/crm/v3/objects/contacts").status_code >= 500
        assert requests.post(hubspot.url + "/_emulator/faults", json={"error_rate": 1.0}, timeout=5).ok
        assert client.get("/crm/v3/objects/contacts").status_code >= 500
        assert requests.post(hubspot.url + "/_emulator/faults", json={"clear": True}, timeout=5).ok
        assert client.get("/crm/v3/objects/contacts").status_code == 200

    def test_bad_fault_fields_are_400(self, hubspot) -> None:
        answer = requests.post(hubspot.url + "/_emulator/faults", json={"explode": 1}, timeout=5)
        assert answer.status_code == 400 and "explode" in answer.json()["error"]

    def test_reset_forgets_records_requests_and_faults(self, hubspot, client) -> None:
        hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        client.get("/crm/v3/objects/contacts")
        hubspot.faults.update(error_rate=0.5)
        assert requests.post(hubspot.url + "/_emulator/reset", timeout=5).ok
        assert hubspot.emulator.records("contacts") == []
        assert hubspot.emulator.request_count() == 0
        assert hubspot.faults.error_rate == 0.0

    def test_admin_routes_need_no_auth(self, webhook: RunningEmulator) -> None:
        assert requests.get(webhook.url + "/_emulator/health", timeout=5).json() == {"ok": True, "kind": "webhook"}
        assert requests.get(webhook.url + "/_emulator/state", timeout=5).json()["records"] == {}
