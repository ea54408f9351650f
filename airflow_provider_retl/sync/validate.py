"""Reusable local validators a destination composes in its ``validate``.

Each returns None when the value is acceptable and a short reason otherwise, so a
destination can say ``[(field, reason) for ...]`` and the engine turns that into a
per-row reject with the key: the row is not sent, not checkpointed, and retried on
the next run once the data is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Validator = Callable[[Any], str | None]


def email(value: Any) -> str | None:
    """A syntactically valid address with a real-looking domain (no DNS lookups)."""
    if value is None or value == "":
        return None
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(value, str):
        return f"email must be text, got {type(value).__name__}"
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"invalid email {value!r}: {exc}"
    return None


def max_length(limit: int) -> Validator:
    """Text (or its JSON rendering) no longer than ``limit`` characters."""

    def check(value: Any) -> str | None:
        if isinstance(value, str) and len(value) > limit:
            return f"value is {len(value):,} characters long; the limit is {limit:,}"
        return None

    return check


def required(value: Any) -> str | None:
    """Present and not empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "value is required"
    return None


def run_validators(fields: Mapping[str, Any], rules: Mapping[str, list[Validator]]) -> list[tuple[str | None, str]]:
    """Apply ``rules`` (field -> validators; "*" applies to every field) to one record."""
    problems: list[tuple[str | None, str]] = []
    every = rules.get("*", [])
    for name, value in fields.items():
        for check in (*rules.get(name, ()), *every):
            reason = check(value)
            if reason:
                problems.append((name, reason))
                break
    for name, checks in rules.items():
        if name != "*" and name not in fields and required in checks:
            problems.append((name, "value is required"))
    return problems
