"""Responses the vendors' own documents describe wrongly: each entry says why it is allowed.

Only *document* errors belong here, never a defect of our hooks or emulators: a request we
send must always match the document (requests cannot be allow-listed), and an emulator answer
that differs from the document is fixed in the emulator unless there is evidence (the vendor's
SDK, its reference pages, answers quoted by integrations) that the real API answers that way
and the document is wrong. Every entry must still match a violation: the conformance test
fails on a stale entry, so the list cannot rot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Allowed:
    """A response violation the vendor's document gets wrong, matched by route and message."""

    destination: str
    route: str  # "METHOD template", exactly as the violation report prints it
    message: str  # regular expression searched in the violation message
    reason: str  # why the document, not the emulator, is wrong (with the evidence)
    status: int | None = None  # only responses with this HTTP status (None: any)
    direction: str = "response"  # requests are never allow-listed

    def matches(self, destination: str, route: str, direction: str, status: int, message: str) -> bool:
        return (
            self.destination == destination
            and self.route == route
            and self.direction == direction
            and (self.status is None or self.status == status)
            and re.search(self.message, message) is not None
        )


_UNDECLARED = r"^ResponseNotFound: Unknown response http status"

ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        "customerio",
        "POST /api/v2/batch",
        _UNDECLARED,
        status=429,
        reason="The Track API document declares no 429 for /api/v2/batch, yet Customer.io's Track API limits "
        "page (docs.customer.io, 'Track API limits') says requests above the fair-use rate get 429 Too Many "
        "Requests; the hook must (and does) retry it. An omission of the document, not an emulator invention.",
    ),
    Allowed(
        "zendesk",
        "PUT /api/v2/users/update_many",
        _UNDECLARED,
        status=429,
        reason="Zendesk's OAS declares only the success responses of most operations; its 'Rate limits' guide "
        "(developer.zendesk.com/api-reference/introduction/rate-limits) documents 429 with Retry-After on every "
        "endpoint. The 429 here is the injected fault.",
    ),
    Allowed(
        "zendesk",
        "GET /api/v2/user_fields",
        _UNDECLARED,
        status=401,
        reason="Zendesk's OAS declares no 401 for GET /api/v2/user_fields; its 'Security and authentication' "
        'guide documents 401 {"error": "Couldn\'t authenticate you"} for bad credentials on every endpoint '
        "(the wrong-token run's first request).",
    ),
    Allowed(
        "zendesk",
        "GET /api/v2/job_statuses/{job_status_id}",
        _UNDECLARED,
        status=404,
        reason="Zendesk's OAS declares only 200 for Show Job Status, but job statuses expire (the reference: "
        "'job statuses are available for one hour') and an unknown id answers 404 RecordNotFound, as every "
        "Show endpoint does (the 'Response format' guide's error codes).",
    ),
)
