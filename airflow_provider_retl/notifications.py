"""Alerts for failed syncs through Airflow's own notifiers (SMTP, Slack, ...).

A failed sync leaves its report in the XCom ``sync_report`` (a tripped guardrail, too many
rejects). :class:`SyncAlert` wraps any notifier and hands its templates ``retl_alert``: the
report's summary and the reason the task failed (the guardrail's message), scrubbed of every
secret the sync registered::

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow_provider_retl.notifications import SyncAlert

    ReverseETLOperator(
        ...,
        on_failure_callback=SyncAlert(SmtpNotifier(to="data-team@example.com", from_email="airflow@example.com")),
    )

An ``SmtpNotifier`` given no ``subject``/``html_content`` gets :data:`DEFAULT_SUBJECT` and
:data:`DEFAULT_HTML`; any other notifier's templates can use ``{{ retl_alert.text }}``,
``{{ retl_alert.html }}``, ``{{ retl_alert.summary }}`` and ``{{ retl_alert.reason }}``.
:func:`sync_alert` builds the same content for a plain callable callback.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier
from markupsafe import Markup

from airflow_provider_retl.operators.reverse_etl import REPORT_XCOM_KEY
from airflow_provider_retl.sync.errors import GuardrailTripped, exception_chain
from airflow_provider_retl.sync.records import SyncReport
from airflow_provider_retl.sync.redaction import REDACTOR

DEFAULT_SUBJECT = "[Airflow] {{ retl_alert.headline }}"
DEFAULT_HTML = "<p>{{ retl_alert.headline }}</p>{{ retl_alert.html }}"


@dataclass(frozen=True)
class SyncAlertContent:
    """What an alert about one failed sync task says; ``retl_alert`` in a wrapped notifier's templates."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int | None
    #: The failure's message: for a guardrail, what it saw and how to override it once.
    reason: str
    #: Whether a guardrail stopped the run (then nothing was sent).
    guardrail: bool
    #: ``SyncReport.summary()`` of the failed try, or "" when the task failed before it had a report.
    summary: str
    #: The report itself (its XCom form), for templates that want single counts.
    report: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def headline(self) -> str:
        what = "stopped by a guardrail, nothing sent" if self.guardrail else "failed"
        return f"Sync {self.dag_id}.{self.task_id} {what} (run {self.run_id}, try {self.try_number})"

    @property
    def text(self) -> str:
        """Plain text: the headline, the reason, the summary (for Slack, logs, text mails)."""
        parts = [self.headline, "", self.reason]
        if self.summary:
            parts += ["", self.summary]
        return "\n".join(parts)

    @property
    def html(self) -> Markup:
        """The reason and the summary as escaped HTML (``Markup``: an autoescaping template keeps it)."""
        body = f"<p>{html.escape(self.reason)}</p>"
        if self.summary:
            body += f"<pre>{html.escape(self.summary)}</pre>"
        return Markup(body)  # every part above is escaped

    def __str__(self) -> str:
        return self.text


def sync_alert(context: Mapping[str, Any]) -> SyncAlertContent:
    """The alert content of the failed sync task in ``context`` (a task callback's context).

    Reads the report the operator left in the XCom ``sync_report`` (falling back to the one a
    guardrail exception carries) and the failure's message; both are scrubbed of the secrets
    the sync registered, again, since a notifier sends them outside Airflow.
    """
    ti = context.get("ti")
    exception = context.get("exception")
    chain = exception_chain(exception) if isinstance(exception, BaseException) else []
    report = _pulled_report(ti)
    if report is None:
        carried = next((getattr(e, "report", None) for e in chain if getattr(e, "report", None) is not None), None)
        if isinstance(carried, SyncReport):
            report = carried.to_dict()
    summary = SyncReport.from_dict(dict(report)).summary() if report else ""
    guardrail = any(isinstance(e, GuardrailTripped) for e in chain) or "guardrail:" in str(exception or "")
    reason = str(exception) if exception is not None else "the task failed (no exception in the callback's context)"
    return SyncAlertContent(
        dag_id=str(getattr(ti, "dag_id", "") or ""),
        task_id=str(getattr(ti, "task_id", "") or ""),
        run_id=str(getattr(ti, "run_id", "") or ""),
        try_number=getattr(ti, "try_number", None),
        reason=REDACTOR.redact(reason),
        guardrail=guardrail,
        summary=REDACTOR.redact(summary),
        report=REDACTOR.redact_value(report) if report else None,
    )


def _pulled_report(ti: Any) -> Mapping[str, Any] | None:
    if ti is None or not hasattr(ti, "xcom_pull"):
        return None
    try:
        value = ti.xcom_pull(task_ids=ti.task_id, key=REPORT_XCOM_KEY, map_indexes=ti.map_index)
    except Exception:  # noqa: BLE001 - an alert without the summary beats no alert
        return None
    if isinstance(value, list):  # some Airflow versions answer a list for one task
        value = value[0] if value else None
    return value if isinstance(value, Mapping) else None


class SyncAlert(BaseNotifier):
    """Send a notifier's message about a failed sync with the sync's report summary and failure reason in it.

    Wrap any notifier (``SmtpNotifier``, ``SlackNotifier``, ...) and use the result as the
    task's ``on_failure_callback``; the wrapped notifier's templates see ``retl_alert``
    (:class:`SyncAlertContent`). An ``SmtpNotifier`` without its own subject or body gets one
    that carries the summary and the reason.
    """

    def __init__(self, notifier: Callable[[Any], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.notifier = notifier
        for attribute, default in (("subject", DEFAULT_SUBJECT), ("html_content", DEFAULT_HTML)):
            if hasattr(notifier, attribute) and getattr(notifier, attribute) is None:
                setattr(notifier, attribute, default)

    def notify(self, context: Any) -> None:
        context["retl_alert"] = sync_alert(context)
        self.notifier(context)
