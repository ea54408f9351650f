"""Each fault kind as a real requests client sees it, and the Faults switches themselves."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_retl.testing.emulators import Faults, RunningEmulator

CREATE = "/crm/v3/objects/contacts/batch/create"


def create_one(client, email: str = "a@x.com", **kwargs) -> requests.Response:
    return client.post(CREATE, {"inputs": [{"properties": {"email": email}}]}, **kwargs)


class TestFaultKindsOverHttp:
    """What a requests client observes for each injected fault."""

    def test_reset_is_a_connection_error_and_nothing_is_written(self, hubspot: RunningEmulator, client) -> None:
        hubspot.faults.fail_next(1, "reset")
        with pytest.raises(requests.ConnectionError):
            create_one(client)
        assert hubspot.emulator.records("contacts") == []
        # The pooled session recovers on the next request.
        assert create_one(client).status_code == 201
        assert [(r.status, r.fault) for r in hubspot.emulator.requests] == [(0, "reset"), (201, None)]

    def test_error_is_a_5xx_and_nothing_is_written(self, hubspot, client) -> None:
        hubspot.faults.fail_next(3, "error")
        statuses = {create_one(client).status_code for _ in range(3)}
        assert statuses <= {500, 502, 503}
        assert hubspot.emulator.records("contacts") == []

    def test_timeout_is_a_read_timeout(self, hubspot, client) -> None:
        hubspot.faults.update(slow_seconds=2.0)
        hubspot.faults.fail_next(1, "timeout")
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            create_one(client, timeout=0.3)
        assert time.monotonic() - started < 1.5

    def test_timeout_applies_the_write_the_client_gave_up_on(self, hubspot, client) -> None:
        hubspot.faults.update(slow_seconds=1.0)
        hubspot.faults.fail_next(1, "timeout")
        with pytest.raises(requests.ReadTimeout):
            create_one(client, "slow@x.com", timeout=0.3)
        # Applied at once (slow_apply_after=0): the server completed it, only its answer is late.
        assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["slow@x.com"]
        assert create_one(client, "slow@x.com").status_code == 409  # a blind resend conflicts
        # The late answer went to a client that had hung up: logged as the success it was.
        assert _wait_for(lambda: [r.status for r in hubspot.emulator.requests if r.fault == "timeout"] == [201])

    def test_timeout_can_land_after_the_client_gave_up(self, hubspot, client) -> None:
        hubspot.faults.update(slow_seconds=0.8, slow_apply_after=0.8)
        hubspot.faults.fail_next(1, "timeout", after=1)
        assert create_one(client, "first@x.com").status_code == 201
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            create_one(client, "late@x.com", timeout=0.3)
        assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["first@x.com"]
        assert _wait_for(lambda: len(hubspot.emulator.records("contacts")) == 2, 3.0)
        assert time.monotonic() - started >= 0.7, "landed before the stall ended"
        assert hubspot.emulator.records("contacts")[1]["properties"]["email"] == "late@x.com"

    def test_lost_response_applies_the_write(self, hubspot, client) -> None:
        hubspot.faults.fail_next(1, "lost_response")
        with pytest.raises(requests.ConnectionError) as caught:
            create_one(client, "landed@x.com")
        assert not isinstance(caught.value, requests.ReadTimeout)
        assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["landed@x.com"]
        # A blind retry of the create now conflicts: why creates must be reconciled by lookup.
        assert create_one(client, "landed@x.com").status_code == 409

    def test_malformed_is_a_200_with_broken_json(self, hubspot, client) -> None:
        hubspot.faults.fail_next(1, "malformed")
        response = create_one(client)
        assert response.status_code == 200
        with pytest.raises(requests.JSONDecodeError):
            response.json()
        assert len(hubspot.emulator.records("contacts")) == 1

    def test_burst_429_then_normal(self, hubspot, client) -> None:
        hubspot.faults.update(burst_429=2, retry_after=1)
        first, second, third = (create_one(client, f"u{i}@x.com") for i in range(3))
        assert (first.status_code, second.status_code, third.status_code) == (429, 429, 201)
        assert first.headers["Retry-After"] == "1"
        assert first.json()["errorType"] == "RATE_LIMIT"
        assert len(hubspot.emulator.records("contacts")) == 1

    def test_latency_is_added(self, hubspot, client) -> None:
        hubspot.faults.update(latency=0.2)
        started = time.monotonic()
        assert client.get("/crm/v3/objects/contacts").status_code == 200
        assert time.monotonic() - started >= 0.2

    def test_faults_never_touch_admin_routes(self, hubspot, client) -> None:
        hubspot.faults.fail_next(2, "reset")
        hubspot.faults.update(latency=5.0)
        state = requests.get(hubspot.url + "/_emulator/state", timeout=2)
        assert state.status_code == 200
        assert hubspot.faults.to_dict()["queued"] == ["reset", "reset"]

    def test_rates_hit_about_that_fraction(self, hubspot, client) -> None:
        hubspot.faults.update(error_rate=0.3, seed=7)
        statuses = [client.get("/crm/v3/objects/contacts").status_code for _ in range(60)]
        failed = sum(s >= 500 for s in statuses)
        assert 8 <= failed <= 30
        assert hubspot.faults.injected["error"] == failed


class TestFaultSwitches:
    """The Faults object: seeded, queued, validated, clearable."""

    def test_seeded_sequences_are_reproducible(self) -> None:
        def sequence() -> list[str | None]:
            faults = Faults(error_rate=0.2, reset_rate=0.1, lost_response_rate=0.1, seed=42)
            return [faults.decide().kind for _ in range(200)]

        assert sequence() == sequence()
        assert {"error", "reset", "lost_response", None} == set(sequence())

    def test_fail_next_comes_first_then_rates(self) -> None:
        faults = Faults(seed=1)
        faults.fail_next(2, "malformed")
        assert [faults.decide().kind for _ in range(3)] == ["malformed", "malformed", None]

    def test_invalid_settings_are_refused(self) -> None:
        with pytest.raises(ValueError):
            Faults(error_rate=0.8, reset_rate=0.5)
        with pytest.raises(ValueError):
            Faults().update(nonsense=1)
        with pytest.raises(ValueError):
            Faults().fail_next(1, "explode")

    def test_timeout_lands_within_its_stall(self) -> None:
        faults = Faults(slow_seconds=2.0, slow_apply_after=5.0)
        faults.fail_next(1, "timeout")
        decision = faults.decide()
        assert (decision.kind, decision.delay, decision.apply_after) == ("timeout", 2.0, 2.0)
        faults.update(fail_next={"n": 1, "kind": "timeout"}, slow_apply_after=0.5)
        assert faults.decide().apply_after == 0.5
        assert faults.to_dict()["slow_apply_after"] == 0.5
        with pytest.raises(ValueError):
            Faults(slow_apply_after=-1)

    def test_clear_switches_everything_off(self) -> None:
        faults = Faults(error_rate=0.5, latency=1.0, burst_429=3)
        faults.fail_next(2, "reset")
        faults.clear()
        decision = faults.decide()
        assert (decision.kind, decision.latency) == (None, 0.0)


def _wait_for(check, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
