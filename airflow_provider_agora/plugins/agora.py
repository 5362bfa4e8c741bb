"""``AgoraNotificationsPlugin``: receives Agora's recording notifications in Airflow 3's API server.

Registered through the ``airflow.plugins`` entry point. It mounts the receiver
(``airflow_provider_agora._receiver``) at ``/agora``, so Agora Console's notification URL is
``https://<your API server>/agora/ncs/<agora connection id>``. Airflow 2 has no FastAPI apps in
plugins: there the plugin is empty and the rest of the provider works as before.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

__all__ = ["URL_PREFIX", "AgoraNotificationsPlugin"]

URL_PREFIX = "/agora"


def _fastapi_apps() -> list[dict[str, Any]]:
    try:
        from airflow import __version__

        if int(__version__.split(".")[0]) < 3:
            return []
        from airflow_provider_agora._receiver import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Agora Cloud Recording notifications"}]
    except ImportError:  # no FastAPI here: nothing to mount
        return []


class _BuiltOnFirstUse:
    """Every Airflow process loads plugins; only the API server reads ``fastapi_apps``, and only it
    should pay for FastAPI and the receiver."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, instance: object, owner: type) -> list[dict[str, Any]]:
        if self._apps is None:
            self._apps = _fastapi_apps()
        return self._apps


class AgoraNotificationsPlugin(AirflowPlugin):
    """Mounts ``POST /agora/ncs/{conn_id}`` in the API server."""

    name = "agora_notifications"
    fastapi_apps = _BuiltOnFirstUse()
