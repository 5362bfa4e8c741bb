"""The asset watcher's backstop: asks Agora's ``query`` about recordings whose ending notification was lost.

Agora sends a notification at most four times, so one sent while the receiver or Redis is down for
longer is lost, and a recording whose ending notification is lost would never fire. The watcher
therefore keeps the recordings it has heard of (any notification, and every recording
``AgoraHook.start`` started while a watcher of the group ran) as pending in Redis
(``…:ncs:<namespace>:backstop:<group>``, scored by when to ask), and ``backstop_delay`` seconds
after the last it heard of one that has not fired, asks Agora's ``query`` about it, with the
``resourceId`` that the start recorded (``…:started:<sid>``: notifications carry none). The
queries run beside the reading, on the same event loop and within the account's request budget;
their answers are judged by ``_waiting``, as a sensor's are. What it can and cannot recover is in
``AgoraRecordingNotificationTrigger``'s docstring.

Private to ``airflow_provider_agora.triggers.notifications``, kept apart so that each module reads
as one thing; its lines go to the watcher's logger, so one logger configures them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import TriggerEvent

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
    from airflow_provider_agora.triggers.notifications import AgoraRecordingNotificationTrigger

log = logging.getLogger("airflow_provider_agora.triggers.notifications")

#: Recordings asked about per backstop round: at most this many queries in flight per watcher.
_BACKSTOP_BATCH = 20
#: Entries a group's pending set keeps; past it, the earliest due are dropped first.
_PENDING_MAX = 100_000
#: Recordings a watcher remembers itself, to write back into a Redis that came back empty.
_TRACKED_LIMIT = 10_000
#: At most one warning per this many seconds about Agora's answers to the backstop's queries.
_WARNING_EVERY_SECONDS = 300.0

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

    def __init__(
        self,
        trigger: AgoraRecordingNotificationTrigger,
        hook: AgoraAsyncHook,
        keys: _Keys,
        *,
        fired_ttl_ms: int,
        not_found_grace: float,
    ) -> None:
        self.trigger = trigger
        self.hook = hook
        self.keys = keys
        self.fired_ttl_ms = fired_ttl_ms  # how long a claim lives: the watcher's, whoever fires
        self.not_found_grace = not_found_grace  # seconds a 404 lasts before the session counts as gone
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

    def block_ms(self, most_ms: int) -> int:
        """How long the stream read may block: until the next round is due, at most ``most_ms``."""
        until_round = (self._next_round - time.monotonic()) * 1000
        return int(max(1, min(most_ms, self.interval * 1000, until_round)))

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
            if registration is None or _spec(sid, registration, self.not_found_grace) is None:
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
        spec = _spec(sid, tracked.registration, self.not_found_grace)
        assert spec is not None
        memory = tracked.memory
        if memory.last_seen is None:  # the start is a sighting: a 404 now means the session is gone
            memory = replace(memory, last_seen=spec.result(RecordingSnapshot(None, [], {}), ended_by=None))
        try:
            body = await self.hook.query(
                spec.resource_id,
                sid,
                recording_mode=spec.recording_mode,
                app_id=tracked.registration.get("app_id") or None,
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
                due_ms = min(due_ms, int((since + self.not_found_grace) * 1000) + 1)
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
        if not await claim(keys=self.keys.claim(sid), args=[f"backstop:{ended_by}", self.fired_ttl_ms, sid]):
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


def _spec(sid: str, registration: dict[str, str] | None, not_found_grace: float) -> WaitSpec | None:
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
            not_found_grace_period=not_found_grace,
        )
    except AgoraError:
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _retention_ms() -> int:
    from airflow_provider_agora._ncs.store import STARTED_TTL_SECONDS

    return STARTED_TTL_SECONDS * 1000
