"""``AgoraHook`` and ``AgoraAsyncHook``: Agora Cloud Recording's REST API, sync and async.

Both hooks only move bytes: ``requests`` over one keep-alive session per hook, ``httpx`` over one
client per Agora account for the whole event loop. Everything else lives below them and is
shared: which request to send and what an answer means (``_protocol``), where to send it, the
fail-over between Agora's domains, the request budget and what a transport failure means
(``_transport``), and how to retry (``RetryPolicy``). ``requests``, ``httpx`` and ``tenacity``
are imported on first use, because Airflow imports this module whenever it parses a DAG file.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._client.budget import Priority
from airflow_provider_agora._client.protocol import (
    Endpoint,
    acquire_endpoint,
    check_cname,
    check_uid,
    session_endpoint,
    start_endpoint,
)
from airflow_provider_agora._client.retry import RetryPolicy
from airflow_provider_agora._client.transport import Transport
from airflow_provider_agora._compat import AirflowNotFoundException, BaseHook, aget_connection
from airflow_provider_agora._connection_form import (
    CONNECTION_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
    legacy_ui_field_behaviour,
)
from airflow_provider_agora._settings import AgoraSettings, missing_connection, settings_of, with_redis
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraAuthenticationError,
    AgoraConfigurationError,
    AgoraError,
    AgoraRouteNotFoundError,
    AgoraTransportError,
)

if TYPE_CHECKING:
    import httpx
    import requests

    from airflow_provider_agora._ncs.reader import Subscription
    from airflow_provider_agora._ncs.store import NotificationStore
    from airflow_provider_agora.notifications import Notification

__all__ = ["AgoraAsyncHook", "AgoraHook", "AgoraSettings", "RetryPolicy"]

log = logging.getLogger(__name__)

# test_connection must answer quickly in the UI, whatever the connection's timeout says.
_TEST_CONNECTION_TIMEOUT = 10.0
# A resource id and sid that cannot exist: querying them proves the credentials without side effects.
_PROBE_RESOURCE_ID = "airflow-provider-agora-connection-test"
_PROBE_SID = "0" * 32


def request_priority(endpoint: Endpoint, attempt: int = 1) -> Priority:
    """A request's place in the account's budget, decided here once for both hooks and every budget
    (in-process, in Redis, and its fallback): a control call, so that ``start`` follows its
    ``acquire`` within Agora's two seconds, or a retry, which was already served once, goes ahead of
    new polls."""
    return Priority.POLL if attempt == 1 and not endpoint.is_control else Priority.CONTROL


class _AgoraHookBase(BaseHook):
    """What both hooks share: the connection they use, how they retry, the last request id."""

    conn_name_attr = "agora_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONNECTION_TYPE
    hook_name = HOOK_NAME

    def __init__(self, agora_conn_id: str = DEFAULT_CONN_ID, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.agora_conn_id = agora_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        #: ``X-Request-Id`` of Agora's last answer to this hook, to quote to Agora support.
        self.last_request_id: str | None = None
        self._notification_store: NotificationStore | None = None

    def _app_id(self, settings: AgoraSettings, app_id: str | None, sid: str | None) -> str:
        """The task's App ID, else the connection's; one clear sentence if there is neither."""
        chosen = app_id or settings.app_id
        if not chosen:
            about = f"recording sid={sid}" if sid else "this request"
            raise AgoraConfigurationError(
                f"No Agora App ID for {about}: pass app_id to the task or set 'app_id' in the extra of "
                f"connection {self.agora_conn_id!r}."
            )
        return chosen


def _body(cname: str, uid: str | int, client_request: dict[str, Any], *, sid: str | None = None) -> dict[str, Any]:
    """The body of every call that names a channel user: checked ``cname`` and ``uid`` (as a string)."""
    return {"cname": check_cname(cname, sid=sid), "uid": check_uid(uid, sid=sid), "clientRequest": client_request}


class AgoraHook(_AgoraHookBase):
    """Talks to Agora Cloud Recording with the credentials of an ``agora`` connection.

    :param agora_conn_id: the connection: login = Customer ID, password = Customer Secret,
        host = API base URL (default ``https://api.agora.io``), extra ``app_id``,
        ``max_requests_per_second`` (default 10) and ``timeout`` (seconds, default 30).
    :param retry_policy: how transient failures (429, 5xx, HTTP 206 code 65, connection errors,
        timeouts) are retried; 4xx other than 429 never are.
    """

    # -- connection form (Airflow 2.x and 3.0/3.1; 3.2+ reads provider info) -------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return legacy_ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_provider_agora._connection_form import connection_form_widgets

        return connection_form_widgets()

    # -- plumbing ------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> AgoraSettings:
        """The connection, read once per hook and validated."""
        try:
            connection = self.get_connection(self.agora_conn_id)
        except AirflowNotFoundException as error:
            raise missing_connection(self.agora_conn_id) from error
        settings = settings_of(self.agora_conn_id, connection)
        if settings.redis_conn_id is None:
            return settings
        try:
            redis_connection = self.get_connection(settings.redis_conn_id)
        except AirflowNotFoundException:
            redis_connection = None
        return with_redis(settings, redis_connection)

    @cached_property
    def transport(self) -> Transport:
        return Transport(self.settings)

    @cached_property
    def session(self) -> requests.Session:
        """One keep-alive session per hook; TLS verification stays on (requests' default)."""
        import requests

        session = requests.Session()
        session.headers.update(self.transport.headers)
        return session

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def close(self) -> None:
        """Close the HTTP session and the Redis client of notifications; the next call opens new ones."""
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]
        store, self._notification_store = self._notification_store, None
        if store is not None:
            store.close()

    def resolve_app_id(self, app_id: str | None = None, *, sid: str | None = None) -> str:
        """The task's App ID, else the connection's; one clear sentence if there is neither."""
        return self._app_id(self.settings, app_id, sid)

    def _send_once(
        self, endpoint: Endpoint, body: dict[str, Any] | None, sid: str | None, timeout: float, *, priority: Priority
    ) -> dict[str, Any]:
        import requests

        transport = self.transport
        url = transport.url(endpoint)
        try:
            with transport.budget.sending(priority):
                response = self.session.request(endpoint.method, url, json=body, timeout=timeout)
        except requests.RequestException as error:
            transport.raise_failure(error, endpoint, url=url, sid=sid, timeout=timeout)
        answer = transport.answer(endpoint, response.status_code, response.headers, response.content, sid=sid)
        self.last_request_id = answer.request_id
        return answer.body

    def _call(
        self, endpoint: Endpoint, body: dict[str, Any] | None = None, *, sid: str | None = None
    ) -> dict[str, Any]:
        """Agora's JSON body of a success (a dict, as ``interpret_response`` guarantees), with retries."""
        for attempt in self.retry_policy.retrying(log):
            with attempt:  # a retry does not queue again behind everyone else
                priority = request_priority(endpoint, attempt.retry_state.attempt_number)
                return self._send_once(endpoint, body, sid, self.settings.timeout, priority=priority)
        raise AssertionError("tenacity ends with a result or an exception")

    def notifications(self, sid: str) -> list[Notification]:
        """Agora's stored notifications of one recording, oldest first: one Redis read.

        Read from every namespace of the connection (its ``ncs_secret``, and ``ncs_previous_secret``
        during a rotation), and only those: another project's notifications never settle this wait.
        Each ``noticeId`` once; an entry that cannot be read is skipped (logged once). Empty unless
        the connection has ``ncs_secret`` and ``redis_conn_id``. Redis trouble is logged and gives
        an empty list: polling stays the backstop.
        """
        settings = self.settings
        if settings.redis is None or not settings.receives_notifications:
            return []
        import redis

        try:
            return self._notifications().for_sid(sid, settings.notification_namespaces)
        except (redis.RedisError, OSError) as error:
            log.warning("Cannot read Agora's notifications of recording sid=%s from Redis (%s).", sid, error)
            return []

    def _notifications(self) -> NotificationStore:
        """The connection's notification store, made on first use: one Redis client per hook, for the
        reads of ``notifications`` and the registrations of ``start``."""
        if self._notification_store is None:
            from airflow_provider_agora._ncs.store import NotificationStore

            settings = self.settings
            assert settings.redis is not None and settings.notification_namespaces
            self._notification_store = NotificationStore(
                settings.redis, settings.customer_id, settings.notification_namespaces[0]
            )
        return self._notification_store

    # -- the API ---------------------------------------------------------------------------------

    def acquire(
        self,
        cname: str,
        uid: str | int,
        *,
        client_request: dict[str, Any] | None = None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Reserve a recording resource; its ``resourceId`` must be used by ``start`` within 5 minutes."""
        return self._call(acquire_endpoint(self.resolve_app_id(app_id)), _body(cname, uid, client_request or {}))

    def start(
        self,
        resource_id: str,
        cname: str,
        uid: str | int,
        *,
        recording_mode: str,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Start recording with an acquired resource; Agora answers with the session's ``sid``.

        With ``ncs_secret`` and ``redis_conn_id``, the recording is then recorded in Redis (best
        effort), so that the asset watchers can ask Agora about it if its ending notification is lost.
        """
        body = _body(cname, uid, client_request)
        chosen_app_id = self.resolve_app_id(app_id)
        result = self._call(start_endpoint(chosen_app_id, resource_id, recording_mode), body)
        self._register_started(
            result.get("sid"), resource_id, body["cname"], body["uid"], recording_mode, chosen_app_id
        )
        return result

    def _register_started(
        self, sid: object, resource_id: str, cname: str, uid: str, recording_mode: str, app_id: str
    ) -> None:
        """Record a started recording for the asset watchers' backstop: Agora's notifications carry no
        ``resourceId``, which ``query`` needs. Best effort: Redis trouble is a warning, never a failed start."""
        settings = self.settings
        if settings.redis is None or not settings.receives_notifications or not isinstance(sid, str) or not sid:
            return
        from airflow_provider_agora._ncs.store import register_started

        now_ms = int(time.time() * 1000)
        registration = {
            "resource_id": resource_id,
            "recording_mode": recording_mode,
            "cname": cname,
            "uid": uid,
            "app_id": app_id,
            "started_ms": now_ms,
        }
        try:
            register_started(
                self._notifications().client,
                settings.customer_id,
                settings.notification_namespaces,
                sid,
                registration,
                now_ms=now_ms,
            )
        except Exception as error:  # the recording runs: a lost registration only weakens the backstop
            log.warning(
                "Cannot record recording sid=%s in Redis (%s): if its ending notification is lost, the asset "
                "watchers cannot ask Agora about it.",
                sid,
                type(error).__name__,
            )

    def query(self, resource_id: str, sid: str, *, recording_mode: str, app_id: str | None = None) -> dict[str, Any]:
        """Agora's raw answer about a running session (status, file list so far)."""
        endpoint = session_endpoint("query", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        return self._call(endpoint, sid=sid)

    def update(
        self,
        resource_id: str,
        sid: str,
        cname: str,
        uid: str | int,
        *,
        recording_mode: str,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Change which streams are subscribed (or the web page's settings) during a recording."""
        endpoint = session_endpoint("update", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        return self._call(endpoint, _body(cname, uid, client_request, sid=sid), sid=sid)

    def update_layout(
        self,
        resource_id: str,
        sid: str,
        cname: str,
        uid: str | int,
        *,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Mix mode only. Each call replaces every earlier layout setting."""
        endpoint = session_endpoint("updateLayout", self.resolve_app_id(app_id, sid=sid), resource_id, sid, "mix")
        return self._call(endpoint, _body(cname, uid, client_request, sid=sid), sid=sid)

    def stop(
        self,
        resource_id: str,
        sid: str,
        cname: str,
        uid: str | int,
        *,
        recording_mode: str,
        async_stop: bool = False,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Stop a recording. With ``async_stop=False`` Agora answers once files are uploaded (up to 20 s)."""
        endpoint = session_endpoint("stop", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        return self._call(endpoint, _body(cname, uid, {"async_stop": bool(async_stop)}, sid=sid), sid=sid)

    def test_connection(self) -> tuple[bool, str]:
        """Query a session that cannot exist: any answer from the recording service proves the credentials.

        Never raises; one attempt, short timeout, so the UI's Test button answers quickly.
        """
        try:
            settings = self.settings
            app_id = settings.app_id or "0" * 32
            endpoint = session_endpoint("query", app_id, _PROBE_RESOURCE_ID, _PROBE_SID, "mix")
            timeout = min(settings.timeout, _TEST_CONNECTION_TIMEOUT)
            self._send_once(endpoint, None, None, timeout, priority=request_priority(endpoint))
        except AgoraAuthenticationError as error:
            return (
                False,
                f"Credentials rejected by Agora at {self.base_url} (HTTP 401, {error.message or error.reason}).",
            )
        except AgoraTransportError as error:
            return False, f"Host unreachable: {error}"
        except AgoraRouteNotFoundError:
            return False, (
                f"Agora at {self.base_url} accepted the credentials but found no such route: check the App ID "
                f"and that the host is Agora's API."
            )
        except AgoraApiError as error:
            # Agora checks the credentials first: a service answer (with a code), or without an App ID
            # of our own the gateway's "appid is invalid" for the placeholder, means they were accepted.
            if error.code is not None or (error.status == 400 and not settings.app_id):
                suffix = "" if settings.app_id else " App ID not checked: set 'app_id' in the extra to check it too."
                return True, f"Connected to Agora at {self.base_url}; credentials accepted.{suffix}"
            if error.status == 400:
                return False, f"Credentials accepted, but Agora refused the App ID {app_id!r}: {error.message}."
            return False, str(error)
        except AgoraError as error:
            return False, str(error)
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        return True, f"Connected to Agora at {self.base_url}; credentials accepted."


class _SharedClient:
    """One ``httpx.AsyncClient`` and one ``Transport`` (so one fail-over state) for an account."""

    def __init__(self, settings: AgoraSettings) -> None:
        import httpx

        self.transport = Transport(settings)
        self.http: httpx.AsyncClient = httpx.AsyncClient(
            headers=self.transport.headers,
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        )
        self.in_flight = 0
        self.retired = False

    async def close_if_idle(self) -> None:
        if self.retired and self.in_flight == 0 and not self.http.is_closed:
            await self.http.aclose()


# One shared client per account and API host, per event loop (an httpx client belongs to one loop).
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, tuple[str, ...]], _SharedClient]]
_shared = weakref.WeakKeyDictionary()


class AgoraAsyncHook(_AgoraHookBase):
    """The async twin of ``AgoraHook``, for triggers: ``query`` without blocking the event loop.

    A triggerer runs thousands of waits on one event loop. Every ``AgoraAsyncHook`` of one Agora
    account on that loop shares one ``httpx.AsyncClient`` (keep-alive connections, no new TLS
    session per poll), and every hook of the account in the process shares its request budget,
    so all waits together stay within Agora's 10 requests per second and are served in turn.
    Requests, retries, errors and fail-over follow exactly the same rules as ``AgoraHook``.

    :param agora_conn_id: the ``agora`` connection, as for ``AgoraHook``.
    :param retry_policy: as for ``AgoraHook``.
    """

    def __init__(self, agora_conn_id: str = DEFAULT_CONN_ID, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(agora_conn_id, retry_policy=retry_policy)
        self._settings: AgoraSettings | None = None

    async def get_settings(self) -> AgoraSettings:
        """The connection, read once per hook (without blocking the event loop) and validated."""
        if self._settings is None:
            try:
                connection = await aget_connection(self.agora_conn_id)
            except AirflowNotFoundException as error:
                raise missing_connection(self.agora_conn_id) from error
            settings = settings_of(self.agora_conn_id, connection)
            if settings.redis_conn_id is not None:
                try:
                    redis_connection = await aget_connection(settings.redis_conn_id)
                except AirflowNotFoundException:
                    redis_connection = None
                settings = with_redis(settings, redis_connection)
            self._settings = settings
        return self._settings

    async def _shared_client(self) -> _SharedClient:
        settings = await self.get_settings()
        per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
        key = (settings.customer_id, settings.base_urls)
        client = per_loop.get(key)
        if client is None or client.transport.settings != settings:
            if client is not None:  # the connection changed: the old client closes once it is idle
                client.retired = True
                await client.close_if_idle()
            client = per_loop[key] = _SharedClient(settings)
        return client

    @staticmethod
    async def close_shared_clients() -> None:
        """Close every shared client of the running event loop (at shutdown, or between tests)."""
        for client in _shared.pop(asyncio.get_running_loop(), {}).values():
            client.retired = True
            await client.close_if_idle()

    async def _send_once(
        self, endpoint: Endpoint, body: dict[str, Any] | None, sid: str | None, *, priority: Priority
    ) -> dict[str, Any]:
        import httpx

        shared = await self._shared_client()
        transport, timeout = shared.transport, shared.transport.settings.timeout
        url = transport.url(endpoint)
        shared.in_flight += 1
        try:
            async with transport.budget.asending(priority):
                response: httpx.Response = await shared.http.request(endpoint.method, url, json=body)
        except httpx.TransportError as error:
            transport.raise_failure(error, endpoint, url=url, sid=sid, timeout=timeout)
        finally:
            shared.in_flight -= 1
            await shared.close_if_idle()
        answer = transport.answer(endpoint, response.status_code, response.headers, response.content, sid=sid)
        self.last_request_id = answer.request_id
        return answer.body

    async def _call(
        self, endpoint: Endpoint, body: dict[str, Any] | None = None, *, sid: str | None = None
    ) -> dict[str, Any]:
        """As ``AgoraHook._call``."""
        async for attempt in self.retry_policy.async_retrying(log):
            with attempt:  # a retry does not queue again behind every other wait
                priority = request_priority(endpoint, attempt.retry_state.attempt_number)
                return await self._send_once(endpoint, body, sid, priority=priority)
        raise AssertionError("tenacity ends with a result or an exception")

    async def follow_notifications(self, sid: str) -> Subscription | None:
        """Agora's notifications of one recording as they arrive, including those stored before;
        None unless the connection has ``ncs_secret`` and ``redis_conn_id``. Only the connection's
        namespaces are followed (its secrets'), all of them in one read. Every wait of the account
        and namespaces on this event loop shares one Redis connection and one blocking read."""
        settings = await self.get_settings()
        if settings.redis is None or not settings.receives_notifications:
            return None
        from airflow_provider_agora._ncs.reader import reader_for

        return await reader_for(settings.redis, settings.customer_id, settings.notification_namespaces).follow(sid)

    async def query(
        self, resource_id: str, sid: str, *, recording_mode: str, app_id: str | None = None
    ) -> dict[str, Any]:
        """Agora's raw answer about a running session, as ``AgoraHook.query``."""
        settings = await self.get_settings()
        chosen = self._app_id(settings, app_id, sid)
        return await self._call(session_endpoint("query", chosen, resource_id, sid, recording_mode), sid=sid)
