"""When does one Bulk API 2.0 job beat sObject Collections? Measured on the Salesforce emulator.

    .venv/bin/python benchmarks/salesforce_bulk_threshold.py [--sizes 1000,5000,10000,20000] [--scale 0.2]

For each size N the same N new Contacts are upserted twice on fresh emulators:
(a) by ``SalesforceHook.upsert`` in calls of 200 with 4 in flight (what the engine does),
(b) by ``SalesforceHook.bulk_upsert`` (one job: create, upload, close, poll, 2 result reads).
It prints API calls (what the org's daily allowance counts) and wall seconds.

The emulator answers in microseconds, so latencies modelled on real orgs are injected
(per API call, per record in a collection, a bulk job's queueing time and per-record rate;
see LATENCIES). ``--scale`` shrinks every latency by the same factor to keep the run short;
seconds are printed scaled back (CPU time of the emulator is scaled back too, so keep
``--scale 1`` for numbers worth quoting). Not a test: run it on demand.

Result on 2026-11-26 (``--scale 1``, a loaded 2-core box; calls exclude the shared login + describe):

    records coll calls   coll s bulk calls   bulk s
       1000          5      1.4          9     17.8
       5000         25      5.6          9     18.3
      10000         50      9.9         10     30.1
      20000        100     19.3         11     45.1

With 4 calls in flight collections finish first at every size; a bulk job costs a fixed
~10-20 s of queueing and polling but a nearly constant ~10 calls. The default threshold
(10,000) is where bulk saves 80 % of the calls counted against the org's daily allowance
for ~20 s more wall time; orgs short of API calls can lower it (extra ``bulk_threshold``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# An isolated Airflow home: the hook reads its connection from AIRFLOW_CONN_* and nothing else.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="retl-bench-"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_retl.sync.records import Record  # noqa: E402
from airflow_provider_retl.testing.emulators import (  # noqa: E402
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    start_emulator,
)

#: Seconds, modelled on a production org reached over the internet (assumptions, not measurements of Salesforce):
#: a REST round trip ~150 ms; ~2.5 ms of save time per record in a collection (a 200-record upsert ~650 ms);
#: a Bulk API 2.0 job waits ~10 s in the queue before it starts, then saves ~1 ms per record.
LATENCIES = {"request_latency": 0.15, "latency_per_record": 0.0025, "bulk_processing_seconds": 10.0,
             "bulk_seconds_per_record": 0.001}
CONCURRENCY = 4


def records(n: int) -> list[Record]:
    return [Record(str(i), {"External_Id__c": f"k{i}", "LastName": f"Last {i}", "Email": f"u{i}@example.com"},
                   match_value=f"k{i}") for i in range(n)]


def run(n: int, path: str, scale: float) -> tuple[int, float]:
    options = {k: v * scale for k, v in LATENCIES.items()}
    with start_emulator("salesforce", daily_limit=10_000_000, **options) as sf:
        os.environ["AIRFLOW_CONN_SALESFORCE_BENCH"] = json.dumps({
            "conn_type": "retl_salesforce", "host": sf.url, "login": SALESFORCE_USERNAME,
            "password": SALESFORCE_PASSWORD, "extra": {
                "client_id": SALESFORCE_CLIENT_ID, "client_secret": SALESFORCE_CLIENT_SECRET,
                "security_token": SALESFORCE_SECURITY_TOKEN, "bulk_poll_interval": 2.0 * scale}})
        from airflow_provider_retl.hooks.salesforce import SalesforceHook

        hook = SalesforceHook("salesforce_bench")
        hook.describe("Contact")  # login + describe: the same for both paths, not counted
        before = sf.emulator.request_count()
        batch = records(n)
        started = time.perf_counter()
        if path == "bulk":
            outcomes = hook.bulk_upsert("Contact", batch, "External_Id__c")
        else:
            chunks = [batch[i : i + 200] for i in range(0, n, 200)]
            with cf.ThreadPoolExecutor(CONCURRENCY) as pool:
                outcomes = [o for part in pool.map(lambda c: hook.upsert("Contact", c, "External_Id__c"), chunks)
                            for o in part]
        seconds = (time.perf_counter() - started) / scale
        assert len(outcomes) == n and all(o.ok for o in outcomes), path
        assert len(sf.emulator.records("Contact")) == n
        return sf.emulator.request_count() - before, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,2000,5000,10000,20000")
    parser.add_argument("--scale", type=float, default=0.2, help="multiply every injected latency by this")
    args = parser.parse_args()
    print(f"latencies: {LATENCIES} x {args.scale}; collections with {CONCURRENCY} calls in flight")
    print(f"{'records':>8} {'coll calls':>10} {'coll s':>8} {'bulk calls':>10} {'bulk s':>8}  faster")
    for n in (int(s) for s in args.sizes.split(",")):
        c_calls, c_seconds = run(n, "collections", args.scale)
        b_calls, b_seconds = run(n, "bulk", args.scale)
        faster = "bulk" if b_seconds < c_seconds else "collections"
        print(f"{n:>8} {c_calls:>10} {c_seconds:>8.1f} {b_calls:>10} {b_seconds:>8.1f}  {faster}", flush=True)


if __name__ == "__main__":
    main()
