"""What the ``airflow retl`` subcommands do (``definition.py`` declares them)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from airflow_provider_retl.destinations import REGISTRY
from airflow_provider_retl.sync.redaction import REDACTOR


def test_connection(args: argparse.Namespace) -> None:
    """``airflow retl test <conn_id>``: the destination hook's ``test_connection()``; exit 1 on failure."""
    # Like `airflow connections test`: a server-side process, so the metadata DB is one of the
    # secrets backends and connections created in the UI are found.
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    conn_id = args.conn_id
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        _fail(f"Connection {conn_id!r} is not defined (neither in the metadata DB nor as AIRFLOW_CONN_*).")
    # Whatever is printed from here on passes the redactor: register this connection's secrets first.
    REDACTOR.add(conn.password)
    by_type = {spec.conn_type: spec for spec in REGISTRY.values()}
    spec = by_type.get(conn.conn_type or "")
    if spec is None:
        known = ", ".join(sorted(by_type))
        _fail(
            f"Connection {conn_id!r} has type {conn.conn_type!r}, not a Reverse ETL destination ({known}); "
            "`airflow connections test` tests other types."
        )
    extras = conn.extra_dejson
    for knob in spec.all_knobs():
        if knob.secret:
            REDACTOR.add(extras.get(knob.name))
    print(f"Testing {conn_id!r} ({spec.title}) ...", flush=True)
    try:
        hook = conn.get_hook()
        ok, message = hook.test_connection()
    except Exception as err:  # noqa: BLE001 - a command line answer, never a traceback with values
        ok, message = False, f"{type(err).__name__}: {err}"
    message = REDACTOR.redact(message)
    if not ok:
        _fail(f"Connection {conn_id!r} failed its test: {message}")
    print(f"Connection {conn_id!r} works: {message}")


def replay(args: argparse.Namespace) -> None:
    """``airflow retl replay <dag_id> <task_id> [--run-id RUN]``: clear the sync's task instance now."""
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"  # it writes the metadata DB, like `airflow tasks clear`
    from airflow_provider_retl.history.replay import replay_rejects

    try:
        done = replay_rejects(args.dag_id, args.task_id, args.run_id)
    except LookupError as err:
        _fail(str(err))
    if not done["cleared"]:
        _fail(f"{args.task_id!r} in run {done['run_id']!r} is running or queued: let it finish, then replay")
    print(f"Cleared {args.task_id!r} in run {done['run_id']!r} of {args.dag_id!r}: the scheduler runs it again")


def _fail(message: str) -> NoReturn:
    print(REDACTOR.redact(message), file=sys.stderr, flush=True)
    raise SystemExit(1)
