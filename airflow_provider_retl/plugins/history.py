"""One sync's page data: from its history tables when its reports name them, else from the reports.

A report carries ``report["history"] = {"conn_id", "runs_table", "changes_table"}`` when the
sync writes history. The history tables know every try (Airflow keeps the XCom of the last
try only) and every record's outcome; the reports alone know the last try of each run and
the rejects they kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_retl.plugins.data import Sync, key_outcomes_from_reports, reject_groups_from_reports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncView:
    """What the sync page shows besides the runs: grouped rejects and a record's outcomes."""

    sync: Sync
    groups: Sequence[Mapping[str, Any]] = ()
    rejects_run: str | None = None
    outcomes: Sequence[Mapping[str, Any]] = ()
    #: Where the data came from, for the page ("table x in connection y"); None: the reports.
    source: str | None = None


def sync_view(sync: Sync, *, key: str | None) -> SyncView:
    """Rejects of the newest run with a report, and the outcomes of ``key`` when asked."""
    with_report = next((run for run in sync.runs if run.report is not None), None)
    return SyncView(
        sync=sync,
        groups=reject_groups_from_reports(sync.runs),
        rejects_run=with_report.run_id if with_report else None,
        outcomes=key_outcomes_from_reports(sync.runs, key) if key else [],
    )
