"""``SyncAlert`` / ``sync_alert``: what a failed sync's alert says, for any notifier.

The real mail path (a guardrail tripped in ``dag.test()``, mailed over SMTP) is
``tests/dags/test_guardrail_alerts.py``; here the content is checked with a notifier that
only keeps what it was asked to send (a stand-in for Slack or any other notifier).
"""

from __future__ import annotations

from airflow.sdk import BaseNotifier

from airflow_provider_retl.notifications import SyncAlert, sync_alert
from airflow_provider_retl.sync.errors import GuardrailTripped
from airflow_provider_retl.sync.records import Reject, SyncReport
from airflow_provider_retl.sync.redaction import REDACTOR


class Kept(BaseNotifier):
    """A notifier with one templated message, like SlackNotifier's ``text``."""

    template_fields = ("text",)

    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.sent: list[str] = []

    def notify(self, context):
        self.sent.append(self.text)


def _report() -> SyncReport:
    report = SyncReport(sync_id="shop.sync", object="contacts", mode="upsert", rows_read=10)
    report.add_reject(Reject("<b>k1</b>", "invalid email 'x'", "validation"))
    return report


def test_the_alert_carries_the_summary_and_the_guardrail_message_escaped_and_scrubbed():
    REDACTOR.add("tok-SECRET-123456")
    try:
        error = GuardrailTripped("guardrail: 1 of 10 rows are rejected before sending; tok-SECRET-123456", _report())
        alert = sync_alert({"exception": error})
    finally:
        REDACTOR.forget_all()
    assert alert.guardrail and "stopped by a guardrail" in alert.headline
    assert "sync shop.sync -> contacts (upsert):" in alert.summary and "1 rejected [validation]" in alert.summary
    assert "tok-SECRET" not in alert.text and "1 of 10 rows are rejected" in alert.reason
    assert "&lt;b&gt;k1&lt;/b&gt;" in alert.html and "<b>k1</b>" not in alert.html  # keys are data: escaped


def test_a_wrapped_notifier_renders_retl_alert_in_its_own_template():
    kept = Kept("{{ retl_alert.headline }} | {{ retl_alert.reason }}")
    SyncAlert(kept)({"exception": GuardrailTripped("guardrail: mirror would delete 60 of 100", _report())})
    assert kept.sent == [" | ".join(["Sync . stopped by a guardrail, nothing sent (run , try None)",
                                     "guardrail: mirror would delete 60 of 100"])]


def test_a_failure_without_a_report_still_alerts_with_its_reason():
    alert = sync_alert({"exception": RuntimeError("the warehouse is down")})
    assert not alert.guardrail and alert.summary == "" and alert.text.endswith("the warehouse is down")
