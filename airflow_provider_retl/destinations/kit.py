"""The destination kit: what a destination declares once, as data.

A destination is a folder ``destinations/<name>/`` with a ``spec.py`` holding one
``DestinationSpec``: its connection type and form, its knobs (connection extras with
type, default, bounds, label and help), its API limits, what each object kind can do,
where its app shows a record, and its emulator. Everything else derives from that
declaration: the provider info Airflow reads, the connection form, extras parsing with
defaults written once, the capabilities the planner takes, lineage and the
"Destination" link, the emulator registry and CLI, and the conformance suites.

This module imports nothing from Airflow or ``requests``: Airflow reads the provider
info (and with it every spec) in each of its processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_retl.sync.errors import ConfigurationError

KnobType = Literal["integer", "number", "string", "boolean", "object"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Knob:
    """One connection extra: its form field and how its value is read (``parse``).

    ``default`` is the value used when the extra is missing or empty; the form shows
    it and writes it into the extra when a connection is saved, so the hook and the
    form can never disagree. ``cap_at_maximum`` turns a value above ``maximum`` into
    the maximum (the caller logs it) instead of an error.
    """

    name: str
    type: KnobType
    label: str
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    enum: tuple[Any, ...] | None = None
    examples: tuple[Any, ...] = ()
    secret: bool = False
    cap_at_maximum: bool = False
    #: False: an extra read from the connection's JSON only (tuning most users never touch).
    in_form: bool = True
    #: Show ``default: null`` in the form (a limit whose default is "none", e.g. a webhook's rate).
    null_default_shown: bool = False

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the form field (Airflow's ``conn-fields``)."""
        schema: dict[str, Any] = {"type": [self.type, "null"]}
        for key, value in (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("exclusiveMinimum", self.exclusive_minimum),
        ):
            if value is not None:
                schema[key] = value
        if self.enum is not None:
            schema["enum"] = [*self.enum, None]
        if self.examples:
            schema["examples"] = list(self.examples)
        if self.secret:
            schema["format"] = "password"
        if self.default is not None or self.null_default_shown:
            schema["default"] = self.default
        return schema

    def form_field(self) -> dict[str, Any]:
        """This knob as one entry of ``conn-fields``."""
        entry: dict[str, Any] = {"label": self.label, "schema": self.schema()}
        if self.help:
            entry["description"] = self.help
        return entry

    def parse(self, value: Any) -> Any:
        """The extra's value as this knob's type; missing or empty is the default.

        Raises ``ConfigurationError`` naming the knob for a value of the wrong type or out
        of bounds: a bad setting is a configuration error, never a retry.
        """
        if value is None or value == "":
            return self.default
        if self.type == "boolean":
            return self._boolean(value)
        if self.type == "object":
            if not isinstance(value, Mapping):
                raise ConfigurationError(f'{self.name} must be a mapping like {{"name": "value"}}; got {value!r}')
            return dict(value)
        if self.type == "string":
            text = str(value).strip()
            if self.enum is not None:
                folded = text.lower()
                if folded not in {str(e).lower() for e in self.enum if e is not None}:
                    allowed = ", ".join(str(e) for e in self.enum if e is not None)
                    raise ConfigurationError(f"{self.name} must be one of {allowed}; got {value!r}")
                return folded
            return text
        number = self._number(value)
        if self.minimum is not None and number < self.minimum:
            raise ConfigurationError(f"{self.name} must be at least {_plain(self.minimum)}; got {value!r}")
        if self.exclusive_minimum is not None and number <= self.exclusive_minimum:
            what = "positive" if self.exclusive_minimum == 0 else f"above {_plain(self.exclusive_minimum)}"
            raise ConfigurationError(f"{self.name} must be {what}; got {value!r}")
        if self.maximum is not None and number > self.maximum:
            if self.cap_at_maximum:
                return type(number)(self.maximum)
            raise ConfigurationError(f"{self.name} must be at most {_plain(self.maximum)}; got {value!r}")
        return number

    def _boolean(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigurationError(f"{self.name} must be true or false; got {value!r}")

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool):
            raise ConfigurationError(f"{self.name} must be a number; got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if self.type == "integer" else "a number"
            raise ConfigurationError(f"{self.name} must be {kind}; got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigurationError(f"{self.name} must be a finite number; got {value!r}")
        if self.type == "integer":
            if number != int(number):
                raise ConfigurationError(f"{self.name} must be a whole number; got {value!r}")
            return int(number)
        return number


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


@dataclass(frozen=True)
class Limits:
    """What the API allows: records per write call, keys per lookup, calls in flight, rate.

    ``batch`` is the API's hard limit; ``batch_default`` what a connection uses when it
    sets no ``batch_size`` (the limit when None). ``rate`` requests per ``window``
    seconds is the default client-side limit (None: none).
    """

    batch: int
    lookup_batch: int = 100
    concurrency: int = 1
    rate: int | None = None
    window: float = 1.0
    batch_default: int | None = None
    bulk_batch: int | None = None
    #: Calls in flight the API allows at most (a higher max_concurrency is capped, with a warning).
    concurrency_max: int | None = None
    rate_note: str = ""
    batch_note: str = ""

    @property
    def default_batch(self) -> int:
        return self.batch_default or self.batch


@dataclass(frozen=True)
class ObjectSpec:
    """What one object kind of a destination can do.

    ``name`` is the object as a sync names it (``"*"``: any name, e.g. a webhook's
    topic or custom objects). ``upsert_by`` lists the fields a native upsert can
    match on (``"*"``: any). ``aliases`` are other names of the same object kind.
    """

    name: str
    upsert_by: tuple[str, ...] = ()
    lookup: bool = True
    delete: bool = False
    events: bool = False
    default_match: str | None = None
    match_aliases: tuple[str, ...] = ()
    updates_by_match: bool = False
    aliases: tuple[str, ...] = ()
    #: Fields besides the match field by which the API finds an existing record on a write (two live
    #: keys sharing such a value would be merged into one record: both are rejected before sending).
    identities: tuple[str, ...] = ()
    #: The object's page in the vendor app (the ``page`` of ``AppLink.template``).
    app_page: str | None = None


@dataclass(frozen=True)
class AppLink:
    """Where the vendor's app shows a synced object (the task's "Destination" button).

    ``template`` is formatted with ``origin`` (scheme and host of the API base URL),
    ``dc`` (the first label of that host), ``object``, ``page`` (the object's
    ``app_page`` or its name), ``app`` (the app origin ``app_hosts`` maps the API host
    to) and the connection's extras; ``fallback`` is used when an extra it names is
    missing or the API host is one of ``login_hosts`` (the instance is not known yet).
    """

    template: str
    fallback: str = ""
    app_hosts: Mapping[str, str] = field(default_factory=dict)
    default_app: str = ""
    login_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Form:
    """The connection form's standard fields: which are hidden, their labels and placeholders."""

    hidden: tuple[str, ...] = ("schema", "port")
    relabel: Mapping[str, str] = field(default_factory=dict)
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def behaviour(self) -> dict[str, Any]:
        """Airflow's ``ui-field-behaviour`` for this form."""
        return {
            "hidden-fields": list(self.hidden),
            "relabeling": dict(self.relabel),
            "placeholders": dict(self.placeholders),
        }


@dataclass(frozen=True)
class EmulatorSpec:
    """The destination's local emulator: class path, CLI help and default port."""

    cls: str  # "package.module:Class"
    help: str
    port: int


@dataclass(frozen=True)
class DestinationSpec:
    """Everything a destination declares once; see the module docstring for what derives from it."""

    name: str
    title: str
    conn_type: str
    hook_class: str  # "package.module.Class", the path users' code and Airflow name
    conn_name_attr: str
    default_conn_name: str
    form: Form
    limits: Limits
    objects: tuple[ObjectSpec, ...]
    knobs: tuple[Knob, ...] = ()
    default_host: str | None = None
    doc_url: str | None = None
    tags: tuple[str, ...] = ("software",)
    form_title: str | None = None
    vendor_hosts: tuple[str, ...] = ()
    app_link: AppLink | None = None
    emulator: EmulatorSpec | None = None

    @property
    def hook_name(self) -> str:
        """The connection type's name in Airflow's connection form."""
        return self.form_title or f"{self.title} (Reverse ETL)"

    @property
    def hook_module(self) -> str:
        return self.hook_class.rpartition(".")[0]

    def all_knobs(self) -> tuple[Knob, ...]:
        """The destination's own knobs, then the transport knobs every destination has."""
        return (*self.knobs, *transport_knobs(self.limits))

    def knob(self, name: str) -> Knob:
        for knob in self.all_knobs():
            if knob.name == name:
                return knob
        raise KeyError(f"{self.name} declares no knob {name!r}")

    def object(self, name: str) -> ObjectSpec | None:
        """The declaration of object kind ``name`` (case-insensitive), or None when there is none."""
        folded = name.lower()
        wildcard = None
        for spec in self.objects:
            if folded == spec.name.lower() or folded in (a.lower() for a in spec.aliases):
                return spec
            if spec.name == "*":
                wildcard = spec
        return wildcard

    def connection_type(self) -> dict[str, Any]:
        """This destination's entry of the provider info's ``connection-types``."""
        return {
            "connection-type": self.conn_type,
            "hook-class-name": self.hook_class,
            "hook-name": self.hook_name,
            "ui-field-behaviour": self.form.behaviour(),
            "conn-fields": {knob.name: knob.form_field() for knob in self.all_knobs() if knob.in_form},
        }


def transport_knobs(limits: Limits) -> tuple[Knob, ...]:
    """The extras every destination understands (``DestinationHook`` reads them), defaults from ``limits``."""
    rate_help = (
        "At most this many requests in any rolling window, shared by every task of a worker that uses the "
        "same account. 0 turns client-side limiting off." + limits.rate_note
    )
    return (
        Knob(
            "rate_limit",
            "integer",
            "Rate limit (requests per window)",
            limits.rate,
            rate_help,
            minimum=0,
            null_default_shown=True,
        ),
        Knob("rate_window", "number", "Rate window (seconds)", limits.window, exclusive_minimum=0),
        Knob(
            "rate_limit_redis_url",
            "string",
            "Shared rate limit (Redis URL)",
            help="redis://host:6379/0: keep the rate window in Redis so the tasks of every worker together stay "
            "under the limit (pip extra 'redis'). Empty: shared per worker process.",
            secret=True,
        ),
        Knob(
            "max_retries",
            "integer",
            "Max retries",
            5,
            "Retries of a call after 429, 5xx or a network error (non-idempotent calls are only retried when the "
            "request surely did not arrive).",
            minimum=0,
        ),
        Knob("retry_deadline", "number", "Retry deadline (seconds)", 300, exclusive_minimum=0),
        Knob(
            "max_concurrency",
            "integer",
            "Max concurrent calls",
            limits.concurrency,
            f"At most {limits.concurrency_max}." if limits.concurrency_max else "",
            minimum=1,
            maximum=limits.concurrency_max,
            cap_at_maximum=True,
        ),
        Knob(
            "batch_size",
            "integer",
            "Records per call",
            limits.default_batch,
            f"At most {limits.batch}.{limits.batch_note}",
            minimum=1,
            maximum=limits.batch,
            cap_at_maximum=True,
        ),
        Knob(
            "timeout",
            "number",
            "Timeout (seconds)",
            help="Seconds to wait for a connection and for each answer. Empty: 10 s to connect, 60 s per answer; "
            "connect_timeout and read_timeout in the extra JSON set them apart.",
            exclusive_minimum=0,
        ),
        Knob(
            "verify",
            "boolean",
            "Verify TLS certificates",
            True,
            "Turn off only against a test server. For a private CA, put the path of its bundle in the extra JSON "
            'instead: "verify": "/etc/ssl/private-ca.pem".',
        ),
        Knob("connect_timeout", "number", "Connect timeout (seconds)", exclusive_minimum=0, in_form=False),
        Knob("read_timeout", "number", "Read timeout (seconds)", exclusive_minimum=0, in_form=False),
        Knob("proxies", "object", "Proxies", help='{"https": "http://proxy:3128"}', in_form=False),
        Knob("headers", "object", "Headers sent with every request", in_form=False),
    )
