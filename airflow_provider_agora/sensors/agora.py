"""``AgoraRecordingQuerySensor``: wait until an Agora cloud recording reaches a status."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow_provider_agora._compat import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    TaskDeferred,
    conf,
    key_outputs_default,
    push_keys,
)
from airflow_provider_agora._storage.announcing import AnnouncesRecording
from airflow_provider_agora._storage.arguments import StorageArguments
from airflow_provider_agora._waiting import (
    Decision,
    Outcome,
    WaitMemory,
    WaitSpec,
    decide_on_answer,
    decide_on_error,
    decide_on_notifications,
)
from airflow_provider_agora.exceptions import AgoraError, configuration_errors_fail_the_task
from airflow_provider_agora.links import AgoraRecordingStorageLink

if TYPE_CHECKING:
    from airflow_provider_agora._compat import Context
    from airflow_provider_agora._storage.locations import StorageLocation
    from airflow_provider_agora._storage.verification import StorageCheck
    from airflow_provider_agora.hooks.agora import AgoraHook
    from airflow_provider_agora.results import RecordingResult

__all__ = ["AgoraRecordingQuerySensor"]

# Key of the wait's memory in Airflow's task state store (Airflow 3.3+).
MEMORY_KEY = "agora_recording_wait"


class AgoraRecordingQuerySensor(AnnouncesRecording, BaseSensorOperator):
    """Wait until an Agora cloud recording reaches ``target_status``, and return its file list.

    Each poke calls Agora's ``query`` once. The task succeeds once ``serverResponse.status`` is at
    least ``target_status`` (and at most 8, "exited"); it fails without retry on a status in
    ``failure_statuses`` or when Agora has not found the session for longer than
    ``not_found_grace_period`` seconds. Transient errors (429, 5xx, timeouts) are retried inside
    the poke and never fail the task before ``timeout``; when 429s outlast a poke's retries, no
    later poke, reschedule or trigger queries Agora before its ``Retry-After`` has passed.

    The XCom return value is ``{"resource_id", "sid", "recording_mode", "status", "ended_by",
    "files", "server_response"}``; ``ended_by`` is ``"status"``, or ``"not_found"`` when
    ``on_not_found="succeed"`` accepted a session that disappeared after it was seen running.
    Each key is also pushed as its own XCom, so ``sensor.output["files"]`` feeds a downstream task.

    :param resource_id: Agora resource ID (from acquire). Templated.
    :param sid: recording session ID (from start). Templated.
    :param recording_mode: ``individual``, ``mix`` or ``web``: the mode the recording was started in. Templated.
    :param app_id: Agora App ID; defaults to the connection's ``app_id`` extra. Templated.
    :param agora_conn_id: the ``agora`` connection. Templated.
    :param target_status: 0-8; 8 ("exited") waits for the end, 5 for "in progress". Templated.
    :param failure_statuses: statuses that fail the task at once; Agora's 20 is "exited abnormally".
    :param not_found_grace_period: seconds a service 404 must persist before it counts. Agora's
        fail-over answers 404 for up to 90 s while the recording goes on; 0 fails on the first 404. Templated.
    :param on_not_found: ``"fail"``, or ``"succeed"`` to count a session that was seen running and
        then stays gone past the grace period as ended normally (with the last file list seen). Templated.
    :param known_to_have_run: the recording is known to have run, because an upstream task started
        or stopped it: with ``on_not_found="succeed"``, a 404 that outlasts the grace period then ends
        the wait even if this task never saw the recording (Agora may answer 404 right after a stop);
        the result then lists no files (the stop's result has them).
    :param exit_files_grace_period: with Agora's notifications (the connection's ``ncs_secret`` and
        ``redis_conn_id``): after a normal exit (event 11) without the "uploaded" notification (31),
        which can arrive after it, wait this many seconds for it, then finish with the files known.
        Templated.
    :param notification_poll_interval: in deferrable mode, the interval between ``query`` calls for
        waits that receive notifications (the backstop: notifications can be lost); default
        ``poke_interval``.
    :param storage: where the recording's files go: the start operator's result ``["storage"]``, the
        ``storageConfig`` (its keys are neither needed nor kept), or a URI such as ``s3://bucket/prefix``.
        With it, each file in the result has its ``key`` and ``uri`` and the result its ``storage``. Templated.
    :param verify_in_storage: succeed only once every file is in the bucket and complete (each HLS
        playlist finished with all its segments, each MP4 non-empty); needs ``storage``.
    :param storage_conn_id: the connection that reads the bucket (``aws`` with ``endpoint_url`` for
        S3-compatible storage); default: the reader's own default connection. Templated.
    :param storage_grace_period: seconds the files may take to land after Agora is done (a 32,
        "backuped", forwards them later); then the task fails naming what is missing. Templated.
    :param deferrable: wait on the triggerer instead of a worker slot (poke once first; a
        recording already at its target never defers). Default: ``[operators] default_deferrable``.
    """

    # The wait's parameters and their defaults are declared once, in ``WaitSpec``: the defaults
    # below are its class attributes, and so are the templated ones.
    template_fields: Sequence[str] = (*WaitSpec.templated(), *StorageArguments.templated)
    ui_color = "#099dfd"
    operator_extra_links = (AgoraRecordingStorageLink(),)

    def __init__(
        self,
        *,
        resource_id: str,
        sid: str,
        recording_mode: str = WaitSpec.recording_mode,
        app_id: str | None = WaitSpec.app_id,
        agora_conn_id: str = WaitSpec.agora_conn_id,
        target_status: int = WaitSpec.target_status,
        failure_statuses: Sequence[int] = WaitSpec.failure_statuses,
        not_found_grace_period: float = WaitSpec.not_found_grace_period,
        on_not_found: str = WaitSpec.on_not_found,
        exit_files_grace_period: float = WaitSpec.exit_files_grace_period,
        notification_poll_interval: float | None = WaitSpec.notification_poll_interval,
        known_to_have_run: bool = WaitSpec.known_to_have_run,
        storage: Any = StorageArguments.storage,
        verify_in_storage: bool = StorageArguments.verify_in_storage,
        storage_conn_id: str | None = StorageArguments.storage_conn_id,
        storage_grace_period: float = StorageArguments.storage_grace_period,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        self._push_keys = key_outputs_default(kwargs)
        super().__init__(**kwargs)
        # Assigned verbatim: templates are rendered after __init__, values are checked at run time
        # (``WaitSpec.checked``). ``recording_mode`` and ``on_not_found`` take a RecordingMode and an
        # OnNotFound, or a template that renders to one: hence ``str``.
        self.resource_id = resource_id
        self.sid = sid
        self.recording_mode = recording_mode
        self.app_id = app_id
        self.agora_conn_id = agora_conn_id
        self.target_status = target_status
        self.failure_statuses = failure_statuses
        self.not_found_grace_period = not_found_grace_period
        self.on_not_found = on_not_found
        self.exit_files_grace_period = exit_files_grace_period
        self.notification_poll_interval = notification_poll_interval
        self.known_to_have_run = known_to_have_run
        self.storage = storage
        self.verify_in_storage = verify_in_storage
        self.storage_conn_id = storage_conn_id
        self.storage_grace_period = storage_grace_period
        self.deferrable = deferrable
        self._memory = WaitMemory()

    @cached_property
    def hook(self) -> AgoraHook:
        """One hook, hence one HTTP session and one connection lookup, for every poke of this run."""
        from airflow_provider_agora.hooks.agora import AgoraHook

        return AgoraHook(self.agora_conn_id)

    @configuration_errors_fail_the_task()
    def wait_spec(self) -> WaitSpec:
        return WaitSpec.from_attributes(self)

    @configuration_errors_fail_the_task()
    def storage_spec(self, sid: str) -> tuple[StorageLocation | None, StorageCheck | None]:
        from airflow_provider_agora._storage.verification import storage_check

        return storage_check(
            storage=self.storage,
            verify_in_storage=self.verify_in_storage,
            storage_conn_id=self.storage_conn_id,
            storage_grace_period=self.storage_grace_period,
            sid=sid,
        )

    def decide(self, spec: WaitSpec, memory: WaitMemory) -> Decision:
        """One poll of the wait: Agora's side (``poll``) until it is done, then, with
        ``verify_in_storage``, the bucket's, until the files are there and complete."""
        from airflow_provider_agora._storage.verification import located

        location, check = self.storage_spec(spec.sid)
        if check is not None and memory.settled is not None:
            return self.verify(check, memory, memory.settled)
        decision = self.poll(spec, memory)
        if decision.outcome is not Outcome.DONE or decision.result is None:
            return decision
        if check is not None:
            return self.verify(check, decision.memory, decision.result)
        return Decision(decision.outcome, decision.memory, decision.message, located(decision.result, location))

    def verify(self, check: StorageCheck, memory: WaitMemory, settled: RecordingResult) -> Decision:
        """One look at the bucket (a listing of the recording's prefix, then its playlists)."""
        from airflow_provider_agora._storage.reading import read_listing
        from airflow_provider_agora._storage.verification import StorageTrouble, decide_on_storage, examine

        listing = read_listing(check, settled["files"], settled["sid"])
        seen = listing if isinstance(listing, StorageTrouble) else examine(check.location, settled["files"], listing)
        return decide_on_storage(check, memory, settled, seen, time.time())

    @configuration_errors_fail_the_task()
    def poll(self, spec: WaitSpec, memory: WaitMemory) -> Decision:
        """The recording's stored notifications first (one Redis read, when the connection receives
        them); then, unless they settle the wait, one logical ``query`` (retries inside). Both
        become a decision by the same shared rules. No query before the time Agora's last
        ``Retry-After`` set (kept in the memory): until then the poll only reads notifications."""
        heard = decide_on_notifications(spec, memory, self.hook.notifications(spec.sid), time.time())
        if heard is not None:
            if heard.outcome is not Outcome.WAIT:
                return heard
            memory = heard.memory
        too_early = memory.query_allowed_in(time.time())
        if too_early > 0:
            return Decision(
                Outcome.WAIT,
                memory,
                f"Not querying recording sid={spec.sid} for {too_early:.1f} s more: Agora answered 429 with "
                f"Retry-After.",
            )
        try:
            body = self.hook.query(spec.resource_id, spec.sid, recording_mode=spec.recording_mode, app_id=spec.app_id)
        except AgoraError as error:
            return decide_on_error(spec, memory, error, time.time())  # re-raises errors it has no rule for
        return decide_on_answer(spec, memory, body)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        spec = self.wait_spec()
        store = context.get("task_state_store")  # Airflow 3.3+: survives reschedules and restarts
        memory = WaitMemory.from_json(store.get(MEMORY_KEY)) if store is not None else self._memory
        decision = self.decide(spec, memory)
        while self._must_wait_out_not_found(decision, store, spec):
            self.log.info("%s", decision.message)
            time.sleep(min(self.poke_interval, spec.not_found_grace_period))
            decision = self.decide(spec, decision.memory)
        while self._must_wait_out_storage(decision, store):
            self.log.info("%s", decision.message)
            time.sleep(self.poke_interval)
            decision = self.decide(spec, decision.memory)

        self.log.info("%s (request id %s)", decision.message, self.hook.last_request_id)
        if decision.outcome is Outcome.WAIT:
            self._remember(context, decision.memory)
        else:
            self._forget(context)
        if decision.outcome is Outcome.FAIL:
            raise AirflowFailException(decision.message)
        if decision.outcome is Outcome.DONE:
            return PokeReturnValue(is_done=True, xcom_value=decision.result)
        return False

    def _must_wait_out_not_found(self, decision: Decision, store: object, spec: WaitSpec) -> bool:
        """In reschedule mode without a task state store (Airflow < 3.3) nothing survives between
        pokes, so a 404 spell is waited out inside this poke, bounded by the grace period."""
        return (
            store is None
            and self.reschedule
            and decision.outcome is Outcome.WAIT
            and decision.memory.not_found_since is not None
        )

    def _must_wait_out_storage(self, decision: Decision, store: object) -> bool:
        """As ``_must_wait_out_not_found``, for files still landing after Agora is done: without a
        task state store a reschedule would forget that Agora is done, and query a recording that is gone."""
        return (
            store is None
            and self.reschedule
            and decision.outcome is Outcome.WAIT
            and decision.memory.settled is not None
        )

    def _hand_over(self, context: Context, result: RecordingResult | None) -> None:
        """The wait succeeded: its result for downstream tasks (XComs per key, outlet asset events, lineage)."""
        if self._push_keys:
            push_keys(context, result)
        self.announce(context, result)

    def _remember(self, context: Context, memory: WaitMemory) -> None:
        """Keep what the wait knows for the next poke, reschedule, try or deferral."""
        self._memory = memory
        store = context.get("task_state_store")
        if store is not None:
            store.set(MEMORY_KEY, memory.to_json())

    def _forget(self, context: Context) -> None:
        """The try is over: a retry or a cleared task must start a fresh wait, not a stale 404 clock."""
        self._memory = WaitMemory()
        store = context.get("task_state_store")
        if store is not None:
            store.delete(MEMORY_KEY)

    def execute(self, context: Context) -> RecordingResult | None:
        try:
            result = self._wait(context)
        except (TaskDeferred, AirflowRescheduleException):
            raise  # the wait goes on elsewhere; its memory stays
        except BaseException:
            self._forget(context)
            raise
        self._forget(context)
        self._hand_over(context, result)
        return result

    def _wait(self, context: Context) -> RecordingResult | None:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)  # no deferral when the recording is already there (or failed)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        end_time = time.time() + float(self.timeout)
        if self._memory.settled is not None:  # Agora is done; the files are still landing
            self._defer_storage_check(self._memory, end_time=end_time)
        self._defer(self._memory, end_time=end_time)

    def _defer(self, memory: WaitMemory, *, end_time: float) -> NoReturn:
        from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger

        self.defer(
            trigger=AgoraRecordingQueryTrigger(
                **self.wait_spec().to_kwargs(),
                poll_interval=float(self.poke_interval),
                end_time=end_time,
                memory=memory.to_json(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(end_time - time.time(), 0.0)),
        )

    def _defer_storage_check(self, memory: WaitMemory, *, end_time: float) -> NoReturn:
        """Agora is done and the files are still landing: check the bucket again after
        ``poke_interval``, on the worker (the triggerer only keeps the timer)."""
        from airflow_provider_agora._compat import time_delta_trigger

        self.defer(
            trigger=time_delta_trigger(float(self.poke_interval)),
            method_name="storage_check_complete",
            kwargs={"memory": memory.to_json(), "end_time": end_time},
            timeout=timedelta(seconds=max(end_time - time.time(), 0.0)),
        )

    def storage_check_complete(
        self, context: Context, event: object = None, *, memory: Mapping[str, Any] | None = None, end_time: float = 0.0
    ) -> RecordingResult | None:
        """Resume after the timer between two storage checks."""
        return self._storage_checked(context, WaitMemory.from_json(dict(memory or {})), end_time)

    def _storage_checked(self, context: Context, memory: WaitMemory, end_time: float) -> RecordingResult | None:
        _, check = self.storage_spec(self.sid)
        assert check is not None and memory.settled is not None
        decision = self.verify(check, memory, memory.settled)
        self.log.info("%s", decision.message)
        if decision.outcome is Outcome.FAIL:
            self._forget(context)
            raise AirflowFailException(decision.message)
        if decision.outcome is Outcome.WAIT:
            if end_time and time.time() >= end_time:
                raise AirflowSensorTimeout(f"{decision.message} The sensor's timeout has passed.")
            self._remember(context, decision.memory)
            self._defer_storage_check(decision.memory, end_time=end_time or time.time() + float(self.timeout))
        self._forget(context)
        self._hand_over(context, decision.result)
        return decision.result

    def execute_complete(self, context: Context, event: Mapping[str, object] | None = None) -> RecordingResult | None:
        """Resume after the trigger: the same XCom value and messages as poke mode."""
        from airflow_provider_agora.triggers.agora import (
            EVENT_CHECKPOINT,
            EVENT_FAILURE,
            EVENT_STATUSES,
            EVENT_SUCCESS,
            EVENT_TIMEOUT,
        )

        if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
            raise AirflowException(
                f"The trigger of recording sid={self.sid} sent an event this sensor cannot read ({event!r}); "
                f"the triggerer may run another version of airflow-provider-agora: restart it after upgrades."
            )
        message = str(event.get("message", ""))
        if event["status"] == EVENT_CHECKPOINT:
            # The trigger learned something a restarted triggerer would forget: keep it, wait on.
            self.log.info("%s", message)
            memory = WaitMemory.from_json(event.get("memory"))
            self._remember(context, memory)
            self._defer(memory, end_time=float(event.get("end_time") or time.time()))
        self._forget(context)
        if event["status"] == EVENT_SUCCESS:
            self.log.info("%s", message)
            result = cast("RecordingResult | None", event.get("result"))
            from airflow_provider_agora._storage.verification import located

            location, check = self.storage_spec(self.sid)
            if result is not None and check is not None:
                return self._storage_checked(context, WaitMemory(settled=result), float(event.get("end_time") or 0))
            if result is not None:
                result = located(result, location)
            self._hand_over(context, result)
            return result
        if event["status"] == EVENT_FAILURE:
            raise AirflowFailException(message)
        if event["status"] == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
