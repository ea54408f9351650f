"""Salesforce sObject definitions, record ids and field-value validation for the emulator.

A field is described the way ``GET /sobjects/{SObject}/describe`` describes it
(``name``, ``type``, ``length``, ``externalId``, ``unique``, ``nillable``,
``createable``, ``updateable``, ``defaultedOnCreate`` ...). Field names are
case-insensitive, as in the real API: ``lastname`` and ``LastName`` are the same
field, and results always use the defined spelling.

Validation returns Salesforce's per-record error objects
(``{"statusCode", "message", "fields"}``), e.g. ``STRING_TOO_LONG``,
``INVALID_EMAIL_ADDRESS``, ``REQUIRED_FIELD_MISSING``; problems the real API
reports for the whole request (an unknown field, a value JSON cannot turn into
the field's type) raise ``RequestError`` instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

#: Field types the emulator knows (Salesforce's describe names).
FIELD_TYPES: tuple[str, ...] = (
    "id",
    "string",
    "email",
    "phone",
    "url",
    "textarea",
    "picklist",
    "boolean",
    "int",
    "double",
    "currency",
    "percent",
    "date",
    "datetime",
    "reference",
)
TEXT_TYPES = frozenset({"string", "email", "phone", "url", "textarea", "picklist", "id", "reference"})
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RECORD_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")


class RequestError(Exception):
    """A problem with the whole request: answered with HTTP ``status`` and ``[{message, errorCode}]``."""

    def __init__(self, status: int, error_code: str, message: str, fields: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields) if fields is not None else None

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            error["fields"] = self.fields
        return [error]


def record_error(code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    """One entry of a result's ``errors`` list (the REST ``Error`` shape)."""
    return {"statusCode": code, "message": message, "fields": list(fields)}


@dataclass(frozen=True)
class FieldDef:
    """One field as describe reports it."""

    name: str
    type: str = "string"
    length: int = 255
    label: str | None = None
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    id_lookup: bool = False
    custom: bool | None = None
    reference_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: type must be one of {', '.join(FIELD_TYPES)}")

    @classmethod
    def from_spec(cls, spec: FieldDef | Mapping[str, Any] | str) -> FieldDef:
        """A FieldDef, a name (a text field) or a dict in describe's or Python's spelling."""
        if isinstance(spec, FieldDef):
            return spec
        if isinstance(spec, str):
            return cls(name=spec)
        data = dict(spec)

        def pick(*names: str, default: Any = None) -> Any:
            for name in names:
                if name in data:
                    return data[name]
            return default

        required = bool(pick("required", default=False))
        return cls(
            name=str(data["name"]),
            type=str(pick("type", default="string")),
            length=int(pick("length", default=255 if pick("type", default="string") in TEXT_TYPES else 0)),
            label=pick("label"),
            nillable=bool(pick("nillable", default=not required)),
            createable=bool(pick("createable", default=True)),
            updateable=bool(pick("updateable", default=True)),
            defaulted_on_create=bool(pick("defaulted_on_create", "defaultedOnCreate", default=False)),
            external_id=bool(pick("external_id", "externalId", default=False)),
            unique=bool(pick("unique", default=False)),
            case_sensitive=bool(pick("case_sensitive", "caseSensitive", default=False)),
            id_lookup=bool(pick("id_lookup", "idLookup", default=False)),
            custom=pick("custom"),
        )

    @property
    def is_custom(self) -> bool:
        return self.custom if self.custom is not None else self.name.endswith("__c")

    @property
    def display_label(self) -> str:
        if self.label:
            return self.label
        base = self.name.removesuffix("__c")
        spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", base).replace("_", " ")
        return " ".join(spaced.split())

    @property
    def required_on_create(self) -> bool:
        return not self.nillable and self.createable and not self.defaulted_on_create and self.type != "boolean"

    @property
    def matches_exactly(self) -> bool:
        """Whether values of this field are compared with their case (ids, case-sensitive unique fields)."""
        return self.type == "id" or self.case_sensitive

    def key(self, value: Any) -> str:
        """The form under which a value is indexed and compared (unique and external ids, SOQL =)."""
        text = format_value(value)
        return text if self.matches_exactly else text.lower()

    def describe(self) -> dict[str, Any]:
        """The field in describe's shape (the properties clients read)."""
        text = self.type in TEXT_TYPES
        return {
            "name": self.name,
            "label": self.display_label,
            "type": self.type,
            "soapType": _SOAP_TYPES[self.type],
            "length": self.length if text else 0,
            "byteLength": self.length * 3 if text else 0,
            "precision": 18 if self.type in ("double", "currency", "percent") else 0,
            "scale": 2 if self.type in ("currency", "percent") else (0 if self.type != "double" else 6),
            "digits": 9 if self.type == "int" else 0,
            "custom": self.is_custom,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.id_lookup or self.external_id or self.type == "id",
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "filterable": self.type != "textarea" or self.length <= 255,
            "sortable": self.type != "textarea",
            "referenceTo": list(self.reference_to),
            "relationshipName": None,
            "picklistValues": [],
            "autoNumber": False,
            "calculated": False,
        }


_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "string": "xsd:string",
    "email": "xsd:string",
    "phone": "xsd:string",
    "url": "xsd:string",
    "textarea": "xsd:string",
    "picklist": "xsd:string",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}


@dataclass
class SObjectDef:
    """An sObject: API name, key prefix (the first 3 characters of its ids) and fields."""

    name: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    label: str | None = None
    custom: bool | None = None

    def __post_init__(self) -> None:
        self._by_lower = {n.lower(): f for n, f in self.fields.items()}

    def copy(self) -> SObjectDef:
        return replace(self, fields=dict(self.fields))

    def add_field(self, spec: FieldDef | Mapping[str, Any] | str) -> FieldDef:
        definition = FieldDef.from_spec(spec)
        self.fields[definition.name] = definition
        self._by_lower[definition.name.lower()] = definition
        return definition

    def field(self, name: str) -> FieldDef | None:
        """The field named ``name`` in any case, or None."""
        return self._by_lower.get(str(name).lower())

    @property
    def is_custom(self) -> bool:
        return self.custom if self.custom is not None else self.name.endswith("__c")

    def indexed_fields(self) -> list[FieldDef]:
        """Fields whose values must be unique (external ids flagged unique, and unique fields)."""
        return [f for f in self.fields.values() if f.unique]

    def external_ids(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.external_id]

    def describe(self, version: str) -> dict[str, Any]:
        """``GET /sobjects/{name}/describe`` (the commonly read part)."""
        label = self.label or self.name.replace("__c", "").replace("_", " ")
        urls = {
            "sobject": f"/services/data/{version}/sobjects/{self.name}",
            "describe": f"/services/data/{version}/sobjects/{self.name}/describe",
            "rowTemplate": f"/services/data/{version}/sobjects/{self.name}/{{ID}}",
        }
        return {
            "name": self.name,
            "label": label,
            "labelPlural": label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.is_custom,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "searchable": True,
            "retrieveable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "urls": urls,
        }

    def global_describe(self, version: str) -> dict[str, Any]:
        full = self.describe(version)
        return {k: v for k, v in full.items() if k != "fields"}


def _system_fields(prefix_type: str) -> list[FieldDef]:
    # Set by the platform: never nillable, defaulted on create, not writable by clients.
    system = [
        ("Id", "id", 18, f"{prefix_type} ID"),
        ("IsDeleted", "boolean", 0, "Deleted"),
        ("CreatedDate", "datetime", 0, "Created Date"),
        ("LastModifiedDate", "datetime", 0, "Last Modified Date"),
        ("SystemModstamp", "datetime", 0, "System Modstamp"),
    ]
    return [
        FieldDef(
            name,
            type_,
            length,
            label=label,
            nillable=False,
            defaulted_on_create=True,
            createable=False,
            updateable=False,
        )
        for name, type_, length, label in system
    ]


def _sobject(name: str, prefix: str, label: str, fields: Iterable[FieldDef]) -> SObjectDef:
    all_fields = [*_system_fields(label), *fields]
    return SObjectDef(name, prefix, {f.name: f for f in all_fields}, label=label)


def _external_id(name: str = "External_Id__c") -> FieldDef:
    return FieldDef(name, "string", 255, external_id=True, unique=True, id_lookup=True)


def default_sobjects() -> dict[str, SObjectDef]:
    """Account, Contact, Lead and a custom object ``Custom__c``, each with an External ID field."""
    account = _sobject(
        "Account",
        "001",
        "Account",
        [
            FieldDef("Name", "string", 255, label="Account Name", nillable=False),
            FieldDef("AccountNumber", "string", 40),
            FieldDef("Website", "url", 255),
            FieldDef("Phone", "phone", 40, label="Account Phone"),
            FieldDef("Industry", "picklist", 255),
            FieldDef("NumberOfEmployees", "int", 0, label="Employees"),
            FieldDef("AnnualRevenue", "currency", 0),
            FieldDef("Description", "textarea", 32000, label="Account Description"),
            _external_id(),
        ],
    )
    contact = _sobject(
        "Contact",
        "003",
        "Contact",
        [
            FieldDef("FirstName", "string", 40),
            FieldDef("LastName", "string", 80, nillable=False),
            FieldDef("Email", "email", 80, id_lookup=True),
            FieldDef("Phone", "phone", 40, label="Business Phone"),
            FieldDef("Title", "string", 128),
            FieldDef("Department", "string", 80),
            FieldDef("AccountId", "reference", 18, label="Account ID", reference_to=("Account",)),
            FieldDef(
                "HasOptedOutOfEmail", "boolean", 0, label="Email Opt Out", nillable=False, defaulted_on_create=True
            ),
            FieldDef("Description", "textarea", 32000, label="Contact Description"),
            _external_id(),
        ],
    )
    lead = _sobject(
        "Lead",
        "00Q",
        "Lead",
        [
            FieldDef("FirstName", "string", 40),
            FieldDef("LastName", "string", 80, nillable=False),
            FieldDef("Company", "string", 255, nillable=False),
            FieldDef("Email", "email", 80, id_lookup=True),
            FieldDef("Phone", "phone", 40),
            FieldDef("Status", "picklist", 255, label="Lead Status", nillable=False, defaulted_on_create=True),
            FieldDef("LeadSource", "picklist", 255),
            _external_id(),
        ],
    )
    custom = _sobject(
        "Custom__c",
        "a00",
        "Custom",
        [
            FieldDef("Name", "string", 80, label="Custom Name", nillable=False),
            FieldDef(
                "External_Key__c", "string", 64, external_id=True, unique=True, case_sensitive=True, id_lookup=True
            ),
            FieldDef("Amount__c", "double", 0),
            FieldDef("Active__c", "boolean", 0, nillable=False, defaulted_on_create=True),
            FieldDef("Notes__c", "string", 255),
        ],
    )
    return {o.name: o for o in (account, contact, lead, custom)}


def custom_sobject(name: str, specs: Iterable[FieldDef | Mapping[str, Any] | str], key_prefix: str) -> SObjectDef:
    """A custom object with a required ``Name`` and the given extra fields."""
    if not name.endswith("__c"):
        raise ValueError(f"custom object names end with '__c'; got {name!r}")
    definition = _sobject(
        name, key_prefix, name[:-3].replace("_", " "), [FieldDef("Name", "string", 80, nillable=False)]
    )
    for spec in specs:
        definition.add_field(spec)
    return definition


# -- ids -------------------------------------------------------------------------------


def id_suffix(id15: str) -> str:
    """The 3 characters that make a 15-character id case-insensitively unique (Salesforce's algorithm)."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(id15[start : start + 5]) if "A" <= ch <= "Z")
        suffix += _ID_SUFFIX_CHARS[bits]
    return suffix


class IdFactory:
    """18-character record ids per key prefix, in creation order (``003`` + pod + counter + suffix)."""

    def __init__(self, pod: str = "Hs0") -> None:
        self.pod = pod
        self._counters: dict[str, itertools.count[int]] = {}

    def new(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        n = next(counter)
        digits = ""
        for _ in range(9):
            n, r = divmod(n, 62)
            digits = _BASE62[r] + digits
        id15 = f"{prefix}{self.pod}{digits}"
        return id15 + id_suffix(id15)

    def reset(self) -> None:
        self._counters.clear()


def looks_like_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_RECORD_ID.match(value))


def id18(value: str) -> str:
    """The 18-character form of an id given in 15 or 18 characters."""
    return value if len(value) == 18 else value + id_suffix(value)


# -- values ----------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A stored value as text (CSV cells, unique-index keys, SOQL comparison)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def coerce(definition: FieldDef, value: Any, *, source: str = "json") -> Any:
    """The value as stored, or raise ValueError when it is not of the field's type.

    ``source="csv"`` accepts text for every type (Bulk API data is text).
    """
    if value is None:
        return None
    kind = definition.type
    if kind in TEXT_TYPES:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return format_value(value)
        if not isinstance(value, str):
            raise ValueError(f"cannot store a JSON {type(value).__name__} in a text field")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ValueError(f"value {value!r} is not a boolean")
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        try:
            number = float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            raise ValueError(f"value {value!r} is not a number") from None
        if kind == "int":
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(f"value {value!r} is not a whole number")
            return int(number)
        return float(number)
    if kind == "date":
        text = str(value)
        if not _DATE.match(text):
            raise ValueError(f"value {value!r} is not a date (YYYY-MM-DD)")
        date.fromisoformat(text)
        return text
    if kind == "datetime":
        text = str(value)
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"value {value!r} is not a dateTime") from None
        return text
    return value


def check_value(definition: FieldDef, value: Any, *, creating: bool) -> dict[str, Any] | None:
    """The per-record error of a value already of the right type, or None."""
    label = definition.display_label
    if value is None or value == "":
        if not definition.nillable and definition.type != "boolean" and (definition.createable or not creating):
            return record_error(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{definition.name}]", [definition.name]
            )
        return None
    if definition.type in TEXT_TYPES and isinstance(value, str):
        if definition.length and len(value) > definition.length:
            shown = value if len(value) <= 255 else value[:255]
            return record_error(
                "STRING_TOO_LONG",
                f"{label}: data value too large: {shown} (max length={definition.length})",
                [definition.name],
            )
        if definition.type == "email" and not _EMAIL.match(value):
            return record_error("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", [definition.name])
    return None
