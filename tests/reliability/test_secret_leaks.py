"""No secret leaves, not even part of one (issue 15, class 5).

A hostile server echoes what it received (a header, the URL path and query, the decoded
basic auth) at the end of a long error body, padded so that the 300-character excerpt
of our error messages cuts the echoed secret at every position. Redacting after the cut
let the cut front of a token escape; every variant here checks that no run of 8 or more
characters of the secret appears in what we emit: exception text and formatted traceback
(with chained causes), reject reasons, the run's report, log lines, the rejects table and,
through a real ``dag.test()``, the task's XCom and the rejects table of its warehouse.

Variants: the password (bearer token), an ``api_key`` extra, a ``headers`` extra, a token
in a webhook URL's path and in its query, and basic auth (``login:password`` in base64).
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd
import pytest

from airflow_provider_retl.hooks.ratelimit import clear_shared_limiters
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import DestinationError
from airflow_provider_retl.sync.redaction import REDACTOR

#: The excerpt of a body our messages quote (hooks/destination.BODY_EXCERPT_CHARS): 297 chars + "...".
CUT = 297
#: Shortest run of a secret's characters that counts as a leak.
LEAK = 8

TOKEN = "pat-na1-Zq7Yx3Wv9Ut5Sr1Qp8On6Ml4Kj2Ih0Gf"  # 40 chars, like a private app token
API_KEY = "ak_live_9f8E7d6C5b4A3f2E1d0CbA98765fedcB"
HEADER_KEY = "hk-3b1F9c8D7e6A5b4C3d2E1f0A9b8C7d6E5f4"
URL_TOKEN = "T0K3N-u9Lw2Qx7Rv4Ms8Np1Ko6Jj3Ih5Gg0Ff"
BASIC_KEY = "cio-Basic-8Hh7Gg6Ff5Ee4Dd3Cc2Bb1Aa0Zz9"
SITE_ID = "site-4321"


def fragment_in(text: str, secret: str) -> str | None:
    """The first run of LEAK characters of ``secret`` found in ``text`` (any longer run holds one)."""
    for start in range(len(secret) - LEAK + 1):
        piece = secret[start : start + LEAK]
        if piece in text:
            return piece
    return None


def assert_no_fragment(text: str, *secrets: str) -> None:
    for secret in secrets:
        piece = fragment_in(text, secret)
        assert piece is None, f"{piece!r} of a secret leaked:\n{text[max(0, text.find(piece) - 200) :][:500]}"


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, args and the formatted traceback with its chain."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        parts += [str(item), repr(item), repr(item.args)]
        todo += [item.__cause__, item.__context__]
    return "\n".join(parts)


# --------------------------------------------------------------------- the hostile server


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers ``status`` with a text body: ``x`` * pad, then what the request carried."""

    protocol_version = "HTTP/1.1"
    settings: dict[str, Any]

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        echo = self.settings["echo"](self)
        body = ("x" * self.settings["pad"] + " echo=" + echo + " and more text after the secret").encode()
        self.send_response(self.settings["status"])
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@dataclass
class Echo:
    url: str
    settings: dict[str, Any]

    def answer(self, status: int, echo: Callable[[Any], str], cut_at: int) -> None:
        """Answer ``status``; pad so that the excerpt ends ``cut_at`` characters into the echoed value."""
        self.settings.update(status=status, echo=echo, pad=CUT - len(" echo=") - cut_at)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[Echo]:
    settings: dict[str, Any] = {"status": 400, "echo": lambda h: "", "pad": 0}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("E", (_Echo,), {"settings": settings}))
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield Echo(f"http://127.0.0.1:{server.server_address[1]}", settings)
    server.shutdown()
    server.server_close()


def header(name: str) -> Callable[[Any], str]:
    return lambda handler: handler.headers.get(name, "")


def path_and_query(handler: Any) -> str:
    return unquote(handler.path)


def decoded_basic(handler: Any) -> str:
    auth = handler.headers.get("Authorization", "")
    return auth + " decoded=" + base64.b64decode(auth.split(" ", 1)[1]).decode() if " " in auth else auth


# --------------------------------------------------------------------- the variants


@dataclass
class Variant:
    name: str
    hook: str  # module.Class under airflow_provider_retl.hooks
    connection: Callable[[str], dict[str, Any]]  # server url -> connection document
    echo: Callable[[Any], str]
    secrets: tuple[str, ...]  # every form that must not leak, not even in part
    echoed: str  # what the server echoes (its length sets the cut positions)

    def hook_for(self, monkeypatch, url: str):
        import importlib

        conn_id = f"leak_{self.name}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(self.connection(url)))
        module, name = self.hook.rsplit(".", 1)
        cls = getattr(importlib.import_module(f"airflow_provider_retl.hooks.{module}"), name)
        return cls(conn_id, sleep=lambda s: None)


def _doc(conn_type: str, host: str, password: str | None, login: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "conn_type": conn_type,
        "host": host,
        "login": login,
        "password": password,
        "extra": {"max_retries": 0, "rate_limit": 0, **extra},
    }


BASIC_B64 = base64.b64encode(f"{SITE_ID}:{BASIC_KEY}".encode()).decode()

VARIANTS = [
    Variant(
        "password",
        "destination.DestinationHook",
        lambda url: _doc("retl_destination", url, TOKEN),
        header("Authorization"),
        (TOKEN,),
        f"Bearer {TOKEN}",
    ),
    Variant(
        "api_key_extra",
        "destination.DestinationHook",
        lambda url: _doc("retl_destination", url, None, api_key=API_KEY),
        lambda handler: f"invalid api_key {API_KEY}",
        (API_KEY,),
        f"invalid api_key {API_KEY}",
    ),
    Variant(
        "headers_extra",
        "destination.DestinationHook",
        lambda url: _doc("retl_destination", url, None, headers={"X-Api-Key": HEADER_KEY}),
        header("X-Api-Key"),
        (HEADER_KEY,),
        HEADER_KEY,
    ),
    Variant(
        "webhook_url_path",
        "webhook.WebhookHook",
        lambda url: _doc("retl_webhook", f"{url}/services/{URL_TOKEN}", "whsec-signing-0000-1111"),
        path_and_query,
        (URL_TOKEN,),
        f"/services/{URL_TOKEN}",
    ),
    Variant(
        "webhook_url_query",
        "webhook.WebhookHook",
        lambda url: _doc("retl_webhook", f"{url}/in?token={URL_TOKEN}", "whsec-signing-0000-1111"),
        path_and_query,
        (URL_TOKEN,),
        f"/in?token={URL_TOKEN}",
    ),
    Variant(
        "basic_auth",
        "customerio.CustomerIoHook",
        lambda url: _doc("retl_customerio", url, BASIC_KEY, SITE_ID),
        decoded_basic,
        (BASIC_KEY, BASIC_B64),
        f"Basic {BASIC_B64} decoded={SITE_ID}:{BASIC_KEY}",
    ),
]


def cut_positions(variant: Variant) -> range:
    return range(1, len(variant.echoed))


# --------------------------------------------------------------------- hook level: every cut position


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
@pytest.mark.parametrize("status", [400, 401, 500])
def test_an_echoed_secret_cut_anywhere_by_the_excerpt_never_leaks(variant, status, echo_server, monkeypatch):
    clear_shared_limiters()
    hook = variant.hook_for(monkeypatch, echo_server.url)
    emitted = []
    for cut_at in cut_positions(variant):
        echo_server.answer(status, variant.echo, cut_at)
        with pytest.raises(DestinationError) as info:
            hook.request("POST", "", json={"probe": cut_at}, idempotent=True)
        assert info.value.status == status
        emitted.append(exception_text(info.value))
        if status == 400:
            emitted.append(str(hook.rejection_outcome(info.value).reason))  # type: ignore[arg-type]
    hook.close()
    text = "\n".join(emitted)
    assert "echo=" in text  # the body was quoted, so the cut really happened inside our message
    assert_no_fragment(text, *variant.secrets)


def test_the_excerpt_ends_inside_the_echoed_secret(echo_server, monkeypatch):
    """The fixture does what the test above relies on: without redaction the cut front would show."""
    variant = VARIANTS[0]
    hook = variant.hook_for(monkeypatch, echo_server.url)
    echo_server.answer(400, variant.echo, 20)
    with pytest.raises(DestinationError) as info:
        hook.request("POST", "", json={}, idempotent=True)
    body = info.value.response.text
    assert body[CUT - 20 : CUT] == variant.echoed[:20]
    assert variant.echoed[:20] not in str(info.value)


# --------------------------------------------------------------------- the engine: report, logs, rejects


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.hook.startswith("webhook")], ids=lambda v: v.name)
def test_webhook_rejects_report_and_logs_hold_no_fragment(variant, echo_server, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    clear_shared_limiters()
    rejects = []
    texts = []
    for cut_at in range(1, len(variant.echoed), 7):
        echo_server.answer(422, variant.echo, cut_at)
        hook = variant.hook_for(monkeypatch, echo_server.url)
        config = SyncConfig(
            sync_id=f"leak-{uuid.uuid4().hex[:6]}",
            object="users",
            primary_key="id",
            mode="upsert",
            max_reject_ratio=1.0,
        )
        store = FileCheckpointStore(tmp_path / f"{cut_at}.parquet")
        report = run_sync(
            [pd.DataFrame({"id": ["a", "b"], "plan": ["pro", "free"]})], hook, store, config, on_reject=rejects.append
        )
        hook.close()
        assert report.rejected == 2
        texts += [json.dumps(report.to_dict(), default=str), report.summary(), repr(hook)]
    reasons = [r.reason for r in rejects]
    assert all("webhook receiver answered 422" in r for r in reasons)
    text = "\n".join([*texts, *reasons, caplog.text, *(r.getMessage() for r in caplog.records)])
    assert_no_fragment(text, *variant.secrets)


def test_engine_log_lines_pass_through_the_redactor(caplog):
    from airflow_provider_retl.sync.logs import RedactingLogger

    REDACTOR.add(TOKEN)
    caplog.set_level(logging.INFO, logger="leak.test")
    log = RedactingLogger(logging.getLogger("leak.test"))
    log.info("batch failed: %s (%d%%)", f"echo Bearer {TOKEN[:30]}", 50)
    assert caplog.records[-1].getMessage() == "batch failed: echo Bearer *** (50%)"


def test_rejects_table_rows_are_scrubbed(tmp_path, set_connection):
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    from airflow_provider_retl.operators.rejects_table import write_rejects
    from airflow_provider_retl.sync.records import Reject

    REDACTOR.add(TOKEN)
    path = tmp_path / "w.sqlite"
    set_connection("leak_wh", "sqlite", host=str(path))
    write_rejects(
        SqliteHook("leak_wh"),
        "rejects",
        [Reject("k1", f"server said {TOKEN[:-3]}", "destination")],
        sync_id="s",
        run_id="r",
    )
    rows = sqlite3.connect(path).execute("select reject_key, reason from rejects").fetchall()
    assert rows == [("k1", "server said ***")]


# --------------------------------------------------------------------- exceptions and their causes


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.hook.startswith("webhook")], ids=lambda v: v.name)
@pytest.mark.parametrize("idempotent", [True, False])
def test_a_transport_error_does_not_chain_the_secret_url(variant, monkeypatch, idempotent):
    """requests' ConnectionError names the URL (a webhook's secret path); the chain we raise must not."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    hook = variant.hook_for(monkeypatch, closed)
    with pytest.raises(DestinationError) as info:
        hook.request("POST", "", json={}, idempotent=idempotent, retry=False)
    text = exception_text(info.value)
    assert "ConnectionError" in text  # the cause is still told
    assert_no_fragment(text, *variant.secrets)


def test_scrub_exception_rewrites_the_whole_chain():
    REDACTOR.add(TOKEN)
    try:
        try:
            raise OSError(f"could not reach /hooks/{TOKEN}")
        except OSError as inner:
            raise RuntimeError(f"sync failed: {TOKEN[:-5]}") from inner
    except RuntimeError as outer:
        error = outer
    error.add_note(f"note {TOKEN[4:]}")
    assert REDACTOR.scrub_exception(error) is True
    assert_no_fragment(exception_text(error), TOKEN)
    assert "could not reach /hooks/***" in exception_text(error)


def test_short_and_word_like_fragments_do_not_mangle_ordinary_text():
    REDACTOR.add("salesforce-prod-Xy12Ab34Cd56")
    REDACTOR.add("abc")  # too short to register
    text = "Salesforce login failed for abc: invalid_grant"
    assert REDACTOR.redact(text) == text
    cut = REDACTOR.redact("key salesforce-prod-Xy12A (cut)")
    assert "***" in cut and fragment_in(cut, "salesforce-prod-Xy12Ab34Cd56") is None


# --------------------------------------------------------------------- connection secrets are registered


def test_every_secret_the_connection_holds_is_registered(monkeypatch):
    from airflow_provider_retl.hooks.webhook import WebhookHook

    doc = _doc(
        "retl_webhook",
        f"http://127.0.0.1:9/hooks/{URL_TOKEN}?sig=Sig-Value-12345678",
        "whsec-pw-12345678",
        api_key=API_KEY,
        client_secret="client-Secret-0987",
        my_token="tok-Extra-5566",
        headers={"X-Api-Key": HEADER_KEY, "Accept": "application/json"},
        proxies={"https": "http://user:Proxy-Pass-4321@proxy:3128"},
        batch_size=10,
    )
    monkeypatch.setenv("AIRFLOW_CONN_LEAK_ALL", json.dumps(doc))
    WebhookHook("leak_all").get_conn()
    for secret in (
        URL_TOKEN,
        "Sig-Value-12345678",
        "whsec-pw-12345678",
        API_KEY,
        "client-Secret-0987",
        "tok-Extra-5566",
        HEADER_KEY,
        "Proxy-Pass-4321",
        f"/hooks/{URL_TOKEN}?sig=Sig-Value-12345678",
    ):
        assert REDACTOR.redact(f"<{secret}>") == "<***>", secret
    assert REDACTOR.redact("Accept: application/json, batch_size 10") == "Accept: application/json, batch_size 10"


# --------------------------------------------------------------------- a real DAG run


DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=0, **{kwargs!r})
"""


@pytest.mark.dagrun
@pytest.mark.parametrize("status", [422, 500])
def test_dag_run_xcom_rejects_table_and_task_log_hold_no_fragment(
    status, dag_runner, echo_server, set_connection, tmp_path, capfd
):
    warehouse = tmp_path / "w.sqlite"
    with sqlite3.connect(warehouse) as con:
        con.execute("create table users (id text, plan text)")
        con.executemany("insert into users values (?, ?)", [("a", "pro"), ("b", "free")])
    set_connection("leak_wh", "sqlite", host=str(warehouse))
    set_connection(
        "leak_hook",
        "retl_webhook",
        host=f"{echo_server.url}/services/{URL_TOKEN}",
        password="whsec-dag-signing-1234",
        extra={"max_retries": 0},
    )
    echo_server.answer(status, path_and_query, 12)  # "/services/T0" ... cut 2 chars into the token
    dag_id = f"leak_{uuid.uuid4().hex[:8]}"
    kwargs = {
        "conn_id": "leak_wh",
        "sql": "select id, plan from users",
        "destination_conn_id": "leak_hook",
        "object": "users",
        "primary_key": "id",
        "checkpoint": str(tmp_path / "ck.parquet"),
        "rejects_table": "retl_rejects",
        "max_reject_ratio": 1.0,
    }
    result = dag_runner.run_dag(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs), dag_id)
    out, err = capfd.readouterr()
    task = result.task("sync")
    emitted = [out, err, json.dumps(task.xcoms, default=str)]
    if status == 422:
        assert result.succeeded, result
        report = task.return_value
        assert report["rejected"] == 2 and "webhook receiver answered 422" in report["rejects"][0]["reason"]
        with sqlite3.connect(warehouse) as con:
            rows = con.execute("select reject_key, reason from retl_rejects order by reject_key").fetchall()
        assert [r[0] for r in rows] == ["a", "b"] and "echo=" in rows[0][1]
        emitted.append(json.dumps(rows))
    else:
        assert not result.succeeded, result
        assert "500" in out + err  # the failure was logged with its reason
    assert_no_fragment("\n".join(emitted), URL_TOKEN)


@pytest.mark.parametrize("cut_at", [9, 17, 30, len(TOKEN) - 1])
def test_airflows_masker_hides_a_cut_token_too(cut_at, monkeypatch, echo_server):
    """Log lines we do not write (Airflow's, a library's) go through Airflow's masker: it knows the fragments."""
    from airflow.sdk.log import redact

    VARIANTS[0].hook_for(monkeypatch, echo_server.url).get_conn()
    line = f"somebody logged Bearer {TOKEN[:cut_at]}"
    masked = redact(line)
    assert isinstance(masked, str) and "somebody logged Bearer" in masked
    assert_no_fragment(masked, TOKEN)


def test_url_secrets_do_not_mangle_urls_and_route_names():
    """A URL's path is replaced whole and its tokens in pieces, but not its route names or scheme."""
    REDACTOR.add_url(f"https://hooks.example.com/api/v1/services/{URL_TOKEN}?team=T0123")
    ordinary = "see https://docs.example.com/api/v1/services/ and http://localhost:8080"
    assert REDACTOR.redact(ordinary) == ordinary
    assert REDACTOR.redact(f"POST /api/v1/services/{URL_TOKEN}?team=T0123 failed") == "POST *** failed"
    assert_no_fragment(REDACTOR.redact(f"POST /api/v1/services/{URL_TOKEN[:-4]}"), URL_TOKEN)
