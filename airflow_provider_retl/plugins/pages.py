"""HTML of the Reverse ETL pages, rendered from plain data with autoescaping Jinja templates.

Keys, reasons, sync ids and run ids are user data: every value goes through Jinja's
autoescape, and links are kept only when they are ``http(s)`` URLs (no ``javascript:``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_retl.plugins.data import OPERATIONS, Run, Sync
from airflow_provider_retl.plugins.plots import line_chart

if TYPE_CHECKING:
    import jinja2

#: Report fields shown on the task instance tab, in this order (the rest follow, sorted).
REPORT_FIELDS = (
    "sync_id", "object", "mode", "rows_read", "unchanged", "planned", "plan", "created", "updated", "upserted",
    "deleted", "events", "skipped", "rejected", "requests", "retries", "batches", "checkpoint", "seconds",
    "rows_per_second",
)  # fmt: skip
#: Not repeated in the report table: shown above it, or too long for a table cell.
HIDDEN_FIELDS = frozenset({"rejects", "reject_reasons", "history"})
#: Runs plotted per chart, the newest.
PLOTTED_RUNS = 50


def safe_url(url: Any) -> str:
    """``url`` when it is an absolute http(s) URL, else ``""`` (never a ``javascript:`` link)."""
    if not isinstance(url, str) or not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme in ("http", "https") and parts.netloc else ""


@functools.cache
def environment() -> jinja2.Environment:
    """The template environment (autoescape on for every template)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("airflow_provider_retl.plugins", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["safe_url"] = safe_url
    return env


def render(template: str, **values: Any) -> str:
    """``templates/<template>`` rendered with ``values``."""
    return environment().get_template(template).render(**values)


def _label(run: Run) -> str:
    when = run.start.strftime("%m-%d %H:%M") if run.start else run.run_id
    return when if run.try_number <= 1 else f"{when} try {run.try_number}"


def charts(runs: Sequence[Run]) -> list[Any]:
    """The sync's charts over its runs (oldest left): rows by operation, rejects, duration, requests."""
    plotted = list(reversed(runs[:PLOTTED_RUNS]))
    labels = [_label(run) for run in plotted]
    return [
        line_chart(
            "Rows by operation",
            labels,
            {op: [run.counts.get(op) if run.counts else None for run in plotted] for op in OPERATIONS},
        ),
        line_chart("Rejects", labels, {"rejects": [run.rejected for run in plotted]}),
        line_chart("Duration (s)", labels, {"seconds": [run.seconds for run in plotted]}),
        line_chart("Requests", labels, {"requests": [run.requests for run in plotted]}),
    ]


def index_page(syncs: Iterable[Sync]) -> str:
    """Every sync with its last state, rows changed, rejects, duration and destination link."""
    return render("index.html", syncs=list(syncs))


def sync_page(
    sync: Sync,
    *,
    groups: Sequence[Mapping[str, Any]],
    rejects_run: str | None,
    key: str | None,
    outcomes: Sequence[Mapping[str, Any]],
    history: str | None = None,
    can_acknowledge: bool = False,
    acknowledged: int | None = None,
) -> str:
    """One sync: charts, rejects grouped by reason (with acknowledge buttons), the key search and its runs."""
    ack = {"sync_id": sync.sync_id, "run_id": rejects_run} if can_acknowledge and rejects_run else None
    return render(
        "sync.html",
        ack=ack,
        acknowledged=acknowledged,
        sync=sync,
        charts=charts(sync.runs),
        groups=list(groups),
        rejects_run=rejects_run,
        key=key,
        outcomes=list(outcomes),
        history=history,
        operations=OPERATIONS,
    )


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def ti_page(
    run: Run | None, *, message: str = "", groups: Sequence[Mapping[str, Any]] = (), tries: Sequence[Run] = ()
) -> str:
    """The task instance tab: the latest try's report (or why there is none), and every try the history has."""
    report = dict(run.report) if run is not None and run.report is not None else None
    stats: list[tuple[str, str]] = []
    fields: list[tuple[str, str]] = []
    if run is not None and report is not None:
        stats = [
            ("rows read", f"{report.get('rows_read', 0):,}"),
            ("rows changed", f"{run.rows_changed or 0:,}"),
            *((op, f"{run.counts.get(op, 0):,}") for op in OPERATIONS if run.counts.get(op)),
            ("rejected", f"{run.rejected or 0:,}"),
            ("requests", f"{run.requests or 0:,}"),
            ("duration", f"{run.seconds or 0:.1f} s"),
        ]
        ordered = [name for name in REPORT_FIELDS if name in report]
        ordered += sorted(name for name in report if name not in REPORT_FIELDS and name not in HIDDEN_FIELDS)
        fields = [(name, _cell(report[name])) for name in ordered]
    return render(
        "ti.html",
        run=run,
        message=message,
        report=report,
        stats=stats,
        fields=fields,
        groups=list(groups),
        tries=list(tries),
        operations=OPERATIONS,
    )


def unauthenticated_page(login_url: str) -> str:
    """What a request without a valid Airflow session sees (with a 401)."""
    return render("login.html", login_url=login_url)
