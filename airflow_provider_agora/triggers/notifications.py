"""``AgoraRecordingNotificationTrigger``: an asset watcher that fires once per finished recording.

For Airflow 3's event-driven scheduling::

    Asset("agora_recordings", watchers=[AssetWatcher(name="agora", trigger=AgoraRecordingNotificationTrigger())])

Each recording of the account that Agora reports finished with its files (31/32 "uploaded" with
status 0, or 71 for web recording: see ``airflow_provider_agora.notifications``) becomes one asset
event whose ``payload`` is the result dict the sensor returns (``ended_by: "notification"``). No
sensor, no polling: it reads the notification streams in Redis that the receiver in the API server
writes, one per namespace of the connection (its ``ncs_secret``, and ``ncs_previous_secret`` during
a rotation), and only those: a notification verified with another project's secret never fires.

With several triggerers, a consumer group on each stream hands each entry to one of them, and a
claim in Redis (``…:ncs:<namespace>:fired:<group>:<sid>``, set in every namespace at once) lets
each recording fire once even when Agora sent both 31 and 32, or a triggerer died after firing but
before acknowledging (its entries are then claimed by another one after ``_IDLE_CLAIM_MS``). A
triggerer that dies between the claim and the event loses that event; one that dies before the
claim loses nothing. An entry that cannot be read is acknowledged and skipped (logged once).

While Redis cannot be reached the watcher logs one warning, retries with a back-off (1 s doubling
to 30 s) and logs one line when Redis answers again; it re-creates its consumer groups if Redis
lost them. A recording that ended while Redis was down could not be stored by the receiver.

The backstop: Agora sends a notification at most four times, so one sent while the receiver or
Redis is down for longer is lost, and a recording whose ending notification is lost would never
fire. The watcher therefore keeps the recordings it has heard of (any notification, and every
recording ``AgoraHook.start`` started while a watcher of the group ran) as pending in Redis
(``…:ncs:<namespace>:backstop:<group>``, scored by when to ask), and ``backstop_delay`` seconds
after the last it heard of one that has not fired, asks Agora's ``query`` about it, with the
``resourceId`` that the start recorded (``…:started:<sid>``: notifications carry none). The
queries run beside the reading, on the same event loop and within the account's request budget;
their answers are judged by ``_waiting``, as a sensor's are. What it can and cannot recover is in
the class docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_agora._connection_form import DEFAULT_CONN_ID
from airflow_provider_agora._waiting import (
    Decision,
    Outcome,
    WaitMemory,
    WaitSpec,
    decide_on_answer,
    decide_on_error,
)
from airflow_provider_agora.exceptions import AgoraError
from airflow_provider_agora.results import RecordingSnapshot

if TYPE_CHECKING:
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook
    from airflow_provider_agora.notifications import Notification

__all__ = ["AgoraRecordingNotificationTrigger"]

log = logging.getLogger(__name__)

DEFAULT_CONSUMER_GROUP = "airflow-asset-watchers"
DEFAULT_BACKSTOP_DELAY = 600.0
DEFAULT_BACKSTOP_INTERVAL = 30.0
_BLOCK_MS = 1000
_BATCH = 100
_IDLE_CLAIM_MS = 60_000
_FIRED_TTL_MS = 7 * 24 * 3600 * 1000
_BACKOFF_FIRST_SECONDS = 1.0
_BACKOFF_MAX_SECONDS = 30.0
#: Recordings asked about per backstop round: at most this many queries in flight per watcher.
_BACKSTOP_BATCH = 20
#: A 404 counts as "the session is gone" once it has lasted Agora's fail-over window.
_NOT_FOUND_GRACE_SECONDS = 90.0
#: Entries a group's pending set keeps; past it, the earliest due are dropped first.
_PENDING_MAX = 100_000
#: Recordings a watcher remembers itself, to write back into a Redis that came back empty.
_TRACKED_LIMIT = 10_000
#: At most one warning per this many seconds about Agora's answers to the backstop's queries.
_WARNING_EVERY_SECONDS = 300.0

# KEYS[1..n]     - the recording's fired claim of the group in each namespace the watcher reads
# KEYS[n+1..2n]  - the group's pending set (backstop) in each of those namespaces
# ARGV[1]        - the claim's value (the noticeId that fired it, or "backstop:<ended_by>")
# ARGV[2]        - milliseconds the claim lives
# ARGV[3]        - the sid
# Returns 1 if this call claimed the recording (no claim existed; all are set now), else 0. Either
# way the recording is no longer pending: it fired, now or before.
_CLAIM = """
local n = #KEYS / 2
for i = n + 1, 2 * n do
  redis.call('ZREM', KEYS[i], ARGV[3])
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

# KEYS[1]           - the group's pending set in the namespace the notification came from
# KEYS[2..n+1]      - the recording's fired claim of the group in each namespace the watcher reads
# KEYS[n+2..2n+1]   - the recording's registration (started:<sid>) in each of those namespaces
# ARGV[1]           - the sid
# ARGV[2]           - when to ask Agora about it, ms since the epoch
# ARGV[3]           - n
# ARGV[4]           - milliseconds the pending set lives after the last watcher wrote to it
# Returns false if the recording fired already (nothing is written), else its first registration
# found, or "" when it has none.
_NOTE = """
local n = tonumber(ARGV[3])
for i = 2, n + 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = n + 2, 2 * n + 1 do
  local registration = redis.call('GET', KEYS[i])
  if registration then return registration end
end
return ''
"""

# KEYS[1..n]     - the group's pending set in each namespace the watcher reads
# KEYS[n+1..2n]  - each of those namespaces' watcher groups (watchers)
# ARGV[1]        - now, ms since the epoch
# ARGV[2]        - when a recording taken now is due again unless it is answered first (the lease)
# ARGV[3]        - the most recordings to take
# ARGV[4]        - this group as the start registration reads it: "<delay ms>:<group>"
# ARGV[5]        - milliseconds a group counts as running, and its pending set lives, without a round;
#                  pending entries overdue by more are dropped
# ARGV[6]        - the most entries a pending set keeps (the earliest due are dropped first)
# Returns the sids due by now, each once, at most ARGV[3]; each is due at ARGV[2] now in every set
# that holds it, so that another watcher of the group does not ask about it meanwhile.
_TAKE = """
local n = #KEYS / 2
local now, retention, most = tonumber(ARGV[1]), tonumber(ARGV[5]), tonumber(ARGV[3])
local taken, seen = {}, {}
for i = 1, n do
  redis.call('ZADD', KEYS[n + i], now, ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now - retention)
  redis.call('PEXPIRE', KEYS[n + i], retention)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - retention)
  local excess = redis.call('ZCARD', KEYS[i]) - tonumber(ARGV[6])
  if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[i], 0, excess - 1) end
  redis.call('PEXPIRE', KEYS[i], retention)
end
for i = 1, n do
  if #taken < most then
    for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, most)) do
      if #taken < most and not seen[sid] then
        seen[sid] = true
        taken[#taken + 1] = sid
      end
    end
  end
end
for _, sid in ipairs(taken) do
  for i = 1, n do
    redis.call('ZADD', KEYS[i], 'XX', ARGV[2], sid)
  end
end
return taken
"""


class AgoraRecordingNotificationTrigger(BaseEventTrigger):
    """One asset event per finished recording of an account (optionally only some channels).

    :param agora_conn_id: an ``agora`` connection with ``ncs_secret`` and ``redis_conn_id``.
    :param channels: only recordings of these channel names (``cname``); default all.
    :param consumer_group: the Redis consumer group; watchers with different groups each see every
        recording once.
    :param backstop: ask Agora about recordings whose ending notification never arrives, so that a
        lost notification delays an event instead of losing it.
    :param backstop_delay: seconds after the last notification heard of a recording (or its start)
        before asking Agora about it, and between two questions while Agora says it runs.
    :param backstop_interval: seconds between two rounds of questions; a round asks about at most
        ``_BACKSTOP_BATCH`` (20) recordings, within the account's request budget.

    What the backstop recovers: a recording started through ``AgoraHook.start`` (the start
    operator) with a connection that has this connection's ``ncs_secret`` and a ``redis_conn_id``,
    whose ending notification was lost. It fires once, through the same claim as a notification,
    with the notification's payload keys and ``ended_by`` "status" (Agora answered 8, exited) or
    "not_found" (Agora answered 404 for longer than its 90 s fail-over window: the session is gone),
    ``resource_id``, ``recording_mode`` and ``status`` from Agora, ``notification`` None, and
    ``files`` as Agora's last answer listed them. A recording that is already gone cannot give its
    files back: after a 404 they are those of the last answer that showed it running, often none
    (and never MP4 files, which ``query`` does not list). A late ending notification fires no second
    event.

    What it cannot recover: a recording it never heard of (no notification of it arrived, and it was
    started elsewhere or while Redis was down); one heard of but not started through the provider,
    whose ``resourceId`` nobody recorded (logged once: its DAG run depends on the notification);
    one started more than 3 days ago (``STARTED_TTL_SECONDS``). It gives no event for status 20
    (abnormal exit) or when a notification says the recording failed (11 with ``exitStatus`` 1,
    31/32 with a failed upload, 71 with an error, 72); a 404 cannot tell a normal end from a failure
    whose notifications were also lost, and fires. A Redis that comes back empty forgets what only it
    knew: the watcher writes back the recordings it heard of itself (up to ``_TRACKED_LIMIT``), not
    those only started.
    """

    def __init__(
        self,
        *,
        agora_conn_id: str = DEFAULT_CONN_ID,
        channels: Sequence[str] | None = None,
        consumer_group: str = DEFAULT_CONSUMER_GROUP,
        backstop: bool = True,
        backstop_delay: float = DEFAULT_BACKSTOP_DELAY,
        backstop_interval: float = DEFAULT_BACKSTOP_INTERVAL,
    ) -> None:
        super().__init__()
        self.agora_conn_id = agora_conn_id
        if isinstance(channels, str):  # one channel name, not a sequence of one-letter names
            channels = [channels]
        self.channels = list(channels) if channels else None
        self.consumer_group = consumer_group
        self.backstop = bool(backstop)
        self.backstop_delay = float(backstop_delay)
        self.backstop_interval = float(backstop_interval)
        self._backstop: _Backstop | None = None

    @property
    def backstop_rounds(self) -> int:
        """Backstop rounds finished by ``run()`` so far (a round: take the due recordings, ask, settle)."""
        return self._backstop.rounds if self._backstop is not None else 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "agora_conn_id": self.agora_conn_id,
                "channels": self.channels,
                "consumer_group": self.consumer_group,
                "backstop": self.backstop,
                "backstop_delay": self.backstop_delay,
                "backstop_interval": self.backstop_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis

        from airflow_provider_agora._notification_reader import async_client
        from airflow_provider_agora._notification_store import UnreadableEntries, notification_keys
        from airflow_provider_agora.exceptions import AgoraConfigurationError
        from airflow_provider_agora.hooks.agora import AgoraAsyncHook

        hook = AgoraAsyncHook(self.agora_conn_id)
        settings = await hook.get_settings()
        if settings.redis is None or not settings.receives_notifications:
            raise AgoraConfigurationError(
                f"AgoraRecordingNotificationTrigger needs connection {self.agora_conn_id!r} to have ncs_secret and "
                f"redis_conn_id: Agora's notifications reach Airflow through them."
            )
        keys = [notification_keys(settings.customer_id, namespace) for namespace in settings.notification_namespaces]
        streams = [namespace_keys["stream"] for namespace_keys in keys]
        keyring = _Keys(keys, self.consumer_group)
        backstop = _Backstop(self, hook, keyring) if self.backstop else None
        self._backstop = backstop
        consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"
        unreadable = UnreadableEntries(log)
        client: Any = None
        claim: Any = None
        groups_ready = False
        regrouped = False  # the groups were re-created after NOGROUP and nothing was read since
        cursors: dict[str, str] = {}
        backoff = _BACKOFF_FIRST_SECONDS
        warned = False
        try:
            while True:
                try:
                    if client is None:
                        client = async_client(settings.redis, block_ms=_BLOCK_MS)
                        claim = client.register_script(_CLAIM)
                        if backstop is not None:
                            backstop.use(client)
                        groups_ready = False
                    if not groups_ready:
                        for stream in streams:
                            await self._create_group(client, stream)
                        if backstop is not None:
                            await backstop.write_back(client)  # into a Redis that may have come back empty
                        groups_ready = True
                        cursors = dict.fromkeys(streams, "0-0")
                        if warned:
                            log.info("Redis answers again: watching Agora's notifications.")
                            warned = False
                        backoff = _BACKOFF_FIRST_SECONDS
                    # Entries a dead triggerer took but never acknowledged, then new ones.
                    entries: list[tuple[str, str, Any]] = []
                    for stream in streams:
                        answer: Any = await client.xautoclaim(
                            stream,
                            self.consumer_group,
                            consumer,
                            min_idle_time=_IDLE_CLAIM_MS,
                            start_id=cursors[stream],
                            count=_BATCH,
                        )
                        cursors[stream] = answer[0]
                        entries += [(stream, entry_id, fields) for entry_id, fields in answer[1] if entry_id]
                    block_ms = _BLOCK_MS if backstop is None else backstop.block_ms()
                    fresh: Any = await client.xreadgroup(
                        self.consumer_group,
                        consumer,
                        dict.fromkeys(streams, ">"),
                        count=_BATCH,
                        block=None if entries else block_ms,
                    )
                    regrouped = False
                    for stream, batch in fresh or []:
                        entries += [(stream, entry_id, fields) for entry_id, fields in batch]
                    for stream, entry_id, fields in entries:
                        where = f"entry {entry_id} of stream {stream}"
                        notification = unreadable.load((fields or {}).get("notification"), where)
                        if notification is not None:
                            event = await self._event_for(claim, keyring, notification)
                            if event is not None:
                                yield event
                            elif backstop is not None:
                                await backstop.hear(client, streams.index(stream), notification)
                        await client.xack(stream, self.consumer_group, entry_id)
                    if backstop is not None:
                        async with contextlib.aclosing(backstop.step(client, claim)) as settled:
                            async for event in settled:
                                yield event
                except (redis.RedisError, OSError) as error:
                    if isinstance(error, redis.ResponseError) and "NOGROUP" in str(error) and not regrouped:
                        groups_ready, regrouped = False, True  # Redis lost a stream or its group: re-create
                        continue
                    if not warned:
                        reason = type(error).__name__
                        log.warning("Cannot read Agora's notifications from Redis (%s); retrying.", reason)
                        warned = True
                    await _close(client)
                    client = None
                    await asyncio.sleep(backoff)  # the back-off itself
                    backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
        finally:
            if backstop is not None:
                await backstop.close()
            await _close(client)

    async def _create_group(self, client: Any, stream: str) -> None:
        import redis

        try:
            await client.xgroup_create(stream, self.consumer_group, id="$", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _event_for(self, claim: Any, keyring: _Keys, notification: Notification) -> TriggerEvent | None:
        """The recording's event, or None: not a finished recording, another channel, or fired already."""
        from airflow_provider_agora.notifications import ENDED

        if notification.kind != ENDED or not notification.sid:
            return None
        if notification.event_type in (31, 32) and not notification.files:
            return None  # web recording's 31 lists no files: its 71 does
        if self.channels is not None and notification.cname not in self.channels:
            return None
        sid = notification.sid
        if self._backstop is not None:
            self._backstop.forget_here(sid)
        if not await claim(keys=keyring.claim(sid), args=[notification.notice_id, _FIRED_TTL_MS, sid]):
            return None  # this recording has fired already (31 and 32, or a re-delivered entry)
        log.info("Recording sid=%s finished (notification %s).", sid, notification.notice_id)
        return TriggerEvent(
            {
                "resource_id": None,
                "sid": sid,
                "cname": notification.cname,
                "recording_mode": None,
                "status": None,
                "ended_by": "notification",
                "files": notification.files,
                "server_response": {},
                "notification": {"notice_id": notification.notice_id, "event_type": notification.event_type},
            }
        )


class _Keys:
    """The Redis keys of one watcher group in every namespace the watcher reads."""

    def __init__(self, per_namespace: list[dict[str, str]], group: str) -> None:
        self.per_namespace = per_namespace
        self.pending = [namespace_keys["backstop"] + group for namespace_keys in per_namespace]
        self.watchers = [namespace_keys["watchers"] for namespace_keys in per_namespace]
        self._fired = [f"{namespace_keys['fired']}{group}:" for namespace_keys in per_namespace]

    def fired(self, sid: str) -> list[str]:
        return [prefix + sid for prefix in self._fired]

    def started(self, sid: str) -> list[str]:
        return [namespace_keys["started"] + sid for namespace_keys in self.per_namespace]

    def claim(self, sid: str) -> list[str]:
        """The keys of ``_CLAIM``: the fired claims, then the pending sets."""
        return self.fired(sid) + self.pending


@dataclass
class _Tracked:
    """What a watcher remembers of a recording it will ask Agora about (also to write it back into
    a Redis that came back empty): when, with what, and what earlier answers said."""

    due_ms: int
    registration: dict[str, str] | None = None
    memory: WaitMemory = field(default_factory=WaitMemory)


@dataclass(frozen=True)
class _Answer:
    """What one backstop question gave: a decision (None: ask again later) and trouble to report."""

    sid: str
    decision: Decision | None
    trouble: str | None = None


class _Throttled:
    """A warning at most every ``every`` seconds, saying how many were left out meanwhile: Agora
    trouble affects every recording asked about, and must cost a few lines, not one per question."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: float | None = None
        self._left_out = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            self._left_out += 1
            return
        more = f" ({self._left_out} similar warning(s) left out)" if self._left_out else ""
        log.warning("%s%s", message, more)
        self._last, self._left_out = now, 0


class _Backstop:
    """The watcher's backstop (see the module docstring): hears of recordings, asks Agora about the
    due ones in rounds, and settles them. Every Redis error propagates to ``run()``, whose one
    warning and one recovery line cover the backstop too; Agora's errors never leave it."""

    def __init__(self, trigger: AgoraRecordingNotificationTrigger, hook: AgoraAsyncHook, keys: _Keys) -> None:
        self.trigger = trigger
        self.hook = hook
        self.keys = keys
        self.rounds = 0
        self.delay_ms = max(int(trigger.backstop_delay * 1000), 0)
        self.interval = max(trigger.backstop_interval, 0.001)
        self._tracked: dict[str, _Tracked] = {}  # oldest first
        self._settled: dict[str, None] = {}  # sids never to ask about (an ordered set, oldest first)
        self._asking: asyncio.Future[list[_Answer]] | None = None
        self._answered: list[_Answer] = []
        self._next_round = 0.0  # time.monotonic() of the next round
        self._agora_trouble = _Throttled(_WARNING_EVERY_SECONDS)
        self._note: Any = None
        self._take: Any = None

    def use(self, client: Any) -> None:
        """Register the scripts on a new Redis client."""
        self._note = client.register_script(_NOTE)
        self._take = client.register_script(_TAKE)

    def block_ms(self) -> int:
        """How long the stream read may block: until the next round is due, at most ``_BLOCK_MS``."""
        until_round = (self._next_round - time.monotonic()) * 1000
        return int(max(1, min(_BLOCK_MS, self.interval * 1000, until_round)))

    # -- hearing -------------------------------------------------------------------------------

    async def hear(self, client: Any, namespace_index: int, notification: Notification) -> None:
        """A notification that fired nothing: the recording is pending again, ``backstop_delay`` from
        now, unless it fired already or the notification says it failed."""
        from airflow_provider_agora.notifications import CLOUD_RECORDING_PRODUCT_ID

        sid = notification.sid
        channels = self.trigger.channels
        if notification.product_id != CLOUD_RECORDING_PRODUCT_ID or not sid or sid in self._settled:
            return
        if channels is not None and notification.cname not in channels:
            return
        if _says_failed(notification):
            log.info(
                "Recording sid=%s failed, as notification %s (event %s) says: no asset event, and no question "
                "to Agora about it.",
                sid,
                notification.notice_id,
                notification.event_type,
            )
            self._settle_for_good(sid)
            await self._forget(client, sid)
            return
        due_ms = _now_ms() + self.delay_ms
        found: Any = await self._note(
            keys=[self.keys.pending[namespace_index], *self.keys.fired(sid), *self.keys.started(sid)],
            args=[sid, due_ms, len(self.keys.pending), _retention_ms()],
        )
        if found is None:
            self.forget_here(sid)  # it fired already (a late notification)
            return
        tracked = self._remember(sid, due_ms)
        if tracked.registration is None and found:
            tracked.registration = _registration(found)
        log.debug(
            "Heard of recording sid=%s: asking Agora about it in %g s unless it fires first.", sid, self.delay_ms / 1000
        )

    def forget_here(self, sid: str) -> None:
        """Stop remembering a recording (it fired); ``_CLAIM`` removes it from the pending sets."""
        self._tracked.pop(sid, None)

    async def write_back(self, client: Any) -> None:
        """Write what this watcher remembers into Redis, where it is missing (Redis came back empty)."""
        if not self._tracked:
            return
        pending, started = self.keys.pending[0], self.keys.per_namespace[0]["started"]
        pipeline = client.pipeline(transaction=False)
        for sid, tracked in self._tracked.items():
            pipeline.zadd(pending, {sid: tracked.due_ms}, nx=True)
            if tracked.registration is not None:
                document = json.dumps(tracked.registration, sort_keys=True, separators=(",", ":"))
                pipeline.set(started + sid, document, px=_retention_ms(), nx=True)
        pipeline.pexpire(pending, _retention_ms())
        await pipeline.execute()

    # -- asking --------------------------------------------------------------------------------

    async def step(self, client: Any, claim: Any) -> AsyncGenerator[TriggerEvent, None]:
        """Settle the answers that came back, then start a round if one is due."""
        if self._asking is not None and self._asking.done():
            self._answered, self._asking = self._asking.result(), None
            if not self._answered:
                self.rounds += 1
        if self._answered:
            while self._answered:
                event = await self._settle(client, claim, self._answered[0])
                del self._answered[0]  # settled: a Redis error above leaves it to settle after recovery
                if event is not None:
                    yield event
            self.rounds += 1
        if self._asking is None and time.monotonic() >= self._next_round:
            self._next_round = time.monotonic() + self.interval
            await self._start_round(client)

    async def _start_round(self, client: Any) -> None:
        now_ms = _now_ms()
        taken: list[str] = list(
            await self._take(
                keys=[*self.keys.pending, *self.keys.watchers],
                args=[
                    now_ms,
                    now_ms + self.delay_ms,
                    _BACKSTOP_BATCH,
                    f"{self.delay_ms}:{self.trigger.consumer_group}",
                    _retention_ms(),
                    _PENDING_MAX,
                ],
            )
        )
        if len(taken) < _BACKSTOP_BATCH:
            # Everything due is taken: what this watcher remembers as long overdue, Redis does not hold
            # (another watcher of the group settled it): forget it, so it is never written back.
            for sid in [s for s, t in self._tracked.items() if t.due_ms <= now_ms - self.delay_ms and s not in taken]:
                del self._tracked[sid]
        registrations = await self._registrations(client, taken)
        questions: list[tuple[str, _Tracked]] = []
        for sid in taken:
            tracked = self._remember(sid, now_ms + self.delay_ms)
            registration = tracked.registration = tracked.registration or registrations.get(sid)
            if registration is None or _spec(sid, registration) is None:
                if sid not in self._settled:
                    log.info(
                        "Cannot ask Agora about recording sid=%s: no resourceId known (it was not started through "
                        "this provider); its DAG run depends on the notification.",
                        sid,
                    )
                self._settle_for_good(sid)
                await self._forget(client, sid)
            elif self.trigger.channels is not None and registration.get("cname") not in self.trigger.channels:
                self.forget_here(sid)
                await self._forget(client, sid)
            else:
                questions.append((sid, tracked))
        if questions:
            self._asking = asyncio.ensure_future(asyncio.gather(*(self._ask(sid, t) for sid, t in questions)))
        else:
            self.rounds += 1

    async def _registrations(self, client: Any, sids: list[str]) -> dict[str, dict[str, str]]:
        """The registrations of the recordings this watcher does not know already: one round trip."""
        wanted = [sid for sid in sids if sid not in self._tracked or self._tracked[sid].registration is None]
        if not wanted:
            return {}
        pipeline = client.pipeline(transaction=False)
        for sid in wanted:
            pipeline.mget(self.keys.started(sid))
        found: dict[str, dict[str, str]] = {}
        for sid, documents in zip(wanted, await pipeline.execute(), strict=True):
            for document in documents:
                registration = _registration(document)
                if registration is not None:
                    found[sid] = registration
                    break
        return found

    async def _ask(self, sid: str, tracked: _Tracked) -> _Answer:
        """One ``query`` (the hook's retries and the account's budget apply), judged as a sensor's is."""
        assert tracked.registration is not None
        spec = _spec(sid, tracked.registration)
        assert spec is not None
        memory = tracked.memory
        if memory.last_seen is None:  # the start is a sighting: a 404 now means the session is gone
            memory = replace(memory, last_seen=spec.result(RecordingSnapshot(None, [], {}), ended_by=None))
        try:
            body = await self.hook.query(
                spec.resource_id, sid, spec.recording_mode, app_id=tracked.registration.get("app_id") or None
            )
            return _Answer(sid, decide_on_answer(spec, memory, body))
        except AgoraError as error:
            try:
                decision = decide_on_error(spec, memory, error, time.time())
            except AgoraError:
                return _Answer(sid, None, f"Cannot ask Agora about recording sid={sid} ({error}); asking again later.")
            trouble = decision.message if error.retryable else None
            return _Answer(sid, decision, trouble)
        except Exception as error:  # whatever goes wrong with one question must not end the watcher
            return _Answer(sid, None, f"Asking Agora about recording sid={sid} failed ({error!r}); asking again later.")

    async def _settle(self, client: Any, claim: Any, answer: _Answer) -> TriggerEvent | None:
        """Act on one answer: fire once, forget a failed recording, or ask again later."""
        sid, decision = answer.sid, answer.decision
        if answer.trouble is not None:
            self._agora_trouble.warning(answer.trouble)
        tracked = self._tracked.get(sid)
        if decision is None:
            return None  # due again when the lease ends
        if tracked is not None:
            tracked.memory = decision.memory
        if decision.outcome is Outcome.FAIL:
            log.warning("%s No asset event for it.", decision.message)
            self._settle_for_good(sid)
            await self._forget(client, sid)
            return None
        if decision.outcome is Outcome.WAIT:
            due_ms = _now_ms() + self.delay_ms
            since = decision.memory.not_found_since
            if since is not None:  # re-ask when Agora's fail-over window has passed
                due_ms = min(due_ms, int((since + _NOT_FOUND_GRACE_SECONDS) * 1000) + 1)
            if tracked is not None:
                tracked.due_ms = due_ms
            pipeline = client.pipeline(transaction=False)
            for pending in self.keys.pending:
                pipeline.zadd(pending, {sid: due_ms}, xx=True)  # not if it fired meanwhile
            await pipeline.execute()
            return None
        result = decision.result
        assert result is not None
        self.forget_here(sid)
        ended_by = result["ended_by"]
        if not await claim(keys=self.keys.claim(sid), args=[f"backstop:{ended_by}", _FIRED_TTL_MS, sid]):
            return None  # it fired meanwhile, from its notification
        log.info(
            "Recording sid=%s finished, as Agora answered (%s) though its ending notification never arrived: %s",
            sid,
            ended_by,
            decision.message,
        )
        registration = tracked.registration if tracked is not None and tracked.registration else {}
        return TriggerEvent(
            {
                "resource_id": result["resource_id"],
                "sid": sid,
                "cname": registration.get("cname"),
                "recording_mode": result["recording_mode"],
                "status": result["status"],
                "ended_by": ended_by,
                "files": result["files"],
                "server_response": result["server_response"],
                "notification": None,
            }
        )

    # -- memory --------------------------------------------------------------------------------

    def _remember(self, sid: str, due_ms: int) -> _Tracked:
        tracked = self._tracked.get(sid)
        if tracked is None:
            if len(self._tracked) >= _TRACKED_LIMIT:
                del self._tracked[next(iter(self._tracked))]
            tracked = self._tracked[sid] = _Tracked(due_ms)
        tracked.due_ms = due_ms
        return tracked

    def _settle_for_good(self, sid: str) -> None:
        """Never ask about this recording again (it failed, or nobody knows its resourceId)."""
        self.forget_here(sid)
        if len(self._settled) >= _TRACKED_LIMIT:
            del self._settled[next(iter(self._settled))]
        self._settled[sid] = None

    async def _forget(self, client: Any, sid: str) -> None:
        pipeline = client.pipeline(transaction=False)
        for pending in self.keys.pending:
            pipeline.zrem(pending, sid)
        await pipeline.execute()

    async def close(self) -> None:
        """Give up the questions in flight (the watcher stops)."""
        asking, self._asking = self._asking, None
        if asking is not None and not asking.done():
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asking


def _says_failed(notification: Notification) -> bool:
    """Whether a notification says the recording failed: then no event is due for it, from anyone."""
    from airflow_provider_agora.notifications import EXITED, UPLOAD_FAILED, WEB_FAILED

    return notification.kind in (UPLOAD_FAILED, WEB_FAILED) or (
        notification.kind == EXITED and notification.exit_status == 1
    )


def _registration(document: object) -> dict[str, str] | None:
    """A stored start registration (``register_started``), or None if there is none or it is unreadable."""
    if not isinstance(document, (str, bytes)) or not document:
        return None
    try:
        data = json.loads(document)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(key): str(value) for key, value in data.items() if isinstance(value, (str, int))}


def _spec(sid: str, registration: dict[str, str] | None) -> WaitSpec | None:
    """What to ask Agora about a registered recording, checked as a sensor's arguments are; None
    without a (usable) registration."""
    if registration is None:
        return None
    try:
        return WaitSpec.checked(
            resource_id=registration.get("resource_id"),
            sid=sid,
            recording_mode=registration.get("recording_mode"),
            on_not_found="succeed",
            not_found_grace_period=_NOT_FOUND_GRACE_SECONDS,
        )
    except AgoraError:
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _retention_ms() -> int:
    from airflow_provider_agora._notification_store import STARTED_TTL_SECONDS

    return STARTED_TTL_SECONDS * 1000


async def _close(client: Any) -> None:
    if client is None:
        return
    close = getattr(client, "aclose", None) or client.close  # aclose since redis 5.0.1
    with contextlib.suppress(Exception):
        await close()
