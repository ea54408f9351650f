"""The rule-based state machine: random histories of a source, runs, kills, faults, concurrency.

Each step changes the source (the model) or runs the real sync; after every run the
destination is compared with the model and every emitted byte is searched for the secret.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.stateful.world import World

#: Rules switched off for a hunt (``RETL_STATEFUL_DISABLE=concurrent_runs,switch_store``), so
#: the machine looks past a class already found; CI and soak run every rule.
DISABLED = {r.strip() for r in os.environ.get("RETL_STATEFUL_DISABLE", "").split(",") if r.strip()}


#: A file to append every run step to (``RETL_STATEFUL_TRACE``): progress of a long hunt.
TRACE = os.environ.get("RETL_STATEFUL_TRACE", "")


def enabled(name: str) -> Any:
    return precondition(lambda self: name not in DISABLED and name not in self.disabled_rules)


#: Errors a run may end with and still be correct: a guardrail or a lease that refused the run
#: (nothing should have been sent), or too many rejects (successes committed, then the failure).
REFUSALS = ("Lease", "Identity", "Guardrail", "Refused", "Reset", "Resend", "Concurrent", "EmptySource")
AFTER_COMMIT = ("RejectRatioExceeded",)


def _kind(error: BaseException | None) -> str:
    return "" if error is None else type(error).__name__


def is_refusal(error: BaseException | None) -> bool:
    name = _kind(error)
    return any(word in name for word in REFUSALS)


class SyncMachine(RuleBasedStateMachine):
    """A random history of one sync; ``world_factory`` builds a fresh World per example."""

    world_factory: Any = None  # set by the test
    #: Rules a subclass cannot run (e.g. in-process kills through Airflow).
    disabled_rules: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.world: World = type(self).world_factory()
        self.graveyard: list[dict[str, Any]] = []
        self.results: list[Any] = []
        self.steps: list[str] = []
        self.failing = False

    #: Runs once more when the history ends (the Airflow machine: every history has a run).
    final_run = False

    def teardown(self) -> None:
        try:
            if self.final_run and not self.failing:
                self._settle(self.world.run(), "final run")
        finally:
            self.world.proxy.stop()

    # ---- helpers --------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.steps.append(text)
        if TRACE:
            with open(TRACE, "a") as fh:
                fh.write(f"{type(self).__name__} {text}\n")

    def _new_row(self) -> dict[str, Any]:
        w = self.world
        row = {"k": w.next_id, "m": w.match(w.next_m), "v": f"v{w.next_id}-0"}
        w.next_id += 1
        w.next_m += 1
        return row

    def _settle(self, results: list[Any], what: str) -> None:
        """After a run that may have failed: retry cleanly (like Airflow) until it succeeds, then check."""
        self._note(f"{what}: {[_kind(r.error) or 'ok' for r in results]}")
        self.failing = True  # until the checks below pass: teardown must not mask their error
        for attempt in range(3):
            self.results.extend(results)
            self.world.check_no_secret(results)
            failed = [r for r in results if r.error is not None and _kind(r.error) not in AFTER_COMMIT]
            if not failed:
                break
            if all(is_refusal(r.error) for r in failed):
                if len(failed) < len(results) and what == "concurrent runs":
                    break  # one run refused (a lease), the other one ran: compare
                self.failing = False
                return  # a deliberate refusal (guardrail): nothing to compare until the user acts
            results = self.world.run()
        else:
            failed = [r for r in results if r.error is not None and _kind(r.error) not in AFTER_COMMIT]
            assert not failed, f"CRASH: {what}: the retried run still fails: {failed[0].error!r}"
        self.world.check_destination()
        self.failing = False

    # ---- source changes ---------------------------------------------------------------------------

    @enabled("insert")
    @rule(n=st.integers(1, 3))
    def insert(self, n: int) -> None:
        for _ in range(n):
            self.world.rows.append(self._new_row())

    @precondition(lambda self: self.world.rows)
    @enabled("update")
    @rule(i=st.integers(0, 50))
    def update(self, i: int) -> None:
        row = self.world.rows[i % len(self.world.rows)]
        n = int(row["v"].rsplit("-", 1)[1]) + 1
        row["v"] = f"v{row['k']}-{n}"

    @precondition(lambda self: self.world.rows)
    @enabled("delete")
    @rule(i=st.integers(0, 50))
    def delete(self, i: int) -> None:
        row = self.world.rows.pop(i % len(self.world.rows))
        if row["k"] is not None:
            self.graveyard.append(row)

    @precondition(lambda self: self.world.rows)
    @enabled("rekey")
    @rule(i=st.integers(0, 50))
    def rekey(self, i: int) -> None:
        """New primary key, same match value (a warehouse row re-keyed)."""
        row = self.world.rows[i % len(self.world.rows)]
        self.graveyard.append(dict(row))
        row["k"] = self.world.next_id
        self.world.next_id += 1

    @enabled("retype_key")
    @rule(to=st.sampled_from(["int", "decimal", "str"]))
    def retype_key(self, to: str) -> None:
        self.world.key_type = to

    @enabled("timestamps_aware")
    @rule()
    def timestamps_aware(self) -> None:
        self.world.aware = not self.world.aware

    @precondition(lambda self: any(r["k"] is not None for r in self.world.rows))
    @enabled("duplicate_key")
    @rule(i=st.integers(0, 50))
    def duplicate_key(self, i: int) -> None:
        keyed = [r for r in self.world.rows if r["k"] is not None]
        row = keyed[i % len(keyed)]
        dup = self._new_row()
        dup["k"] = row["k"]
        self.world.rows.append(dup)

    @enabled("null_key")
    @rule()
    def null_key(self) -> None:
        row = self._new_row()
        row["k"] = None
        self.world.rows.append(row)

    @precondition(lambda self: len(self.world.rows) >= 2)
    @enabled("swap_keys")
    @rule(i=st.integers(0, 50), j=st.integers(0, 50))
    def swap_keys(self, i: int, j: int) -> None:
        rows = self.world.rows
        a, b = rows[i % len(rows)], rows[j % len(rows)]
        a["k"], b["k"] = b["k"], a["k"]

    @precondition(lambda self: self.graveyard)
    @enabled("revive")
    @rule(i=st.integers(0, 50))
    def revive(self, i: int) -> None:
        """A deleted (or re-keyed away) key comes back with its old match value."""
        row = dict(self.graveyard.pop(i % len(self.graveyard)))
        if any(r["k"] == row["k"] for r in self.world.rows):
            return
        self.world.rows.append(row)

    @precondition(lambda self: any(r["k"] is None for r in self.world.rows) or self._has_dups())
    @enabled("fix_bad_keys")
    @rule()
    def fix_bad_keys(self) -> None:
        """The user fixes the data: rows with a null key go, later copies of a duplicated key go."""
        seen: set[Any] = set()
        kept = []
        for r in self.world.rows:
            if r["k"] is None or r["k"] in seen:
                continue
            seen.add(r["k"])
            kept.append(r)
        self.world.rows = kept

    def _has_dups(self) -> bool:
        keys = [r["k"] for r in self.world.rows if r["k"] is not None]
        return len(keys) != len(set(keys))

    # ---- runs -------------------------------------------------------------------------------------

    @enabled("run")
    @rule()
    def run(self) -> None:
        self._settle(self.world.run(), "run")

    @enabled("run")
    @rule()
    def run_again(self) -> None:
        """The same as ``run``: a second rule makes plain runs likelier among the many changes."""
        self._settle(self.world.run(), "run")

    @enabled("acknowledged_run")
    @precondition(lambda self: not self.world.dest.events)
    @rule()
    def acknowledged_run(self) -> None:
        """The user reads a replaced-identity refusal and runs once with allow_identity_change=True."""
        self.world.overrides = {"allow_identity_change": True}
        try:
            results = self.world.run()
        finally:
            self.world.overrides = {}
        self._settle(results, "run with allow_identity_change")

    @enabled("run_killed_then_retry")
    @rule(where=st.sampled_from(["read", "request", "after_request", "after_commit"]), k=st.integers(0, 6))
    def run_killed_then_retry(self, where: str, k: int) -> None:
        results = self.world.run(kill=(where, k))
        self._settle(results, f"killed at {where}#{k}")

    @enabled("run_with_fault")
    @rule(kind=st.sampled_from(["lost_response", "reset", "error", "timeout"]), after=st.integers(0, 5))
    def run_with_fault(self, kind: str, after: int) -> None:
        faults = self.world.running.faults
        faults.update(slow_seconds=1.5)
        faults.fail_next(1, kind, after=after)
        try:
            results = self.world.run()
        finally:
            faults.clear()
        self._settle(results, f"fault {kind} after {after}")

    @enabled("echoing_server_error")
    @rule(pad=st.integers(0, 600), n=st.integers(1, 4))
    def echoing_server_error(self, pad: int, n: int) -> None:
        """The next ``n`` answers are 500s echoing the Authorization header after ``pad`` characters."""
        self.world.proxy.arm(pad, n)
        try:
            results = self.world.run()
        finally:
            self.world.proxy.clear()
        self._settle(results, f"echoing 500 x{n} pad {pad}")

    @enabled("concurrent_runs")
    @rule()
    def concurrent_runs(self) -> None:
        """Two runs of the same sync on the same store at once (overlapping DagRuns / zombie try)."""
        out: list[list[Any]] = [[], []]

        def go(i: int) -> None:
            out[i] = self.world.run()

        w = self.world
        if w.stores[w.current].kind != "file":
            w.write_source()  # once: two runs rewriting one table would race in the test, not the product
        w.source_frozen = True
        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            w.source_frozen = False
        self._settle(out[0] + out[1], "concurrent runs")

    @enabled("change_partitions")
    @precondition(lambda self: self.world.stores[self.world.current].kind == "file")  # warehouse: one slice
    @rule()
    def change_partitions(self) -> None:
        self.world.partitions = 2 if self.world.partitions == 1 else 1

    @enabled("switch_store")
    @precondition(lambda self: self.world.partitions == 1)  # the warehouse store diffs the whole query
    @rule()
    def switch_store(self) -> None:
        from tests.stateful.world import read_back

        # A store that never saw (or saw an old state of) this sync may leave records the
        # destination already holds: mirror cannot delete what its checkpoint never knew.
        self.world.orphans_allowed |= {
            str(m).lower() for m, _ in read_back(self.world.dest, self.world.running.emulator)
        }
        self.world.current = 1 - self.world.current

    @invariant()
    def no_secret_emitted(self) -> None:
        self.world.check_no_secret(self.results[-4:])
