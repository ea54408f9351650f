"""Bad input, one case per row of the table: the real engine, the HubSpot hook and its emulator.

Each case adds one bad row to five good ones. The good rows always sync; the bad row is
either a per-row reject naming its key and the reason, or synced with a documented
canonical value, or (whole-query problems) a clear error before anything is sent.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import ConfigurationError, EmptySourceError

GOOD = [{"email": f"good{i}@example.com", "firstname": f"G{i}"} for i in range(5)]
BAD_KEY = "bad@example.com"

# case id -> (fields of the bad row, expectation): ("reject", key shown, reason part) or ("synced", {field: stored})
CASES = {
    "null_key": ({"email": None}, ("reject", "NULL", "is NULL")),
    "empty_key": ({"email": ""}, ("reject", "", "is empty")),
    # Email keys are trimmed and case-folded (one identity per address), so the key shows trimmed.
    "blank_key": ({"email": "   "}, ("reject", "", "is empty")),
    "duplicate_key": ({"email": "good0@example.com"}, ("reject", "good0@example.com", "duplicate primary key")),
    "invalid_email": ({"email": "not-an-email"}, ("reject", "not-an-email", "invalid email")),
    "email_with_spaces": ({"email": " good9@example.com "}, ("reject", "good9@example.com", "invalid email")),
    "email_case_duplicate": ({"email": "GOOD1@Example.com"}, ("reject", "good1@example.com", "duplicate primary key")),
    "fake_domain_email": ({"email": "x@example.invalid"}, ("reject", "x@example.invalid", "special-use or reserved")),
    "wrong_enum_value": ({"lifecyclestage": "astronaut"}, ("reject", BAD_KEY, "allowed options")),
    "nested_json": ({"firstname": {"a": [1, {"b": 2}]}}, ("reject", BAD_KEY, "not a valid value")),
    "infinity": ({"firstname": float("inf")}, ("reject", BAD_KEY, "infinite")),
    "too_long": ({"firstname": "x" * 70_000}, ("reject", BAD_KEY, "70,000 characters")),
    # HubSpot stores phone numbers as free text (Zendesk checks E.164: tests/hooks/test_zendesk.py).
    "free_text_phone": ({"phone": "call me maybe"}, ("synced", {"phone": "call me maybe"})),
    "nan_is_null": ({"firstname": float("nan")}, ("synced", {"firstname": None})),
    "int_beyond_float": ({"firstname": 2**63 + 1}, ("synced", {"firstname": "9223372036854775809"})),
    "float_repr": ({"firstname": 0.1 + 0.2}, ("synced", {"firstname": "0.30000000000000004"})),
    "tz_aware_timestamp": ({"firstname": pd.Timestamp("2024-03-01 12:00", tz="Europe/Paris")},
                           ("synced", {"firstname": "2024-03-01T12:00:00+01:00"})),
    "naive_timestamp": ({"firstname": pd.Timestamp("2024-03-01 12:00")}, ("synced", {"firstname": "2024-03-01T12:00:00"})),
    "date_before_1970": ({"firstname": dt.date(1950, 5, 17)}, ("synced", {"firstname": "1950-05-17"})),
    "unicode": ({"firstname": "👩\u200d🚀 مرحبا e\u0301"}, ("synced", {"firstname": "👩\u200d🚀 مرحبا e\u0301"})),
    "control_chars": ({"firstname": "a\x00b\x07c\nd"}, ("synced", {"firstname": "a\x00b\x07c\nd"})),
}


def sync(hook, tmp_path, rows, **kw):
    config = SyncConfig(**{"sync_id": "bad", "object": "contacts", "primary_key": "email", "commit_interval": 0, **kw})
    return run_sync([pd.DataFrame(rows)], hook, FileCheckpointStore(tmp_path / "ck.parquet"), config)


def stored(hubspot) -> dict[str, dict]:
    return {r["properties"]["email"]: r["properties"] for r in hubspot.emulator.records("contacts")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_is_rejected_or_synced_canonically_and_good_rows_sync(hubspot, hook, tmp_path, case):
    bad, expected = CASES[case]
    report = sync(hook, tmp_path, [*GOOD, {"email": BAD_KEY, "firstname": "B", **bad}])
    records = stored(hubspot)
    duplicated = {"duplicate_key": "good0@example.com", "email_case_duplicate": "good1@example.com"}
    good = {r["email"] for r in GOOD} - {duplicated.get(case)}
    assert good <= set(records), f"good rows missing: {good - set(records)}"
    if expected[0] == "reject":
        _, key, reason = expected
        assert [(r.key, reason in r.reason) for r in report.rejects if r.key == key][:1] == [(key, True)], report.rejects
        assert BAD_KEY not in records or case in duplicated
        # A rejected row is not checkpointed: the next run tries it again without user action.
        again = sync(hook, tmp_path, [*GOOD, {"email": BAD_KEY, "firstname": "B", **bad}])
        assert again.rejected == report.rejected and again.pushed == 0
    else:
        assert report.rejected == 0, report.rejects
        got = {f: records[BAD_KEY].get(f) for f in expected[1]}
        assert got == expected[1]


def test_rejects_in_the_report_are_capped_but_counted(hubspot, hook, tmp_path):
    from airflow_provider_retl.sync.records import MAX_REJECTS_IN_REPORT, REJECT_EXAMPLES_PER_REASON

    n = MAX_REJECTS_IN_REPORT + 25
    report = sync(hook, tmp_path, [*GOOD, *({"email": f"bad{i}", "firstname": "x"} for i in range(n))],
                  max_reject_ratio=1.0)
    assert report.rejected == n and len(report.rejects) == REJECT_EXAMPLES_PER_REASON < MAX_REJECTS_IN_REPORT
    assert [g["count"] for g in report.reject_reasons] == [n]  # one reason: grouped, with a few example keys
    assert report.to_dict()["rejects_truncated"] and len(stored(hubspot)) == len(GOOD)


def test_rejected_row_syncs_once_fixed(hubspot, hook, tmp_path):
    sync(hook, tmp_path, [*GOOD, {"email": BAD_KEY, "firstname": "x" * 70_000}])
    report = sync(hook, tmp_path, [*GOOD, {"email": BAD_KEY, "firstname": "fixed"}])
    assert report.rejected == 0 and report.pushed == 1 and stored(hubspot)[BAD_KEY]["firstname"] == "fixed"


def test_query_missing_the_key_column_is_a_clear_error(hubspot, hook, tmp_path):
    with pytest.raises(ConfigurationError, match="primary key column 'email' is not a column"):
        sync(hook, tmp_path, [{"mail": "a@example.com"}])
    assert hubspot.emulator.request_count("POST /crm/v3/objects/contacts/batch/upsert") == 0


def test_mapping_naming_a_missing_column_is_a_clear_error(hubspot, hook, tmp_path):
    with pytest.raises(ConfigurationError, match="mapping source for 'firstname'"):
        sync(hook, tmp_path, GOOD, mapping={"email": "email", "firstname": "first_name"})


# ---------------------------------------------------------------- a query that returns zero rows


@pytest.mark.parametrize("rows", [[], [{"email": None, "firstname": "x"}]], ids=["zero_rows", "only_null_keys"])
def test_empty_source_never_mirror_deletes_everything_unless_allowed(hubspot, hook, tmp_path, rows):
    sync(hook, tmp_path, GOOD, mode="mirror")
    empty = [pd.DataFrame(rows, columns=["email", "firstname"])]
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    with pytest.raises(EmptySourceError, match="allow_empty_source=True"):
        run_sync(empty, hook, store, SyncConfig(sync_id="bad", object="contacts", primary_key="email", mode="mirror"))
    assert len(stored(hubspot)) == 5, "an empty result deleted records"
    config = SyncConfig(sync_id="bad", object="contacts", primary_key="email", mode="mirror", allow_empty_source=True,
                        max_reject_ratio=1.0)  # the NULL key is rejected: all (1 of 1) rows, on purpose
    report = run_sync([pd.DataFrame(rows, columns=["email", "firstname"])], hook, store, config)
    assert report.deleted == 5 and stored(hubspot) == {}


def test_empty_source_is_fine_outside_mirror_and_on_a_first_run(hubspot, hook, tmp_path):
    assert sync(hook, tmp_path, GOOD).created == 5
    empty = [pd.DataFrame(columns=["email", "firstname"])]
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    assert run_sync(empty, hook, store, SyncConfig(sync_id="bad", object="contacts", primary_key="email")).deleted == 0
    first = FileCheckpointStore(tmp_path / "first.parquet")
    mirror = SyncConfig(sync_id="bad2", object="contacts", primary_key="email", mode="mirror")
    assert run_sync([pd.DataFrame(columns=["email"])], hook, first, mirror).deleted == 0
