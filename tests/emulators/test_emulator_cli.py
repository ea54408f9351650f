"""The emulators as a separate process (``python -m airflow_provider_retl.testing.emulators``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def read_urls(process: subprocess.Popen[str], count: int, timeout: float = 20.0) -> dict[str, str]:
    """Read the "<kind> emulator listening on <url>" lines the CLI prints."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while len(urls) < count:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"CLI did not start: rc={process.poll()} stderr={process.stderr.read() if process.stderr else ''}")
        line = process.stdout.readline()
        match = re.match(r"(\w+) emulator listening on (http://\S+)", line)
        if match:
            urls[match.group(1)] = match.group(2)
    return urls


@pytest.fixture
def run_cli() -> Iterator:
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_retl.testing.emulators", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class TestCli:
    """The CLI starts emulators in a child process and exits 0 on a signal."""

    def test_hubspot_answers_and_stops_on_sigterm(self, run_cli) -> None:
        process = run_cli("hubspot", "--port", "0", "--token", "demo-token", "--rate-limit", "190")
        url = read_urls(process, 1)["hubspot"]
        headers = {"Authorization": "Bearer demo-token"}
        created = requests.post(
            url + "/crm/v3/objects/contacts/batch/create",
            json={"inputs": [{"properties": {"email": "demo@x.com"}}]},
            headers=headers,
            timeout=5,
        )
        assert created.status_code == 201
        assert requests.get(url + "/crm/v3/objects/contacts", timeout=5).status_code == 401
        state = requests.get(url + "/_emulator/state", timeout=5).json()
        assert state["objects"]["contacts"][0]["properties"]["email"] == "demo@x.com"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0

    def test_all_starts_every_destinations_emulator_and_stops_on_sigint(self, run_cli) -> None:
        from airflow_provider_retl.destinations import REGISTRY

        kinds = sorted(name for name, spec in REGISTRY.items() if spec.emulator is not None)
        assert len(kinds) == 7
        ports = [arg for kind in kinds for arg in (f"--{kind}-port", "0")]
        process = run_cli("all", *ports, "--secret", "s3cret", "--error-rate", "0")
        urls = read_urls(process, len(kinds))
        assert sorted(urls) == kinds
        for kind, url in urls.items():
            assert requests.get(url + "/_emulator/health", timeout=5).json()["kind"] == kind
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
