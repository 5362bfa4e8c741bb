"""The one place that knows where Airflow keeps things in each supported version (2.11 .. 3.3).

Newest location first; the fallback is the Airflow 2 path. Nothing else in the package imports
from ``airflow`` directly.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.1+
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.x, 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.0+
    from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue
except ImportError:
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef,attr-defined]
    from airflow.sensors.base import (  # type: ignore[no-redef,attr-defined]
        BaseSensorOperator,
        PokeReturnValue,
    )

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,assignment]
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

try:  # Airflow 3.2+
    from airflow.sdk import conf
except ImportError:
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined,assignment]

try:  # Airflow 3.0+
    from airflow.sdk.log import mask_secret
except ImportError:
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.0+
    from airflow.sdk import Context
except ImportError:
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined,assignment]

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "Context",
    "PokeReturnValue",
    "TaskDeferred",
    "aget_connection",
    "conf",
    "mask_secret",
]


async def aget_connection(conn_id: str) -> Any:
    """Read a connection without blocking the triggerer's event loop.

    Airflow 3.1+ has ``BaseHook.aget_connection``; before it the synchronous lookup runs in a
    thread (a sync lookup on the event loop fails on Airflow 3.0 and stalls every trigger).
    """
    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)
