"""HubSpot object types, property definitions and property-value validation.

Property types are HubSpot's (``string``, ``number``, ``date``, ``datetime``,
``enumeration``, ``bool``). Values come back as strings, as HubSpot returns
them: numbers as written, bools as ``"true"``/``"false"``, dates as
``YYYY-MM-DD``, datetimes as ISO 8601 UTC with milliseconds. An empty string
or ``null`` clears a property.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from email_validator import EmailNotValidError, validate_email

PROPERTY_TYPES: tuple[str, ...] = ("string", "number", "date", "datetime", "enumeration", "bool")
MAX_VALUE_LENGTH = 65_536

# Error codes used in HubSpot's "Property values were not valid" responses.
PROPERTY_DOESNT_EXIST = "PROPERTY_DOESNT_EXIST"
INVALID_EMAIL = "INVALID_EMAIL"
INVALID_INTEGER = "INVALID_INTEGER"
INVALID_DATE = "INVALID_DATE"
INVALID_OPTION = "INVALID_OPTION"
INVALID_LONG_STRING = "INVALID_LONG_STRING"
INVALID_PROPERTY_VALUE = "INVALID_PROPERTY_VALUE"
READ_ONLY_VALUE = "READ_ONLY_VALUE"

_DEFAULT_FIELD_TYPES = {
    "string": "text",
    "number": "number",
    "date": "date",
    "datetime": "date",
    "enumeration": "select",
    "bool": "booleancheckbox",
}


@dataclass(frozen=True)
class PropertyDef:
    """One property of an object type, as ``GET /crm/v3/properties/{objectType}`` describes it."""

    name: str
    type: str = "string"
    has_unique_value: bool = False
    label: str | None = None
    field_type: str | None = None
    group_name: str = "emulator"
    description: str = ""
    options: tuple[str, ...] = ()  # allowed values of an enumeration; empty: any value
    read_only: bool = False  # system properties (hs_object_id, createdate, ...)

    def __post_init__(self) -> None:
        if self.type not in PROPERTY_TYPES:
            raise ValueError(f"property {self.name!r}: type must be one of {', '.join(PROPERTY_TYPES)}")

    @classmethod
    def from_spec(cls, spec: PropertyDef | Mapping[str, Any] | str) -> PropertyDef:
        """Accept a PropertyDef, a name (a string property) or a dict in HubSpot's or Python spelling."""
        if isinstance(spec, PropertyDef):
            return spec
        if isinstance(spec, str):
            return cls(name=spec)
        data = dict(spec)
        options = data.get("options") or ()
        return cls(
            name=str(data["name"]),
            type=str(data.get("type", "string")),
            has_unique_value=bool(data.get("has_unique_value", data.get("hasUniqueValue", False))),
            label=data.get("label"),
            field_type=data.get("field_type", data.get("fieldType")),
            group_name=str(data.get("group_name", data.get("groupName", "emulator"))),
            description=str(data.get("description", "")),
            options=tuple(o["value"] if isinstance(o, Mapping) else str(o) for o in options),
        )

    def to_json(self, created_at: str) -> dict[str, Any]:
        """The property in HubSpot's ``Property`` shape (SDK model ``ModelProperty``)."""
        return {
            "name": self.name,
            "label": self.label or self.name.replace("_", " ").title(),
            "type": self.type,
            "fieldType": self.field_type or _DEFAULT_FIELD_TYPES[self.type],
            "groupName": self.group_name,
            "description": self.description,
            "options": [
                {"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(self.options)
            ],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "hubspotDefined": self.group_name != "emulator",
            "formField": not self.read_only,
            "archived": False,
            "createdAt": created_at,
            "updatedAt": created_at,
            "modificationMetadata": {
                "archivable": not self.read_only,
                "readOnlyDefinition": self.read_only,
                "readOnlyValue": self.read_only,
            },
        }


@dataclass
class ObjectTypeDef:
    """An object type: its names, its properties and the properties a read returns by default."""

    name: str  # plural API name: "contacts", or a custom object's "p_cars"
    object_type_id: str  # "0-1" for contacts, "2-1234" for a custom object
    singular: str  # "contact": used in error messages
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    default_read: tuple[str, ...] = ()
    created_property: str = "createdate"
    modified_property: str = "lastmodifieddate"

    def unique_properties(self) -> list[str]:
        """Names of the properties with ``hasUniqueValue`` (lookups and conflicts use them)."""
        return [p.name for p in self.properties.values() if p.has_unique_value]

    def copy(self) -> ObjectTypeDef:
        """A copy whose property map can change without touching the original."""
        return replace(self, properties=dict(self.properties))


def _system_properties(created: str, modified: str) -> list[PropertyDef]:
    group = "system"
    return [
        PropertyDef("hs_object_id", "number", group_name=group, read_only=True, label="Record ID"),
        PropertyDef(created, "datetime", group_name=group, read_only=True, label="Create Date"),
        PropertyDef(modified, "datetime", group_name=group, read_only=True, label="Last Modified Date"),
    ]


def _object_type(
    name: str,
    type_id: str,
    singular: str,
    props: Iterable[PropertyDef],
    default_read: Sequence[str],
    created: str = "createdate",
    modified: str = "lastmodifieddate",
) -> ObjectTypeDef:
    all_props = [*_system_properties(created, modified), *props]
    return ObjectTypeDef(
        name=name,
        object_type_id=type_id,
        singular=singular,
        properties={p.name: p for p in all_props},
        default_read=tuple(default_read),
        created_property=created,
        modified_property=modified,
    )


_LIFECYCLE = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
_HS = "contactinformation"


def default_object_types() -> dict[str, ObjectTypeDef]:
    """Contacts, companies and deals with a useful subset of HubSpot's default properties."""
    contacts = _object_type(
        "contacts",
        "0-1",
        "contact",
        [
            PropertyDef("email", has_unique_value=True, group_name=_HS, label="Email"),
            PropertyDef("firstname", group_name=_HS, label="First Name"),
            PropertyDef("lastname", group_name=_HS, label="Last Name"),
            PropertyDef("phone", group_name=_HS, label="Phone Number", field_type="phonenumber"),
            PropertyDef("mobilephone", group_name=_HS, label="Mobile Phone Number", field_type="phonenumber"),
            PropertyDef("company", group_name=_HS, label="Company Name"),
            PropertyDef("website", group_name=_HS, label="Website URL"),
            PropertyDef("jobtitle", group_name=_HS, label="Job Title"),
            PropertyDef("address", group_name=_HS, label="Street Address"),
            PropertyDef("city", group_name=_HS, label="City"),
            PropertyDef("state", group_name=_HS, label="State/Region"),
            PropertyDef("zip", group_name=_HS, label="Postal Code"),
            PropertyDef("country", group_name=_HS, label="Country/Region"),
            PropertyDef("lifecyclestage", "enumeration", group_name=_HS, label="Lifecycle Stage", options=_LIFECYCLE),
            PropertyDef(
                "hs_lead_status",
                "enumeration",
                group_name="sales_properties",
                label="Lead Status",
                options=(
                    "NEW",
                    "OPEN",
                    "IN_PROGRESS",
                    "OPEN_DEAL",
                    "UNQUALIFIED",
                    "ATTEMPTED_TO_CONTACT",
                    "CONNECTED",
                    "BAD_TIMING",
                ),
            ),
            PropertyDef("hubspot_owner_id", group_name="sales_properties", label="Contact owner"),
        ],
        ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    )
    companies = _object_type(
        "companies",
        "0-2",
        "company",
        [
            PropertyDef("name", group_name="companyinformation", label="Company name"),
            PropertyDef("domain", group_name="companyinformation", label="Company Domain Name"),
            PropertyDef("website", group_name="companyinformation", label="Website URL"),
            PropertyDef("phone", group_name="companyinformation", label="Phone Number"),
            PropertyDef("industry", "enumeration", group_name="companyinformation", label="Industry"),
            PropertyDef("city", group_name="companyinformation", label="City"),
            PropertyDef("state", group_name="companyinformation", label="State/Region"),
            PropertyDef("country", group_name="companyinformation", label="Country/Region"),
            PropertyDef("zip", group_name="companyinformation", label="Postal Code"),
            PropertyDef("numberofemployees", "number", group_name="companyinformation", label="Number of Employees"),
            PropertyDef("annualrevenue", "number", group_name="companyinformation", label="Annual Revenue"),
            PropertyDef("description", group_name="companyinformation", label="Description"),
            PropertyDef("lifecyclestage", "enumeration", group_name="companyinformation", options=_LIFECYCLE),
            PropertyDef(
                "type",
                "enumeration",
                group_name="companyinformation",
                label="Type",
                options=("PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER"),
            ),
        ],
        ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
        modified="hs_lastmodifieddate",
    )
    deals = _object_type(
        "deals",
        "0-3",
        "deal",
        [
            PropertyDef("dealname", group_name="dealinformation", label="Deal Name"),
            PropertyDef("amount", "number", group_name="dealinformation", label="Amount"),
            PropertyDef("dealstage", "enumeration", group_name="dealinformation", label="Deal Stage"),
            PropertyDef("pipeline", "enumeration", group_name="dealinformation", label="Pipeline"),
            PropertyDef("closedate", "datetime", group_name="dealinformation", label="Close Date"),
            PropertyDef("hubspot_owner_id", group_name="dealinformation", label="Deal owner"),
        ],
        [
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
        modified="hs_lastmodifieddate",
    )
    return {t.name: t for t in (contacts, companies, deals)}


def custom_object_type(
    name: str,
    properties: Iterable[PropertyDef | Mapping[str, Any] | str],
    object_type_id: str,
    singular: str | None = None,
) -> ObjectTypeDef:
    """A custom object (``p_cars`` / ``2-1234``); its timestamps are ``hs_createdate``/``hs_lastmodifieddate``."""
    props = [PropertyDef.from_spec(p) for p in properties]
    shown = [p.name for p in props[:1]]  # the primary display property is read by default
    return _object_type(
        name,
        object_type_id,
        singular or re.sub(r"^p\d*_", "", name).rstrip("s"),
        props,
        ["hs_createdate", "hs_lastmodifieddate", "hs_object_id", *shown],
        created="hs_createdate",
        modified="hs_lastmodifieddate",
    )


@dataclass(frozen=True)
class PropertyError:
    """Why one property value was refused (one entry of HubSpot's error list)."""

    name: str
    code: str
    message: str


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds, as HubSpot writes ``createdAt`` and datetimes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_moment(value: Any) -> datetime | None:
    """A datetime from epoch milliseconds or ISO 8601 (a date means midnight UTC); None if unparsable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"-?\d{9,}", value.strip())):
        try:
            return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validate_properties(
    object_type: ObjectTypeDef, values: Mapping[str, Any], strict: bool = True
) -> tuple[dict[str, str | None], list[PropertyError]]:
    """Normalise property values to HubSpot's strings; None means "clear this property".

    Unknown properties are errors when ``strict`` (HubSpot's behaviour); otherwise
    they are accepted as strings. Writes to read-only system properties are ignored.
    """
    normalized: dict[str, str | None] = {}
    errors: list[PropertyError] = []
    for name, raw in values.items():
        prop = object_type.properties.get(name)
        if prop is None:
            if strict:
                errors.append(PropertyError(name, PROPERTY_DOESNT_EXIST, f'Property "{name}" does not exist'))
                continue
            prop = PropertyDef(name)
        if prop.read_only:
            continue
        value, error = normalize_value(object_type, prop, raw)
        if error is not None:
            errors.append(error)
        else:
            normalized[name] = value
    return normalized, errors


def normalize_value(object_type: ObjectTypeDef, prop: PropertyDef, raw: Any) -> tuple[str | None, PropertyError | None]:
    """One value as HubSpot stores it, or the error HubSpot reports for it."""
    if raw is None or raw == "":
        return None, None
    if isinstance(raw, dict | list):
        return None, PropertyError(prop.name, INVALID_PROPERTY_VALUE, f"{raw!r} is not a valid value for {prop.name}")
    text = _as_text(raw)
    if len(text) > MAX_VALUE_LENGTH:
        return None, PropertyError(
            prop.name,
            INVALID_LONG_STRING,
            f"value for {prop.name} is {len(text)} characters long; the limit is {MAX_VALUE_LENGTH}",
        )
    if prop.type == "number":
        return _number(prop, raw, text)
    if prop.type in ("date", "datetime"):
        return _moment(prop, raw, text)
    if prop.type == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered, None
        return None, PropertyError(
            prop.name, INVALID_OPTION, f"{text} was not one of the allowed options: [true, false]"
        )
    if prop.type == "enumeration" and prop.options:
        chosen = [v for v in text.split(";") if v != ""]
        bad = [v for v in chosen if v not in prop.options]
        if bad:
            allowed = ", ".join(prop.options)
            return None, PropertyError(
                prop.name, INVALID_OPTION, f"{bad[0]} was not one of the allowed options: [{allowed}]"
            )
    if prop.name == "email" and object_type.object_type_id == "0-1":
        try:
            validate_email(text, check_deliverability=False)
        except EmailNotValidError:
            return None, PropertyError(prop.name, INVALID_EMAIL, f"Email address {text} is invalid")
        # HubSpot stores contact emails in lower case.
        return text.strip().lower(), None
    return text, None


def _as_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _number(prop: PropertyDef, raw: Any, text: str) -> tuple[str | None, PropertyError | None]:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        number = None
    if isinstance(raw, bool) or number is None or not number.is_finite():
        return None, PropertyError(prop.name, INVALID_INTEGER, f"{text} was not a valid number.")
    # Integers keep their digits; floats from JSON lose a trailing ".0" as HubSpot does.
    if number == number.to_integral_value() and "e" not in text.lower():
        return str(number.quantize(Decimal(1))), None
    return text.strip(), None


def _moment(prop: PropertyDef, raw: Any, text: str) -> tuple[str | None, PropertyError | None]:
    moment = parse_moment(raw)
    if moment is None:
        kind = "date" if prop.type == "date" else "datetime"
        return None, PropertyError(prop.name, INVALID_DATE, f"{text} was not a valid {kind}.")
    if prop.type == "date":
        midnight = moment.astimezone(UTC)
        if midnight.time() != time(0):
            return None, PropertyError(
                prop.name, INVALID_DATE, f"{text} is not a valid date: date values must be at midnight UTC."
            )
        return midnight.date().isoformat(), None
    return format_timestamp(moment), None


def sort_key(prop: PropertyDef | None, value: str | None) -> tuple[int, Any]:
    """A key to compare stored values of one property (for search filters and sorts)."""
    if value is None:
        return (0, "")
    if prop is not None and prop.type == "number":
        try:
            return (1, Decimal(value))
        except InvalidOperation:
            return (2, value)
    if prop is not None and prop.type in ("date", "datetime"):
        moment = parse_moment(value)
        if moment is not None:
            return (1, moment.timestamp())
    return (2, value.lower())
