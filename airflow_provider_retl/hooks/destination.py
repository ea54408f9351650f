"""DestinationHook: what every reverse-ETL destination shares.

Everything comes from an Airflow Connection, the way Airflow's ``HttpHook`` does
it: the base URL in ``host`` (a full URL, or a bare host name for https), the
token in ``password``, transport and destination knobs in ``extra``. Options
passed by the caller beat the extras; the extras are copied, never mutated.

``get_conn()`` builds one ``requests.Session`` in small steps a subclass can
override (``_configure_base_url``, ``_configure_auth``, ``_configure_from_extra``,
``_configure_adapters``). ``request()`` sends one call under the account's
rolling-window rate limit and the retry policy and turns failures into the
engine's error types (``sync.errors``), keeping the response on the error.

A destination subclass says what it can do (``supports_upsert`` ...) and
implements the per-batch calls of the ``sync.destination.Destination`` protocol;
the defaults here say "cannot" and raise ``NotImplementedError``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, final
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from requests.adapters import BaseAdapter, HTTPAdapter

from airflow_provider_retl.destinations.kit import DestinationSpec, Knob, Limits, ObjectSpec, transport_knobs
from airflow_provider_retl.hooks.ratelimit import Limiter, shared_limiter
from airflow_provider_retl.hooks.retrying import (
    RetryPolicy,
    RetryStats,
    error_from_exception,
    parse_retry_after,
)
from airflow_provider_retl.sync.batching import isolate
from airflow_provider_retl.sync.destination import Capabilities, SendLimits
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
)
from airflow_provider_retl.sync.records import EXISTS, Outcome, Record
from airflow_provider_retl.sync.redaction import REDACTOR, REPLACEMENT

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["EXISTS", "DestinationHook", "chunked"]

T = TypeVar("T")


#: HTTP methods that are safe to resend (RFC 9110); a POST is idempotent only when the caller says so.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_UNSET: Any = object()

#: Characters of a response body quoted in error messages and reject reasons.
BODY_EXCERPT_CHARS = 300

#: Extras that hold credentials in our hooks, beyond the names Airflow itself treats as sensitive.
SECRET_EXTRAS = frozenset(
    {
        "api_key",
        "apikey",
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
        "consumer_secret",
        "security_token",
        "signing_secret",
        "webhook_secret",
        "private_key",
        "app_secret",
        "password",
        "secret",
    }
)

#: Substrings of an extra's name that mark its value as secret (Airflow's DEFAULT_SENSITIVE_FIELDS, normalised).
_SENSITIVE_NAME_PARTS = (
    "access_key",
    "access_token",
    "api_key",
    "apikey",
    "auth_header",
    "authorization",
    "bearer",
    "connection_string",
    "credential",
    "dsn",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "proxy",
    "proxies",
    "secret",
    "service_account",
    "service_key",
    "token",
    "keyfile_dict",
    "webhook_url",
)

#: Header values that are never secret (registering them would only mangle messages).
_PLAIN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})


def is_secret_extra(name: str) -> bool:
    """Whether the value of the extra ``name`` is a credential (Airflow's rule, plus our hooks' names)."""
    normalized = re.sub(r"\W+", "_", str(name).strip().lower())
    normalized = normalized.removeprefix("extra__").split("__")[-1]
    return normalized in SECRET_EXTRAS or any(part in normalized for part in _SENSITIVE_NAME_PARTS)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _json_default(value: Any) -> Any:
    # Warehouse drivers hand over Decimal, date and numpy scalars; send them as plain JSON.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy / pandas scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot send a value of type {type(value).__name__} as JSON")


def dumps(payload: Any) -> bytes:
    """JSON bytes for a request body (orjson; Decimal, dates and numpy scalars allowed)."""
    return orjson.dumps(payload, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class DestinationHook(BaseHook):
    """Base hook of reverse-ETL destinations: session, auth, rate limit, retries, batching.

    :param destination_conn_id: the Airflow connection (subclasses also accept their
        own name, e.g. ``hubspot_conn_id``, as given by ``conn_name_attr``).
    :param adapter: a ``requests`` transport adapter mounted for http:// and https://
        (keep-alive tuning, or a test double); default: a pooled ``HTTPAdapter``.
    :param timeout: seconds, or ``(connect, read)``.
    :param verify: TLS verification: bool or a CA bundle path.
    :param proxies: ``requests`` proxies mapping.
    :param headers: extra headers sent with every request.
    :param rate_limit: at most this many requests per ``rate_window`` seconds (0: no limit).
    :param rate_window: length of the rolling window in seconds.
    :param rate_limit_redis_url: keep the window in this Redis (``redis://host:6379/0``) so every
        task process on every worker that uses the account shares it (needs the ``redis`` extra);
        default: shared within one process only.
    :param max_retries: retries after the first attempt of a retryable call.
    :param retry_deadline: seconds after which a call stops retrying.
    :param max_concurrency: write calls the engine may run at once.
    :param batch_size: records per write call (at most the API's limit).
    :param retry_policy: a complete ``RetryPolicy`` (overrides max_retries/retry_deadline).
    :param limiter: a rate limiter to use instead of the account's shared one (tests).
    :param sleep: the sleep used between retries (tests inject a no-op).
    """

    conn_name_attr = "destination_conn_id"
    default_conn_name = "destination_default"
    conn_type = "retl_destination"
    hook_name = "Reverse ETL destination"
    #: Base URL used when the connection has no host (the vendor's public API).
    default_host: ClassVar[str | None] = None
    default_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}

    #: The destination's declaration (``destinations/<name>/spec.py``): a subclass that sets it gets
    #: its identity, limits and knobs from it (``__init_subclass__``), never written twice.
    spec: ClassVar[DestinationSpec | None] = None

    # API limits, DbApiHook-style; derived from ``spec`` when a subclass declares one.
    #: Records per write call the API accepts.
    api_batch_limit: ClassVar[int] = 100
    #: Keys per lookup call the API accepts.
    api_lookup_limit: ClassVar[int] = 100
    default_max_concurrency: ClassVar[int] = 1
    #: Requests per ``default_rate_window`` seconds; None: no client-side limit.
    default_rate_limit: ClassVar[int | None] = None
    default_rate_window: ClassVar[float] = 1.0
    default_timeout: ClassVar[tuple[float, float]] = (10.0, 60.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        # Airflow reads these class attributes (connection form, hook lookup by conn_type).
        cls.conn_name_attr = spec.conn_name_attr
        cls.default_conn_name = spec.default_conn_name
        cls.conn_type = spec.conn_type
        cls.hook_name = spec.title
        cls.default_host = spec.default_host
        cls.api_batch_limit = spec.limits.batch
        cls.api_lookup_limit = spec.limits.lookup_batch
        cls.default_max_concurrency = spec.limits.concurrency
        cls.default_rate_limit = spec.limits.rate
        cls.default_rate_window = spec.limits.window

    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        """Every connection extra this hook reads, by name: the spec's knobs plus the transport knobs."""
        if cls.spec is not None:
            declared = cls.spec.all_knobs()
        else:
            limits = Limits(
                batch=cls.api_batch_limit,
                lookup_batch=cls.api_lookup_limit,
                concurrency=cls.default_max_concurrency,
                rate=cls.default_rate_limit,
                window=cls.default_rate_window,
            )
            declared = transport_knobs(limits)
        return {knob.name: knob for knob in declared}

    def knob(self, extra: Mapping[str, Any], name: str) -> Any:
        """The value of knob ``name``: caller option, else the extra, else the declared default (parsed)."""
        knob = self.knobs()[name]
        raw = self._option(extra, name)
        value = knob.parse(raw)
        if knob.cap_at_maximum and raw is not None and _as_number(raw) > value:
            self.log.warning(
                "%s %s is above the %s limit of %s; using %s", name, raw, self.hook_name, knob.maximum, value
            )
        return value

    # Set by the operator for one run (not connection settings).
    #: The sync's name (a webhook sends it as ``sync``).
    sync_id: str | None = None
    #: Event streams: the event name when rows carry none, and the field holding each event's time.
    event_name: str | None = None
    event_time_field: str | None = None

    def __init__(
        self,
        destination_conn_id: str | None = None,
        *,
        adapter: BaseAdapter | None = None,
        timeout: float | tuple[float, float] | None = None,
        verify: bool | str | None = None,
        proxies: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        rate_limit: int | None = None,
        rate_window: float | None = None,
        max_retries: int | None = None,
        retry_deadline: float | None = None,
        max_concurrency: int | None = None,
        batch_size: int | None = None,
        retry_policy: RetryPolicy | None = None,
        rate_limit_redis_url: str | None = None,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] | None = None,
        logger_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(logger_name=logger_name)
        alias = kwargs.pop(self.conn_name_attr, None) if self.conn_name_attr != "destination_conn_id" else None
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected arguments: {', '.join(sorted(kwargs))}")
        self.destination_conn_id: str = destination_conn_id or alias or self.default_conn_name
        setattr(self, self.conn_name_attr, self.destination_conn_id)
        caller = {
            "timeout": timeout,
            "verify": verify,
            "proxies": proxies,
            "headers": headers,
            "rate_limit": rate_limit,
            "rate_window": rate_window,
            "rate_limit_redis_url": rate_limit_redis_url,
            "max_retries": max_retries,
            "retry_deadline": retry_deadline,
            "max_concurrency": max_concurrency,
            "batch_size": batch_size,
        }
        self._options: dict[str, Any] = {k: v for k, v in caller.items() if v is not None}
        self._adapter = adapter
        self._injected_policy = retry_policy
        self._injected_limiter = limiter
        self._sleep = sleep
        self._stats = RetryStats()
        self._conn_lock = threading.RLock()
        self._session: requests.Session | None = None
        self._secret: str | None = None
        #: Encoded forms of the secret that travel on the wire (basic auth), redacted like the secret.
        self._wire_secrets: list[str] = []
        self._limiter: Limiter | None = None
        self._retry_policy: RetryPolicy = retry_policy or RetryPolicy()
        self.base_url: str = ""
        self.timeout: tuple[float, float] = self.default_timeout
        self.rate_limit: int | None = None
        self.rate_window: float = self.default_rate_window
        self._max_concurrency = self.default_max_concurrency
        self._batch_size = self.api_batch_limit

    def __repr__(self) -> str:
        where = f" url={self.display_url!r}" if self.base_url else ""
        return f"<{type(self).__name__} {self.conn_name_attr}={self.destination_conn_id!r}{where}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ connection -> session

    @cached_property
    def connection(self) -> Connection:
        return self.get_connection(self.destination_conn_id)

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session``, configured from the Connection on first use."""
        with self._conn_lock:
            if self._session is None:
                conn = self.connection
                extra = dict(conn.extra_dejson)  # a copy: the Connection's extras stay untouched
                session = requests.Session()
                session.headers.update(self.default_headers)
                self._register_connection_secrets(conn, extra)
                self._configure_base_url(conn)
                self._configure_auth(session, conn)
                self._register_basic_auth(session)
                self._configure_from_extra(session, extra)
                self._configure_adapters(session)
                self._session = session
            return self._session

    def close(self) -> None:
        with self._conn_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _configure_base_url(self, conn: Connection) -> None:
        """``host`` may be a full URL (any scheme, port and path prefix) or a bare host name (https)."""
        host = (conn.host or "").strip() or (self.default_host or "")
        if not host:
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r} has no host and {self.hook_name} has no default "
                "base URL; put the endpoint URL in the connection's host"
            )
        if "://" not in host:
            host = f"https://{host}"
        parts = urlsplit(host)
        if conn.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
        self.base_url = urlunsplit(parts).rstrip("/")

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """Password -> bearer token. Override for other schemes (keep calling ``_register_secret``)."""
        token = conn.password
        if token:
            self._register_secret(token)
            session.headers["Authorization"] = f"Bearer {token}"

    def _register_secret(self, secret: str) -> None:
        """Remember the connection's main secret (it keys the rate limit) and mask it everywhere."""
        self._secret = secret
        register_secret(secret)

    def _register_connection_secrets(self, conn: Connection, extra: Mapping[str, Any]) -> None:
        """Every secret the Connection holds is masked and scrubbed, before anything can fail with it.

        The password, extras whose name marks a credential (Airflow's sensitive names plus ours),
        the values of a ``headers`` extra, and the password in any URL (host, proxies, Redis).
        """
        register_secret(conn.password)
        for name, value in extra.items():
            if is_secret_extra(name):
                _register_nested(value)
        headers = extra.get("headers")
        if isinstance(headers, Mapping):
            for name, value in headers.items():
                if str(name).strip().lower() not in _PLAIN_HEADERS:
                    _register_nested(value)
        for header, value in (self._options.get("headers") or {}).items():
            if str(header).strip().lower() not in _PLAIN_HEADERS:
                register_secret(value)
        if conn.host:
            url = conn.host if "://" in conn.host else f"https://{conn.host}"
            for secret in REDACTOR.add_url(url, path_is_secret=self.url_path_is_secret):
                mask_secret(secret)  # Airflow's masker: log lines that are not ours
            _redact_library_logs()

    #: Whether the connection's URL path and query are a credential (webhook URLs); not for APIs
    #: whose host holds a public base URL.
    url_path_is_secret: ClassVar[bool] = False

    def _register_basic_auth(self, session: requests.Session) -> None:
        # A server that echoes the Authorization header in an error body would otherwise put
        # base64("user:secret") into our messages: redact and mask that form too.
        auth = session.auth
        if isinstance(auth, tuple) and len(auth) == 2 and auth[1]:
            user, password = (p.encode("latin1") if isinstance(p, str) else p for p in auth)  # as requests does
            encoded = base64.b64encode(user + b":" + password).decode()
            if encoded not in self._wire_secrets:
                self._wire_secrets.append(encoded)
                register_secret(encoded)

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        """Transport settings (timeout, verify, proxies, headers) and destination knobs."""

        def option(name: str) -> Any:
            return self._option(extra, name)

        self.timeout = self._parse_timeout(option("timeout"), option("connect_timeout"), option("read_timeout"))
        verify = option("verify")
        if verify is not None:
            session.verify = _as_bool_or_path(verify)
            if session.verify is False:
                self.log.warning(
                    "TLS certificate verification is off for connection %r (extra 'verify': false): "
                    "anyone on the network path can read and alter the traffic, credentials included",
                    self.destination_conn_id,
                )
        proxies = option("proxies")
        if proxies:
            if not isinstance(proxies, Mapping):
                raise ConfigurationError("extra 'proxies' must be a mapping like {'https': 'http://proxy:3128'}")
            session.proxies.update(dict(proxies))
        headers = option("headers")
        if headers:
            if not isinstance(headers, Mapping):
                raise ConfigurationError("extra 'headers' must be a mapping of header names to values")
            session.headers.update({str(k): str(v) for k, v in headers.items()})

        self.rate_limit = self.knob(extra, "rate_limit") or None
        self.rate_window = float(self.knob(extra, "rate_window"))
        max_retries = self.knob(extra, "max_retries")
        deadline = float(self.knob(extra, "retry_deadline"))
        self._max_concurrency = self.knob(extra, "max_concurrency")
        self._batch_size = self.knob(extra, "batch_size")

        if self._injected_policy is not None:
            self._retry_policy = self._injected_policy
        else:
            kwargs: dict[str, Any] = {"max_attempts": max_retries + 1, "deadline": deadline}
            if self._sleep is not None:
                kwargs["sleep"] = self._sleep
            self._retry_policy = RetryPolicy(**kwargs)
        if self._injected_limiter is not None:
            self._limiter = self._injected_limiter
        elif self.rate_limit:
            redis_url = option("rate_limit_redis_url")
            if redis_url:
                _mask_url_password(str(redis_url))
            self._limiter = shared_limiter(
                self.account_key, self.rate_limit, self.rate_window, redis_url=str(redis_url) if redis_url else None
            )
        else:
            self._limiter = None

    def _configure_adapters(self, session: requests.Session) -> None:
        """Mount the injected adapter, or a pool sized for ``max_concurrency``; requests itself never retries."""
        adapter = self._adapter or HTTPAdapter(
            pool_connections=4, pool_maxsize=max(10, 2 * self._max_concurrency), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    def _option(self, extra: Mapping[str, Any], name: str) -> Any:
        """Caller option, else the extra (plain or ``extra__<conn_type>__<name>``), else None."""
        if name in self._options:
            return self._options[name]
        for key in (name, f"extra__{self.conn_type}__{name}"):
            value = extra.get(key)
            if value not in (None, ""):
                return value
        return None

    def _parse_timeout(self, timeout: Any, connect: Any, read: Any) -> tuple[float, float]:
        connect_s, read_s = self.default_timeout
        if isinstance(timeout, list | tuple):
            if len(timeout) != 2:
                raise ConfigurationError(f"timeout must be seconds or [connect, read]; got {timeout!r}")
            connect_s = _as_float("timeout", timeout[0], connect_s, positive=True)
            read_s = _as_float("timeout", timeout[1], read_s, positive=True)
        elif timeout is not None:
            connect_s = read_s = _as_float("timeout", timeout, read_s, positive=True)
        connect_s = _as_float("connect_timeout", connect, connect_s, positive=True)
        read_s = _as_float("read_timeout", read, read_s, positive=True)
        return (connect_s, read_s)

    @property
    def account_key(self) -> str:
        """Who the rate limit belongs to: the base URL plus a hash of the token (or the conn id)."""
        if self._secret:
            digest = hashlib.sha256(f"{self.base_url}\0{self._secret}".encode()).hexdigest()[:16]
            return f"{self.base_url}#token:{digest}"
        return f"{self.base_url}#conn:{self.destination_conn_id}"

    # ------------------------------------------------------------------ settings the engine reads

    @property
    def max_batch_size(self) -> int:
        """Records per write call (connection's ``batch_size``, capped at the API limit)."""
        self.get_conn()
        return self._batch_size

    @property
    def lookup_batch_size(self) -> int:
        return self.api_lookup_limit

    @property
    def max_concurrency(self) -> int:
        self.get_conn()
        return self._max_concurrency

    @property
    def limiter(self) -> Limiter | None:
        self.get_conn()
        return self._limiter

    @property
    def retry_policy(self) -> RetryPolicy:
        self.get_conn()
        return self._retry_policy

    @property
    def request_count(self) -> int:
        return self._stats.requests

    @property
    def retry_count(self) -> int:
        return self._stats.retries

    # ------------------------------------------------------------------ sending

    @property
    def display_url(self) -> str:
        """The base URL as shown in messages and reprs."""
        return self.base_url

    def _call_name(self, method: str, url: str) -> str:
        """How a call is named in messages: the path only (a query string may carry anything)."""
        return f"{self.hook_name} {method} {urlsplit(url).path or '/'}"

    def url_for(self, path: str) -> str:
        if "://" in path:
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retry: bool = True,
        accept: Collection[int] = (),
    ) -> requests.Response:
        """Send one API call under the rate limit and the retry policy; return the response.

        ``idempotent`` defaults to the method's nature; pass True for POSTs that are
        safe to resend (reads, upserts, updates by id). Statuses in ``accept`` are
        returned instead of raised. Failures raise ``sync.errors`` types that keep
        the response: 401/403 fatal, 408/429/5xx/network retryable (5xx and
        maybe-sent network errors are ``OutcomeUnknownError`` when not idempotent),
        other 4xx ``BatchRejectedError``.
        """
        method = method.upper()
        self.get_conn()  # the base URL comes from the connection
        url = self.url_for(path)
        body = None if json is None else dumps(json)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        return self._attempts(method, url, body, params, headers, idempotent, retry, accept)

    def _attempts(
        self,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        idempotent: bool,
        retry: bool,
        accept: Collection[int],
    ) -> requests.Response:
        """One call under the retry policy (subclasses with raw bodies, e.g. CSV, start here)."""
        session = self.get_conn()
        what = self._call_name(method, url)
        for attempt in self._retry_policy.retrying(self._stats, on_retry=self._log_retry, enabled=retry):
            with attempt:
                return self._send(session, method, url, body, params, headers, idempotent, what, accept)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _send(
        self,
        session: requests.Session,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str | None] | None,  # None drops a session header (requests' merge)
        idempotent: bool,
        what: str,
        accept: Collection[int],
    ) -> requests.Response:
        send_headers = dict(headers or {})
        if body is not None:
            send_headers.setdefault("Content-Type", "application/json")
        send_headers.update(self._attempt_headers(body or b""))
        limiter = self._limiter
        if limiter is not None:
            limiter.acquire()
        self._stats.add_request()
        transport_error: DestinationError | None = None
        try:
            # requests drops a header given as None (sessions.merge_setting: how a call leaves out a
            # session header, e.g. Salesforce's login without the stale token), but annotates str | bytes only.
            response = session.request(
                method,
                url,
                data=body,
                params=params,
                headers=send_headers,  # type: ignore[arg-type]
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            self._scrub(getattr(exc, "request", None))
            error = error_from_exception(exc, idempotent=idempotent, what=what, redact=self.redact)
            # requests' messages hold the URL (a webhook's secret path): scrub the chain we keep as the cause.
            if REDACTOR.scrub_exception(exc):
                raise error from exc
            transport_error = error  # raised below, outside this block, so no leaking context is chained
        finally:
            if limiter is not None:
                limiter.release()
        if transport_error is not None:
            raise transport_error
        self._scrub(response.request)
        if response.status_code < 400:
            self._check_body(response, idempotent=idempotent, what=what)
            return response
        if response.status_code in accept:
            return response
        error = self._error_for(response, idempotent=idempotent, what=what)
        if (
            isinstance(error, RetryableDestinationError)
            and error.retry_after
            and error.retry_after <= self._retry_policy.max_retry_after
            and limiter is not None
        ):
            limiter.pause(error.retry_after)  # hold back every task sharing this account
        raise error

    def _check_body(self, response: requests.Response, *, idempotent: bool, what: str) -> None:
        """A success whose JSON body is cut off is a transport failure (the call may have been applied)."""
        if not response.content or "json" not in response.headers.get("Content-Type", ""):
            return
        try:
            response._retl_json = orjson.loads(response.content)  # type: ignore[attr-defined]
        except orjson.JSONDecodeError:
            message = f"{what} -> {response.status_code} with a body that is not valid JSON"
            kwargs: dict[str, Any] = {"status": response.status_code, "response": response, "request": response.request}
            if idempotent:
                raise RetryableDestinationError(message, **kwargs) from None
            raise OutcomeUnknownError(message + " (the request may have been applied)", **kwargs) from None

    @staticmethod
    def response_json(response: requests.Response) -> Any:
        """The parsed JSON body of a response (None when empty or not JSON)."""
        cached = getattr(response, "_retl_json", _UNSET)
        return _json_or_none(response) if cached is _UNSET else cached

    def _attempt_headers(self, body: bytes) -> dict[str, str]:
        """Headers computed per attempt (e.g. a timestamped signature); none by default."""
        return {}

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        """Classify an HTTP error response by status; the response stays on the error."""
        status = response.status_code
        message = self.redact(f"{what} -> {status} {response.reason or ''}: {self.describe_error(response)}")
        kwargs: dict[str, Any] = {"status": status, "response": response, "request": response.request}
        if status in (401, 403):
            return FatalDestinationError(message, **kwargs)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status in (408, 429):  # the server did not process the request
            return RetryableDestinationError(message, retry_after=retry_after, **kwargs)
        if status >= 500:
            if idempotent:
                return RetryableDestinationError(message, retry_after=retry_after, **kwargs)
            return OutcomeUnknownError(message + " (the request may have been applied)", **kwargs)
        refused = BatchRejectedError(message, **kwargs)
        # What the engine needs to isolate the bad record (sync.batching): the hook's judgement and words.
        refused.record_level = self.is_record_level(refused)
        lone = self.rejection_outcome(refused)
        refused.reason, refused.code, refused.outcome = lone.reason, lone.code, lone
        return refused

    def describe_error(self, response: requests.Response) -> str:
        """A short, human-readable reason from an error response (its message, else a body excerpt)."""
        data = _json_or_none(response)
        if isinstance(data, Mapping):
            text = data.get("message") or data.get("error") or data.get("detail")
            if text:
                category = data.get("category") or data.get("code")
                return excerpt(self.redact(f"{category}: {text}" if category else str(text)))
        return excerpt(self.redact(response.text or ""))

    def _log_retry(self, exc: BaseException, wait: float, attempt: int) -> None:
        self.log.warning("%s; retry %d in %.2fs", self.redact(str(exc)), attempt, wait)

    def redact(self, text: str) -> str:
        """Remove every registered secret (this connection's and any other's) from text headed out."""
        text = REDACTOR.redact(text)
        for secret in (self._secret, *self._wire_secrets):  # registered too; kept for subclasses' state
            if secret and secret in text:
                text = text.replace(secret, REPLACEMENT)
        return text

    @staticmethod
    def _scrub(request: Any) -> None:
        # Errors keep .request (requests' convention); neither the token nor a secret URL rides along.
        REDACTOR.scrub_request(request)
        headers = getattr(request, "headers", None)
        if headers is not None and "Authorization" in headers:
            headers["Authorization"] = REPLACEMENT

    # ------------------------------------------------------------------ per-record helpers

    def bisect(
        self,
        items: Sequence[T],
        send: Callable[[Sequence[T]], list[Outcome]],
    ) -> list[Outcome]:
        """Send ``items``, isolating the records of a refused batch (``sync.batching.isolate``)."""

        def split(count: int, reason: str) -> None:
            self.log.info(
                "%s refused a batch of %d (%s); splitting it to find the bad records", self.hook_name, count, reason
            )

        return isolate(items, send, split)

    def is_record_level(self, err: BatchRejectedError) -> bool:
        """Whether a whole-batch refusal may be caused by one input (worth bisecting)."""
        return err.status in BatchRejectedError.RECORD_LEVEL_STATUSES

    def rejection_outcome(self, err: BatchRejectedError) -> Outcome:
        """The outcome of a single record whose call was refused."""
        reason = self.describe_error(err.response) if err.response is not None else str(err)
        return Outcome.failure(reason=reason, code=str(err.status) if err.status else None)

    @staticmethod
    def reject_all(count: int, reason: str, code: str | None = None) -> list[Outcome]:
        return [Outcome.failure(reason=reason, code=code)] * count

    # ------------------------------------------------------------------ UI

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form behaviour, read from the provider info (the single source of truth).

        Airflow 3.3 builds the form from ``ui-field-behaviour`` and ``conn-fields`` in
        ``get_provider_info()`` and calls this (deprecated since 3.2) only for connection
        types that declare neither; it stays for code that asks the hook class.
        """
        from airflow_provider_retl import get_provider_info

        for conn_type in get_provider_info().get("connection-types", []):
            if conn_type["connection-type"] == cls.conn_type:
                behaviour = conn_type.get("ui-field-behaviour", {})
                return {
                    "hidden_fields": list(behaviour.get("hidden-fields", [])),
                    "relabeling": dict(behaviour.get("relabeling", {})),
                    "placeholders": dict(behaviour.get("placeholders", {})),
                }
        return {"hidden_fields": [], "relabeling": {}, "placeholders": {}}

    # ------------------------------------------------------------------ the Destination protocol
    # Destination developers override from here on.

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (``_test_call``), for the Test button of the connection form.

        Returns ``(ok, message)`` and never raises; the message names the call and the
        destination's answer, with the connection's secrets redacted.
        """
        try:
            self._test_call()
        except NotImplementedError:
            return False, f"{self.hook_name} has no connection test"
        except (DestinationError, ConfigurationError) as err:
            return False, self.redact(str(err))
        except Exception as err:  # noqa: BLE001 - the Test button reports, never raises
            return False, self.redact(f"{type(err).__name__}: {err}")
        return True, f"Connected to {self.hook_name} at {self.display_url}"

    def _test_call(self) -> None:
        """The connection test's call: a cheap authenticated read that writes nothing."""
        raise NotImplementedError

    # Capabilities: by default what the spec declares for the object (``ObjectSpec``); a hook
    # overrides one only when the answer depends on the account (HubSpot's unique properties,
    # Salesforce's External ID fields) or on a knob (Braze's allow_delete). The engine asks for
    # them all at once, through ``capabilities``.

    @final
    def capabilities(self, object: str) -> Capabilities:
        """What this destination can do with ``object``, as the engine's planner takes it (once per run)."""
        return Capabilities(
            lookup=self.needs_lookup(object),
            delete=self.supports_delete(object),
            events=self.supports_events(object),
            default_match=self.default_match_field(object),
            match_aliases=tuple(self.match_field_aliases(object)),
            identities=tuple(self.match_identities(object)),
            updates_by_match=self.updates_by_match(object),
            bulk_threshold=self.bulk_threshold(object),
            # Asked only when something is to be written: it may cost a request (describe, properties).
            upsert=functools.partial(self.supports_upsert, object),
        )

    @property
    def limits(self) -> SendLimits:
        """The connection's batch size and concurrency within the API's limits (read once per run)."""
        return SendLimits(
            batch=self.max_batch_size,
            lookup_batch=self.lookup_batch_size,
            concurrency=self.max_concurrency,
            bulk_batch=self.bulk_batch_size,
        )

    def declared(self, object: str) -> ObjectSpec | None:
        """The spec's declaration of ``object``; a ``ConfigurationError`` naming the objects there are
        when the spec declares others and no wildcard (an unknown object fails before anything is sent)."""
        if self.spec is None:
            return None
        found = self.spec.object(str(object).strip())
        if found is None:
            names = ", ".join(repr(o.name) for o in self.spec.objects)
            raise ConfigurationError(f"{self.hook_name} has no object {object!r}; it syncs {names}")
        return found

    def supports_upsert(self, object: str, match_field: str | None) -> bool:
        declared = self.declared(object)
        if declared is None:
            return False
        if "*" in declared.upsert_by:
            return True  # any field, or none: the destination keys records by what it is sent
        field = match_field or declared.default_match
        return field is not None and field.lower() in {f.lower() for f in declared.upsert_by}

    def supports_delete(self, object: str) -> bool:
        declared = self.declared(object)
        return declared is not None and declared.delete

    def needs_lookup(self, object: str) -> bool:
        declared = self.declared(object)
        return declared is None or declared.lookup

    def default_match_field(self, object: str) -> str | None:
        declared = self.declared(object)
        return declared.default_match if declared else None

    def updates_by_match(self, object: str) -> bool:
        declared = self.declared(object)
        return declared is not None and declared.updates_by_match

    def sync_fields(self, object: str, fields: Sequence[str], key_fields: Sequence[str] = ()) -> None:
        """Most destinations do not need to know the synced fields up front."""

    def match_field_aliases(self, object: str) -> Sequence[str]:
        declared = self.declared(object)
        return declared.match_aliases if declared else ()

    def match_identities(self, object: str) -> Sequence[str]:
        """Fields besides the match field the API finds existing records by on a write (the spec's ``identities``)."""
        declared = self.declared(object)
        return declared.identities if declared else ()

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        return []

    def upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        raise self._unsupported("upsert", object)

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        raise self._unsupported("lookup", object)

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        raise self._unsupported("create", object)

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        raise self._unsupported("update", object)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        raise self._unsupported("delete", object)

    def supports_events(self, object: str) -> bool:
        declared = self.declared(object)
        return declared is not None and declared.events

    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        raise self._unsupported("events", object)

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        # Without a way to ask the API, an unknown outcome stays unknown (never re-sent blindly).
        return [None] * len(records)

    def bulk_threshold(self, object: str) -> int | None:
        return None

    @property
    def bulk_batch_size(self) -> int:
        return 10_000

    def bulk_upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        raise self._unsupported("bulk upsert", object)

    def _unsupported(self, capability: str, object: str) -> NotImplementedError:
        return NotImplementedError(
            f"{self.hook_name} ({type(self).__name__}) does not support {capability} of {object!r}"
        )


#: Libraries that log request URLs (urllib3: ``"POST /hooks/<token> HTTP/1.1" 200``); their records are
#: redacted by a filter, since a logger's filters do not apply to its children, each logger by name.
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "requests")


class _RedactingFilter(logging.Filter):
    """Rewrites a library's log record with every registered secret redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not REDACTOR.empty:
            message = record.getMessage()
            redacted = REDACTOR.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_REDACTING_FILTER = _RedactingFilter()


def _redact_library_logs() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTING_FILTER not in logger.filters:
            logger.addFilter(_REDACTING_FILTER)


def register_secret(secret: Any) -> None:
    """Mask ``secret`` in Airflow's logs and scrub it (and its long fragments) from all we emit."""
    if isinstance(secret, str) and secret.strip() and REDACTOR.add(secret):
        mask_secret(secret)
        fragments: list[Any] = REDACTOR.fragments_of(secret.strip())
        if fragments:
            # Airflow's masker replaces whole patterns only: its fragments hide a cut token in log
            # lines we do not write ourselves (each run of 8+ characters contains one).
            mask_secret(fragments)
        _redact_library_logs()


def _register_nested(value: Any) -> None:
    if isinstance(value, str) and "://" in value:
        # A URL in a secret extra (webhook_url, a DSN, proxies): the whole of it, and the tokens
        # in it; not its fragments, which would be "https://" and path names.
        if REDACTOR.add(value, fragments=False):
            mask_secret(value)
        for secret in REDACTOR.add_url(value, path_is_secret=True):
            mask_secret(secret)
        _redact_library_logs()
    elif isinstance(value, str):
        register_secret(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _register_nested(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _register_nested(item)


def _mask_url_password(url: str) -> None:
    """A password in a URL (``redis://:secret@host``) never shows in the logs nor in what we emit."""
    for secret in REDACTOR.add_url(url, path_is_secret=False):
        mask_secret(secret)


def excerpt(text: str | None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text``, every secret redacted BEFORE the cut.

    Cutting first would leave the front of a token that no longer matches the whole secret.
    """
    return REDACTOR.excerpt(text, limit)


def _json_or_none(response: requests.Response | None) -> Any:
    if response is None or not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _as_float(name: str, value: Any, default: float, *, positive: bool = False) -> float:
    if value is None:
        return default
    try:
        number = float(value)
        if isinstance(value, bool):
            raise ValueError  # noqa: TRY004 - caught below and reported with the knob's name
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds; got {value!r}") from None
    if positive and number <= 0:
        raise ConfigurationError(f"{name} must be positive; got {value!r}")
    return number


def _as_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _as_bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    return text  # a CA bundle path
