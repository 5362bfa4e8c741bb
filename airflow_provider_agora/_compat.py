"""The one place that knows where Airflow keeps things in each supported version (2.11 .. 3.3).

Newest location first; the fallback is the Airflow 2 path. The modules that exist only where
their piece of Airflow does import it directly: the triggers (``airflow.triggers.base``), the
API-server plugin (``airflow.plugins_manager``) and the receiver's connection-id rule
(``airflow.models.connection``).
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


def _airflow_line() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


# Airflow 3.0's task API refuses an XCom whose value is None (apache/airflow#55062, fixed in 3.1.0;
# the 3.0 backport came after 3.0.6, the last 3.0 release). Results have None values (a stop's
# status), so on 3.0 the provider pushes the keys of a result itself and leaves the None ones out.
XCOM_ACCEPTS_NONE = not (3, 0) <= _airflow_line() < (3, 1)


def key_outputs_default(kwargs: dict[str, Any]) -> bool:
    """Set ``multiple_outputs`` in an operator's kwargs; True when the provider must push the keys itself."""
    if "multiple_outputs" in kwargs:
        return False
    kwargs["multiple_outputs"] = XCOM_ACCEPTS_NONE
    return not XCOM_ACCEPTS_NONE


def push_keys(context: Any, result: Any) -> None:
    """Each key of ``result`` with a value as its own XCom, as ``multiple_outputs`` would (Airflow 3.0)."""
    if isinstance(result, dict):
        for key, value in result.items():
            if value is not None:
                context["ti"].xcom_push(key=key, value=value)


__all__ = [
    "XCOM_ACCEPTS_NONE",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "Context",
    "PokeReturnValue",
    "TaskDeferred",
    "aget_connection",
    "conf",
    "key_outputs_default",
    "mask_secret",
    "push_keys",
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


def attach_filesystem(scheme: str, conn_id: str | None) -> Any:
    """Airflow's fsspec filesystem for ``scheme`` bound to ``conn_id`` (what ``ObjectStoragePath`` uses).

    Imported on first use: it loads the storage provider (the ``s3`` extra for S3)."""
    try:  # Airflow 3.0+
        from airflow.sdk.io import attach
    except ImportError:
        from airflow.io.store import attach  # type: ignore[no-redef,import-not-found]
    return attach(scheme, conn_id).fs


def time_delta_trigger(seconds: float) -> Any:
    """Airflow's own trigger that fires after ``seconds``: a deferred wait between two storage checks."""
    from datetime import timedelta

    try:  # Airflow 3.0+: the standard provider
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    except ImportError:
        from airflow.triggers.temporal import TimeDeltaTrigger  # type: ignore[no-redef]
    return TimeDeltaTrigger(timedelta(seconds=seconds))


try:  # Airflow 3.0+
    from airflow.sdk import BaseOperatorLink
except ImportError:
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef,attr-defined]


def xcom_value(ti_key: Any, key: str) -> Any:
    """One XCom of the task instance ``ti_key`` (an operator link's lookup)."""
    try:  # Airflow 3.0+
        from airflow.sdk.execution_time.xcom import XCom
    except ImportError:
        from airflow.models.xcom import XCom  # type: ignore[no-redef]
    return XCom.get_value(ti_key=ti_key, key=key)
