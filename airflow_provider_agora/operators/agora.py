"""Operators that start and stop Agora cloud recordings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast, get_args

from airflow_provider_agora._client.protocol import (
    CODE_INVALID_OPERATION,
    check_cname,
    check_recording_mode,
    check_uid,
    code_number,
)
from airflow_provider_agora._client.retry import RetryPolicy
from airflow_provider_agora._compat import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    key_outputs_default,
    mask_secret,
    push_keys,
)
from airflow_provider_agora._connection_form import DEFAULT_CONN_ID
from airflow_provider_agora._storage.announcing import AnnouncesRecording
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraConfigurationError,
    AgoraNoRecordedDataError,
    AgoraNotFoundError,
    AgoraResponseError,
    configuration_errors_fail_the_task,
)
from airflow_provider_agora.links import AgoraRecordingStorageLink
from airflow_provider_agora.results import (
    EndedBy,
    RecordingMode,
    StartResult,
    StopResult,
    parse_recording,
    recording_result,
)

if TYPE_CHECKING:
    import jinja2

    from airflow_provider_agora._compat import Context
    from airflow_provider_agora._storage.locations import StorageLocation
    from airflow_provider_agora.hooks.agora import AgoraHook

# Agora's integration guide: retry a failed start (5xx) after 3, 6, 9 s; code 65 after 3 and 6 s.
START_RETRY_POLICY = RetryPolicy(max_attempts=4, initial_delay=3.0, max_delay=9.0, max_total_seconds=40.0)
# Keys of a start request whose values are credentials, wherever they appear in it.
SENSITIVE_KEYS = frozenset({"accessKey", "secretKey", "stsToken", "token", "secret", "salt"})
#: What the stop operator does when nobody published (HTTP 206 code 435), and with a session already gone.
OnNoRecordedData = Literal["skip", "succeed", "fail"]
OnAlreadyStopped = Literal["fail", "succeed"]
NO_RECORDED_DATA_CHOICES: tuple[OnNoRecordedData, ...] = get_args(OnNoRecordedData)
ALREADY_STOPPED_CHOICES: tuple[OnAlreadyStopped, ...] = get_args(OnAlreadyStopped)

__all__ = ["AgoraStartRecordingOperator", "AgoraStopRecordingOperator"]


def sensitive_values(value: Any) -> Iterator[str]:
    """Every credential inside a ``clientRequest`` (storage keys, STS and RTC tokens, decryption secret)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SENSITIVE_KEYS and isinstance(item, str) and item:
                yield item
            else:
                yield from sensitive_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from sensitive_values(item)


def _hook(conn_id: str, retry_policy: RetryPolicy | None = None) -> AgoraHook:
    from airflow_provider_agora.hooks.agora import AgoraHook

    return AgoraHook(conn_id, retry_policy=retry_policy)


def _storage_location(value: Any, *, sid: str | None = None, from_storage_config: bool = False) -> StorageLocation:
    """Where the files go, from a storageConfig or the ``storage`` argument; the storage code loads here."""
    from airflow_provider_agora._storage.locations import StorageLocation

    if from_storage_config:
        return StorageLocation.from_storage_config(value, sid=sid)
    return StorageLocation.from_argument(value, sid=sid)


class AgoraStartRecordingOperator(AnnouncesRecording, BaseOperator):
    """Acquire a resource and start a cloud recording in one task.

    Agora wants ``start`` within two seconds of ``acquire``, so both happen here. A failed ``start``
    is retried as Agora's integration guide says (5xx after 3, 6, 9 s; HTTP 206 code 65 with the
    same request); 4xx are never retried. Returns ``{"resource_id", "sid", "cname", "uid",
    "recording_mode", "app_id"}``; each key is also its own XCom, so ``start.output["sid"]`` can be
    passed straight to a sensor.

    Credentials inside ``client_request`` (``storageConfig`` keys, tokens) are masked in logs and in
    the rendered-template view. Keep them out of the DAG file: template them from a connection,
    e.g. ``"accessKey": "{{ conn.recording_storage.login }}"``.

    :param cname: channel name. Templated.
    :param uid: the recorder's own uid (1 to 2**32-1), unique in the channel. Templated.
    :param recording_mode: ``individual``, ``mix`` or ``web``. Templated.
    :param client_request: Agora's ``clientRequest`` for ``start``. Templated.
    :param acquire_request: Agora's ``clientRequest`` for ``acquire``; by default ``{"scene": 1}``
        for web recording and ``{}`` otherwise. Templated.
    """

    template_fields: Sequence[str] = (
        "cname",
        "uid",
        "recording_mode",
        "client_request",
        "acquire_request",
        "app_id",
        "agora_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"client_request": "json", "acquire_request": "json"}
    ui_color = "#099dfd"
    operator_extra_links = (AgoraRecordingStorageLink(),)

    def __init__(
        self,
        *,
        cname: str,
        uid: str | int,
        recording_mode: str,
        client_request: dict[str, Any],
        acquire_request: dict[str, Any] | None = None,
        app_id: str | None = None,
        agora_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        self._push_keys = key_outputs_default(kwargs)
        super().__init__(**kwargs)
        self.cname = cname
        self.uid = uid
        self.recording_mode = recording_mode
        self.client_request = client_request
        self.acquire_request = acquire_request
        self.app_id = app_id
        self.agora_conn_id = agora_conn_id
        self._location: StorageLocation | None = None  # from client_request's storageConfig, at run time

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Mask credentials as soon as their values are known, before Airflow stores rendered fields."""
        for secret in sensitive_values(self.client_request):
            mask_secret(secret)
        super().render_template_fields(context, jinja_env)
        for secret in sensitive_values(self.client_request):
            mask_secret(secret)

    def execute(self, context: Context) -> StartResult:
        result = self._start(context)
        if self._push_keys:
            push_keys(context, result)
        self.announce(context, result)
        return result

    def _start(self, context: Context) -> StartResult:
        with configuration_errors_fail_the_task():
            mode = cast(RecordingMode, check_recording_mode(self.recording_mode))
            cname = check_cname(self.cname)
            uid = check_uid(self.uid)
            if not isinstance(self.client_request, dict):
                raise AgoraConfigurationError(
                    f"client_request for channel {cname!r} must be a dict (Agora's clientRequest for start), "
                    f"got {type(self.client_request).__name__}."
                )
            storage_config = self.client_request.get("storageConfig")
            self._location = (
                _storage_location(storage_config, from_storage_config=True) if storage_config is not None else None
            )
            acquire_hook = _hook(self.agora_conn_id)
            app_id = acquire_hook.resolve_app_id(self.app_id)
        acquire_request = (
            self.acquire_request if self.acquire_request is not None else ({"scene": 1} if mode == "web" else {})
        )
        resource_id = acquire_hook.acquire(cname, uid, client_request=acquire_request, app_id=app_id)["resourceId"]
        start_hook = _hook(self.agora_conn_id, START_RETRY_POLICY)
        answer = start_hook.start(
            resource_id, cname, uid, recording_mode=mode, client_request=self.client_request, app_id=app_id
        )
        sid = answer.get("sid")
        if not isinstance(sid, str) or not sid:
            raise AgoraResponseError(
                f"Agora's start answer for channel {cname!r} has no sid (request id {start_hook.last_request_id}): "
                f"{answer!r}.",
                body=answer,
            )
        self.log.info(
            "Started %s recording sid=%s on channel %r as uid %s (request id %s).",
            mode,
            sid,
            cname,
            uid,
            start_hook.last_request_id,
        )
        started: StartResult = {
            "resource_id": resource_id,
            "sid": sid,
            "cname": cname,
            "uid": uid,
            "recording_mode": mode,
            "app_id": app_id,
        }
        if self._location is not None:
            started["storage"] = self._location.to_dict()
        return started


class AgoraStopRecordingOperator(AnnouncesRecording, BaseOperator):
    """Stop a cloud recording and return its final file list.

    Returns the sensor's result shape plus ``uploading_status`` (``uploaded``; ``backuped`` means
    some files reach your storage later through Agora's backup): ``{"resource_id", "sid",
    "recording_mode", "status", "ended_by": "stop", "files", "server_response", "uploading_status"}``.

    :param on_no_recorded_data: what HTTP 206 code 435 (nobody published, so no files) does:
        ``"skip"`` (default) skips this task and, by default, the processing after it;
        ``"succeed"`` returns an empty file list; ``"fail"`` fails the task.
    :param on_already_stopped: what a stop on a session that is already gone (404) or already
        exiting (code 49) does: ``"fail"`` (default) or ``"succeed"`` with whatever file list
        Agora still returned.
    :param async_stop: Agora's ``async_stop``: answer at once instead of after the upload.
    """

    template_fields: Sequence[str] = (
        "resource_id",
        "sid",
        "recording_mode",
        "cname",
        "uid",
        "app_id",
        "agora_conn_id",
        "storage",
    )
    ui_color = "#099dfd"
    operator_extra_links = (AgoraRecordingStorageLink(),)

    def __init__(
        self,
        *,
        resource_id: str,
        sid: str,
        recording_mode: str,
        cname: str,
        uid: str | int,
        app_id: str | None = None,
        async_stop: bool = False,
        on_no_recorded_data: str = "skip",  # an OnNoRecordedData
        on_already_stopped: str = "fail",  # an OnAlreadyStopped
        agora_conn_id: str = DEFAULT_CONN_ID,
        storage: Any = None,
        **kwargs: Any,
    ) -> None:
        self._push_keys = key_outputs_default(kwargs)
        super().__init__(**kwargs)
        self.resource_id = resource_id
        self.sid = sid
        self.recording_mode = recording_mode
        self.cname = cname
        self.uid = uid
        self.app_id = app_id
        self.async_stop = async_stop
        self.on_no_recorded_data = on_no_recorded_data
        self.on_already_stopped = on_already_stopped
        self.agora_conn_id = agora_conn_id
        self.storage = storage
        self._location: StorageLocation | None = None

    def _result(self, body: Any, ended_by: EndedBy) -> StopResult:
        snapshot = parse_recording(body, sid=self.sid, require_status=False)
        # The mode is a RecordingMode by now: hook.stop checked it before sending anything.
        mode = cast(RecordingMode, self.recording_mode)
        from airflow_provider_agora._storage.verification import located

        result = located(recording_result(self.resource_id, self.sid, mode, snapshot, ended_by), self._location)
        return cast(StopResult, {**result, "uploading_status": snapshot.uploading_status})

    def _check_choices(self) -> None:
        for name, value, choices in (
            ("on_no_recorded_data", self.on_no_recorded_data, NO_RECORDED_DATA_CHOICES),
            ("on_already_stopped", self.on_already_stopped, ALREADY_STOPPED_CHOICES),
        ):
            if value not in choices:
                raise AgoraConfigurationError(
                    f"{name} {value!r} for recording sid={self.sid} is not valid: use one of {', '.join(choices)}."
                )

    def execute(self, context: Context) -> StopResult:
        result = self._stop(context)
        if self._push_keys:
            push_keys(context, result)
        self.announce(context, result)
        return result

    def _stop(self, context: Context) -> StopResult:
        hook = _hook(self.agora_conn_id)
        try:
            with configuration_errors_fail_the_task():
                self._check_choices()
                if self.storage not in (None, "", {}):
                    self._location = _storage_location(self.storage, sid=self.sid)
                body = hook.stop(
                    self.resource_id,
                    self.sid,
                    self.cname,
                    self.uid,
                    recording_mode=self.recording_mode,
                    async_stop=self.async_stop,
                    app_id=self.app_id,
                )
        except AgoraNoRecordedDataError as error:
            return self._no_recorded_data(error)
        except AgoraApiError as error:
            if isinstance(error, AgoraNotFoundError) or code_number(error.code) == CODE_INVALID_OPERATION:
                return self._already_stopped(error)
            raise
        result = self._result(body, ended_by="stop")
        self.log.info(
            "Stopped recording sid=%s: uploading status %s, %d file(s) (request id %s).",
            self.sid,
            result["uploading_status"],
            len(result["files"]),
            hook.last_request_id,
        )
        if result["uploading_status"] == "backuped":
            self.log.warning(
                "Some files of recording sid=%s went to Agora's backup storage; Agora uploads them to "
                "your storage later.",
                self.sid,
            )
        return result

    def _no_recorded_data(self, error: AgoraNoRecordedDataError) -> StopResult:
        message = (
            f"Recording sid={self.sid} stopped with no recorded data (HTTP 206 code 435, request id "
            f"{error.request_id}): nobody published audio or video in channel {self.cname!r}."
        )
        if self.on_no_recorded_data == "fail":
            raise AirflowFailException(message)
        if self.on_no_recorded_data == "skip":
            raise AirflowSkipException(f"{message} Skipping, as on_no_recorded_data='skip'.")
        self.log.warning("%s Returning an empty file list, as on_no_recorded_data='succeed'.", message)
        return self._result(error.body, ended_by="stop")

    def _already_stopped(self, error: AgoraApiError) -> StopResult:
        what = "was already gone (HTTP 404)" if error.status == 404 else "was already exiting (code 49)"
        result = self._result(error.body, ended_by="already_stopped")
        message = (
            f"Recording sid={self.sid} {what} when it was asked to stop (request id {error.request_id}): it "
            f"ended by itself (maxIdleTime, maxRecordingHour) or was stopped before. Files Agora returned: "
            f"{len(result['files'])}."
        )
        if self.on_already_stopped == "fail":
            raise AirflowFailException(f"{message} Set on_already_stopped='succeed' to accept this.")
        self.log.warning("%s", message)
        return result
