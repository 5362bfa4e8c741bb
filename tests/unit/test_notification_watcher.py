"""``AgoraRecordingNotificationTrigger``, the asset watcher, against a real redis-server.

Each test creates the watchers' consumer group before it stores anything (a watcher's own group
starts at the stream's end), so the watcher reads exactly what the test stored, in order. "No
event for X" is shown by the next event being the one for a recording stored after X.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from airflow_provider_agora.exceptions import AgoraConfigurationError
from airflow_provider_agora.triggers import notifications as watcher_module
from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP, AgoraRecordingNotificationTrigger
from tests.support import connection_json, running_redis
from tests.unit.conftest import FILES, NCS_SECRET, OTHER_PROJECT_SECRET, PREVIOUS_SECRET, Ncs

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


class _Signal(logging.Handler):
    """Sets an asyncio event when a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_a_watcher_rides_out_a_redis_outage_with_one_warning_and_one_recovery_line(
    watch: Watch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short outage of a Redis of its own (the session's server is shared by every test); the
    integration test holds Redis down for a minute."""
    caplog.set_level(logging.INFO, logger=watcher_module.__name__)
    down, back = _Signal("Cannot read Agora's notifications"), _Signal("Redis answers again")
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
def _signalling(*signals: _Signal) -> Iterator[None]:
    for signal in signals:
        watcher_module.log.addHandler(signal)
    try:
        yield
    finally:
        for signal in signals:
            watcher_module.log.removeHandler(signal)
