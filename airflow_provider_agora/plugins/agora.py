"""``AgoraNotificationsPlugin``: receives Agora's recording notifications in Airflow 3's API server.

Registered through the ``airflow.plugins`` entry point. Only where ``[agora] notifications_receiver``
is on (``AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER=True``; off by default) it mounts the receiver
(``airflow_provider_agora._ncs.receiver``) at ``/agora``, so Agora Console's notification URL is
``https://<your API server>/agora/ncs/<agora connection id>``. Installing the provider alone adds no
route that strangers can reach, and the receiver's code is not even imported. Airflow 2 has no
FastAPI apps in plugins: there the plugin is empty and the rest of the provider works as before.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

__all__ = ["URL_PREFIX", "AgoraNotificationsPlugin", "receiver_enabled"]

URL_PREFIX = "/agora"
CONFIG_SECTION = "agora"
RECEIVER_OPTION = "notifications_receiver"

log = logging.getLogger(__name__)


def receiver_enabled() -> bool:
    """``[agora] notifications_receiver``; a value Airflow cannot read as a boolean is logged and
    counts as off (the receiver is opt-in)."""
    from airflow_provider_agora._compat import conf

    try:
        return bool(conf.getboolean(CONFIG_SECTION, RECEIVER_OPTION, fallback=False))
    except Exception as error:  # AirflowConfigException for "", "maybe", ...: whatever the version raises
        log.error(
            "The Agora notification receiver stays off: [%s] %s is not a boolean (%s). Set "
            "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER to True or False.",
            CONFIG_SECTION,
            RECEIVER_OPTION,
            error,
        )
        return False


def _fastapi_apps() -> list[dict[str, Any]]:
    try:
        from airflow import __version__

        if int(__version__.split(".")[0]) < 3 or not receiver_enabled():
            return []
        from airflow_provider_agora._ncs.receiver import create_app

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
    """Mounts ``POST /agora/ncs/{conn_id}`` in the API server where the receiver is enabled."""

    name = "agora_notifications"
    fastapi_apps = _BuiltOnFirstUse()
