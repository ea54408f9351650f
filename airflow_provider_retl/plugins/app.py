"""The FastAPI app the API server mounts under ``/retl``: the Reverse ETL pages.

Authentication and authorization are Airflow's own, as in the API routes of Airflow's
providers: the user comes from ``get_user`` (the UI's ``_token`` cookie or a bearer
token; 401 without one, 403 for a forged one), and the auth manager decides which DAGs
the user may read. A sync is shown only to users allowed to read the XComs of its DAG
(its reports are XComs); the task instance tab checks the same for the DAG it is asked for.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from airflow_provider_retl.plugins import base_path, data, history, pages

log = logging.getLogger(__name__)


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def readable_dag_ids(user: GetUserDep, session: SessionDep) -> set[str]:
    """DAGs with syncs whose XComs (sync reports) ``user`` may read."""
    manager = _auth_manager()
    dag_ids = manager.get_authorized_dag_ids(user=user, method="GET") & data.sync_dag_ids(session)
    return {
        dag_id
        for dag_id in dag_ids
        if manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=dag_id), user=user
        )
    }


ReadableDags = Annotated[set[str], Depends(readable_dag_ids)]


def _html(body: str, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    # The pages live in the UI's frame; nothing on them needs scripts, so none may run.
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                 "form-action 'self'; frame-ancestors 'self'", "Cache-Control": "no-store"},
    )  # fmt: skip


def index(session: SessionDep, dag_ids: ReadableDags) -> HTMLResponse:
    """Every sync the user may see, with its last run."""
    runs = data.task_instance_runs(session, dag_ids=dag_ids)
    return _html(pages.index_page(data.group_syncs(runs)))


def _sync(session: Any, dag_ids: set[str], sync_id: str) -> data.Sync:
    runs = [run for run in data.task_instance_runs(session, dag_ids=dag_ids) if run.sync_id == sync_id]
    if not runs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such sync (or not in a DAG you can read)")
    return data.group_syncs(runs)[0]


def _may_change(user: Any, sync: data.Sync) -> bool:
    # Acknowledging changes what the sync's next run sends: the right to edit its task instances.
    manager = _auth_manager()
    return all(
        manager.is_authorized_dag(
            method="PUT", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=user
        )
        for dag_id in {run.dag_id for run in sync.runs}
    )


def sync_page(
    session: SessionDep,
    dag_ids: ReadableDags,
    user: GetUserDep,
    sync_id: Annotated[str, Query(alias="id", max_length=1000)],
    key: Annotated[str | None, Query(max_length=1000)] = None,
    acknowledged: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    """One sync: its runs over time, rejects grouped by reason, and the outcomes of ``key``."""
    sync = _sync(session, dag_ids, sync_id)
    key = (key or "").strip() or None
    view = history.sync_view(sync, key=key, dag_ids=dag_ids)
    return _html(
        pages.sync_page(
            view.sync,
            groups=view.groups,
            rejects_run=view.rejects_run,
            key=key,
            outcomes=view.outcomes,
            history=view.source,
            can_acknowledge=view.from_history and _may_change(user, sync),
            acknowledged=acknowledged,
        )
    )


def acknowledge(
    session: SessionDep,
    dag_ids: ReadableDags,
    user: GetUserDep,
    sync_id: Annotated[str, Form(alias="id", max_length=1000)],
    run_id: Annotated[str, Form(max_length=250)],
    reason: Annotated[str, Form(max_length=4000)],
    stage: Annotated[str, Form(max_length=100)],
) -> Response:
    """Acknowledge one reason's rejects of a run (a form on the sync page), then show the sync again."""
    sync = _sync(session, dag_ids, sync_id)
    if not _may_change(user, sync):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not change this sync's task instances")
    try:
        count = history.acknowledge(sync, run_id=run_id, reason=reason, stage=stage, by=user.get_name())
    except LookupError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    target = "sync?" + urlencode({"id": sync_id, "acknowledged": count})
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


def task_instance_tab(
    session: SessionDep,
    dag_id: Annotated[str, Query(max_length=250)],
    run_id: Annotated[str, Query(max_length=250)],
    task_id: Annotated[str, Query(max_length=250)],
    map_index: Annotated[str, Query(max_length=20)] = "-1",
) -> HTMLResponse:
    """One task instance's sync report (the tab on every task instance; other tasks say they are none)."""
    try:
        index_ = int(map_index)
    except ValueError:  # an unmapped task: the UI leaves the {MAP_INDEX} placeholder as it is
        index_ = -1
    runs = data.task_instance_runs(
        session, dag_ids=None, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=index_, limit=1
    )
    if not runs:
        return _html(pages.ti_page(None, message="This task is not a Reverse ETL sync."))
    run = runs[0]
    tries = history.tries_of(run)
    return _html(pages.ti_page(run, groups=data.reject_groups_from_reports([run]), tries=tries))


def icon() -> Response:
    """The navigation entry's icon (public, like the UI's own assets)."""
    body = resources.files("airflow_provider_retl.plugins").joinpath("static/icon.svg").read_bytes()
    return Response(body, media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == status.HTTP_401_UNAUTHORIZED:
        try:
            login = _auth_manager().get_url_login(next_url=str(request.url))
        except Exception:  # noqa: BLE001 - no login page to offer: the UI's root still leads there
            login = base_path("/")
        return _html(pages.unauthenticated_page(login), status_code=exc.status_code)
    return _html(pages.render("error.html", status=exc.status_code, detail=str(exc.detail)), exc.status_code)


def create_app() -> FastAPI:
    """The app Airflow's API server mounts under ``/retl`` (see ``ReverseETLPlugin``)."""
    app = FastAPI(title="Reverse ETL", docs_url=None, redoc_url=None, openapi_url=None)
    html: dict[str, Any] = {"response_class": HTMLResponse}
    app.add_api_route("/", index, methods=["GET"], **html)
    app.add_api_route("/sync", sync_page, methods=["GET"], **html)
    app.add_api_route("/acknowledge", acknowledge, methods=["POST"])
    app.add_api_route(
        "/ti",
        task_instance_tab,
        methods=["GET"],
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.XCOM))],
        **html,
    )
    app.add_api_route("/static/icon.svg", icon, methods=["GET"])
    app.add_exception_handler(HTTPException, _on_http_error)
    return app
