"""The deferred wait when its connection receives Agora's notifications: notifications first, ``query``
as the backstop, and never a query Agora did not need to answer.

Real parts: the session's ``redis-server`` (notifications, the shared reader and the account's request
budget all live in it), the simulator on loopback, the real sensor deferring into the real trigger.
The test acts at the moments it means to through two probes inside the trigger: when the wait rests
(it waits for news or for its next query) and when notifications settle it. Counting Agora's queries
is then exact, never a matter of how long the test waited.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip(
    "redis", reason="notifications and the shared request budget need the redis extra (airflow-provider-agora[redis])"
)

from airflow_provider_agora._client import shared_budget as _shared_budget
from airflow_provider_agora._compat import TaskDeferred
from airflow_provider_agora._ncs import reader as _notification_reader
from airflow_provider_agora._waiting import Decision, Outcome, WaitMemory, WaitSpec, decide_on_notifications
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.notifications import Notification, parse_notification
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.triggers import agora as trigger_module
from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger
from tests.support import CUSTOMER_ID, FAST_RETRIES, connection_json
from tests.unit.conftest import NCS_SECRET, REDIS_CONN_ID, Ncs

TIMEOUT = 30.0  # a safety net for a test that would otherwise hang, never what a test waits for
CNAME = "room1"
UID = 4242


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def agora(ncs: Ncs, simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AgoraSimulator]:
    """``agora_default`` pointing at the simulator and receiving notifications (``ncs_secret`` and
    ``redis_conn_id``), so its waits follow them and its requests share the budget in Redis.

    The process-wide budgets are dropped before and after: one left over from another test may be
    in its fallback mode (Redis stopped there), and these tests need the one in this Redis.
    """
    ncs.connect(NCS_SECRET)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID)
    )
    _shared_budget.close_shared_budgets()
    try:
        yield simulator
    finally:
        await AgoraAsyncHook.close_shared_clients()
        for reader in list(_notification_reader._readers.get(asyncio.get_running_loop(), {}).values()):
            if reader._task is not None:
                await asyncio.wait_for(reader._task, TIMEOUT)  # ends within one XREAD once no wait is left
        _shared_budget.close_shared_budgets()


class WaitProbe:
    """What the trigger is doing, told from inside it: each time its wait rests (it has acted on
    everything it knew and waits for news or its next query) and once notifications settle it."""

    def __init__(self) -> None:
        self.rests = 0
        self._rested: dict[int, asyncio.Event] = {}
        self.settled = asyncio.Event()

    def _rest_number(self, number: int) -> asyncio.Event:
        return self._rested.setdefault(number, asyncio.Event())

    def rested(self) -> None:
        self.rests += 1
        self._rest_number(self.rests).set()

    async def rest(self, number: int) -> None:
        """Until the wait has rested ``number`` times; the timeout only bounds a failing test."""
        await asyncio.wait_for(self._rest_number(number).wait(), TIMEOUT)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> WaitProbe:
    """Probes around the trigger's own functions; they call through and change nothing.

    The wait rests right after asking how long the exit grace period has left (the argument of its
    wait for news), and synchronously from there: when the test hears of it, the wait is waiting.
    """
    watched = WaitProbe()
    exit_grace_left = AgoraRecordingQueryTrigger._exit_grace_left
    decide = trigger_module.decide_on_notifications

    def resting(spec: WaitSpec, memory: WaitMemory) -> float:
        watched.rested()
        return exit_grace_left(spec, memory)

    def deciding(*args: Any) -> Decision | None:
        decision = decide(*args)
        if decision is not None and decision.outcome is not Outcome.WAIT:
            watched.settled.set()
        return decision

    monkeypatch.setattr(AgoraRecordingQueryTrigger, "_exit_grace_left", staticmethod(resting))
    monkeypatch.setattr(trigger_module, "decide_on_notifications", deciding)
    return watched


# -- helpers -------------------------------------------------------------------------------------


def deferred_wait() -> tuple[dict[str, str], AgoraRecordingQueryTrigger]:
    """A recording in progress with its first file, and the trigger its deferrable sensor defers to.

    The sensor pokes once (it sees status 5 and the file) and hands that to the trigger, so the
    trigger's own queries learn nothing new: no checkpoint interrupts the wait. Queries are 10
    minutes apart, as a DAG that relies on notifications would set them.
    """
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(CNAME, UID)["resourceId"]
    sid = hook.start(
        resource_id,
        CNAME,
        UID,
        recording_mode="mix",
        client_request={"recordingFileConfig": {"avFileType": ["hls", "mp4"]}},
    )["sid"]
    recording = {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}
    running = AgoraRecordingQuerySensor(task_id="running", **recording, target_status=5, poke_interval=0.05, timeout=30)
    running.execute({})
    sensor = AgoraRecordingQuerySensor(
        task_id="wait", **recording, deferrable=True, poke_interval=600, notification_poll_interval=600, timeout=3600
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, AgoraRecordingQueryTrigger)
    return recording, trigger


async def only_event(trigger: AgoraRecordingQueryTrigger) -> dict[str, Any]:
    (event,) = [event.payload async for event in trigger.run()]
    return event


def uploaded(ncs: Ncs, sid: str) -> Notification:
    """Agora's 31 ``uploaded`` with the recording's final files, the MP4 (which ``query`` never lists) too."""
    files = [
        {
            "fileName": f"{sid}_{CNAME}{suffix}",
            "trackType": "audio_and_video",
            "uid": "0",
            "mixedAllUser": True,
            "isPlayable": True,
            "sliceStartTime": 1_700_000_000_000,
        }
        for suffix in (".m3u8", "_0.mp4")
    ]
    return ncs.notification(sid, 31, cname=CNAME, files=files)


def error_notification(sid: str, error_level: int) -> Notification:
    """Agora's event 1 ``cloud_recording_error`` at ``error_level`` (5 is fatal)."""
    body = {
        "noticeId": f"error-{error_level}-{sid}",
        "productId": 3,
        "eventType": 1,
        "notifyMs": int(time.time() * 1000),
        "payload": {
            "cname": CNAME,
            "uid": str(UID),
            "sid": sid,
            "sequence": 1,
            "details": {
                "msgName": "cloud_recording_error",
                "module": 0,
                "errorLevel": error_level,
                "errorCode": 3,
                "stat": 0,
                "errorMsg": "warning to connect remote server",
            },
        },
    }
    return parse_notification(json.dumps(body).encode())


def queries(simulator: AgoraSimulator) -> list[str]:
    """The paths of the ``query`` requests Agora answered, in order."""
    return [record.path for record in simulator.request_log if record.path.endswith("/query")]


class FullBudget:
    """The account's request budget in Redis with every place taken by requests that never end,
    as when thousands of waits share it: a poll then queues, in order of arrival."""

    def __init__(self, ncs: Ncs) -> None:
        self.client = ncs.client
        self.window, self.queue = _shared_budget._keys(CUSTOMER_ID)[:2]
        seconds, microseconds = self.client.time()
        never = seconds * 1000 + microseconds // 1000 + 3_600_000  # frees in an hour, in Redis's ms
        limit = AgoraHook().settings.max_requests_per_second
        self.client.zadd(self.window, {f"elsewhere-{n}": never for n in range(limit)})

    def queued(self) -> int:
        return int(self.client.zcard(self.queue))

    def free_one_place(self) -> None:
        """One place, never two: whatever is queued goes out one by one, first come first served."""
        self.client.zrem(self.window, "elsewhere-0")


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the event loop; the deadline only bounds a failing test."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        await asyncio.sleep(0.02)  # polling Redis's queue, with a deadline


async def queries_until_uploaded(
    agora: AgoraSimulator, ncs: Ncs, probe: WaitProbe, error_level: int
) -> tuple[str, str, int]:
    """A deferred wait gets an error notification at ``error_level`` while it rests after its first
    query, then the 31: its event's outcome, and how many queries Agora answered for the trigger."""
    recording, trigger = deferred_wait()
    store = ncs.store(NCS_SECRET)
    agora.clear_request_log()  # the sensor's pokes are not the trigger's
    waiting = asyncio.ensure_future(only_event(trigger))
    try:
        await probe.rest(1)  # its first query answered; the next one is due in 600 s
        store.add(error_notification(recording["sid"], error_level))
        await probe.rest(2)  # it has acted on the error: a query at once, if it asked for one
        store.add(uploaded(ncs, recording["sid"]))
        event = await asyncio.wait_for(waiting, TIMEOUT)
    finally:
        waiting.cancel()
    return event["status"], event["result"]["ended_by"], len(queries(agora))


# -- a notification ends a wait whose query is still queued -------------------------------------


async def test_an_uploaded_notification_ends_a_wait_whose_query_is_queued_and_that_query_never_reaches_agora(
    agora: AgoraSimulator, ncs: Ncs, probe: WaitProbe
) -> None:
    recording, trigger = deferred_wait()
    sid = recording["sid"]
    agora.clear_request_log()
    budget = FullBudget(ncs)
    waiting = asyncio.ensure_future(only_event(trigger))
    try:
        await until(lambda: budget.queued() == 1, "query of the wait queued for the budget")
        notification = uploaded(ncs, sid)
        ncs.store(NCS_SECRET).add(notification)
        await asyncio.wait_for(probe.settled.wait(), TIMEOUT)  # the 31 settled the wait
        # Room for one request, then another wait's poll: it is served behind any query still
        # queued, so once it is answered, Agora has seen every query the settled wait would send.
        budget.free_one_place()
        await asyncio.wait_for(AgoraAsyncHook().query(recording["resource_id"], sid, recording_mode="mix"), TIMEOUT)
        sent = len(queries(agora))
        ended, _ = await asyncio.wait({waiting}, timeout=TIMEOUT)  # the timeout only bounds a failing test
    finally:
        waiting.cancel()

    event: dict[str, Any] = waiting.result() if ended else {"status": "no event: the wait went on", "result": {}}
    result: dict[str, Any] = event["result"]
    assert (
        event["status"],
        result.get("ended_by"),
        result.get("notification", {}).get("notice_id"),
        [item["fileName"] for item in result.get("files", [])],
        sent,
    ) == ("success", "notification", notification.notice_id, [f"{sid}_{CNAME}.m3u8", f"{sid}_{CNAME}_0.mp4"], 1)


# -- only a fatal error asks for a query at once ------------------------------------------------


async def test_a_non_fatal_error_notification_leaves_the_next_query_to_its_interval(
    agora: AgoraSimulator, ncs: Ncs, probe: WaitProbe
) -> None:
    outcome = await queries_until_uploaded(agora, ncs, probe, error_level=3)

    assert outcome == ("success", "notification", 1)


async def test_a_fatal_error_notification_makes_the_wait_query_agora_at_once(
    agora: AgoraSimulator, ncs: Ncs, probe: WaitProbe
) -> None:
    outcome = await queries_until_uploaded(agora, ncs, probe, error_level=5)

    assert outcome == ("success", "notification", 2)


@pytest.mark.parametrize(("error_level", "query_now"), [(1, False), (2, False), (3, False), (4, False), (5, True)])
def test_only_a_fatal_error_level_asks_for_a_query_at_once(error_level: int, query_now: bool) -> None:
    spec = WaitSpec.checked(resource_id="rid", sid="s" * 32, recording_mode="mix")
    decision = decide_on_notifications(spec, WaitMemory(), [error_notification("s" * 32, error_level)], now=1.0)

    assert decision is not None
    assert (decision.outcome, decision.query_now) == (Outcome.WAIT, query_now)
