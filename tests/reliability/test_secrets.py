"""Secrets never leak; TLS verification is on unless turned off (with a warning); a redirect
to another host never carries the Authorization header.

For every destination hook, three runs of the real engine (``run_sync``) with everything
they emit captured: log records at DEBUG (``airflow_provider_retl``, ``airflow.task`` and
the root logger), stdout/stderr at the file-descriptor level, the report dict, the text,
repr and formatted traceback of the exception (with its causes), and every byte the
checkpoint store wrote. The run is searched for each secret in the forms it travels in
(raw, URL-encoded, base64 of ``login:secret``):

1. a successful sync with the right credentials;
2. the same sync with a wrong secret: 401 (for Salesforce, a refused OAuth login);
3. the same sync against a local server that answers 500 and echoes the request back
   in its body (headers, decoded basic auth, form body): the worst case for error messages
   that quote the response.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pandas as pd
import pytest

from airflow_provider_retl.hooks.ratelimit import clear_shared_limiters
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import (
    MAILCHIMP_LIST_ID,
    SALESFORCE_CLIENT_ID,
    SALESFORCE_USERNAME,
    ZENDESK_EMAIL,
    start_emulator,
)

LOGGERS = ("airflow_provider_retl", "airflow.task", "")
WRONG = "Wr0ngSecretValue-9f8e7d6c5b4a"


@dataclass
class Case:
    kind: str
    hook: str  # "module.Class" under airflow_provider_retl.hooks
    secrets: dict[str, str]  # name -> value (password, api key, client secret, security token)
    emulator: Callable[[dict[str, str]], dict[str, Any]]  # secrets -> emulator options
    connection: Callable[[str, dict[str, str]], dict[str, Any]]  # url, secrets -> connection document
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    login: str | None = None
    read_back: Callable[[Any], int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def hook_class(self):
        import importlib

        module, name = self.hook.rsplit(".", 1)
        return getattr(importlib.import_module(f"airflow_provider_retl.hooks.{module}"), name)


def _doc(conn_type: str, url: str, password: str, login: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"conn_type": conn_type, "host": url, "login": login, "password": password,
            "extra": {"rate_limit": 0, "max_retries": 1, **extra}}


def _emails(n: int = 6) -> list[dict[str, Any]]:
    return [{"email": f"p{i}@example.com", "firstname": f"F{i}"} for i in range(n)]


CASES = [
    Case(
        "hubspot", "hubspot.HubSpotHook", {"token": "pat-na1-hubspotSECRET-11112222"},
        lambda s: {"tokens": (s["token"],), "rate_limit": None},
        lambda url, s: _doc("retl_hubspot", url, s["token"]),
        {"object": "contacts", "primary_key": "email"}, _emails(),
    ),
    Case(
        "webhook", "webhook.WebhookHook", {"signing_secret": "whsec-webhookSECRET-33334444"},
        lambda s: {"secret": s["signing_secret"]},
        lambda url, s: _doc("retl_webhook", url, s["signing_secret"]),
        {"object": "users", "primary_key": "id"}, [{"id": f"u{i}", "plan": "pro"} for i in range(6)],
    ),
    Case(
        "salesforce", "salesforce.SalesforceHook",
        {"password": "sfPasswordSECRET-5555", "security_token": "sfTokenSECRET6666",
         "client_secret": "sf-client-SECRET-77778888"},
        lambda s: {"users": {SALESFORCE_USERNAME: s["password"]}, "security_token": s["security_token"],
                   "clients": {SALESFORCE_CLIENT_ID: s["client_secret"]}, "bulk_processing_seconds": 0.02},
        lambda url, s: _doc("retl_salesforce", url, s["password"], SALESFORCE_USERNAME,
                            client_id=SALESFORCE_CLIENT_ID, client_secret=s["client_secret"],
                            security_token=s["security_token"], bulk_threshold="off"),
        {"object": "Contact", "primary_key": "External_Id__c", "match_on": "External_Id__c"},
        [{"External_Id__c": f"k{i}", "LastName": f"L{i}"} for i in range(6)],
        login=SALESFORCE_USERNAME,
    ),
    Case(
        "mailchimp", "mailchimp.MailchimpHook", {"api_key": "5ec2e7a9b8c7d6e5f4a3b2c1d0e9f8a7-us6"},
        lambda s: {"api_keys": (s["api_key"],)},
        lambda url, s: _doc("retl_mailchimp", url, s["api_key"], "retl"),
        {"object": MAILCHIMP_LIST_ID, "primary_key": "email_address"},
        [{"email_address": f"p{i}@gmail.com", "FNAME": f"F{i}"} for i in range(6)],
        login="retl",
    ),
    Case(
        "zendesk", "zendesk.ZendeskHook", {"api_token": "zdTokenSECRET-99990000"},
        lambda s: {"api_tokens": {ZENDESK_EMAIL: s["api_token"]}, "rate_limit": None, "processing_seconds": 0.01},
        lambda url, s: _doc("retl_zendesk", url, s["api_token"], ZENDESK_EMAIL, job_poll_interval=0.01),
        {"object": "users", "primary_key": "external_id"},
        [{"external_id": f"z{i}", "name": f"N{i}", "email": f"z{i}@example.com"} for i in range(6)],
        login=f"{ZENDESK_EMAIL}/token",
    ),
    Case(
        "braze", "braze.BrazeHook", {"api_key": "braze-rest-SECRET-aaaabbbb"},
        lambda s: {"api_keys": (s["api_key"],), "rate_limit": None, "export_rate_limit": None},
        lambda url, s: _doc("retl_braze", url, s["api_key"]),
        {"object": "users", "primary_key": "external_id"},
        [{"external_id": f"b{i}", "first_name": f"F{i}"} for i in range(6)],
    ),
    Case(
        "customerio", "customerio.CustomerIoHook", {"api_key": "cioApiKeySECRETccccdddd"},
        lambda s: {"credentials": {"siteSECRETless01": s["api_key"]}, "rate_limit": None},
        lambda url, s: _doc("retl_customerio", url, s["api_key"], "siteSECRETless01"),
        {"object": "people", "primary_key": "id"},
        [{"id": f"c{i}", "email": f"c{i}@example.com", "plan": "pro"} for i in range(6)],
        login="siteSECRETless01",
    ),
]


def forms(secret: str, login: str | None) -> set[str]:
    """The shapes a secret travels in: raw, URL-encoded, inside basic auth."""
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    for user in filter(None, (login, "retl")):
        found.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return found


# --------------------------------------------------------------------- capture


@pytest.fixture
def capture(caplog, capfd):
    """Returns a function that gathers everything emitted so far into one string."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)

    def gather(*extra: str) -> str:
        out, err = capfd.readouterr()
        records = [f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
        for r in caplog.records:
            if r.exc_info and r.exc_info[1] is not None:
                records.append("".join(traceback.format_exception(r.exc_info[1])))
        return "\n".join([out, err, *records, caplog.text, *extra])

    return gather


def describe_exception(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), repr(getattr(exc, "args", ()))]
        request = getattr(exc, "request", None)
        if request is not None:
            parts += [repr(getattr(request, "headers", "")), repr(getattr(request, "url", ""))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def checkpoint_bytes(directory: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in sorted(directory.rglob("*")) if p.is_file())


def run(case: Case, monkeypatch, url: str, secrets: dict[str, str], store_dir: Path) -> tuple[str, BaseException | None]:
    conn_id = f"sec_{case.kind}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(case.connection(url, secrets)))
    clear_shared_limiters()
    store_dir.mkdir(parents=True, exist_ok=True)
    cfg = SyncConfig(sync_id=f"secrets-{case.kind}", mode="upsert", commit_interval=0, **case.config)
    hook = case.hook_class()(conn_id, sleep=lambda s: None)
    emitted, error = [], None
    try:
        report = run_sync([pd.DataFrame(case.rows)], hook, FileCheckpointStore(store_dir / "ck.parquet"), cfg)
        emitted += [json.dumps(report.to_dict(), default=str), report.summary(), repr(report)]
    except Exception as exc:  # noqa: BLE001 - the run is expected to fail in cases 2 and 3
        error = exc
        emitted.append(describe_exception(exc))
    finally:
        emitted.append(repr(hook))
        hook.close()
    emitted.append(checkpoint_bytes(store_dir))
    return "\n".join(emitted), error


def assert_no_secret(text: str, secrets: dict[str, str], login: str | None) -> None:
    for name, value in secrets.items():
        for form in forms(value, login):
            assert form not in text, f"the {name} leaked (as {form!r}):\n" + text[
                max(0, text.find(form) - 300) : text.find(form) + 300
            ]


# --------------------------------------------------------------------- the echoing server


class _Echo500(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("latin-1")
        auth = self.headers.get("Authorization", "")
        decoded = ""
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth.split(" ", 1)[1]).decode("latin-1")
        echo = f"auth={auth} decoded={decoded} body={body} headers={dict(self.headers)}"
        payload = json.dumps({"message": f"internal error; you sent {echo}", "error": echo, "detail": echo,
                              "errors": [{"message": echo, "reason": echo}]}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture(scope="module")
def echo500() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo500)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_no_secret_in_anything_a_run_emits(case, monkeypatch, tmp_path, capture, echo500):
    with start_emulator(case.kind, **case.emulator(case.secrets)) as emulator:
        ok_text, ok_error = run(case, monkeypatch, emulator.url, case.secrets, tmp_path / "ok")
        assert ok_error is None, ok_text
        wrong = {name: WRONG + name for name in case.secrets}
        bad_text, bad_error = run(case, monkeypatch, emulator.url, wrong, tmp_path / "wrong")
    assert bad_error is not None, f"{case.kind}: a wrong secret did not fail the run"
    echo_text, echo_error = run(case, monkeypatch, echo500, case.secrets, tmp_path / "echo")
    assert echo_error is not None
    everything = capture(ok_text, bad_text, echo_text)
    assert "500" in echo_text or "Internal" in echo_text  # the echoing server was reached
    assert_no_secret(everything, case.secrets, case.login)
    assert_no_secret(everything, wrong, case.login)


# --------------------------------------------------------------------- TLS


def _hubspot_hook(monkeypatch, url: str, **extra: Any):
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    monkeypatch.setenv("AIRFLOW_CONN_SEC_TLS", json.dumps(_doc("retl_hubspot", url, "pat-na1-tlsSECRET-0000", **extra)))
    return HubSpotHook("sec_tls", sleep=lambda s: None)


def test_tls_verification_is_on_by_default(monkeypatch):
    assert _hubspot_hook(monkeypatch, "api.hubapi.com").get_conn().verify is True


def test_ca_bundle_from_the_connection_extras(monkeypatch, tmp_path):
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _hubspot_hook(monkeypatch, "api.hubapi.com", verify=str(bundle)).get_conn().verify == str(bundle)


@pytest.mark.parametrize("off", [False, "false", "0"])
def test_turning_verification_off_logs_a_warning(monkeypatch, capture, off):
    assert _hubspot_hook(monkeypatch, "api.hubapi.com", verify=off).get_conn().verify is False
    logged = [line for line in capture().splitlines() if "verification is off" in line]
    assert logged and all("warning" in line.lower() for line in logged), logged


def test_verification_on_logs_no_warning(monkeypatch, capture):
    _hubspot_hook(monkeypatch, "api.hubapi.com", verify=True).get_conn()
    assert "verification is off" not in capture()


# --------------------------------------------------------------------- redirects


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]]
    location: str | None = None

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(dict(self.headers))
        if self.location:
            self.send_response(307)  # keeps method and body: the strictest case
            self.send_header("Location", self.location + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = b'{"results": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, list, list]]:
    """A server on 127.0.0.1 that redirects every call to a second one reached as ``localhost``."""
    servers = []
    target_seen: list[dict[str, str]] = []
    origin_seen: list[dict[str, str]] = []
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("T", (_Recorder,), {"seen": target_seen}))
    target_url = f"http://localhost:{target.server_address[1]}"
    origin = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("O", (_Recorder,), {"seen": origin_seen, "location": target_url})
    )
    for server in (target, origin):
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
    yield f"http://127.0.0.1:{origin.server_address[1]}", origin_seen, target_seen
    for server in servers:
        server.shutdown()
        server.server_close()


REDIRECT_CASES = [c for c in CASES if c.kind in ("hubspot", "mailchimp", "zendesk", "braze", "customerio")]


@pytest.mark.parametrize("case", REDIRECT_CASES, ids=[c.kind for c in REDIRECT_CASES])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_redirect_to_another_host_drops_the_authorization_header(case, method, monkeypatch, two_hosts):
    origin, origin_seen, target_seen = two_hosts
    monkeypatch.setenv("AIRFLOW_CONN_SEC_REDIRECT", json.dumps(case.connection(origin, case.secrets)))
    clear_shared_limiters()
    with case.hook_class()("sec_redirect", sleep=lambda s: None) as hook:
        hook.request(method, "/probe", json={"q": 1} if method == "POST" else None, idempotent=True)
    assert origin_seen and "Authorization" in origin_seen[0], "the first host should get the credentials"
    assert target_seen, "the redirect was not followed"
    leaked = [h for h in target_seen if "Authorization" in h or "authorization" in {k.lower() for k in h}]
    assert not leaked, f"{case.kind}: Authorization sent to the redirect target: {leaked}"
    assert_no_secret(json.dumps(target_seen), case.secrets, case.login)
