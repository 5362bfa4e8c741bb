"""``AgoraRecordingQueryTrigger``: the deferrable half of ``AgoraRecordingQuerySensor``.

It decides with the same functions as poke mode (``airflow_provider_agora._waiting``), so the two
modes cannot disagree; it only adds the waiting on the triggerer's event loop. Its kwargs are JSON
primitives and name the connection, never a secret: the wait's parameters as ``WaitSpec`` declares
them, plus ``poll_interval``, ``end_time`` and ``memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow.triggers.base import BaseTrigger, TriggerEvent

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
    from airflow_provider_agora._ncs.reader import Subscription

__all__ = ["AgoraRecordingQueryTrigger"]

#: The payload's "status": what ``execute_complete`` does with it.
EventStatus = Literal["success", "failure", "timeout", "error", "checkpoint"]
EVENT_SUCCESS: EventStatus = "success"  # return event["result"] as the XCom value
EVENT_FAILURE: EventStatus = "failure"  # fail without retry (failure status, persistent 404, gateway 404)
EVENT_TIMEOUT: EventStatus = "timeout"  # AirflowSensorTimeout
EVENT_ERROR: EventStatus = "error"  # an error the wait has no rule for (bad credentials, unreadable answer)
EVENT_CHECKPOINT: EventStatus = "checkpoint"  # the wait goes on: store event["memory"] and defer again
EVENT_STATUSES: tuple[EventStatus, ...] = get_args(EventStatus)
_ENDS = {Outcome.DONE: EVENT_SUCCESS, Outcome.FAIL: EVENT_FAILURE}


def _event(status: EventStatus, message: str, result: RecordingResult | None, **more: object) -> TriggerEvent:
    return TriggerEvent({"status": status, "message": message, "result": result, **more})


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


def _due(next_query: float, memory: WaitMemory) -> float:
    """When the next query may go: at its interval, and never before Agora's Retry-After."""
    return max(next_query, memory.not_before or 0.0)


class AgoraRecordingQueryTrigger(BaseTrigger):
    """Poll Agora's ``query`` until the wait is decided or ``end_time`` (epoch seconds) passes.

    :param parameters: the wait's parameters, by the names and with the defaults ``WaitSpec``
        declares (``resource_id`` and ``sid`` are required); checked when the trigger runs.
    :param poll_interval: seconds between queries (the sensor's ``poke_interval``).
    :param end_time: the sensor's deadline, in epoch seconds.
    :param memory: what the wait knew when it deferred (``WaitMemory.to_json``).
    """

    def __init__(
        self,
        *,
        end_time: float,
        memory: Mapping[str, object] | None = None,
        poll_interval: float = 60.0,
        **parameters: Any,
    ) -> None:
        super().__init__()
        #: The wait's parameters as given, unchecked (a row of an older release included).
        self.parameters = WaitSpec.with_defaults(parameters)
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.memory = dict(memory or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        parameters = {
            name: list(value) if isinstance(value, tuple) else value for name, value in self.parameters.items()
        }
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**parameters, "poll_interval": self.poll_interval, "end_time": self.end_time, "memory": self.memory},
        )

    async def _poll(self, hook: AgoraAsyncHook, spec: WaitSpec, memory: WaitMemory) -> Decision:
        try:
            body = await hook.query(spec.resource_id, spec.sid, recording_mode=spec.recording_mode, app_id=spec.app_id)
        except AgoraError as error:
            return decide_on_error(spec, memory, error, time.time())
        return decide_on_answer(spec, memory, body)

    def _timeout_event(self, spec: WaitSpec, memory: WaitMemory) -> TriggerEvent:
        last_status = memory.last_seen.get("status") if memory.last_seen else None
        return _event(
            EVENT_TIMEOUT,
            f"Sensor has timed out: recording sid={spec.sid} did not reach status "
            f"{describe_status(spec.target_status)} before the sensor's timeout; last status seen: "
            f"{describe_status(last_status)}.",
            memory.last_seen,
        )

    def _event_for(self, decision: Decision, deferred_with: WaitMemory) -> TriggerEvent | None:
        """The event that ends this run of the trigger, if the decision calls for one: the wait is
        decided, or it learned what a restarted triggerer would forget (a checkpoint)."""
        if decision.outcome in _ENDS:
            return _event(_ENDS[decision.outcome], decision.message, decision.result)
        if learned_something(deferred_with, decision.memory):
            return _event(
                EVENT_CHECKPOINT,
                decision.message,
                None,
                memory=decision.memory.to_json(),
                end_time=self.end_time,
            )
        return None

    async def _decide(self) -> TriggerEvent:
        """Run the wait to its end; every way out is one event (the caller yields it)."""
        try:
            spec = WaitSpec.checked(**self.parameters)
            hook = AgoraAsyncHook(spec.agora_conn_id)
            await hook.get_settings()
        except AgoraError as error:
            return _event(EVENT_ERROR, str(error), None)
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
        """Notifications first (when the connection receives them), ``query`` as the backstop.

        Never a query before the time Agora's last ``Retry-After`` set (kept in the memory, also
        across deferrals): a fatal error's "query at once" waits for it too."""
        interval = self._interval(spec, heard)
        next_query = 0.0  # query once at once: notifications may never come
        while time.time() < self.end_time:
            decision = self._look(spec, memory, heard)
            if decision is not None:
                memory = decision.memory
                if decision.query_now:
                    next_query = 0.0
            if (decision is None or decision.outcome is Outcome.WAIT) and time.time() >= _due(next_query, memory):
                try:
                    decision = await self._poll_or_hear(hook, spec, memory, heard)
                except AgoraError as error:
                    return _event(EVENT_ERROR, str(error), memory.last_seen)
                next_query = time.time() + interval
            if decision is not None:
                memory = decision.memory
                self.log.info("%s", decision.message)
                event = self._event_for(decision, deferred_with)
                if event is not None:
                    return event
            await self._rest(spec, memory, heard, until=_due(next_query, memory))
        return self._timeout_event(spec, memory)

    def _interval(self, spec: WaitSpec, heard: Subscription | None) -> float:
        """Seconds between queries: ``notification_poll_interval`` when notifications are followed."""
        if heard is not None and spec.notification_poll_interval is not None:
            return spec.notification_poll_interval
        return self.poll_interval

    @staticmethod
    def _look(spec: WaitSpec, memory: WaitMemory, heard: Subscription | None) -> Decision | None:
        """What the recording's notifications so far decide, if they are followed."""
        if heard is None:
            return None
        return decide_on_notifications(spec, memory, heard.look(), time.time())

    async def _rest(self, spec: WaitSpec, memory: WaitMemory, heard: Subscription | None, *, until: float) -> None:
        """Until the next query is due, the deadline passes, or (when followed) a notification comes."""
        pause = max(0.0, min(until, self.end_time) - time.time())
        if heard is None:
            await asyncio.sleep(pause)
        else:
            await heard.changed(timeout=min(pause, self._exit_grace_left(spec, memory)))

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
