"""The "Reverse ETL" view inside the Airflow UI, as an Airflow plugin.

Airflow's API server mounts the plugin's FastAPI app under ``/retl`` (behind Airflow's
own authentication) and the UI shows two of its pages in frames:

* a "Reverse ETL" entry in the navigation: every sync, its runs over time, its rejects
  grouped by reason, and a search for one record's recent outcomes;
* a "Sync report" tab on every task instance: that try's report.

Registered twice, as Airflow's own providers do: the ``airflow.plugins`` entry point
(always loaded) and the ``plugins`` key of the provider info (loaded when provider
discovery is not lazy). Importing this module costs next to nothing: the FastAPI app,
SQLAlchemy queries and templates are imported on the first request, not when every
Airflow process (scheduler, workers, dag processor) loads its plugins.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

#: Where the API server mounts the app (under Airflow's ``[api] base_url`` path).
URL_PREFIX = "/retl"
PLUGIN_NAME = "reverse_etl"


class LazyASGIApp:
    """An ASGI app that imports and builds the real one (``module:factory``) on its first request.

    Airflow reads ``fastapi_apps`` in every process that loads plugins; only the API server
    ever calls the app, so only the API server pays for building it.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._app: Any = None

    @property
    def app(self) -> Any:
        """The real app, built on first use."""
        if self._app is None:
            module, _, factory = self.target.partition(":")
            self._app = getattr(importlib.import_module(module), factory)()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def base_path(path: str) -> str:
    """``path`` under the path of Airflow's ``[api] base_url`` (``/airflow`` + ``/retl/``)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="/") or "/"
    if base.startswith(("http://", "https://")):
        base = urlsplit(base).path
    return base.rstrip("/") + path


class ReverseETLPlugin(AirflowPlugin):
    """Adds the "Reverse ETL" page and the task instances' "Sync report" tab to the Airflow UI."""

    name = PLUGIN_NAME
    # Class attributes, as Airflow declares them (it reads the class itself on the provider-info path).
    fastapi_apps = [  # noqa: RUF012
        {
            "app": LazyASGIApp("airflow_provider_retl.plugins.app:create_app"),
            "url_prefix": URL_PREFIX,
            "name": "Reverse ETL",
        }
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Reverse ETL",
            "href": base_path(f"{URL_PREFIX}/"),
            "destination": "nav",
            "url_route": "reverse_etl",
            "icon": base_path(f"{URL_PREFIX}/static/icon.svg"),
        },
        {
            # The UI fills in the placeholders; an unmapped task leaves {MAP_INDEX} as it is.
            "name": "Sync report",
            "href": base_path(
                f"{URL_PREFIX}/ti?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}"
            ),
            "destination": "task_instance",
            "url_route": "retl_sync_report",
        },
    ]
