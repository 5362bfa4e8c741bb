"""Running a sensor the way Airflow runs each of its three modes, in this process, with real triggers.

Shared by the fault matrix and the storage waits: ``RUNNERS[mode](make, context, **kwargs)`` runs
the sensor that ``make(**kwargs)`` builds (a fresh instance per execution, as Airflow does) until
the try ends, and returns its XCom value or raises what ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any
from unittest import mock

from airflow_provider_agora._compat import AirflowRescheduleException, BaseSensorOperator, TaskDeferred
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

MakeSensor = Callable[..., AgoraRecordingQuerySensor]
MODES = ("poke", "reschedule", "deferrable")

# How late Airflow's scheduler notices a deferral that outlived its timeout
# ([scheduler] trigger_timeout_check_interval); the trigger's own deadline comes first.
TRIGGER_TIMEOUT_CHECK = 15.0
# A reschedule-mode sensor still rescheduled this long after its timeout never times out (a bug).
STILL_RESCHEDULING_AFTER = 30.0
# Airflow 3 dates the first reschedule, from which a reschedule-mode sensor's timeout runs, when
# the execution reports it; Airflow 2.11 dates it when that execution started.
AIRFLOW_3 = BaseSensorOperator.__module__.startswith("airflow.sdk")
# What the scheduler hands a deferred task whose trigger outlived the deferral's timeout.
TRIGGER_TIMEOUT_ERROR = "Trigger timeout" if AIRFLOW_3 else "Trigger/execution timeout"


TRIGGER_ROWS: list[str] = []


class StillRescheduling(Exception):
    """A reschedule-mode sensor that Airflow keeps rescheduling long past its timeout."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


async def _only_event(trigger: Any) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


MODE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "poke": {},
    "reschedule": {"mode": "reschedule"},
    "deferrable": {"deferrable": True},
}


def run_poke(make: MakeSensor, context: dict[str, Any], **kwargs: Any) -> Any:
    """One execution: BaseSensorOperator pokes, sleeps and times out by itself."""
    return make(**kwargs).execute(context)


def run_reschedule(make: MakeSensor, context: dict[str, Any], **kwargs: Any) -> Any:
    """Reschedule mode as Airflow runs it; the sensor's timeout is Airflow's own decision.

    Every execution is a fresh operator running BaseSensorOperator's ``execute``: it pokes once, and
    either ends the task or raises AirflowRescheduleException, which leaves the task
    up_for_reschedule until the date it names. Airflow records the first reschedule, and every later
    execution asks for it (``_orig_start_date`` on 2.11, ``ti.get_first_reschedule_date`` on 3.x)
    and measures the timeout from its start date. Only the task state store (Airflow 3.3) outlives
    an execution.
    """
    first_reschedule: datetime | None = None
    ti = SimpleNamespace(
        dag_id="agora_fault_matrix",
        task_id="wait",
        run_id="manual",
        map_index=-1,
        max_tries=0,
        get_first_reschedule_date=lambda _context: first_reschedule,
    )
    recorded_start = (
        contextlib.nullcontext()
        if AIRFLOW_3
        else mock.patch("airflow.sensors.base._orig_start_date", side_effect=lambda **_: first_reschedule)
    )
    give_up = time.monotonic() + float(kwargs["timeout"]) + STILL_RESCHEDULING_AFTER
    with recorded_start:
        while True:
            execution_started = _utcnow()
            try:
                return make(mode="reschedule", **kwargs).execute({**context, "ti": ti})
            except AirflowRescheduleException as reschedule:
                if first_reschedule is None:
                    first_reschedule = _utcnow() if AIRFLOW_3 else execution_started
                if time.monotonic() > give_up:
                    raise StillRescheduling(
                        f"still up_for_reschedule {STILL_RESCHEDULING_AFTER:g} s after the timeout"
                    ) from reschedule
                # The scheduler runs the task again once the reschedule date has come.
                time.sleep(max(0.0, (reschedule.reschedule_date - _utcnow()).total_seconds()))


def run_deferrable(make: MakeSensor, context: dict[str, Any], **kwargs: Any) -> Any:
    """Deferrable mode as Airflow runs it: execute, run the trigger, resume a new instance.

    A trigger that outlives the deferral's timeout is failed the way the scheduler does it
    (``__fail__``), a little late, as the scheduler checks periodically.
    """
    try:
        return make(deferrable=True, **kwargs).execute(context)
    except TaskDeferred as first:
        deferred = first
    while True:  # deferred, resumed, perhaps deferred again (checkpoints), until the end
        TRIGGER_ROWS.append(json.dumps(deferred.trigger.serialize(), default=str))  # what the trigger table stores
        limit = None if deferred.timeout is None else deferred.timeout.total_seconds() + TRIGGER_TIMEOUT_CHECK
        try:
            event = asyncio.run(asyncio.wait_for(_only_event(deferred.trigger), timeout=limit))
            method, arguments = deferred.method_name, {**(deferred.kwargs or {}), "event": event}
        except TimeoutError:
            method, arguments = "__fail__", {"error": TRIGGER_TIMEOUT_ERROR}
        try:
            return make(deferrable=True, **kwargs).resume_execution(method, arguments, context)
        except TaskDeferred as again:
            deferred = again


RUNNERS: dict[str, Callable[..., Any]] = {
    "poke": run_poke,
    "reschedule": run_reschedule,
    "deferrable": run_deferrable,
}
