"""Building request batches from the pending frame: per batch (the old way) vs in blocks (``Pusher.wire_batch``).

    .venv/bin/python benchmarks/wire_batch.py [--rows 100k] [--reps 3]

Not a test. Both sides build the same records (checked) for every row of a pending frame shaped
like the engine's (the benchmark's customer table plus the internal key/hash/id columns), in
batches of 100, in this process, interleaved; validation is switched off so the figure is the
engine's own conversion cost (HubSpot's email validation costs more than the conversion: it is
the destination's rule, measured separately by ``--validate``).

Baseline = what ``wire_batch`` did before: ``pending.iloc[rows]`` and ``frame_to_wire`` per batch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100k")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--validate", action="store_true", help="keep HubSpot's contact validation on")
    parser.add_argument("--precheck", action="store_true",
                        help="compare batches alone with the reject guardrail's up-front check + the batches")
    args = parser.parse_args()

    import numpy as np

    import run
    from airflow_provider_retl.hooks.hubspot import HubSpotHook
    from airflow_provider_retl.sync import fingerprint as fp
    from airflow_provider_retl.sync.checkpoint import Checkpoint, MemoryCheckpointStore
    from airflow_provider_retl.sync.config import SyncConfig
    from airflow_provider_retl.sync.diff import DEST_ID, INTERNAL, KEY, KEY_HASH, KIND, ROW_HASH
    from airflow_provider_retl.sync.destination import Capabilities, SendLimits
    from airflow_provider_retl.sync.plan import Action
    from airflow_provider_retl.sync.progress import Progress
    from airflow_provider_retl.sync.push import Pusher
    from airflow_provider_retl.sync.records import Record, SyncReport
    from airflow_provider_retl.sync.values import frame_to_wire

    n = run.parse_size(args.rows)
    pending = run.customers(n)
    pending[KEY] = pending["email"].to_numpy(dtype=object)
    pending[KEY_HASH] = fp.key_hashes(pending[KEY].to_numpy(dtype=object))
    pending[ROW_HASH] = np.arange(n, dtype=np.uint64) + 1
    pending[DEST_ID] = np.full(n, None, dtype=object)
    pending[KIND] = "new"
    hook = HubSpotHook.__new__(HubSpotHook)  # validate() only: no connection needed
    validate = (lambda obj, fields: hook.validate(obj, fields)) if args.validate else (lambda obj, fields: [])

    def per_batch(rows):
        frame = pending.iloc[rows]
        wires, failures = frame_to_wire(frame[[c for c in frame.columns if c not in INTERNAL]])
        keys, key_hashes = frame[KEY].to_numpy(), frame[KEY_HASH].to_numpy(dtype=np.uint64)
        row_hashes, ids = frame[ROW_HASH].to_numpy(dtype=np.uint64), frame[DEST_ID].to_numpy()
        out = []
        for i, fields in enumerate(wires):
            if i in failures or validate("contacts", fields):
                continue
            dest_id = ids[i] if isinstance(ids[i], str) else None
            out.append(Record(fp.display_key(keys[i]), fields, int(key_hashes[i]), int(row_hashes[i]), dest_id,
                              fields.get("email")))
        return out

    class Destination:
        request_count = 0
        limits = SendLimits()

        def capabilities(self, obj):
            return Capabilities(lookup=False)

        def validate(self, obj, fields):
            return validate(obj, fields)

    def pusher():
        log = logging.getLogger("bench")
        return Pusher(Destination(), MemoryCheckpointStore(), SyncConfig(sync_id="b", object="contacts",
                      primary_key="email"), SyncReport(sync_id="b", object="contacts", mode="upsert"),
                      Checkpoint("t", "p"), "email", log=log, clock=time.monotonic,
                      progress=Progress(log, 3600, time.monotonic))

    batches = [np.arange(i, min(i + 100, n)) for i in range(0, n, 100)]
    if args.precheck:
        return precheck(args, n, pending, pusher, batches)
    times: dict[str, list[float]] = {"per batch (before)": [], "Pusher.wire_batch, 10k-row blocks": []}
    for _ in range(args.reps):
        started = time.perf_counter()
        old = [r for b in batches for r in per_batch(b)]
        times["per batch (before)"].append(time.perf_counter() - started)
        p = pusher()
        started = time.perf_counter()
        new = [r for b in batches for r in p.wire_batch(pending, b, Action.UPSERT)[0]]
        times["Pusher.wire_batch, 10k-row blocks"].append(time.perf_counter() - started)
        assert [(r.key, r.fields, r.key_hash, r.row_hash) for r in old] == [
            (r.key, r.fields, r.key_hash, r.row_hash) for r in new]
    base = min(times["per batch (before)"])
    print(f"{n:,} rows, {len(batches):,} batches of 100, validation {'on' if args.validate else 'off'}, "
          f"best of {args.reps}:")
    for name, values in times.items():
        best = min(values)
        print(f"  {name:36s} {best:6.2f} s  {best / len(batches) * 1000:6.2f} ms/batch  {n / best:9,.0f} rows/s"
              f"  {base / best:4.1f}x")
    return 0


def precheck(args, n, pending, pusher, batches) -> int:
    """An initial sync of ``n`` clean rows: the batches alone (before the reject guardrail) vs the
    guardrail's check before sending (it validates rows until the share can no longer be passed:
    half of them at the default 0.5) followed by the same batches (which skip the rows it checked)."""
    import numpy as np

    from airflow_provider_retl.sync import engine
    from airflow_provider_retl.sync.plan import Action, Plan

    times: dict[str, list[float]] = {"batches only (before)": [], "check before sending + batches": []}
    for _ in range(args.reps):
        p = pusher()
        started = time.perf_counter()
        old = [r for b in batches for r in p.wire_batch(pending, b, Action.UPSERT)[0]]
        times["batches only (before)"].append(time.perf_counter() - started)
        p = pusher()
        p.report.rows_read = n
        plan = Plan(by_action={Action.UPSERT: np.arange(n, dtype=np.int64)})
        started = time.perf_counter()
        engine._check_reject_share(p.report, p.config, plan, p, pending)
        new = [r for b in batches for r in p.wire_batch(pending, b, Action.UPSERT)[0]]
        times["check before sending + batches"].append(time.perf_counter() - started)
        checked = int(p.validated.sum()) if p.validated is not None else 0
        assert len(old) == len(new)
    base = min(times["batches only (before)"])
    print(f"{n:,} rows, validation {'on' if args.validate else 'off'}, best of {args.reps}; "
          f"rows checked before sending: {checked:,}")
    for name, values in times.items():
        best = min(values)
        print(f"  {name:36s} {best:6.2f} s  {n / best:9,.0f} rows/s  {best / base:5.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
