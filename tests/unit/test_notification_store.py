"""The notification store and the readers of deferred and poke-mode waits, against a real redis-server.

Each namespace is that of one project's NCS secret: a notification verified with another project's
secret must neither reach this connection's waits nor suppress its genuine notifications.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from airflow_provider_agora._ncs import reader as _notification_reader
from airflow_provider_agora._ncs.reader import Subscription
from airflow_provider_agora._ncs.store import (
    DEDUPE_WINDOW_SECONDS,
    FUTURE_SKEW_SECONDS,
    MARK_TTL_SECONDS,
)
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from tests.unit.conftest import FILES, NCS_SECRET, OTHER_PROJECT_SECRET, PREVIOUS_SECRET, Ncs

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
OTHER_SID = "7c1f0c2a9e6b4d3f8a5e2b1c0d9f8e7a"
# Stream entries no receiver writes: JSON nested past any limit, not JSON, no notification at all.
POISON = {
    "deeply nested": {"notification": "[" * 100_000},
    "not JSON": {"notification": "{not json"},
    "no notification field": {},
}
TIMEOUT = 20.0  # a safety net for a test that would otherwise hang, never what a test waits for


def skipped(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "Skipped an unreadable stored" in record.getMessage()]


# -- storing ------------------------------------------------------------------------------------


def test_a_notification_is_stored_once(ncs: Ncs) -> None:
    uploaded = ncs.notification(SID, 31)

    stream_id = ncs.store(NCS_SECRET).add(uploaded)

    assert [entry_id for entry_id, _ in ncs.client.xrange(ncs.keys(NCS_SECRET)["stream"])] == [stream_id]
    assert ncs.store(NCS_SECRET).for_sid(SID) == [uploaded]


@pytest.mark.parametrize("duplicate", ["same noticeId", "same sid and ending event"])
def test_a_duplicate_is_not_stored(ncs: Ncs, duplicate: str) -> None:
    store = ncs.store(NCS_SECRET)
    store.add(ncs.notification(SID, 31, notice_id="notice-first"))
    again = ncs.notification(SID, 31, notice_id="notice-first" if duplicate == "same noticeId" else "notice-resent")

    assert store.add(again) is None


def test_a_forged_notification_in_another_namespace_does_not_suppress_the_genuine_one(ncs: Ncs) -> None:
    forged = ncs.notification(SID, 31, notice_id="notice-1", files=[{**FILES[0], "fileName": "forged.m3u8"}])
    ncs.store(OTHER_PROJECT_SECRET).add(forged)

    assert ncs.store(NCS_SECRET).add(ncs.notification(SID, 31, notice_id="notice-1")) is not None


def test_the_poke_mode_read_returns_only_its_namespaces_notifications(ncs: Ncs) -> None:
    ncs.connect(NCS_SECRET)
    genuine = ncs.notification(SID, 40)
    ncs.store(OTHER_PROJECT_SECRET).add(ncs.notification(SID, 31))
    ncs.store(NCS_SECRET).add(genuine)

    assert AgoraHook().notifications(SID) == [genuine]


def test_the_poke_mode_read_merges_both_namespaces_of_a_rotation_oldest_first_each_notice_once(ncs: Ncs) -> None:
    ncs.connect(NCS_SECRET, PREVIOUS_SECRET)
    started = ncs.notification(SID, 40)  # signed with the previous secret, before the rotation
    uploaded = ncs.notification(SID, 31)  # signed with the new one
    ncs.store(PREVIOUS_SECRET).add(started)
    ncs.store(NCS_SECRET).add(uploaded)
    ncs.store(PREVIOUS_SECRET).add(uploaded)  # Agora resent it, signed with the other secret

    assert [n.notice_id for n in AgoraHook().notifications(SID)] == [started.notice_id, uploaded.notice_id]


def test_a_notification_without_a_sid_goes_to_the_stream_only(ncs: Ncs) -> None:
    sidless = ncs.notification(None, 40)
    keys = ncs.keys(NCS_SECRET)

    ncs.store(NCS_SECRET).add(sidless)

    assert set(ncs.client.keys("*")) == {keys["stream"], keys["stream_bytes"], keys["seen"] + sidless.notice_id}


def test_a_recordings_list_keeps_only_its_newest_notifications(ncs: Ncs) -> None:
    store = ncs.store(NCS_SECRET, recording_max_notifications=3)
    sent = [ncs.notification(SID, 40) for _ in range(5)]
    for notification in sent:
        store.add(notification)

    assert store.for_sid(SID) == sent[2:]


@pytest.mark.parametrize("cap", ["entries", "bytes"])
def test_the_stream_cap_trims_its_oldest_entries(ncs: Ncs, cap: str) -> None:
    sent = [ncs.notification(SID, 40) for _ in range(5)]
    probe = ncs.store(PREVIOUS_SECRET)  # another namespace: only to learn what one entry weighs
    probe.add(sent[0])
    ((_, fields),) = ncs.client.xrange(ncs.keys(PREVIOUS_SECRET)["stream"])
    entry_bytes = int(fields["bytes"])  # every entry here is as large: same sid, same-length fields
    bounds = {"stream_max_length": 3} if cap == "entries" else {"stream_max_bytes": 3 * entry_bytes + entry_bytes // 2}
    store = ncs.store(NCS_SECRET, **bounds)

    stream_ids = [store.add(notification) for notification in sent]

    keys = ncs.keys(NCS_SECRET)
    kept = ncs.client.xrange(keys["stream"])
    assert [entry_id for entry_id, _ in kept] == stream_ids[2:]
    assert int(ncs.client.get(keys["stream_bytes"])) == sum(int(fields["bytes"]) for _, fields in kept)


def test_the_deduplication_marks_outlive_every_replay_the_receiver_accepts(ncs: Ncs) -> None:
    keys = ncs.keys(NCS_SECRET)
    uploaded = ncs.notification(SID, 31)
    seconds, microseconds = ncs.client.time()  # Redis's clock, which sets the expiry
    before_ms = seconds * 1000 + microseconds // 1000

    ncs.store(NCS_SECRET).add(uploaded)

    marks = [keys["seen"] + uploaded.notice_id, keys["end"] + f"{SID}:31"]
    assert MARK_TTL_SECONDS == DEDUPE_WINDOW_SECONDS + FUTURE_SKEW_SECONDS == 24 * 3600 + 300
    assert [ncs.client.pexpiretime(mark) >= before_ms + MARK_TTL_SECONDS * 1000 for mark in marks] == [True, True]
    assert [0 < ncs.client.pttl(mark) <= MARK_TTL_SECONDS * 1000 for mark in marks] == [True, True]


@pytest.mark.parametrize("poison", POISON.values(), ids=POISON.keys())
def test_the_poke_mode_read_skips_an_unreadable_entry_and_logs_it_once(
    ncs: Ncs, caplog: pytest.LogCaptureFixture, poison: dict[str, str]
) -> None:
    ncs.connect(NCS_SECRET)
    genuine = ncs.notification(SID, 31)
    ncs.client.rpush(ncs.keys(NCS_SECRET)["sid"] + SID, poison.get("notification", "null"))
    ncs.store(NCS_SECRET).add(genuine)
    hook = AgoraHook()

    reads = [hook.notifications(SID), hook.notifications(SID)]  # two pokes

    assert (reads, len(skipped(caplog))) == ([[genuine], [genuine]], 1)


# -- the shared reader of deferred waits ---------------------------------------------------------

Follow = Callable[[str], Awaitable[Subscription]]


@pytest.fixture
async def follow() -> AsyncIterator[Follow]:
    """Follow a recording as a deferred wait does (``AgoraAsyncHook.follow_notifications`` of
    ``agora_default``); at the end every wait is closed and the readers' tasks have ended."""
    subscriptions: list[Subscription] = []

    async def following(sid: str) -> Subscription:
        subscription = await AgoraAsyncHook().follow_notifications(sid)
        assert subscription is not None
        subscriptions.append(subscription)
        await asyncio.wait_for(subscription.caught_up.wait(), TIMEOUT)
        return subscription

    yield following
    for subscription in subscriptions:
        subscription.close()
    for reader in _notification_reader._readers.get(asyncio.get_running_loop(), {}).values():
        if reader._task is not None:
            await asyncio.wait_for(reader._task, TIMEOUT)  # ends within one XREAD once no wait is left


async def next_notifications(subscription: Subscription, count: int) -> list[str]:
    """The notice ids the wait holds once it holds ``count`` of them."""
    while len(subscription.look()) < count:
        assert await subscription.changed(TIMEOUT), "no notification came"
    return [notification.notice_id for notification in subscription.notifications]


async def test_a_wait_that_starts_after_the_upload_was_stored_gets_it(ncs: Ncs, follow: Follow) -> None:
    ncs.connect(NCS_SECRET)
    ncs.store(NCS_SECRET).add(ncs.notification(SID, 31))

    subscription = await follow(SID)

    assert [(n.event_type, n.files) for n in subscription.notifications] == [(31, FILES)]


async def test_a_notification_whose_wake_up_was_thrown_away_still_wakes_the_wait(ncs: Ncs, follow: Follow) -> None:
    """A deferred wait races its ``query`` against ``changed()`` and drops the loser's answer. When
    both finish together the notification must still count as new until the wait looks at it;
    otherwise the wait sleeps until its next query (10 minutes in the example DAG)."""
    ncs.connect(NCS_SECRET)
    subscription = await follow(SID)
    ncs.store(NCS_SECRET).add(ncs.notification(SID, 31))
    assert await subscription.changed(TIMEOUT), "no notification came"  # this answer is thrown away

    still_new = await subscription.changed(0)
    looked_at = [n.event_type for n in subscription.look()]
    new_after_looking = await subscription.changed(0)

    assert (still_new, looked_at, new_after_looking) == (True, [31], False)


async def test_a_wait_never_gets_another_namespaces_notifications(ncs: Ncs, follow: Follow) -> None:
    ncs.connect(NCS_SECRET)
    ncs.store(OTHER_PROJECT_SECRET).add(ncs.notification(SID, 11))  # before the wait: catch-up
    subscription = await follow(SID)
    ncs.store(OTHER_PROJECT_SECRET).add(ncs.notification(SID, 31))  # while it waits: the stream
    genuine = ncs.notification(SID, 40)
    ncs.store(NCS_SECRET).add(genuine)

    assert await next_notifications(subscription, 1) == [genuine.notice_id]


async def test_a_wait_during_a_rotation_gets_the_notifications_of_both_secrets(ncs: Ncs, follow: Follow) -> None:
    ncs.connect(NCS_SECRET, PREVIOUS_SECRET)
    before, new, old = ncs.notification(SID, 40), ncs.notification(SID, 31), ncs.notification(SID, 11)
    ncs.store(PREVIOUS_SECRET).add(before)
    subscription = await follow(SID)

    ncs.store(NCS_SECRET).add(new)
    assert await next_notifications(subscription, 2) == [before.notice_id, new.notice_id]
    ncs.store(PREVIOUS_SECRET).add(old)
    assert await next_notifications(subscription, 3) == [before.notice_id, new.notice_id, old.notice_id]


@pytest.mark.parametrize("poison", POISON.values(), ids=POISON.keys())
async def test_an_unreadable_stream_entry_is_skipped_and_every_wait_still_gets_its_notifications(
    ncs: Ncs, follow: Follow, caplog: pytest.LogCaptureFixture, poison: dict[str, str]
) -> None:
    ncs.connect(NCS_SECRET)
    poisoned, other = await follow(SID), await follow(OTHER_SID)
    ncs.client.xadd(ncs.keys(NCS_SECRET)["stream"], {"sid": SID, **poison})
    for_other, for_poisoned = ncs.notification(OTHER_SID, 31), ncs.notification(SID, 31)
    ncs.store(NCS_SECRET).add(for_other)
    ncs.store(NCS_SECRET).add(for_poisoned)

    heard = [await next_notifications(other, 1), await next_notifications(poisoned, 1)]

    assert (heard, len(skipped(caplog))) == ([[for_other.notice_id], [for_poisoned.notice_id]], 1)


async def test_an_unreadable_list_entry_is_skipped_in_the_catch_up(
    ncs: Ncs, follow: Follow, caplog: pytest.LogCaptureFixture
) -> None:
    ncs.connect(NCS_SECRET)
    genuine = ncs.notification(SID, 31)
    ncs.client.rpush(ncs.keys(NCS_SECRET)["sid"] + SID, POISON["deeply nested"]["notification"])
    ncs.store(NCS_SECRET).add(genuine)

    subscription = await follow(SID)

    assert ([n.notice_id for n in subscription.notifications], len(skipped(caplog))) == ([genuine.notice_id], 1)
