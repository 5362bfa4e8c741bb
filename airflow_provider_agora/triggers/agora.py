"""``AgoraRecordingQueryTrigger``: the deferrable half of ``AgoraRecordingQuerySensor``.

It decides with the same functions as poke mode (``airflow_provider_agora._waiting``), so the two
modes cannot disagree; it only adds the waiting on the triggerer's event loop. Its kwargs are JSON
primitives and name the connection, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_agora._connection_form import DEFAULT_CONN_ID
from airflow_provider_agora._waiting import (
    Decision,
    Outcome,
    WaitMemory,
    WaitSpec,
    decide_on_answer,
    decide_on_error,
    decide_on_notifications,
    describe_status,
)
from airflow_provider_agora.exceptions import AgoraError
from airflow_provider_agora.hooks.agora import AgoraAsyncHook
from airflow_provider_agora.results import RecordingResult

if TYPE_CHECKING:
    from airflow_provider_agora._notification_reader import Subscription

__all__ = ["AgoraRecordingQueryTrigger"]

# The payload's "status": what ``execute_complete`` does with it.
EVENT_SUCCESS = "success"  # return event["result"] as the XCom value
EVENT_FAILURE = "failure"  # fail without retry (failure status, persistent 404, gateway 404)
EVENT_TIMEOUT = "timeout"  # AirflowSensorTimeout
EVENT_ERROR = "error"  # an error the wait has no rule for (bad credentials, unreadable answer)
EVENT_CHECKPOINT = "checkpoint"  # the wait goes on: store event["memory"] and defer again
EVENT_STATUSES = (EVENT_SUCCESS, EVENT_FAILURE, EVENT_TIMEOUT, EVENT_ERROR, EVENT_CHECKPOINT)


def _file_names(seen: RecordingResult) -> set[str]:
    return {str(item.get("fileName")) for item in seen.get("files") or []}


def learned_something(before: WaitMemory, after: WaitMemory) -> bool:
    """Whether this poll learned what a restarted triggerer must not forget.

    A triggerer rebuilds a trigger from the kwargs it was deferred with; anything the trigger saw
    since is lost with the process. The first sight of the recording (which ``on_not_found`` relies
    on) and every change of its file list are therefore handed back to the sensor, which keeps them
    and defers again: a handful of checkpoints per recording.
    """
    if after.last_seen is None:
        return False
    return before.last_seen is None or _file_names(before.last_seen) != _file_names(after.last_seen)


class AgoraRecordingQueryTrigger(BaseTrigger):
    """Poll Agora's ``query`` until the wait is decided or ``end_time`` (epoch seconds) passes."""

    def __init__(
        self,
        *,
        resource_id: str,
        sid: str,
        recording_mode: str,
        app_id: str | None = None,
        agora_conn_id: str = DEFAULT_CONN_ID,
        target_status: int = 8,
        failure_statuses: list[int] | tuple[int, ...] = (20,),
        not_found_grace_period: float = 90.0,
        on_not_found: str = "fail",
        exit_files_grace_period: float = 30.0,
        poll_interval: float = 60.0,
        notification_poll_interval: float | None = None,
        end_time: float,
        memory: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.resource_id = resource_id
        self.sid = sid
        self.recording_mode = recording_mode
        self.app_id = app_id
        self.agora_conn_id = agora_conn_id
        self.target_status = target_status
        self.failure_statuses = list(failure_statuses)
        self.not_found_grace_period = not_found_grace_period
        self.on_not_found = on_not_found
        self.exit_files_grace_period = exit_files_grace_period
        self.poll_interval = poll_interval
        self.notification_poll_interval = notification_poll_interval
        self.end_time = end_time
        self.memory = dict(memory or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "resource_id": self.resource_id,
                "sid": self.sid,
                "recording_mode": self.recording_mode,
                "app_id": self.app_id,
                "agora_conn_id": self.agora_conn_id,
                "target_status": self.target_status,
                "failure_statuses": list(self.failure_statuses),
                "not_found_grace_period": self.not_found_grace_period,
                "on_not_found": self.on_not_found,
                "exit_files_grace_period": self.exit_files_grace_period,
                "poll_interval": self.poll_interval,
                "notification_poll_interval": self.notification_poll_interval,
                "end_time": self.end_time,
                "memory": self.memory,
            },
        )

    async def _poll(self, hook: AgoraAsyncHook, spec: WaitSpec, memory: WaitMemory) -> Decision:
        try:
            body = await hook.query(spec.resource_id, spec.sid, spec.recording_mode, app_id=self.app_id)
        except AgoraError as error:
            return decide_on_error(spec, memory, error, time.time())
        return decide_on_answer(spec, memory, body)

    def _timeout_event(self, memory: WaitMemory) -> TriggerEvent:
        last_status = memory.last_seen.get("status") if memory.last_seen else None
        return TriggerEvent(
            {
                "status": EVENT_TIMEOUT,
                "message": f"Sensor has timed out: recording sid={self.sid} did not reach status "
                f"{describe_status(self.target_status)} before the sensor's timeout; last status seen: "
                f"{describe_status(last_status)}.",
                "result": memory.last_seen,
            }
        )

    async def _decide(self) -> TriggerEvent:
        """Run the wait to its end; every way out is one event (the caller yields it)."""
        try:
            spec = WaitSpec.from_attributes(self)
            hook = AgoraAsyncHook(self.agora_conn_id)
            await hook.get_settings()
        except AgoraError as error:
            return TriggerEvent({"status": EVENT_ERROR, "message": str(error), "result": None})
        deferred_with = memory = WaitMemory.from_json(self.memory)
        heard = await hook.follow_notifications(spec.sid)
        try:
            return await self._wait(hook, spec, deferred_with, memory, heard)
        finally:
            if heard is not None:
                heard.close()

    async def _wait(
        self,
        hook: AgoraAsyncHook,
        spec: WaitSpec,
        deferred_with: WaitMemory,
        memory: WaitMemory,
        heard: Subscription | None,
    ) -> TriggerEvent:
        """Notifications first (when the connection receives them), ``query`` as the backstop."""
        interval = self.poll_interval
        if heard is not None and self.notification_poll_interval is not None:
            interval = self.notification_poll_interval
        next_query = 0.0  # query once at once: notifications may never come
        while time.time() < self.end_time:
            decision: Decision | None = None
            if heard is not None:
                decision = decide_on_notifications(spec, memory, heard.look(), time.time())
                if decision is not None:
                    memory = decision.memory
                    if decision.query_now:
                        next_query = 0.0
            if (decision is None or decision.outcome is Outcome.WAIT) and time.time() >= next_query:
                try:
                    decision = await self._poll_or_hear(hook, spec, memory, heard)
                except AgoraError as error:
                    return TriggerEvent({"status": EVENT_ERROR, "message": str(error), "result": memory.last_seen})
                next_query = time.time() + interval
            if decision is not None:
                memory = decision.memory
                self.log.info("%s", decision.message)
                if decision.outcome is Outcome.DONE:
                    return TriggerEvent(
                        {"status": EVENT_SUCCESS, "message": decision.message, "result": decision.result}
                    )
                if decision.outcome is Outcome.FAIL:
                    return TriggerEvent(
                        {"status": EVENT_FAILURE, "message": decision.message, "result": decision.result}
                    )
                if learned_something(deferred_with, memory):
                    return TriggerEvent(
                        {
                            "status": EVENT_CHECKPOINT,
                            "message": decision.message,
                            "memory": memory.to_json(),
                            "end_time": self.end_time,
                            "result": None,
                        }
                    )
            pause = max(0.0, min(next_query, self.end_time) - time.time())
            if heard is None:
                await asyncio.sleep(pause)
            else:
                await heard.changed(timeout=min(pause, self._exit_grace_left(spec, memory)))
        return self._timeout_event(memory)

    async def _poll_or_hear(
        self, hook: AgoraAsyncHook, spec: WaitSpec, memory: WaitMemory, heard: Subscription | None
    ) -> Decision:
        """One ``query``; when notifications are followed, raced against them. With thousands of
        waits a query queues for Agora's budget for up to N/10 seconds: a notification that
        settles the wait meanwhile ends it at once, and the queued query is given up."""
        if heard is None:
            return await self._poll(hook, spec, memory)
        query = asyncio.ensure_future(self._poll(hook, spec, memory))
        try:
            while True:
                news = asyncio.ensure_future(heard.changed(timeout=max(self.end_time - time.time(), 0.0)))
                await asyncio.wait({query, news}, return_when=asyncio.FIRST_COMPLETED)
                if query.done():
                    news.cancel()
                    return query.result()
                if news.result():
                    settled = decide_on_notifications(spec, memory, heard.look(), time.time())
                    if settled is not None and settled.outcome is not Outcome.WAIT:
                        return settled
                elif time.time() >= self.end_time:
                    return await query
        finally:
            if not query.done():
                query.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await query

    @staticmethod
    def _exit_grace_left(spec: WaitSpec, memory: WaitMemory) -> float:
        """After a normal exit without files, wake when the wait for 'uploaded' (31) runs out."""
        if memory.exit_seen_at is None:
            return float("inf")
        return max(memory.exit_seen_at + spec.exit_files_grace_period - time.time(), 0.0) + 0.01

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Exactly one event. Nothing catches BaseException around the yield: cancellation and
        # generator close must pass through untouched.
        yield await self._decide()
