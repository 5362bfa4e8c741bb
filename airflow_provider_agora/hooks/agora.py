"""``AgoraHook``: Agora Cloud Recording's REST API over one keep-alive HTTP session.

The hook only moves bytes: which request to send and what an answer means is decided in
``airflow_provider_agora._api``; retries follow ``airflow_provider_agora._retry``; the request
budget per Agora account is ``airflow_provider_agora._rate_limit``. ``requests`` and ``tenacity``
are imported on first use, because Airflow imports this module whenever it parses a DAG file.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_agora import __version__
from airflow_provider_agora._api import (
    JSON_HEADERS,
    Endpoint,
    acquire_endpoint,
    check_cname,
    check_uid,
    interpret_response,
    session_endpoint,
    start_endpoint,
)
from airflow_provider_agora._compat import AirflowNotFoundException, BaseHook, mask_secret
from airflow_provider_agora._connection_form import (
    CONN_FIELDS,
    CONNECTION_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
    legacy_ui_field_behaviour,
)
from airflow_provider_agora._rate_limit import spacer_for
from airflow_provider_agora._retry import RetryPolicy
from airflow_provider_agora._settings import AgoraSettings, settings_from_connection
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraAuthenticationError,
    AgoraConfigurationError,
    AgoraConnectError,
    AgoraError,
    AgoraRouteNotFoundError,
    AgoraTimeoutError,
    AgoraTransportError,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-agora/{__version__}"
# test_connection must answer quickly in the UI, whatever the connection's timeout says.
_TEST_CONNECTION_TIMEOUT = 10.0
# A resource id and sid that cannot exist: querying them proves the credentials without side effects.
_PROBE_RESOURCE_ID = "airflow-provider-agora-connection-test"
_PROBE_SID = "0" * 32


def missing_connection(conn_id: str) -> AgoraConfigurationError:
    return AgoraConfigurationError(
        f"Connection {conn_id!r} does not exist: create an Agora Cloud Recording connection with that id "
        f"(Customer ID, Customer Secret, App ID), or pass agora_conn_id= the id of an existing one."
    )


def settings_of(conn_id: str, conn: Any) -> AgoraSettings:
    """Validated settings of an ``agora`` connection, every form of the secret registered with the
    masker before anything can log it. Used by the hook and by the trigger."""
    settings = settings_from_connection(
        conn_id,
        host=conn.host,
        login=conn.login,
        password=conn.password,
        port=conn.port,
        extra=conn.extra_dejson if conn.extra else {},
    )
    mask_secret(settings.customer_secret)
    mask_secret(settings.basic_token)
    mask_secret(settings.authorization)
    return settings


class AgoraHook(BaseHook):
    """Talks to Agora Cloud Recording with the credentials of an ``agora`` connection.

    :param agora_conn_id: the connection: login = Customer ID, password = Customer Secret,
        host = API base URL (default ``https://api.agora.io``), extra ``app_id``,
        ``max_requests_per_second`` (default 10) and ``timeout`` (seconds, default 30).
    :param retry_policy: how transient failures (429, 5xx, HTTP 206 code 65, connection errors,
        timeouts) are retried; 4xx other than 429 never are.
    """

    conn_name_attr = "agora_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONNECTION_TYPE
    hook_name = HOOK_NAME

    def __init__(self, agora_conn_id: str = DEFAULT_CONN_ID, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.agora_conn_id = agora_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.last_request_id: str | None = None
        self._base_url_index = 0

    # -- connection form (Airflow 2.x and 3.0/3.1; 3.2+ reads provider info) -------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return legacy_ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        kinds = {"string": StringField, "integer": IntegerField, "number": StringField}
        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            json_type = next(t for t in spec["schema"]["type"] if t != "null")
            validators = [Optional()]
            if json_type == "integer" and "minimum" in spec["schema"]:
                validators.append(NumberRange(min=spec["schema"]["minimum"]))
            widgets[name] = kinds[json_type](
                lazy_gettext(spec["label"]),
                description=spec.get("description"),
                widget=BS3TextFieldWidget(),
                validators=validators,
            )
        return widgets

    # -- plumbing ------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> AgoraSettings:
        """The connection, read once per hook and validated."""
        try:
            connection = self.get_connection(self.agora_conn_id)
        except AirflowNotFoundException as error:
            raise missing_connection(self.agora_conn_id) from error
        return settings_of(self.agora_conn_id, connection)

    @cached_property
    def session(self) -> requests.Session:
        """One keep-alive session per hook; TLS verification stays on (requests' default)."""
        import requests

        session = requests.Session()
        session.headers.update({**JSON_HEADERS, "User-Agent": USER_AGENT})
        session.headers["Authorization"] = self.settings.authorization
        return session

    @property
    def base_url(self) -> str:
        return self.settings.base_urls[self._base_url_index]

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    def resolve_app_id(self, app_id: str | None, *, sid: str | None = None) -> str:
        chosen = app_id or self.settings.app_id
        if not chosen:
            about = f"recording sid={sid}" if sid else "this request"
            raise AgoraConfigurationError(
                f"No Agora App ID for {about}: pass app_id to the task or set 'app_id' in the extra of "
                f"connection {self.agora_conn_id!r}."
            )
        return chosen

    def _send_once(
        self, endpoint: Endpoint, body: dict[str, Any] | None, sid: str | None, timeout: float, *, queue: bool = True
    ) -> dict[str, Any]:
        import requests

        url = self.base_url + endpoint.path
        spacer = spacer_for(self.settings.customer_id, self.settings.max_requests_per_second)
        try:
            with spacer.sending(queue=queue):
                response = self.session.request(endpoint.method, url, json=body, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as error:
            is_connect = isinstance(error, requests.ConnectTimeout) or not isinstance(error, requests.Timeout)
            about = f" for recording sid={sid}" if sid else ""
            if is_connect and not isinstance(error, requests.exceptions.ChunkedEncodingError):
                self._fail_over()
                raise AgoraConnectError(
                    f"Could not connect to {url.split('/v1/')[0]} for Agora {endpoint.operation}{about}: "
                    f"{type(error).__name__}.",
                    url=url,
                    operation=endpoint.operation,
                ) from error
            failure = AgoraTimeoutError if isinstance(error, requests.Timeout) else AgoraTransportError
            raise failure(
                f"Agora {endpoint.operation}{about} got no complete answer from {url.split('/v1/')[0]} "
                f"within {timeout:g} s: {type(error).__name__}.",
                url=url,
                operation=endpoint.operation,
            ) from error
        except requests.exceptions.ChunkedEncodingError as error:
            raise AgoraTransportError(
                f"The connection broke while reading Agora's {endpoint.operation} answer: {type(error).__name__}.",
                url=url,
                operation=endpoint.operation,
            ) from error
        self.last_request_id = response.headers.get("X-Request-Id")
        log.debug(
            "Agora %s %s -> HTTP %s (request id %s)",
            endpoint.method,
            endpoint.path,
            response.status_code,
            self.last_request_id,
        )
        return interpret_response(endpoint.operation, response.status_code, response.headers, response.content, sid=sid)

    def _fail_over(self) -> None:
        """Agora's dual-domain practice: after a connection failure, use the other primary domain."""
        if len(self.settings.base_urls) > 1:
            previous = self.base_url
            self._base_url_index = (self._base_url_index + 1) % len(self.settings.base_urls)
            log.warning("Cannot reach %s; switching to %s.", previous, self.base_url)

    def _call(self, endpoint: Endpoint, body: dict[str, Any] | None = None, *, sid: str | None = None) -> Any:
        import tenacity

        for attempt in tenacity.Retrying(**self.retry_policy.tenacity_arguments(log)):
            with attempt:  # a retry does not queue again behind everyone else
                first = attempt.retry_state.attempt_number == 1
                return self._send_once(endpoint, body, sid, self.settings.timeout, queue=first)
        raise AssertionError("tenacity ends with a result or an exception")

    # -- the API ---------------------------------------------------------------------------------

    def acquire(
        self, cname: str, uid: str | int, client_request: dict[str, Any] | None = None, app_id: str | None = None
    ) -> dict[str, Any]:
        """Reserve a recording resource; its ``resourceId`` must be used by ``start`` within 5 minutes."""
        body = {"cname": check_cname(cname), "uid": check_uid(uid), "clientRequest": client_request or {}}
        result: dict[str, Any] = self._call(acquire_endpoint(self.resolve_app_id(app_id)), body)
        return result

    def start(
        self,
        resource_id: str,
        cname: str,
        uid: str | int,
        recording_mode: str,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"cname": check_cname(cname), "uid": check_uid(uid), "clientRequest": client_request}
        result: dict[str, Any] = self._call(
            start_endpoint(self.resolve_app_id(app_id), resource_id, recording_mode), body
        )
        return result

    def query(self, resource_id: str, sid: str, recording_mode: str, app_id: str | None = None) -> dict[str, Any]:
        endpoint = session_endpoint("query", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        result: dict[str, Any] = self._call(endpoint, sid=sid)
        return result

    def update(
        self,
        resource_id: str,
        sid: str,
        recording_mode: str,
        cname: str,
        uid: str | int,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        endpoint = session_endpoint("update", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        body = {"cname": check_cname(cname, sid=sid), "uid": check_uid(uid, sid=sid), "clientRequest": client_request}
        result: dict[str, Any] = self._call(endpoint, body, sid=sid)
        return result

    def update_layout(
        self,
        resource_id: str,
        sid: str,
        cname: str,
        uid: str | int,
        client_request: dict[str, Any],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Mix mode only. Each call replaces every earlier layout setting."""
        endpoint = session_endpoint("updateLayout", self.resolve_app_id(app_id, sid=sid), resource_id, sid, "mix")
        body = {"cname": check_cname(cname, sid=sid), "uid": check_uid(uid, sid=sid), "clientRequest": client_request}
        result: dict[str, Any] = self._call(endpoint, body, sid=sid)
        return result

    def stop(
        self,
        resource_id: str,
        sid: str,
        recording_mode: str,
        cname: str,
        uid: str | int,
        async_stop: bool = False,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Stop a recording. With ``async_stop=False`` Agora answers once files are uploaded (up to 20 s)."""
        endpoint = session_endpoint("stop", self.resolve_app_id(app_id, sid=sid), resource_id, sid, recording_mode)
        body = {
            "cname": check_cname(cname, sid=sid),
            "uid": check_uid(uid, sid=sid),
            "clientRequest": {"async_stop": bool(async_stop)},
        }
        result: dict[str, Any] = self._call(endpoint, body, sid=sid)
        return result

    def test_connection(self) -> tuple[bool, str]:
        """Query a session that cannot exist: any answer from the recording service proves the credentials.

        Never raises; one attempt, short timeout, so the UI's Test button answers quickly.
        """
        try:
            settings = self.settings
            app_id = settings.app_id or "0" * 32
            endpoint = session_endpoint("query", app_id, _PROBE_RESOURCE_ID, _PROBE_SID, "mix")
            self._send_once(endpoint, None, None, min(settings.timeout, _TEST_CONNECTION_TIMEOUT))
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
