"""A DAG that drives a checkpoint store from inside a real task, step by step, per try.

The run's conf says which store to use and what each try does::

    {"store": "variable", "sync_id": "s1", "tries": {"1": [{"do": "load"}, {"do": "commit", "puts": [...]},
                                                         {"do": "fail"}],
                                                   "2": [{"do": "load"}, {"do": "finalize"}]}}

Actions: ``load``; ``commit`` (``puts``: [[email, row_hash, dest_id], ...]); ``delete``
(``emails``); ``finalize`` (the loaded checkpoint + this try's commits, plus
``synthetic`` random keys to make a big base); ``fail``. Every try records what it saw in
the task_state_store key ``test_obs_<try>``; the test reads them from the metadata DB.
Checkpoint rows are reported by email for the emails in the conf (``emails`` + actions).
Emails are hashed here, as the engine does: the store never receives one.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
from airflow.sdk import DAG, task

from airflow_provider_retl.checkpoints import checkpoint_store_from_spec
from airflow_provider_retl.sync.checkpoint import Checkpoint, JournalEntry

TARGET = "target-fp-1"
PAYLOAD = "payload-fp-1"


def key_hash(email: str) -> int:
    return int.from_bytes(hashlib.blake2b(email.encode(), digest_size=8).digest(), "little") >> 1


def summary(checkpoint, emails_by_hash):
    if checkpoint is None:
        return None
    rows = {}
    for key, row, dest in zip(checkpoint.key_hashes, checkpoint.row_hashes, checkpoint.dest_ids):
        email = emails_by_hash.get(int(key))
        if email is not None:
            rows[email] = [int(row), dest]
    return {
        "count": len(checkpoint),
        "resumed": checkpoint.resumed_entries,
        "target": checkpoint.target_fingerprint,
        "rows": rows,
    }


def spy_on_comms(sent):
    """Record every message the task sends to Airflow (type, JSON size) until undone."""
    from airflow.sdk.execution_time import task_runner

    cls = type(task_runner.SUPERVISOR_COMMS)
    original = cls.send

    def send(self, msg):
        sent.append([type(msg).__name__, len(msg.model_dump_json())])
        return original(self, msg)

    cls.send = send
    return lambda: setattr(cls, "send", original)


def emails_in(conf):
    yield from conf.get("emails", ())
    for actions in conf["tries"].values():
        for action in actions:
            yield from (put[0] for put in action.get("puts", ()))
            yield from action.get("emails", ())


with DAG("checkpoint_store_scenario", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

    @task(retries=1, retry_delay=dt.timedelta(0))
    def scenario(**context):
        conf = context["dag_run"].conf
        ti = context["ti"]
        emails_by_hash = {key_hash(e): e for e in emails_in(conf)}
        store = checkpoint_store_from_spec(conf["store"], sync_id=conf.get("sync_id", "unused"), context=context)
        observed = {"try": ti.try_number, "store": store.description, "steps": []}
        loaded = None
        committed = []
        try:
            for action in conf["tries"].get(str(ti.try_number), []):
                step = {"do": action["do"]}
                observed["steps"].append(step)
                if action["do"] == "load":
                    loaded = store.load()
                    step["checkpoint"] = summary(loaded, emails_by_hash)
                elif action["do"] in ("commit", "delete"):
                    if action["do"] == "commit":
                        puts = action["puts"]
                        entry = JournalEntry.puts([key_hash(p[0]) for p in puts], [p[1] for p in puts], [p[2] for p in puts])
                    else:
                        entry = JournalEntry.deletes([key_hash(e) for e in action["emails"]])
                    sent = []
                    undo = spy_on_comms(sent)
                    try:
                        store.commit(entry, target_fingerprint=TARGET, payload_fingerprint=PAYLOAD)
                    finally:
                        undo()
                    step["messages"] = sent
                    committed.append(entry)
                elif action["do"] == "finalize":
                    final = (loaded or Checkpoint(TARGET, PAYLOAD)).apply(committed)
                    if action.get("synthetic"):
                        rng = np.random.default_rng(7)
                        n = action["synthetic"]
                        extra = JournalEntry.puts(
                            rng.integers(1, 2**63, n, dtype=np.uint64),
                            rng.integers(1, 2**63, n, dtype=np.uint64),
                            [f"id-{i}" for i in range(n)],
                        )
                        final = final.apply([extra])
                    final.resumed_entries = 0
                    store.finalize(final)
                    step["count"] = len(final)
                elif action["do"] == "fail":
                    raise RuntimeError(f"scenario fails try {ti.try_number} on purpose")
                else:
                    raise ValueError(f"unknown action {action['do']!r}")
        finally:
            context["task_state_store"].set(f"test_obs_{ti.try_number}", observed)
        return observed

    scenario()
