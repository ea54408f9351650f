"""One process-wide place that knows every secret and scrubs it from what we emit.

Hooks register what a Connection holds (password, secret extras, header values, a
webhook URL's path and query, encoded forms such as basic auth); the report, the
rejects, the engine's log lines, XCom values and exceptions pass through
:data:`REDACTOR` before they leave the task.

Two rules make partial leaks impossible:

* **Redact, then cut.** :meth:`Redactor.excerpt` replaces secrets in the whole text
  before truncating it, so a cut can never split a token into an unrecognised prefix.
* **Fragments of long secrets count.** A text that holds only part of a long secret
  (cut by a server, a proxy or a library before it reached us) is caught too: every
  run of at least :data:`FRAGMENT_CHARS` characters that occurs in a registered secret
  of at least :data:`FRAGMENT_MIN_SECRET` characters is replaced. Short secrets are
  replaced only whole: their fragments would be ordinary words.

Imports nothing from Airflow (the engine uses it); the hooks also hand every secret to
Airflow's own masker (``mask_secret``) for log lines we do not write ourselves.
"""

from __future__ import annotations

import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "FRAGMENT_CHARS",
    "FRAGMENT_MIN_SECRET",
    "MIN_SECRET_CHARS",
    "REDACTOR",
    "REPLACEMENT",
    "Redactor",
]

#: What a secret (or a run of fragments) is replaced with.
REPLACEMENT = "***"
#: Secrets shorter than this are not registered: replacing them would mangle ordinary text.
MIN_SECRET_CHARS = 4
#: Length of the fragments of long secrets that are caught on their own.
FRAGMENT_CHARS = 8
#: Secrets at least this long are also caught in pieces (fragments of FRAGMENT_CHARS or more).
FRAGMENT_MIN_SECRET = 12

# Characters that split a URL's path and query into the tokens a secret usually is.
_URL_TOKEN_SPLIT = re.compile(r"[/?&=;,#.:+@!$'()*]+")


class Redactor:
    """Every secret of the process, and the text, values and exceptions scrubbed of them.

    Thread-safe; one instance (:data:`REDACTOR`) is shared by every hook and run of the
    process, so a message built anywhere is scrubbed of every connection's secrets.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._fragments: set[str] = set()
        # Longest first, so a secret that contains another one is replaced whole.
        self._ordered: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<Redactor {len(self._secrets)} secrets>"  # never the secrets themselves

    # ------------------------------------------------------------------ registering

    def add(self, secret: Any, *, fragments: bool = True) -> bool:
        """Register a secret (and the encoded forms it takes in URLs and JSON); True if it was new.

        ``fragments=False`` for composite values (a whole URL, a URL path) whose pieces are
        ordinary text (``https://``, ``/api/v1/``): only the whole value, and the tokens
        registered separately, are replaced.
        """
        if not isinstance(secret, str):
            if isinstance(secret, bytes):
                secret = secret.decode("utf-8", "replace")
            else:
                return False
        secret = secret.strip()
        if len(secret) < MIN_SECRET_CHARS:
            return False
        forms = {secret, quote(secret, safe=""), quote(secret, safe="/"), secret.replace("/", "\\/")}
        with self._lock:
            new = secret not in self._secrets
            for form in forms:
                if form in self._secrets:
                    continue
                self._secrets.add(form)
                if fragments:
                    self._fragments.update(self.fragments_of(form))
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))
        return new

    @staticmethod
    def fragments_of(secret: str) -> list[str]:
        """The fragments of ``secret`` that are caught on their own (none for a short secret)."""
        if len(secret) < FRAGMENT_MIN_SECRET:
            return []
        grams = (secret[i : i + FRAGMENT_CHARS] for i in range(len(secret) - FRAGMENT_CHARS + 1))
        return list(dict.fromkeys(g for g in grams if not _word_like(g)))

    def add_all(self, secrets: Iterable[Any]) -> None:
        for secret in secrets:
            self.add(secret)

    def add_nested(self, value: Any) -> None:
        """Register every string inside ``value`` (a str, or mappings/lists of them)."""
        if isinstance(value, Mapping):
            for item in value.values():
                self.add_nested(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                self.add_nested(item)
        else:
            self.add(value if isinstance(value, str) else None)

    def add_url(self, url: str, *, path_is_secret: bool = True) -> list[str]:
        """Register what a URL carries that may be a secret.

        The password of its user info always; with ``path_is_secret`` (webhook URLs put a token
        in their path or query: Slack, Zapier, Discord ...) also the path and query as a whole
        and each token in them that looks like a credential (long, or not a plain word).
        Returns what it registered, for Airflow's masker.
        """
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            self.add(url)
            return [url]
        whole: list[str] = []  # replaced whole only: their pieces are route names
        tokens: list[str] = []  # replaced whole and in fragments
        if parts.password:
            tokens += [parts.password, unquote(parts.password)]
        tail = parts.path.strip("/") + (f"?{parts.query}" if parts.query else "")
        if path_is_secret and tail:
            path_query = parts.path + (f"?{parts.query}" if parts.query else "")
            whole += [path_query, path_query.rstrip("/"), unquote(path_query)]
            tokens += [t for t in _URL_TOKEN_SPLIT.split(unquote(tail)) if _looks_like_credential(t)]
        for secret in whole:
            self.add(secret, fragments=False)
        for secret in tokens:
            self.add(secret)
        return [s for s in dict.fromkeys(whole + tokens) if len(s) >= MIN_SECRET_CHARS]

    def forget_all(self) -> None:
        """Drop every registered secret (tests; a new process starts empty anyway)."""
        with self._lock:
            self._secrets.clear()
            self._fragments.clear()
            self._ordered = ()

    @property
    def empty(self) -> bool:
        return not self._ordered

    # ------------------------------------------------------------------ scrubbing

    def redact(self, text: str) -> str:
        """``text`` with every registered secret, and every fragment of a long one, replaced."""
        if not isinstance(text, str):
            text = str(text)
        ordered, fragments = self._ordered, self._fragments
        if not ordered or not text:
            return text
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, REPLACEMENT)
        if fragments and len(text) >= FRAGMENT_CHARS:
            text = _replace_fragments(text, fragments)
        return text

    def excerpt(self, text: str | None, limit: int) -> str:
        """At most ``limit`` characters of ``text`` (whitespace folded), redacted BEFORE cutting."""
        text = self.redact(" ".join((text or "").split()))
        return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."

    def redact_value(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, tuples, str) with every string redacted."""
        if self.empty:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact_value(k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.redact_value(v) for v in value)
        return value

    def leaks(self, text: str) -> bool:
        """Whether ``text`` still holds a secret or a fragment of a long one."""
        return self.redact(text) != text

    def scrub_exception(self, exc: BaseException) -> bool:
        """Redact ``exc`` and everything chained to it, in place; True when no secret is left.

        Walks ``__cause__``, ``__context__``, exception arguments (urllib3 keeps the reason
        there) and exception groups. Rewrites ``args``, ``__notes__``, ``OSError`` fields
        and the URL and headers of a kept ``request``. An exception whose ``__str__`` is
        built from other state may still leak: the caller then raises a clean error instead.
        """
        if self.empty:
            return True
        chain = _chain(exc)
        for item in chain:
            self._scrub_one(item)
        text = "".join(traceback.format_exception(exc))
        return not self.leaks(text)

    def _scrub_one(self, exc: BaseException) -> None:
        try:
            exc.args = tuple(self._scrub_arg(a) for a in exc.args)
        except (AttributeError, TypeError):  # pragma: no cover - exotic exceptions with read-only args
            pass
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            exc.__notes__ = [self.redact(n) for n in notes]
        if isinstance(exc, OSError):
            for name in ("strerror", "filename", "filename2"):
                value = getattr(exc, name, None)
                if isinstance(value, str) and self.leaks(value):
                    setattr(exc, name, self.redact(value))
        for name in ("msg", "message", "url", "detail", "reason"):
            value = getattr(exc, name, None)
            if isinstance(value, str) and self.leaks(value):
                try:
                    setattr(exc, name, self.redact(value))
                except (AttributeError, TypeError):  # pragma: no cover - read-only property
                    pass
        self.scrub_request(getattr(exc, "request", None))

    def _scrub_arg(self, arg: Any) -> Any:
        if isinstance(arg, BaseException):
            return arg  # scrubbed on its own as part of the chain
        if isinstance(arg, str | Mapping | list | tuple):
            return self.redact_value(arg)
        try:
            text = str(arg)
        except Exception:  # noqa: BLE001 - an argument that cannot print cannot leak through str()
            return arg
        return self.redact(text) if self.leaks(text) else arg

    def scrub_request(self, request: Any) -> None:
        """Redact the URL and header values of a kept ``requests`` request (errors keep ``.request``)."""
        if request is None:
            return
        url = getattr(request, "url", None)
        if isinstance(url, str) and self.leaks(url):
            try:
                request.url = self.redact(url)
            except (AttributeError, TypeError):  # pragma: no cover - a read-only request object
                pass
        headers = getattr(request, "headers", None)
        if headers is None:
            return
        for name in list(headers):
            if str(name).lower() in ("authorization", "proxy-authorization"):
                headers[name] = REPLACEMENT
                continue
            value = headers[name]
            if isinstance(value, str) and self.leaks(value):
                headers[name] = self.redact(value)


def _word_like(fragment: str) -> bool:
    # "alesforc" of "salesforce-prod-..." would mangle the word Salesforce; a fragment of a real
    # token almost always mixes case, digits or punctuation. The whole secret is still replaced.
    return fragment.isalpha() and (fragment.islower() or fragment.isupper())


def _looks_like_credential(token: str) -> bool:
    # Plain words (services, hooks, catch) are route names; ids and tokens mix digits, case or
    # punctuation, or are long.
    if len(token) < FRAGMENT_CHARS:
        return False
    return len(token) >= 16 or not token.isalpha() or not (token.islower() or token.isupper())


def _replace_fragments(text: str, fragments: set[str]) -> str:
    """Replace every run of text covered by FRAGMENT_CHARS-long fragments of secrets."""
    size = FRAGMENT_CHARS
    spans: list[list[int]] = []
    for start in range(len(text) - size + 1):
        if text[start : start + size] in fragments:
            end = start + size
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end in spans:
        out.append(text[position:start])
        out.append(REPLACEMENT)
        position = end
    out.append(text[position:])
    return "".join(out)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable from it (causes, contexts, args, groups)."""
    seen: list[BaseException] = []
    queue: list[Any] = [exc]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        queue.extend(a for a in item.args if isinstance(a, BaseException))
        queue.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
        queue.extend(getattr(item, "exceptions", ()) or ())
    return seen


#: The process-wide redactor every hook registers with and everything we emit passes through.
REDACTOR = Redactor()
