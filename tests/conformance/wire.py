"""Record the HTTP exchanges of hooks with emulators and check them against the vendors' API documents.

Recording happens on the emulator side: an ASGI wrapper around the emulator app sees the
request exactly as it arrived over the socket (after ``requests`` added its headers and encoded
the body) and the response exactly as the emulator (or its fault injection) answered it. A
``requests`` transport adapter on the hook side would need to be installed into every hook's
session (hooks build their own sessions and retry wrappers) and would observe the emulator's
answer only after ``requests`` decoded it; the emulator side needs no change to any hook or to
the emulators' code (the wrapper is served by ``EmulatorServer`` in place of the bare emulator).

Validation uses openapi-core (pinned 0.23.1) with the documents read from the shared
vendor-specs folder at test time (never copied into the repository). The normalisations
SOURCES.md allows are applied in memory here, each with its reason.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import yaml
from jsonschema.exceptions import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_retl.testing.emulators import EMULATORS, RunningEmulator
from airflow_provider_retl.testing.emulators.base import ADMIN_PREFIX
from airflow_provider_retl.testing.emulators.server import EmulatorServer

REDACTED = "<redacted>"
#: Headers whose value is a credential: recorded as "<scheme> <redacted>" (the scheme is kept
#: because the documents' security schemes check it) or "<redacted>".
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"})
#: Host the in-memory documents are served from (their real servers are the vendors').
HOST = "http://emulator.test"


# --------------------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Exchange:
    """One API request as the emulator received it and the response it sent."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names, secrets redacted
    body: bytes
    status: int  # 0: the connection was dropped without a response
    response_headers: dict[str, str]
    response_body: bytes

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


def _redact(name: str, value: str) -> str:
    if name not in SECRET_HEADERS:
        return value
    scheme, _, rest = value.partition(" ")
    return f"{scheme} {REDACTED}" if rest else REDACTED


class ExchangeRecorder:
    """An ASGI wrapper that records every API exchange of the app it wraps (admin routes excluded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        request_chunks: list[bytes] = []
        response: dict[str, Any] = {"status": 0, "headers": {}, "chunks": []}

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_chunks.append(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                response["chunks"].append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            headers = {}
            for k, v in scope.get("headers", []):
                name = k.decode("latin-1").lower()
                headers[name] = _redact(name, v.decode("latin-1"))
            exchange = Exchange(
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=b"".join(request_chunks),
                status=response["status"],
                response_headers=response["headers"],
                response_body=b"".join(response["chunks"]),
            )
            with self._lock:
                self._exchanges.append(exchange)


def start_recorded(kind: str, **options: Any) -> tuple[RunningEmulator, ExchangeRecorder]:
    """Start emulator ``kind`` (like ``start_emulator``) behind an ``ExchangeRecorder``."""
    emulator = EMULATORS[kind](**options)
    recorder = ExchangeRecorder(emulator)
    server = EmulatorServer(recorder).start()
    return RunningEmulator(emulator, server), recorder


# --------------------------------------------------------------------------------------- documents


# One locator for every test that reads the vendors' documents.
from tests.vendor_specs import specs_dir


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loader that reads a bare ``=`` as the string it is.

    zendesk-support-oas.yaml has ``change: =`` in an example; PyYAML resolves a plain ``=``
    to the YAML 1.1 "value" tag, which it cannot construct.
    """


_YamlLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
# YAML 1.1 reads an unquoted 2019-01-01 as a date; JSON Schema (and JSON bodies) only know strings.
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _YamlLoader.yaml_implicit_resolvers.items()
}


@functools.cache
def load_document(name: str) -> dict[str, Any]:
    """The parsed document ``name`` (once per session)."""
    path = specs_dir() / name
    text = path.read_text(encoding="utf-8")
    if name.endswith(".json"):
        return json.loads(text)
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass


@dataclass
class Document:
    """One vendor document: its file, the base path its server URL carries, and its path templates."""

    name: str
    base_path: str = ""  # e.g. "/3.0": Mailchimp's server URL is https://server.api.mailchimp.com/3.0
    #: In-memory fixes of the parsed document (each function says why); the file is never changed.
    normalisations: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = ()

    @functools.cached_property
    def raw(self) -> dict[str, Any]:
        return load_document(self.name)

    @functools.cached_property
    def templates(self) -> list[tuple[str, re.Pattern[str], int]]:
        """(template, regex, number of parameters) of every path, literal paths first."""
        out = []
        for template in self.raw.get("paths", {}):
            params = re.findall(r"\{[^}/]+\}", template)
            regex = re.escape(self.base_path + template)
            for p in params:
                regex = regex.replace(re.escape(p), "[^/]+")
            out.append((template, re.compile(f"^{regex}$"), len(params)))
        return sorted(out, key=lambda t: t[2])

    def match(self, method: str, path: str) -> tuple[str, int] | None:
        """The best template for ``path`` having ``method``, and its parameter count."""
        for template, regex, n in self.templates:
            if regex.match(path) and method.lower() in self.raw["paths"][template]:
                return template, n
        return None

    @functools.cached_property
    def openapi(self) -> Any:
        """The openapi-core object (built once per session)."""
        from openapi_core import Config, OpenAPI
        from openapi_core.deserializing.media_types.util import json_loads

        spec = json.loads(json.dumps(self.raw))  # a private copy: the cached parse stays as the file has it
        # Normalisation: the documents name the vendors' hosts (and Zendesk a templated
        # {subdomain}.{domain}.com; Customer.io repeats https://track.customer.io on every
        # operation); the emulator is local. Serve the same paths under one test host, keeping
        # the server's base path (Mailchimp's /3.0).
        spec["servers"] = [{"url": HOST + self.base_path}]
        for path_item in spec.get("paths", {}).values():
            path_item.pop("servers", None)
            for operation in path_item.values():
                if isinstance(operation, dict):
                    operation.pop("servers", None)
        spec = empty_content_is_no_body(spec)
        for normalise in self.normalisations:
            spec = normalise(spec)
        # Spec validation (checking the document itself) is skipped: it costs seconds on the
        # large documents, and it is our traffic that is checked here, not the documents.
        # application/problem+json (RFC 7807, Mailchimp's error bodies) is JSON; openapi-core
        # 0.23.1 only decodes application/json and application/vnd.api+json out of the box.
        config = Config(
            spec_validator_cls=None, extra_media_type_deserializers={"application/problem+json": json_loads}
        )
        return OpenAPI.from_dict(spec, config=config)


@dataclass
class Destination:
    """A destination's documents and the in-memory path spellings its API accepts."""

    name: str
    documents: list[Document]
    #: (regex, replacement) applied to a recorded path before routing, each with a reason.
    path_rewrites: list[tuple[str, str]] = field(default_factory=list)

    def normalise(self, path: str) -> str:
        for pattern, replacement in self.path_rewrites:
            path = re.sub(pattern, replacement, path)
        return path

    def route(self, method: str, path: str) -> tuple[Document, str] | None:
        """The document that describes ``method path`` (the most literal match wins) and its template."""
        best: tuple[int, Document, str] | None = None
        for doc in self.documents:
            found = doc.match(method, path)
            if found and (best is None or found[1] < best[0]):
                best = (found[1], doc, found[0])
        return None if best is None else (best[1], best[2])


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a parsed document (depth first)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def hubspot_json_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """HubSpot's generator declares the shared ``Error`` response as ``*/*``; the API answers it as
    ``application/json`` (``Content-Type: application/json;charset=utf-8``). openapi-core hands a
    ``*/*`` body to the schema as raw bytes, so every error body would fail "is not of type
    'object'" whatever it holds: the media type is read as JSON instead."""
    for node in _walk(spec):
        content = node.get("content")
        if isinstance(content, dict) and "*/*" in content and "application/json" not in content:
            content["application/json"] = content.pop("*/*")
    return spec


def empty_content_is_no_body(spec: dict[str, Any]) -> dict[str, Any]:
    """``"204": {"content": {}}`` (HubSpot's batch/archive, Mailchimp's DELETE member) means "no body" in OAS 3.0, but
    openapi-core treats any ``content`` key as a body it must find ("Missing response data")."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            for response in (operation.get("responses") or {}).values() if isinstance(operation, dict) else ():
                if isinstance(response, dict) and response.get("content") == {}:
                    del response["content"]
    return spec


HUBSPOT = (hubspot_json_errors,)


def mailchimp_merge_values(spec: dict[str, Any]) -> dict[str, Any]:
    """The openapi-generator rendering of Mailchimp's spec 3.0.55 types every ``merge_fields``
    value as ``type: object``, yet a merge value is a string ("FNAME": "Freddie"), a number, or,
    for an address field, an object (addr1, city, ...): Mailchimp's merge-field guide shows
    strings, and clients generated from Mailchimp's newer spec type the value as the union
    addr-object | string | number. Read as that union."""
    union = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "object"}]}
    for node in _walk(spec):
        merge = (node.get("properties") or {}).get("merge_fields") if isinstance(node.get("properties"), dict) else None
        if isinstance(merge, dict) and isinstance(merge.get("additionalProperties"), dict):
            extra = merge["additionalProperties"]
            if extra.get("type") == "object" and "properties" not in extra:
                merge["additionalProperties"] = {"description": extra.get("description", ""), **union}
    return spec


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _enum_of(spec: dict[str, Any], schema: Any, name: str) -> list[Any]:
    """The ``enum`` of property ``name`` in ``schema`` (looking through ``allOf``)."""
    schema = _resolve(spec, schema)
    if not isinstance(schema, dict):
        return []
    found = list(((schema.get("properties") or {}).get(name) or {}).get("enum") or [])
    for part in schema.get("allOf") or []:
        found += _enum_of(spec, part, name)
    return found


def discriminator_mappings(spec: dict[str, Any]) -> dict[str, Any]:
    """Customer.io's batch items are ``anyOf`` person / object operations with
    ``discriminator: {propertyName: action}`` and no ``mapping``. By OAS 3.1 (Discriminator
    Object) a value without a mapping names a schema, so ``"action": "delete"`` means
    ``#/components/schemas/delete``, which does not exist (the schema is ``person_delete``): every
    operation would fail with "reference could not be resolved". The document's intent is in
    each branch's own ``action`` enum, so the mapping is built from it; a discriminator whose
    values cannot be mapped one-to-one is dropped (``anyOf`` still checks every branch)."""
    for node in list(_walk(spec)):
        disc = node.get("discriminator")
        branches = node.get("anyOf") or node.get("oneOf")
        if not isinstance(disc, dict) or "mapping" in disc or not branches:
            continue
        mapping: dict[str, str] = {}
        ok = True
        for branch in branches:
            ref = branch.get("$ref") if isinstance(branch, dict) else None
            values = _enum_of(spec, branch, disc.get("propertyName", "")) if ref else []
            if not values or any(v in mapping for v in values):
                ok = False
                break
            mapping.update({str(v): ref for v in values})
        if ok:
            disc["mapping"] = mapping
        else:
            del node["discriminator"]
    return spec


DESTINATIONS: dict[str, Destination] = {
    "hubspot": Destination(
        "hubspot",
        [
            Document("hubspot-contacts.json", normalisations=HUBSPOT),
            Document("hubspot-companies.json", normalisations=HUBSPOT),
            Document("hubspot-objects.json", normalisations=HUBSPOT),
            Document("hubspot-properties.json", normalisations=HUBSPOT),
            Document("hubspot-schemas.json", normalisations=HUBSPOT),
        ],
        # HubSpot serves the schemas API both as /crm/v3/schemas (the spelling in its CRM
        # docs and SDK) and /crm-object-schemas/v3/schemas (the spelling in its spec file).
        path_rewrites=[(r"^/crm/v3/schemas", "/crm-object-schemas/v3/schemas")],
    ),
    "mailchimp": Destination(
        "mailchimp",
        [Document("mailchimp-marketing-openapi.yaml", base_path="/3.0", normalisations=(mailchimp_merge_values,))],
    ),
    "zendesk": Destination(
        "zendesk",
        [Document("zendesk-support-oas.yaml")],
        # Zendesk answers every Support endpoint with or without a ".json" suffix (its
        # reference shows both spellings in the curl examples); the document has none.
        path_rewrites=[(r"\.json$", "")],
    ),
    "customerio": Destination(
        "customerio", [Document("customerio-track-openapi.json", normalisations=(discriminator_mappings,))]
    ),
}


# --------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Violation:
    """A recorded request or response the vendor's document does not allow."""

    destination: str
    document: str
    route: str  # "METHOD template", e.g. "POST /crm/v3/objects/contacts/batch/upsert"
    direction: str  # "request" or "response"
    status: int  # response status (also given for requests: which answer they got)
    message: str

    def line(self) -> str:
        return (
            f"[{self.destination}] {self.route} {self.direction} (HTTP {self.status}) [{self.document}]: {self.message}"
        )


class _Request:
    """An openapi-core request built from a recorded exchange."""

    def __init__(self, exchange: Exchange, path: str) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = HOST
        self.path = path
        self.method = exchange.method.lower()
        self.body = exchange.body or None
        self.content_type = exchange.headers.get("content-type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(exchange.query, keep_blank_values=True)),
            header=Headers(list(exchange.headers.items())),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    """An openapi-core response built from a recorded exchange."""

    def __init__(self, exchange: Exchange) -> None:
        from werkzeug.datastructures import Headers

        self.data = exchange.response_body
        self.status_code = exchange.status
        self.headers = Headers(list(exchange.response_headers.items()))
        self.content_type = exchange.response_headers.get("content-type", "").lower()


def _messages(error: BaseException) -> Iterator[str]:
    """Readable lines of an openapi-core error: one per schema error, with its JSON path.

    Array indexes in the path become ``*`` and a wrong type is named by its type, not its
    value, so the same defect in a hundred records reads as one line (with a count).
    """
    kind = type(error).__name__
    cause = error.__cause__
    schema_errors = getattr(error, "schema_errors", None) or getattr(cause, "schema_errors", None)
    if schema_errors:
        for e in (leaf for top in schema_errors for leaf in _leaves(top)):
            where = "/".join("*" if isinstance(p, int) else str(p) for p in e.absolute_path) or "(body)"
            if e.validator == "type":
                what = f"{type(e.instance).__name__} is not of type {e.validator_value!r}"
            else:
                what = _short(e.message, 200)
            yield f"{kind}: {where}: {what}"
        return
    text = str(error)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    yield f"{kind}: {_short(text)}"


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors that explain ``error``.

    An anyOf/oneOf failure only says "not valid under any of the given schemas"; the branch
    that failed on the fewest things (deepest first) is the one the value was meant to match,
    so its errors are the ones worth reading.
    """
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        # A branch of the wrong kind altogether (a "type" error on the value itself) is the
        # least likely meant, unless every branch is.
        depth = len(error.absolute_path)
        kinds = [
            errs
            for errs in branches.values()
            if not any(e.validator == "type" and len(e.absolute_path) == depth for e in errs)
        ]
        candidates = kinds or list(branches.values())
        closest = min(candidates, key=lambda errs: (len(errs), -max(len(e.absolute_path) for e in errs)))
        for sub in closest:
            yield from _leaves(sub)
    else:
        yield error


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate(destination: str, exchanges: Iterable[Exchange]) -> tuple[list[Violation], set[str]]:
    """Violations of ``exchanges`` against ``destination``'s documents, and the routes seen."""
    dest = DESTINATIONS[destination]
    violations: list[Violation] = []
    routes: set[str] = set()
    for exchange in exchanges:
        if exchange.status == 0:
            continue  # dropped on purpose by a fault: no response to check, request checked elsewhere
        path = dest.normalise(exchange.path)
        routed = dest.route(exchange.method, path)
        if routed is None:
            violations.append(
                Violation(
                    destination,
                    "-",
                    f"{exchange.method} {path}",
                    "request",
                    exchange.status,
                    "no document has this path",
                )
            )
            continue
        doc, template = routed
        route = f"{exchange.method} {doc.base_path}{template}"
        routes.add(route)
        request = _Request(exchange, path)
        found: list[tuple[str, str]] = []
        result = doc.openapi.unmarshal_request(request)
        found += [("request", m) for e in result.errors for m in _messages(e)]
        response_result = doc.openapi.unmarshal_response(request, _Response(exchange))
        found += [("response", m) for e in response_result.errors for m in _messages(e)]
        # openapi-core reports a null twice (not nullable, wrong type): one line per message.
        for direction, message in dict.fromkeys(found):
            violations.append(Violation(destination, doc.name, route, direction, exchange.status, message))
    return violations, routes


def report(violations: Iterable[Violation]) -> str:
    """Violations grouped by destination, route and direction, with repeat counts."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for v in violations:
        key = (v.destination, v.route, v.direction, f"HTTP {v.status}: {v.message}")
        counts[key] = counts.get(key, 0) + 1
    lines = []
    last = None
    for (dest, route, direction, message), n in sorted(counts.items()):
        if (dest, route, direction) != last:
            lines.append(f"{dest}  {route}  [{direction}]")
            last = (dest, route, direction)
        lines.append(f"    {message}" + (f"  (x{n})" if n > 1 else ""))
    return "\n".join(lines)
