"""EmulatorServer and start_emulator: free ports, fast clean stops, no leaked threads."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from airflow_provider_retl.testing.emulators import EmulatorServer, HubSpotEmulator, start_emulator


def emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("emulator-")]


class TestEmulatorServer:
    """Server lifecycle: ports, stop speed, threads."""

    def test_context_manager_serves_then_stops_without_leaking_threads(self) -> None:
        before = len(emulator_threads())
        with EmulatorServer(HubSpotEmulator(rate_limit=None)) as server:
            assert server.url.startswith("http://127.0.0.1:") and server.port > 0
            assert requests.get(server.url + "/_emulator/health", timeout=5).ok
            assert len(emulator_threads()) == before + 1
        assert len(emulator_threads()) == before
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/_emulator/health", timeout=1)

    def test_port_zero_gives_distinct_free_ports(self) -> None:
        with start_emulator("hubspot") as one, start_emulator("webhook") as two:
            assert one.url != two.url

    def test_stop_is_fast_with_a_request_stalled_in_flight(self) -> None:
        running = start_emulator("hubspot", rate_limit=None)
        running.faults.update(slow_seconds=30)
        running.faults.fail_next(1, "timeout")
        errors: list[BaseException] = []

        def stalled() -> None:
            try:
                requests.get(running.url + "/crm/v3/objects/contacts", headers={"Authorization": "Bearer test-token"},
                             timeout=10)
            except requests.RequestException as exc:
                errors.append(exc)

        caller = threading.Thread(target=stalled)
        caller.start()
        time.sleep(0.2)
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 1.0
        caller.join(5)
        assert not caller.is_alive() and isinstance(errors[0], requests.ConnectionError)
        running.stop()  # idempotent

    def test_stop_closes_idle_keep_alive_connections(self) -> None:
        running = start_emulator("webhook")
        session = requests.Session()
        assert session.get(running.url + "/_emulator/health", timeout=5).ok
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 1.0
        session.close()

    def test_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="hubspot"):
            start_emulator("no-such-emulator")

    def test_taken_port_fails_loudly(self) -> None:
        with start_emulator("webhook") as first:
            with pytest.raises(OSError):
                start_emulator("webhook", port=first.server.port)
