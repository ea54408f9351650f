"""Fixtures of the emulator tests: real servers on free ports, real HTTP clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, RunningEmulator, start_emulator


class HubSpotClient:
    """A requests session pointed at a HubSpot emulator, with the bearer token set."""

    def __init__(self, base_url: str, token: str | None = DEFAULT_TOKEN) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.post(self.base_url + path, json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.get(self.base_url + path, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.patch(self.base_url + path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.delete(self.base_url + path, **kwargs)

    def batch(self, object_type: str, action: str, inputs: list[Any], **extra: Any) -> requests.Response:
        return self.post(f"/crm/v3/objects/{object_type}/batch/{action}", {"inputs": inputs, **extra})


@pytest.fixture
def hubspot() -> Iterator[RunningEmulator]:
    """A HubSpot emulator without rate limit (tests of the limit make their own)."""
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@pytest.fixture
def client(hubspot: RunningEmulator) -> Iterator[HubSpotClient]:
    api = HubSpotClient(hubspot.url)
    yield api
    api.session.close()


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Build a HubSpotClient for any emulator URL and token (closed after the test)."""
    made: list[HubSpotClient] = []

    def make(base_url: str, token: str | None = DEFAULT_TOKEN) -> HubSpotClient:
        made.append(HubSpotClient(base_url, token))
        return made[-1]

    yield make
    for api in made:
        api.session.close()


@pytest.fixture
def webhook() -> Iterator[RunningEmulator]:
    with start_emulator("webhook", secret="s3cret", reject_marker="REJECT-ME") as running:
        yield running
