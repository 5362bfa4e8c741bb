"""``AgoraRecordingNotificationTrigger``, the asset watcher, against a real redis-server.

Each test creates the watchers' consumer group before it stores anything (a watcher's own group
starts at the stream's end), so the watcher reads exactly what the test stored, in order. "No
event for X" is shown by the next event being the one for a recording stored after X.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

try:
    from airflow.triggers.base import BaseEventTrigger  # noqa: F401  (Airflow 3)
except ImportError:
    pytest.skip("asset watchers (BaseEventTrigger) need Airflow 3", allow_module_level=True)

from airflow_provider_agora._ncs.store import STARTED_TTL_SECONDS
from airflow_provider_agora.exceptions import AgoraConfigurationError
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.simulator import STARTUP_TIMELINE, AgoraSimulator, RequestRecord
from airflow_provider_agora.triggers import notifications as watcher_module
from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP, AgoraRecordingNotificationTrigger
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, LogSignal, connection_json, running_redis
from tests.unit.conftest import FILES, NCS_SECRET, OTHER_PROJECT_SECRET, PREVIOUS_SECRET, REDIS_CONN_ID, Ncs

SID_1 = "38f8e3cfdc474cd56fc1ceba380d7e1a"
SID_2 = "7c1f0c2a9e6b4d3f8a5e2b1c0d9f8e7a"
SID_3 = "0b9e1d2c3a4f5e6d7c8b9a0f1e2d3c4b"
TIMEOUT = 20.0  # a safety net for a test that would otherwise hang, never what a test waits for

Watch = Callable[..., AsyncIterator[Any]]


@pytest.fixture
async def watch() -> AsyncIterator[Watch]:
    """Run watchers as the triggerer does (``run()`` of a trigger); each is closed at the end."""
    running: list[Any] = []  # async generators

    def watching(**kwargs: Any) -> AsyncIterator[Any]:
        events = AgoraRecordingNotificationTrigger(**kwargs).run()
        running.append(events)
        return events

    yield watching
    for events in running:
        await events.aclose()


async def next_sid(events: AsyncIterator[Any]) -> str:
    event = await asyncio.wait_for(events.__anext__(), TIMEOUT)
    return str(event.payload["sid"])


def group_on(ncs: Ncs, *secrets: str) -> None:
    """The watchers' consumer group on these namespaces' streams, from their first entry."""
    for secret in secrets:
        ncs.client.xgroup_create(ncs.keys(secret)["stream"], DEFAULT_CONSUMER_GROUP, id="0", mkstream=True)


async def test_a_recording_fires_once_with_its_files_when_both_31_and_32_arrive(ncs: Ncs, watch: Watch) -> None:
    ncs.connect(NCS_SECRET)
    group_on(ncs, NCS_SECRET)
    store = ncs.store(NCS_SECRET)
    for notification in (ncs.notification(SID_1, 31), ncs.notification(SID_1, 32), ncs.notification(SID_2, 31)):
        store.add(notification)
    events = watch()

    first = await asyncio.wait_for(events.__anext__(), TIMEOUT)

    assert ((first.payload["sid"], first.payload["files"]), await next_sid(events)) == ((SID_1, FILES), SID_2)


async def test_a_redelivered_entry_does_not_fire_again(ncs: Ncs, watch: Watch, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first watcher fires and stops before acknowledging; the second claims the entry."""
    monkeypatch.setattr(watcher_module, "_IDLE_CLAIM_MS", 0)
    ncs.connect(NCS_SECRET)
    group_on(ncs, NCS_SECRET)
    store = ncs.store(NCS_SECRET)
    store.add(ncs.notification(SID_1, 31))
    assert await next_sid(watch()) == SID_1  # suspended at its event: the entry is not acknowledged
    store.add(ncs.notification(SID_2, 31))

    assert await next_sid(watch()) == SID_2


@pytest.mark.parametrize("channels", [["wanted", "also-wanted"], "wanted"], ids=["a list", "one name"])
async def test_only_the_watched_channels_fire(ncs: Ncs, watch: Watch, channels: Any) -> None:
    ncs.connect(NCS_SECRET)
    group_on(ncs, NCS_SECRET)
    store = ncs.store(NCS_SECRET)
    store.add(ncs.notification(SID_1, 31, cname="elsewhere"))
    store.add(ncs.notification(SID_2, 31, cname="wanted"))

    assert await next_sid(watch(channels=channels)) == SID_2


async def test_an_unreadable_entry_is_acknowledged_and_skipped(
    ncs: Ncs, watch: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    ncs.connect(NCS_SECRET)
    group_on(ncs, NCS_SECRET)
    stream = ncs.keys(NCS_SECRET)["stream"]
    ncs.client.xadd(stream, {"sid": SID_1, "notification": "[" * 100_000})
    ncs.client.xadd(stream, {"sid": SID_1, "notification": "{not json"})
    genuine_id = ncs.store(NCS_SECRET).add(ncs.notification(SID_2, 31))
    events = watch()

    sid = await next_sid(events)  # suspended at its event: only the genuine entry is still pending

    pending = [entry["message_id"] for entry in ncs.client.xpending_range(stream, DEFAULT_CONSUMER_GROUP, "-", "+", 10)]
    logged = [record for record in caplog.records if "Skipped an unreadable stored" in record.getMessage()]
    assert (sid, pending, len(logged)) == (SID_2, [genuine_id], 2)


async def test_a_watcher_never_fires_for_another_namespaces_notification(ncs: Ncs, watch: Watch) -> None:
    ncs.connect(NCS_SECRET)
    group_on(ncs, NCS_SECRET, OTHER_PROJECT_SECRET)
    ncs.store(OTHER_PROJECT_SECRET).add(ncs.notification(SID_1, 31, notice_id="notice-1"))  # forged
    genuine = ncs.store(NCS_SECRET)
    genuine.add(ncs.notification(SID_2, 31))
    events = watch()
    first = await next_sid(events)
    genuine.add(ncs.notification(SID_1, 31, notice_id="notice-1"))  # the genuine one, later

    assert (first, await next_sid(events)) == (SID_2, SID_1)


async def test_a_watcher_during_a_rotation_reads_both_secrets_and_fires_once_per_recording(
    ncs: Ncs, watch: Watch
) -> None:
    ncs.connect(NCS_SECRET, PREVIOUS_SECRET)
    group_on(ncs, NCS_SECRET, PREVIOUS_SECRET)
    current, previous = ncs.store(NCS_SECRET), ncs.store(PREVIOUS_SECRET)
    previous.add(ncs.notification(SID_1, 31))
    current.add(ncs.notification(SID_1, 32))
    current.add(ncs.notification(SID_2, 31))
    events = watch()
    first_two = {await next_sid(events), await next_sid(events)}
    previous.add(ncs.notification(SID_3, 31))

    assert (first_two, await next_sid(events)) == ({SID_1, SID_2}, SID_3)


@pytest.mark.parametrize("missing", ["ncs_secret", "redis_conn_id"])
async def test_a_connection_without_what_notifications_need_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, watch: Watch, missing: str
) -> None:
    extra = {"ncs_secret": NCS_SECRET, "redis_conn_id": "agora_ncs_redis"}
    del extra[missing]
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", **extra))
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_NCS_REDIS", "redis://127.0.0.1:9/0")

    with pytest.raises(AgoraConfigurationError, match="needs connection 'agora_default' to have ncs_secret"):
        await watch().__anext__()


async def test_a_watcher_rides_out_a_redis_outage_with_one_warning_and_one_recovery_line(
    watch: Watch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short outage of a Redis of its own (the session's server is shared by every test); the
    integration test holds Redis down for a minute."""
    caplog.set_level(logging.INFO, logger=watcher_module.__name__)
    down, back = LogSignal("Cannot read Agora's notifications"), LogSignal("Redis answers again")
    with running_redis() as server, _signalling(down, back):
        ncs = Ncs(server, monkeypatch)
        try:
            ncs.connect(NCS_SECRET)
            group_on(ncs, NCS_SECRET)
            store = ncs.store(NCS_SECRET)
            store.add(ncs.notification(SID_1, 31))
            events = watch()
            assert await next_sid(events) == SID_1
            following = asyncio.ensure_future(next_sid(events))
            await asyncio.to_thread(server.stop)
            await asyncio.wait_for(down.seen.wait(), TIMEOUT)
            await asyncio.to_thread(server.start)  # empty: the watcher must create its group again
            await asyncio.wait_for(back.seen.wait(), TIMEOUT)
            store.add(ncs.notification(SID_2, 31))
            after = await asyncio.wait_for(following, TIMEOUT)
        finally:
            ncs.close()

    warnings = [r for r in caplog.records if "Cannot read Agora's notifications" in r.getMessage()]
    recoveries = [r for r in caplog.records if "Redis answers again" in r.getMessage()]
    assert (after, len(warnings), len(recoveries)) == (SID_2, 1, 1)


@contextlib.contextmanager
def _signalling(*signals: LogSignal) -> Iterator[None]:
    for signal in signals:
        watcher_module.log.addHandler(signal)
    try:
        yield
    finally:
        for signal in signals:
            watcher_module.log.removeHandler(signal)


# -- the backstop: asking Agora about recordings whose ending notification never arrived ----------
#
# The simulator runs ten times faster than real time: a stopped recording shows 6, 7 and 8 for
# 0.3 s, then answers 404. Each test shows "no event for X" by the next event being a sentinel
# recording's that became due after X would have.

BACKSTOP_DELAY = 0.5  # seconds after the last notification heard of a recording
BACKSTOP_INTERVAL = 0.1
NOT_FOUND_GRACE = 0.2  # Agora's fail-over window (90 s), shortened
NO_RESOURCE_ID = "no resourceId known"


@dataclass(frozen=True)
class Recording:
    resource_id: str
    sid: str
    cname: str
    started_at: float  # the simulator's clock


def start_recording(simulator: AgoraSimulator, cname: str = "room1") -> Recording:
    """A recording started as the start operator starts one: through ``AgoraHook.start``."""
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(cname, 4242)["resourceId"]
    sid = hook.start(
        resource_id, cname, 4242, recording_mode="mix", client_request={"recordingFileConfig": {"avFileType": ["hls"]}}
    )["sid"]
    return Recording(resource_id, sid, cname, simulator.simulated_time())


def stop_recording(simulator: AgoraSimulator, recording: Recording) -> None:
    """Stop once the first file is uploaded: Agora answers a stop without files with 435."""
    first_file_at = recording.started_at + STARTUP_TIMELINE[-1][0]
    while simulator.simulated_time() < first_file_at:
        time.sleep(0.01)  # waiting on the simulator's clock, which always reaches it
    AgoraHook(retry_policy=FAST_RETRIES).stop(
        recording.resource_id, recording.sid, recording.cname, 4242, recording_mode="mix"
    )


def queries_of(simulator: AgoraSimulator, sid: str) -> list[RequestRecord]:
    return [record for record in simulator.request_log if record.path.endswith(f"/sid/{sid}/mode/mix/query")]


def ended_by_as_answered(simulator: AgoraSimulator, sid: str) -> str:
    """What the backstop must have decided from Agora's last answer about ``sid``."""
    return "status" if queries_of(simulator, sid)[-1].status == 200 else "not_found"


class Watching:
    """One watcher with a quick backstop, run as the triggerer runs it, and ways to wait on it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("backstop_delay", BACKSTOP_DELAY)
        kwargs.setdefault("backstop_interval", BACKSTOP_INTERVAL)
        self.trigger = AgoraRecordingNotificationTrigger(**kwargs)
        self.events: AsyncGenerator[Any, None] = self.trigger.run()  # type: ignore[assignment]
        self._next: asyncio.Future[Any] | None = None

    def _following(self) -> asyncio.Future[Any]:
        if self._next is None:
            self._next = asyncio.ensure_future(self.events.__anext__())
        return self._next

    async def next_payload(self) -> dict[str, Any]:
        event = await asyncio.wait_for(asyncio.shield(self._following()), TIMEOUT)
        self._next = None
        return dict(event.payload)

    async def rounds_pass(self, count: int) -> None:
        """Drive the watcher until ``count`` more backstop rounds are done, or an event comes."""
        following = self._following()
        target = self.trigger.backstop_rounds + count
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while self.trigger.backstop_rounds < target and not following.done():
            assert asyncio.get_running_loop().time() < deadline, "the watcher's backstop rounds stopped"
            await asyncio.sleep(0.01)  # polling the watcher's round counter, with a deadline

    def fired_meanwhile(self) -> bool:
        return self._next is not None and self._next.done()

    async def close(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._next
        await self.events.aclose()


class Bench:
    """Redis with the watchers' group, a simulator, and ``agora_default`` pointing at both."""

    def __init__(self, ncs: Ncs, simulator: AgoraSimulator) -> None:
        self.ncs = ncs
        self.simulator = simulator
        self.store = ncs.store(NCS_SECRET)
        self.watchers: list[Watching] = []

    def watch(self, **kwargs: Any) -> Watching:
        watching = Watching(**kwargs)
        self.watchers.append(watching)
        return watching

    def hear(self, sid: str, event_type: int = 40) -> None:
        """Agora's notification of ``sid``, as the receiver stores it."""
        self.store.add(self.ncs.notification(sid, event_type))


async def _bench(ncs: Ncs, simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bench]:
    ncs.connect(NCS_SECRET)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID)
    )
    monkeypatch.setattr(watcher_module, "_NOT_FOUND_GRACE_SECONDS", NOT_FOUND_GRACE)
    group_on(ncs, NCS_SECRET)
    bench = Bench(ncs, simulator)
    try:
        yield bench
    finally:
        for watching in bench.watchers:
            await watching.close()
        await AgoraAsyncHook.close_shared_clients()


@pytest.fixture
async def bench(ncs: Ncs, simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bench]:
    async for ready in _bench(ncs, simulator, monkeypatch):
        yield ready


@pytest.fixture
async def slow_bench(ncs: Ncs, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bench]:
    """As ``bench``, with the simulator at real speed: an abnormal exit shows status 20 for 5 s."""
    with AgoraSimulator(customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,)).start() as slow:
        async for ready in _bench(ncs, slow, monkeypatch):
            yield ready


async def test_a_recording_whose_ending_notification_is_lost_fires_once_from_agoras_answer(bench: Bench) -> None:
    recording = await asyncio.to_thread(start_recording, bench.simulator)
    bench.hear(recording.sid, 40)
    await asyncio.to_thread(stop_recording, bench.simulator, recording)  # its 31 and 11 are lost: nothing is stored
    watching = bench.watch()

    payload = await watching.next_payload()
    bench.hear(recording.sid, 31)  # the ending notification after all, late: no second event
    bench.hear(SID_2, 31)
    sentinel = await watching.next_payload()

    expected = {
        "resource_id": recording.resource_id,
        "sid": recording.sid,
        "cname": recording.cname,
        "recording_mode": "mix",
        "ended_by": ended_by_as_answered(bench.simulator, recording.sid),
        "notification": None,
    }
    assert ({key: payload[key] for key in expected}, sentinel["sid"]) == (expected, SID_2)


async def test_a_recording_only_registered_at_its_start_is_asked_about_too(bench: Bench) -> None:
    """None of its notifications arrived: the start told the running watchers about it."""
    watching = bench.watch()
    await watching.rounds_pass(1)  # the watcher's group is known to the start registration now
    recording = await asyncio.to_thread(start_recording, bench.simulator)
    await asyncio.to_thread(stop_recording, bench.simulator, recording)

    payload = await watching.next_payload()

    expected = (recording.sid, ended_by_as_answered(bench.simulator, recording.sid))
    assert (payload["sid"], payload["ended_by"]) == expected


async def test_a_recording_whose_ending_notification_arrives_fires_once_and_agora_is_never_asked(
    bench: Bench,
) -> None:
    first = await asyncio.to_thread(start_recording, bench.simulator)
    bench.hear(first.sid, 40)
    await asyncio.to_thread(stop_recording, bench.simulator, first)
    bench.hear(first.sid, 31)
    watching = bench.watch()
    by_notification = await watching.next_payload()
    second = await asyncio.to_thread(start_recording, bench.simulator, "room2")  # the sentinel: its ending is lost
    bench.hear(second.sid, 40)
    await asyncio.to_thread(stop_recording, bench.simulator, second)

    by_backstop = await watching.next_payload()
    await watching.rounds_pass(2)

    assert (
        (by_notification["sid"], by_notification["ended_by"]),
        (by_backstop["sid"], by_backstop["ended_by"]),
        watching.fired_meanwhile(),
        queries_of(bench.simulator, first.sid),
    ) == ((first.sid, "notification"), (second.sid, ended_by_as_answered(bench.simulator, second.sid)), False, [])


async def test_a_recording_nobody_registered_is_dropped_with_one_line_and_agora_is_never_asked(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=watcher_module.__name__)
    dropped = LogSignal(NO_RESOURCE_ID)
    with _signalling(dropped):
        watching = bench.watch()
        bench.hear(SID_1, 40)  # started elsewhere: nobody recorded its resourceId
        following = asyncio.ensure_future(watching.rounds_pass(10_000))
        await asyncio.wait_for(dropped.seen.wait(), TIMEOUT)
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        bench.hear(SID_1, 41)  # heard of again: still nothing to ask, nothing more to say
        sentinel = await asyncio.to_thread(start_recording, bench.simulator)
        bench.hear(sentinel.sid, 40)
        await asyncio.to_thread(stop_recording, bench.simulator, sentinel)
        payload = await watching.next_payload()

    lines = [record.getMessage() for record in caplog.records if NO_RESOURCE_ID in record.getMessage()]
    assert (payload["sid"], len(lines), SID_1 in lines[0], queries_of(bench.simulator, SID_1)) == (
        sentinel.sid,
        1,
        True,
        [],
    )


async def test_an_abnormal_exit_gives_no_event(slow_bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    failed = LogSignal("reached failure status 20")
    with _signalling(failed):
        doomed = await asyncio.to_thread(start_recording, slow_bench.simulator)
        slow_bench.hear(doomed.sid, 40)
        slow_bench.simulator.faults.abnormal_exit(doomed.sid)  # status 20 for 5 s; its 1 and 11 are lost
        watching = slow_bench.watch()
        asking = asyncio.ensure_future(watching.rounds_pass(10_000))
        await asyncio.wait_for(failed.seen.wait(), TIMEOUT)
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking
        sentinel = await asyncio.to_thread(start_recording, slow_bench.simulator, "room2")
        slow_bench.hear(sentinel.sid, 40)
        await asyncio.to_thread(stop_recording, slow_bench.simulator, sentinel)
        payload = await watching.next_payload()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and doomed.sid in r.getMessage()]
    answers = [record.status for record in queries_of(slow_bench.simulator, doomed.sid)]
    assert (payload["sid"], len(warnings), answers) == (sentinel.sid, 1, [200])


async def test_a_recording_a_notification_says_failed_is_never_asked_about(bench: Bench) -> None:
    doomed = await asyncio.to_thread(start_recording, bench.simulator)
    bench.hear(doomed.sid, 40)
    bench.store.add(replace(bench.ncs.notification(doomed.sid, 11), exit_status=1))  # exited abnormally
    sentinel = await asyncio.to_thread(start_recording, bench.simulator, "room2")
    bench.hear(sentinel.sid, 40)
    await asyncio.to_thread(stop_recording, bench.simulator, sentinel)
    watching = bench.watch()

    payload = await watching.next_payload()

    assert (payload["sid"], queries_of(bench.simulator, doomed.sid)) == (sentinel.sid, [])


async def test_agora_trouble_is_a_warning_and_the_recording_is_asked_about_again(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    recording = await asyncio.to_thread(start_recording, bench.simulator)
    bench.hear(recording.sid, 40)
    await asyncio.to_thread(stop_recording, bench.simulator, recording)
    bench.simulator.faults.fail_next(1, status=400, operation="query")  # an error no retry would help
    watching = bench.watch()

    payload = await watching.next_payload()

    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Cannot ask Agora about")]
    answers = [record.status for record in queries_of(bench.simulator, recording.sid)]
    assert (payload["sid"], len(warnings), answers[0]) == (recording.sid, 1, 400)


def test_a_start_records_what_a_query_needs_in_every_namespace_and_no_secret(
    ncs: Ncs, simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ncs.connect(NCS_SECRET, PREVIOUS_SECRET)  # a rotation: both namespaces
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT",
        connection_json(
            simulator.url, ncs_secret=NCS_SECRET, ncs_previous_secret=PREVIOUS_SECRET, redis_conn_id=REDIS_CONN_ID
        ),
    )
    recording = start_recording(simulator)

    documents = [
        ncs.client.get(ncs.keys(secret)["started"] + recording.sid) for secret in (NCS_SECRET, PREVIOUS_SECRET)
    ]
    lifetimes = [
        ncs.client.pttl(ncs.keys(secret)["started"] + recording.sid) for secret in (NCS_SECRET, PREVIOUS_SECRET)
    ]
    registration = json.loads(documents[0])
    del registration["started_ms"]
    secrets = [secret for secret in (CUSTOMER_SECRET, NCS_SECRET, PREVIOUS_SECRET) if secret in documents[0]]
    assert (registration, documents[0] == documents[1], secrets) == (
        {
            "resource_id": recording.resource_id,
            "recording_mode": "mix",
            "cname": "room1",
            "uid": "4242",
            "app_id": APP_ID,
        },
        True,
        [],
    )
    assert all(0 < lifetime <= STARTED_TTL_SECONDS * 1000 for lifetime in lifetimes)


def test_a_start_succeeds_with_a_warning_when_redis_cannot_record_it(
    simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID)
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", "redis://127.0.0.1:9/0")  # nothing listens

    recording = start_recording(simulator)

    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Cannot record recording sid=")]
    assert (len(recording.sid), len(warnings), recording.sid in warnings[0]) == (32, 1, True)


def test_the_backstop_settings_survive_serialisation() -> None:
    trigger = AgoraRecordingNotificationTrigger(backstop=False, backstop_delay=120, backstop_interval=5)
    path, kwargs = trigger.serialize()

    again = AgoraRecordingNotificationTrigger(**kwargs)

    assert (path, again.serialize()[1]) == (
        "airflow_provider_agora.triggers.notifications.AgoraRecordingNotificationTrigger",
        {**kwargs, "backstop": False, "backstop_delay": 120.0, "backstop_interval": 5.0},
    )
