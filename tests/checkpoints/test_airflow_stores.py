"""Variable and XCom checkpoint stores, driven from inside real tasks run by dag.test()."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

DAG_TEMPLATE = Path(__file__).with_name("checkpoint_dag.py").read_text()
TEMPLATE_DAG_ID = "checkpoint_store_scenario"
STORES = ["variable", "xcom"]
WRITES = {"PutVariable", "SetXCom", "SetTaskStateStore", "DeleteVariable", "DeleteTaskStateStore"}
BASE_READS = {"GetVariable", "GetXCom", "GetXComSequenceSlice"}
KNOWN_EMAILS = [f"{name}@example.com" for name in ("a1", "a2", "a3", "b1", "c1", "d1", "e1")]


class Scenario:
    """One DAG (its own dag_id and sync_id) whose runs act on one store, try by try."""

    def __init__(self, runner, store: str):
        self.runner = runner
        self.store = store
        suffix = uuid.uuid4().hex[:10]
        self.dag_id = f"ckpt_{store}_{suffix}"
        self.sync_id = f"sync_{suffix}"
        self.text = DAG_TEMPLATE.replace(TEMPLATE_DAG_ID, self.dag_id)

    def run(self, tries: dict[int, list[dict]]):
        conf = {
            "store": self.store,
            "sync_id": self.sync_id,
            "emails": KNOWN_EMAILS,
            "tries": {str(k): v for k, v in tries.items()},
        }
        return self.runner.run_dag(self.text, self.dag_id, conf=conf)

    def observed(self, result) -> dict[int, dict]:
        state = self.runner.task_state(self.dag_id, result.run_id, "scenario")
        return {int(key.rsplit("_", 1)[1]): value for key, value in state.items() if key.startswith("test_obs_")}

    def journal(self, result) -> dict:
        """Journal documents the store left (Variables), by entry number; ``result`` only names the run."""
        prefix = (
            f"retl_checkpoint__{self.sync_id}__journal__"
            if self.store == "variable"
            else f"retl_journal__xcom.{self.dag_id}.scenario__"
        )
        return {int(key[len(prefix) :]): json.loads(raw) for key, raw in self.runner.variables(prefix).items()}

    def xcom_base(self, result) -> dict:
        """The XCom checkpoint document a run pushed."""
        return result.task("scenario").xcoms["retl_checkpoint"]

    def stored_text(self) -> str:
        """Everything the store persisted for this sync, as text."""
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        parts = list(self.runner.variables(f"retl_checkpoint__{self.sync_id}").values())
        parts += list(self.runner.variables(f"retl_journal__xcom.{self.dag_id}.").values())
        with create_session() as session:
            xcoms = select(XComModel).where(XComModel.dag_id == self.dag_id, XComModel.key == "retl_checkpoint")
            parts += [json.dumps(x.value) for x in session.scalars(xcoms)]
            parts += [
                row.value
                for row in session.scalars(select(TaskStateStoreModel).where(TaskStateStoreModel.dag_id == self.dag_id))
                if row.key.startswith("retl_")
            ]
        return "\n".join(parts)


def load():
    return {"do": "load"}


def commit(*puts):
    return {"do": "commit", "puts": [list(p) for p in puts]}


def delete(*emails):
    return {"do": "delete", "emails": list(emails)}


def finalize(synthetic: int = 0):
    return {"do": "finalize", "synthetic": synthetic}


FAIL = {"do": "fail"}
A1, A2, A3 = ("a1@example.com", 11, "id-a1"), ("a2@example.com", 12, "id-a2"), ("a3@example.com", 13, "id-a3")
BASE_ROWS = {"a1@example.com": [11, "id-a1"], "a2@example.com": [12, "id-a2"], "a3@example.com": [13, "id-a3"]}


def first_load(observation: dict) -> dict | None:
    return observation["steps"][0]["checkpoint"]


@pytest.fixture(params=STORES)
def scenario(request, dag_runner) -> Scenario:
    return Scenario(dag_runner, request.param)


def test_a_retry_resumes_from_the_base_plus_the_failed_try_journal(scenario):
    base_run = scenario.run({1: [load(), commit(A1, A2, A3), finalize()]})
    assert base_run.succeeded, base_run
    assert first_load(scenario.observed(base_run)[1]) is None

    retried = scenario.run(
        {
            1: [load(), commit(("b1@example.com", 21, "id-b1"), ("a1@example.com", 99, "id-a1")), delete("a2@example.com"), FAIL],
            2: [load(), commit(("c1@example.com", 31, "id-c1")), finalize(), load()],
        }
    )
    assert retried.succeeded, retried
    assert retried.task("scenario").tries == ("failed", "success")
    try1, try2 = scenario.observed(retried)[1], scenario.observed(retried)[2]
    assert first_load(try1) == {"count": 3, "resumed": 0, "target": "target-fp-1", "rows": BASE_ROWS}
    assert first_load(try2) == {
        "count": 3,
        "resumed": 2,
        "target": "target-fp-1",
        "rows": {"a1@example.com": [99, "id-a1"], "a3@example.com": [13, "id-a3"], "b1@example.com": [21, "id-b1"]},
    }
    final_rows = {
        "a1@example.com": [99, "id-a1"],
        "a3@example.com": [13, "id-a3"],
        "b1@example.com": [21, "id-b1"],
        "c1@example.com": [31, "id-c1"],
    }
    assert try2["steps"][-1]["checkpoint"] == {"count": 4, "resumed": 0, "target": "target-fp-1", "rows": final_rows}

    next_run = scenario.run({1: [load()]})
    assert first_load(scenario.observed(next_run)[1]) == {
        "count": 4,
        "resumed": 0,
        "target": "target-fp-1",
        "rows": final_rows,
    }
    if scenario.store == "variable":
        assert scenario.journal(next_run) == {}
        assert scenario.journal(retried) == {}, "finalize deletes the journal Variables"
        assert list(scenario.runner.variables(f"retl_checkpoint__{scenario.sync_id}")) == [
            f"retl_checkpoint__{scenario.sync_id}"
        ]
    else:
        assert scenario.xcom_base(retried)["count"] == 4
        # finalize deleted the entry the loaded base held (0) and kept the retried run's (1-3) for
        # a clear of that run; its base holds them, so the next run did not fold them (resumed 0).
        assert sorted(scenario.journal(next_run)) == [1, 2, 3]
        assert scenario.xcom_base(retried)["journal_upto"] == 3
        assert next_run.task("scenario").xcoms == {"return_value": scenario.observed(next_run)[1]}


def test_a_cleared_successful_run_resumes_from_its_own_progress(scenario):
    scenario.run({1: [load(), commit(A1, A2, A3), finalize()]})
    run = scenario.run({1: [load(), commit(("d1@example.com", 41, "id-d1")), finalize()], 2: [load()]})
    cleared = scenario.runner.clear_and_rerun(run)

    assert cleared.succeeded and cleared.run_id == run.run_id, cleared
    again = first_load(scenario.observed(cleared)[2])
    assert again["rows"] == {**BASE_ROWS, "d1@example.com": [41, "id-d1"]}
    # variable: the new base; xcom: the earlier run's base (the clear wiped this run's XCom) + this
    # run's journal entry, which its finalize kept for this case.
    assert again["resumed"] == (0 if scenario.store == "variable" else 1)


def test_journal_entries_fold_in_numeric_order(scenario):
    # 12 commits of one key: "10" < "2" as text, so a text sort would let an old row win.
    commits = [commit(("a1@example.com", row, f"id-{row}")) for row in range(1, 13)]
    run = scenario.run({1: [load(), *commits, FAIL], 2: [load(), finalize()]})

    assert run.succeeded, run
    assert first_load(scenario.observed(run)[2])["rows"] == {"a1@example.com": [12, "id-12"]}
    assert first_load(scenario.observed(run)[2])["resumed"] == 12


def test_progress_of_a_run_that_failed_for_good(scenario):
    scenario.run({1: [load(), commit(A1, A2, A3), finalize()]})
    failed = scenario.run({1: [load(), commit(("e1@example.com", 51, "id-e1")), FAIL], 2: [FAIL]})
    assert failed.state == "failed"

    after = scenario.run({1: [load()]})
    loaded = first_load(scenario.observed(after)[1])
    # Journal Variables outlive the run: the next run folds what the failed run committed, so it
    # neither re-sends its events nor creates its records again.
    assert loaded["resumed"] == 1
    assert loaded["rows"] == {**BASE_ROWS, "e1@example.com": [51, "id-e1"]}


def test_the_run_after_a_failed_run_finalizes_its_progress_once(scenario):
    scenario.run({1: [load(), commit(A1, A2, A3), finalize()]})
    scenario.run({1: [load(), commit(("e1@example.com", 51, "id-e1")), FAIL], 2: [FAIL]})
    after = scenario.run({1: [load(), commit(("e1@example.com", 52, "id-e1")), finalize()]})
    later = scenario.run({1: [load()]})

    assert after.succeeded and later.succeeded, (after, later)
    loaded = first_load(scenario.observed(later)[1])
    # The newer row of e1 wins: the failed run's older entry is not folded over the newer base.
    assert loaded == {
        "count": 4,
        "resumed": 0,
        "target": "target-fp-1",
        "rows": {**BASE_ROWS, "e1@example.com": [52, "id-e1"]},
    }
    if scenario.store == "xcom":
        # finalize of ``after`` deleted the entry its loaded base held (0); it kept the ones it
        # folded (1: the failed run's, 2: its own) for a clear of ``after``; ``later`` skipped them.
        assert sorted(scenario.journal(later)) == [1, 2]
        assert scenario.xcom_base(after)["journal_upto"] == 2


@pytest.mark.parametrize("store", STORES)
def test_a_commit_writes_one_batch_sized_document_whatever_the_base_size(dag_runner, store):
    messages = {}
    for base_size in (10, 20_000):
        scenario = Scenario(dag_runner, store)
        scenario.run({1: [load(), finalize(synthetic=base_size)]})
        run = scenario.run({1: [load(), commit(A1, A2, A3), commit(("b1@example.com", 21, "id-b1")), finalize()]})
        assert run.succeeded, run
        steps = scenario.observed(run)[1]["steps"]
        assert steps[0]["checkpoint"]["count"] == base_size
        messages[base_size] = [step["messages"] for step in steps if step["do"] == "commit"]

    writes_per_commit = 1  # one journal Variable
    for base_size, commits in messages.items():
        for sent in commits:
            writes = [size for kind, size in sent if kind in WRITES]
            assert len(writes) == writes_per_commit, (base_size, sent)
            assert max(writes) < 2_000, (base_size, sent)
            assert not [kind for kind, _ in sent if kind in BASE_READS], f"a commit read the base: {sent}"
    small, big = messages[10], messages[20_000]
    for small_sent, big_sent in zip(small, big):
        small_bytes = sum(size for kind, size in small_sent if kind in WRITES)
        big_bytes = sum(size for kind, size in big_sent if kind in WRITES)
        assert abs(small_bytes - big_bytes) <= 64, (small_sent, big_sent)


def test_the_base_is_much_bigger_than_a_commit(dag_runner):
    # Sanity check for the test above: a 20k-key base is ~hundreds of KB, a commit ~1 KB.
    scenario = Scenario(dag_runner, "variable")
    scenario.run({1: [load(), finalize(synthetic=20_000)]})
    (base,) = scenario.runner.variables(f"retl_checkpoint__{scenario.sync_id}").values()
    assert len(base) > 300_000


def test_no_raw_key_values_are_stored(scenario):
    scenario.run({1: [load(), commit(A1, A2), finalize()]})
    scenario.run({1: [load(), commit(A3), delete("a1@example.com"), FAIL], 2: [load(), finalize()]})

    stored = scenario.stored_text()
    assert len(stored) > 200, "the store persisted nothing?"
    assert "example" not in stored and "a1@" not in stored


MAPPED_DAG = '''
import datetime as dt

from airflow.sdk import DAG, task

from airflow_provider_retl.checkpoints import XComCheckpointStore
from airflow_provider_retl.sync.checkpoint import Checkpoint, JournalEntry

with DAG("ckpt_xcom_mapped", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

    @task
    def sync(part, **context):
        store = XComCheckpointStore(context)
        loaded = store.load()
        seen = None if loaded is None else sorted(int(k) for k in loaded.key_hashes)
        mine = 1000 * (context["ti"].map_index + 1) + len(seen or [])
        store.finalize((loaded or Checkpoint("t", "p")).apply([JournalEntry.puts([mine], [1], [part])]))
        return {"part": part, "seen": seen, "store": store.description}

    sync.expand(part=["x", "y"])
'''


def test_xcom_store_keeps_one_checkpoint_per_map_index(dag_runner):
    first = dag_runner.run_dag(MAPPED_DAG, "ckpt_xcom_mapped")
    second = dag_runner.run_dag(MAPPED_DAG, "ckpt_xcom_mapped")

    assert first.succeeded and second.succeeded, (first, second)
    assert [first.return_value("sync", i)["seen"] for i in (0, 1)] == [None, None]
    assert second.return_value("sync", 0) == {"part": "x", "seen": [1000], "store": "xcom:ckpt_xcom_mapped.sync[0]:retl_checkpoint"}
    assert second.return_value("sync", 1)["seen"] == [2000]
