"""Deciding, from one answer of Agora's ``query``, whether a wait is done, goes on, or has failed.

Pure functions over plain data: the sensor (poke and reschedule) and the trigger (deferrable) call
the same ones, so the three modes cannot disagree. ``WaitSpec`` declares, once, every parameter of
a wait with its default; ``WaitMemory`` is what a wait carries from one poll to the next; it
round-trips through JSON so it can live in Airflow's task state store.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from airflow_provider_agora._client.protocol import check_path_parameter, check_recording_mode
from airflow_provider_agora._connection_form import DEFAULT_CONN_ID
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraConfigurationError,
    AgoraError,
    AgoraNotFoundError,
    AgoraRateLimitError,
    AgoraRouteNotFoundError,
)
from airflow_provider_agora.notifications import ENDED, ERROR, EXITED, FAILOVER, WEB_FAILED
from airflow_provider_agora.results import (
    EndedBy,
    RecordingFile,
    RecordingMode,
    RecordingResult,
    RecordingSnapshot,
    parse_recording,
    recording_result,
)

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

# serverResponse.status, as Agora documents it (query reference).
STATUS_MEANINGS = {
    0: "not started",
    1: "initialization complete",
    2: "components starting",
    3: "some components ready",
    4: "all components ready",
    5: "in progress",
    6: "stop requested",
    7: "all components stopped",
    8: "exited",
    20: "exited abnormally",
}
LAST_LIFECYCLE_STATUS = 8
FATAL_ERROR_LEVEL = 5  # Agora: "may cause the recording to exit ... call query"
#: What a 404 that outlasts the grace period does to a recording seen running: fail, or count as its end.
OnNotFound = Literal["fail", "succeed"]
ON_NOT_FOUND_CHOICES: tuple[OnNotFound, ...] = get_args(OnNotFound)
_FILES_IN_MESSAGE = 20
_TEMPLATED = {"templated": True}  # field metadata: the sensor renders this parameter with Jinja


class Outcome(enum.Enum):
    DONE = "done"
    WAIT = "wait"
    FAIL = "fail"


def describe_status(status: int | None) -> str:
    return f"{status} ({STATUS_MEANINGS.get(status, 'undocumented')})" if status is not None else "unknown"


def describe_files(files: Sequence[Mapping[str, Any]]) -> str:
    names = [str(item.get("fileName", item)) for item in files[:_FILES_IN_MESSAGE]]
    more = f" and {len(files) - _FILES_IN_MESSAGE} more" if len(files) > _FILES_IN_MESSAGE else ""
    return f"{len(files)} file(s)" + (f": {', '.join(names)}{more}" if names else "")


def _number_from_template(value: Any, kind: type[int] | type[float]) -> Any:
    """Jinja renders ``"{{ params.x }}"`` to a string: accept "8" or "90.5" where a number is expected."""
    if isinstance(value, str):
        try:
            number = kind(value.strip())
        except ValueError:
            return value
        return number
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(name: str, value: Any, sid: object) -> float:
    """A number of seconds >= 0 (templates give strings); one sentence naming the sid if not."""
    number = _number_from_template(value, float)
    if not _is_number(number) or number < 0:
        raise AgoraConfigurationError(
            f"{name} for recording sid={sid} must be a number of seconds >= 0, got {number!r}."
        )
    return float(number)


def _failure_statuses(value: Any, sid: object) -> tuple[int, ...]:
    if isinstance(value, int) or not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise AgoraConfigurationError(
            f"failure_statuses for recording sid={sid} must be a list of status numbers such as [20], got {value!r}."
        )
    return tuple(value)


def _target_status(value: Any, failures: tuple[int, ...], sid: object) -> int:
    target = _number_from_template(value, int)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= LAST_LIFECYCLE_STATUS:
        raise AgoraConfigurationError(
            f"target_status {target!r} for recording sid={sid} is not on Agora's 0-8 lifecycle: use for "
            f"example 5 (in progress) or 8 (exited)."
        )
    if target in failures:
        raise AgoraConfigurationError(
            f"target_status {target} for recording sid={sid} is also in failure_statuses {list(failures)}: "
            f"remove it from one of them."
        )
    return target


def _on_not_found(value: Any, sid: object) -> OnNotFound:
    if value not in ON_NOT_FOUND_CHOICES:
        choices = " or ".join(repr(choice) for choice in ON_NOT_FOUND_CHOICES)
        raise AgoraConfigurationError(f"on_not_found {value!r} for recording sid={sid} is not valid: use {choices}.")
    return cast(OnNotFound, value)


def _flag(name: str, value: Any, sid: object) -> bool:
    if not isinstance(value, bool):
        raise AgoraConfigurationError(f"{name} for recording sid={sid} must be True or False, got {value!r}.")
    return value


def _optional_seconds(name: str, value: Any, sid: object) -> float | None:
    return None if value is None else _seconds(name, value, sid)


@dataclass(frozen=True, kw_only=True)
class WaitSpec:
    """A wait's parameters, checked: which recording, and how to tell that the wait is over.

    The one declaration of every parameter the sensor and its trigger share, and of its default.
    The sensor's constructor defaults are these class attributes (``WaitSpec.target_status`` is 8)
    and its ``template_fields`` the fields marked templated; the trigger takes, keeps and
    serialises exactly these fields (``with_defaults``, ``to_kwargs``). Made by ``checked``.
    """

    resource_id: str = field(metadata=_TEMPLATED)
    sid: str = field(metadata=_TEMPLATED)
    recording_mode: RecordingMode = field(default="mix", metadata=_TEMPLATED)
    app_id: str | None = field(default=None, metadata=_TEMPLATED)  # None: the connection's
    agora_conn_id: str = field(default=DEFAULT_CONN_ID, metadata=_TEMPLATED)
    target_status: int = field(default=LAST_LIFECYCLE_STATUS, metadata=_TEMPLATED)
    failure_statuses: tuple[int, ...] = (20,)
    not_found_grace_period: float = field(default=90.0, metadata=_TEMPLATED)
    on_not_found: OnNotFound = field(default="fail", metadata=_TEMPLATED)
    exit_files_grace_period: float = field(default=30.0, metadata=_TEMPLATED)
    notification_poll_interval: float | None = None  # None: the poll interval
    known_to_have_run: bool = False  # an upstream task started or stopped it: a lasting 404 is its end

    @classmethod
    def templated(cls) -> tuple[str, ...]:
        """The parameters a DAG author may template (the sensor's ``template_fields``)."""
        return tuple(spec_field.name for spec_field in fields(cls) if spec_field.metadata.get("templated"))

    @classmethod
    def with_defaults(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter, as given (unchecked) or else its default, in declaration order.

        A name that is not a parameter, or a missing ``resource_id``/``sid``, is a TypeError, as
        for a function's keyword arguments: it is a programming error, not a DAG author's.
        """
        names = [spec_field.name for spec_field in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"{', '.join(unknown)}: not a parameter of a recording wait ({', '.join(names)})")
        missing = [f.name for f in fields(cls) if f.name not in given and f.default is MISSING]
        if missing:
            raise TypeError(f"a recording wait needs {' and '.join(missing)}")
        return {f.name: given.get(f.name, f.default) for f in fields(cls)}

    @classmethod
    def checked(cls, **values: Any) -> WaitSpec:
        """Build and validate at run time, after templates are rendered; one sentence per mistake.

        A parameter left out takes its declared default.
        """
        values = {f.name: values.get(f.name, None if f.default is MISSING else f.default) for f in fields(cls)}
        sid = values["sid"]
        sid_text = sid if isinstance(sid, str) else None
        for name in ("resource_id", "sid"):
            check_path_parameter(name, values[name], sid=sid_text)
        mode = check_recording_mode(values["recording_mode"], sid=sid_text)
        failures = _failure_statuses(values["failure_statuses"], sid)
        target = _target_status(values["target_status"], failures, sid)
        return cls(
            resource_id=values["resource_id"],
            sid=sid,
            recording_mode=cast(RecordingMode, mode),
            app_id=values["app_id"],
            agora_conn_id=values["agora_conn_id"],
            target_status=target,
            failure_statuses=failures,
            not_found_grace_period=_seconds("not_found_grace_period", values["not_found_grace_period"], sid),
            exit_files_grace_period=_seconds("exit_files_grace_period", values["exit_files_grace_period"], sid),
            on_not_found=_on_not_found(values["on_not_found"], sid),
            notification_poll_interval=_optional_seconds(
                "notification_poll_interval", values["notification_poll_interval"], sid
            ),
            known_to_have_run=_flag("known_to_have_run", values["known_to_have_run"], sid),
        )

    @classmethod
    def from_attributes(cls, owner: object) -> WaitSpec:
        """Checked spec from an object holding these fields as attributes (the sensor)."""
        return cls.checked(**{spec_field.name: getattr(owner, spec_field.name) for spec_field in fields(cls)})

    def to_kwargs(self) -> dict[str, Any]:
        """Every parameter as a JSON primitive (the trigger's kwargs): ``failure_statuses`` is a list."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    def result(self, snapshot: RecordingSnapshot, ended_by: EndedBy | None) -> RecordingResult:
        return recording_result(self.resource_id, self.sid, self.recording_mode, snapshot, ended_by)


@dataclass(frozen=True)
class WaitMemory:
    """What one poll leaves for the next: when 404s began, and the last answer that had a status."""

    not_found_since: float | None = None
    last_seen: RecordingResult | None = None
    exit_seen_at: float | None = None  # when a normal exit (11) was first seen without files (31)
    acted_on: tuple[str, ...] = ()  # noticeIds of fail-overs and fatal errors already acted on
    # Epoch seconds before which Agora must not be queried: its Retry-After, when 429s outlasted a
    # poll's retries. The next poll (the next poke, a reschedule, the trigger) waits for it.
    not_before: float | None = None
    # Agora's side is done with this result; its files are awaited in storage (verify_in_storage),
    # since the first check that found them incomplete.
    settled: RecordingResult | None = None
    storage_pending_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON for the task state store and trigger kwargs; the later fields only once used."""
        data = asdict(self)
        for name in ("exit_seen_at", "not_before", "settled", "storage_pending_since"):
            if data[name] is None:
                del data[name]
        if self.acted_on:
            data["acted_on"] = list(self.acted_on)
        else:
            del data["acted_on"]
        return data

    @classmethod
    def from_json(cls, data: Any) -> WaitMemory:
        if not isinstance(data, dict):
            return cls()
        last_seen = data.get("last_seen")
        acted_on = data.get("acted_on")
        return cls(
            not_found_since=_epoch(data.get("not_found_since")),
            last_seen=cast(RecordingResult, last_seen) if isinstance(last_seen, dict) else None,
            exit_seen_at=_epoch(data.get("exit_seen_at")),
            acted_on=tuple(str(item) for item in acted_on) if isinstance(acted_on, list) else (),
            not_before=_epoch(data.get("not_before")),
            settled=cast(RecordingResult, data["settled"]) if isinstance(data.get("settled"), dict) else None,
            storage_pending_since=_epoch(data.get("storage_pending_since")),
        )

    def query_allowed_in(self, now: float) -> float:
        """Seconds until Agora may be queried again (0: now), as its last Retry-After said."""
        return max(self.not_before - now, 0.0) if self.not_before is not None else 0.0


def _epoch(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    memory: WaitMemory
    message: str
    result: RecordingResult | None = None
    query_now: bool = False  # a notification asks for a query at once, not at the next interval


def decide_on_answer(spec: WaitSpec, memory: WaitMemory, body: Any) -> Decision:
    """A ``query`` answered with a body: compare its status with the target and the failure statuses."""
    snapshot = parse_recording(body, sid=spec.sid, require_status=True)
    status = snapshot.status
    seen = spec.result(snapshot, ended_by=None)
    memory = replace(memory, not_found_since=None, last_seen=seen, not_before=None)
    files = describe_files(snapshot.files)
    if status in spec.failure_statuses:
        return Decision(
            Outcome.FAIL,
            memory,
            f"Recording sid={spec.sid} reached failure status {describe_status(status)}. Last file list: {files}.",
            seen,
        )
    if status is not None and spec.target_status <= status <= LAST_LIFECYCLE_STATUS:
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid} reached status {describe_status(status)} "
            f"(target {describe_status(spec.target_status)}); {files}.",
            spec.result(snapshot, ended_by="status"),
        )
    return Decision(
        Outcome.WAIT,
        memory,
        f"Recording sid={spec.sid} is at status {describe_status(status)}, waiting for "
        f"{describe_status(spec.target_status)}; {len(snapshot.files)} file(s) so far.",
    )


def decide_on_error(spec: WaitSpec, memory: WaitMemory, error: AgoraError, now: float) -> Decision:
    """A ``query`` failed. Returns the decision, or re-raises errors a wait has no rule for.

    Transient errors (already retried by the transport) never fail the wait: the next poll asks
    again, and only the wait's own deadline ends it.
    """
    if isinstance(error, AgoraNotFoundError):
        return decide_on_not_found(spec, replace(memory, not_before=None), error, now)
    if isinstance(error, AgoraRouteNotFoundError):
        return Decision(Outcome.FAIL, memory, str(error), memory.last_seen)
    if error.retryable:
        return decide_on_transient_error(spec, memory, error, now)
    raise error


def decide_on_transient_error(spec: WaitSpec, memory: WaitMemory, error: AgoraError, now: float) -> Decision:
    """429, 5xx, timeouts that outlasted the poll's retries: wait on. A 429's ``Retry-After`` is kept
    in the memory, so that the next poll, however soon it comes, does not query before it."""
    retry_after = error.retry_after if isinstance(error, AgoraRateLimitError) else None
    message = f"Agora did not answer the query for recording sid={spec.sid} after retries ({error}); "
    if not retry_after:
        return Decision(Outcome.WAIT, replace(memory, not_before=None), message + "asking again at the next poll.")
    return Decision(
        Outcome.WAIT,
        replace(memory, not_before=now + retry_after),
        message + f"asking again at the next poll, but not before Agora's Retry-After of {retry_after:g} s.",
    )


def decide_on_not_found(spec: WaitSpec, memory: WaitMemory, error: AgoraApiError, now: float) -> Decision:
    """Agora's service said 404 ``failed to find worker``.

    It means the session ended, never started, or is failing over to another server (which Agora
    says can take up to 90 s). Only a 404 that outlasts the grace period counts.
    """
    since = memory.not_found_since if memory.not_found_since is not None else now
    memory = replace(memory, not_found_since=since)
    elapsed = max(now - since, 0.0)
    if elapsed < spec.not_found_grace_period:
        return Decision(
            Outcome.WAIT,
            memory,
            f"Agora does not find recording sid={spec.sid} (HTTP 404, request id {error.request_id}) for "
            f"{elapsed:.0f} s; waiting up to not_found_grace_period={spec.not_found_grace_period:g} s, "
            f"because Agora's fail-over answers 404 for a while.",
        )
    last_seen = memory.last_seen
    if spec.on_not_found == "succeed" and last_seen is None and spec.known_to_have_run:
        gone = spec.result(RecordingSnapshot(status=None, files=[], server_response={}), "not_found")
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid}, which an upstream task started or stopped (known_to_have_run), has "
            f"been gone (HTTP 404) for {elapsed:.0f} s: it ended. This task saw no file list; the one "
            f"Agora gave the task that stopped it is in that task's result.",
            gone,
        )
    if spec.on_not_found == "succeed" and last_seen is not None:
        result: RecordingResult = {**last_seen, "ended_by": "not_found"}
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid} was seen at status {describe_status(last_seen.get('status'))} and has "
            f"been gone (HTTP 404) for {elapsed:.0f} s: it ended. Last file list: "
            f"{describe_files(last_seen.get('files') or [])}.",
            result,
        )
    seen_text = (
        f"It was last seen at status {describe_status(last_seen.get('status'))} with "
        f"{describe_files(last_seen.get('files') or [])}."
        if last_seen
        else "It was never seen running by this task."
    )
    hint = (
        " To treat a recording that disappears after running as finished, set on_not_found='succeed'."
        if spec.on_not_found == "fail"
        else ""
    )
    return Decision(
        Outcome.FAIL,
        memory,
        f"Recording sid={spec.sid} was not found by Agora (HTTP 404 'failed to find worker', request id "
        f"{error.request_id}) for {elapsed:.0f} s, past not_found_grace_period="
        f"{spec.not_found_grace_period:g} s: it has ended, never started, or resource_id/sid/recording_mode "
        f"are wrong. {seen_text}{hint}",
        last_seen,
    )


# -- notifications -------------------------------------------------------------------------------


def merge_files(*lists: Sequence[RecordingFile]) -> list[RecordingFile]:
    """Every file of every list, once per ``fileName``, in the order first seen; later details win."""
    merged: dict[str, RecordingFile] = {}
    for files in lists:
        for item in files:
            name = str(item.get("fileName"))
            merged[name] = cast(RecordingFile, {**merged.get(name, {}), **item})
    return list(merged.values())


def _settled_by(
    spec: WaitSpec, memory: WaitMemory, notification: Notification, *, status: int | None
) -> RecordingResult:
    last: RecordingResult | None = memory.last_seen
    files = merge_files(last["files"] if last else [], notification.files)
    return {
        "resource_id": spec.resource_id,
        "sid": spec.sid,
        "recording_mode": spec.recording_mode,
        "status": status if status is not None else (last["status"] if last else None),
        "ended_by": "notification",
        "files": files,
        "server_response": last["server_response"] if last else {},
        "notification": {"notice_id": notification.notice_id, "event_type": notification.event_type},
    }


def _ends_abnormally(notification: Notification) -> bool:
    """An abnormal exit (11 with exitStatus 1), or a web recording that stopped on a failure."""
    return (notification.kind == EXITED and notification.exit_status == 1) or notification.kind == WEB_FAILED


def _ends_with_files(spec: WaitSpec, notification: Notification) -> bool:
    """The files are uploaded. A web recording's 31 lists no files: its 71 does, so only the 71 counts."""
    return notification.kind == ENDED and (spec.recording_mode != "web" or notification.event_type == 71)


def _exits_normally(notification: Notification) -> bool:
    return notification.kind == EXITED and notification.exit_status == 0


@dataclass(frozen=True)
class _Heard:
    """A recording's stored notifications, sorted by what they can do to its wait."""

    abnormal_ends: list[Notification]
    ends_with_files: list[Notification]
    normal_exits: list[Notification]
    news: list[Notification]  # fail-overs and errors not acted on yet

    @classmethod
    def sorted_out(cls, spec: WaitSpec, memory: WaitMemory, notifications: Sequence[Notification]) -> _Heard:
        return cls(
            abnormal_ends=[n for n in notifications if _ends_abnormally(n)],
            ends_with_files=[n for n in notifications if _ends_with_files(spec, n)],
            normal_exits=[n for n in notifications if _exits_normally(n)],
            news=[n for n in notifications if n.kind in (FAILOVER, ERROR) and n.notice_id not in memory.acted_on],
        )

    def exit_seen(self, memory: WaitMemory, now: float) -> WaitMemory:
        """The memory with the time a normal exit was first seen, once one is."""
        if not self.normal_exits or memory.exit_seen_at is not None:
            return memory
        return replace(memory, exit_seen_at=now)


def _failed_rule(spec: WaitSpec, memory: WaitMemory, heard: _Heard, now: float) -> Decision | None:
    """An abnormal end fails the wait, like status 20."""
    if not heard.abnormal_ends:
        return None
    first = heard.abnormal_ends[0]
    result = _settled_by(spec, memory, first, status=None)
    return Decision(
        Outcome.FAIL,
        memory,
        f"Recording sid={spec.sid} ended abnormally, as Agora's notification {first.notice_id} (event "
        f"{first.event_type}, {first.details.get('msgName', 'no msgName')}) says. Files known: "
        f"{describe_files(result['files'])}.",
        result,
    )


def _uploaded_rule(spec: WaitSpec, memory: WaitMemory, heard: _Heard, now: float) -> Decision | None:
    """Uploaded files end the wait; with a normal exit also heard, at status 8 (exited)."""
    if not heard.ends_with_files:
        return None
    first = heard.ends_with_files[0]
    result = _settled_by(spec, memory, first, status=LAST_LIFECYCLE_STATUS if heard.normal_exits else None)
    return Decision(
        Outcome.DONE,
        memory,
        f"Recording sid={spec.sid} ended and its files are uploaded, as Agora's notification "
        f"{first.notice_id} (event {first.event_type}) says; {describe_files(result['files'])}.",
        result,
    )


def _exit_without_files_rule(spec: WaitSpec, memory: WaitMemory, heard: _Heard, now: float) -> Decision | None:
    """A normal exit whose 'uploaded' (31) has not come within exit_files_grace_period ends the wait
    with the files known so far."""
    if not heard.normal_exits:
        return None
    memory = heard.exit_seen(memory, now)
    seen_at = cast(float, memory.exit_seen_at)
    if max(now - seen_at, 0.0) < spec.exit_files_grace_period:
        return None
    first = heard.normal_exits[0]
    result = _settled_by(spec, memory, first, status=LAST_LIFECYCLE_STATUS)
    return Decision(
        Outcome.DONE,
        memory,
        f"Recording sid={spec.sid} exited normally (notification {first.notice_id}), but no "
        f"'uploaded' notification (31) came within exit_files_grace_period="
        f"{spec.exit_files_grace_period:g} s: finishing with the files known so far, "
        f"{describe_files(result['files'])}.",
        result,
    )


def _acted_on(memory: WaitMemory, notification: Notification, now: float) -> WaitMemory:
    """A fail-over (12) restarts a running 404 grace period: Agora just said the recording moved."""
    memory = replace(memory, acted_on=(*memory.acted_on, notification.notice_id))
    if notification.kind == FAILOVER and memory.not_found_since is not None:
        memory = replace(memory, not_found_since=now)
    return memory


def _waiting_on_rule(spec: WaitSpec, memory: WaitMemory, heard: _Heard, now: float) -> Decision | None:
    """New fail-overs and errors, each acted on once (a fatal error asks for a query at once), or a
    normal exit still waiting for its files: the wait goes on with what they changed."""
    if not heard.news and not heard.normal_exits:
        return None
    memory = heard.exit_seen(memory, now)
    for notification in heard.news:
        memory = _acted_on(memory, notification, now)
    return Decision(
        Outcome.WAIT,
        memory,
        f"Recording sid={spec.sid}: Agora's notifications say "
        + ", ".join(
            f"event {n.event_type} ({n.details.get('msgName', '')})" for n in (*heard.news, *heard.normal_exits)
        )
        + "; waiting on.",
        query_now=any(n.kind == ERROR and n.error_level == FATAL_ERROR_LEVEL for n in heard.news),
    )


# In this order: the first rule that decides wins.
_NOTIFICATION_RULES = (_failed_rule, _uploaded_rule, _exit_without_files_rule, _waiting_on_rule)


def decide_on_notifications(
    spec: WaitSpec, memory: WaitMemory, notifications: Sequence[Notification], now: float
) -> Decision | None:
    """What a recording's stored notifications settle: the same outcomes as ``query`` answers.

    None when they say nothing new (poll Agora as usual). A WAIT decision carries what they
    changed in the memory (a fail-over restarts the 404 grace period; a fatal error asks for a
    query at once). Idempotent: the whole list is read again at every poll.
    """
    heard = _Heard.sorted_out(spec, memory, notifications)
    for rule in _NOTIFICATION_RULES:
        decision = rule(spec, memory, heard, now)
        if decision is not None:
            return decision
    return None
