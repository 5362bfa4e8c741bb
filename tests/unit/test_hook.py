"""AgoraHook's HTTP behaviour, against requests-mock: what is sent, what is retried, what is raised."""

from __future__ import annotations

import base64
import json
import time
from email.utils import formatdate
from typing import Any

import pytest
import requests
import requests_mock as rm

from airflow_provider_agora._client.retry import RetryPolicy
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraAuthenticationError,
    AgoraBadRequestError,
    AgoraConfigurationError,
    AgoraConnectError,
    AgoraNoRecordedDataError,
    AgoraNotFoundError,
    AgoraRateLimitError,
    AgoraResponseError,
    AgoraRouteNotFoundError,
    AgoraServerError,
    AgoraTimeoutError,
)
from airflow_provider_agora.hooks.agora import AgoraHook
from tests import agora_bodies as bodies
from tests.support import (
    APP_ID,
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    ScriptedAgora,
    connection_json,
    free_port,
    redact,
)

PRIMARY = "https://api.agora.io"
SECONDARY = "https://api.sd-rtn.com"
RID = "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
QUERY_PATH = f"/v1/apps/{APP_ID}/cloud_recording/resourceid/{RID}/sid/{SID}/mode/mix/query"


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> AgoraHook:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(""))
    return AgoraHook(retry_policy=FAST_RETRIES)


def real_failure(url: str) -> requests.ConnectionError:
    """The exception requests really raises, with its whole chain of causes (requests-mock's are bare)."""
    try:
        requests.get(url, timeout=5)
    except requests.ConnectionError as error:
        return error
    raise AssertionError(f"{url} answered")


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


CONNECTION_REFUSED = real_failure(closed_port_url())
NAME_NOT_RESOLVED = real_failure("https://agora-provider-test.invalid/")


def answer(status: int, body: Any, **headers: str) -> dict[str, Any]:
    return {"status_code": status, "text": json.dumps(body), "headers": {"X-Request-Id": "rq-1", **headers}}


def test_query_sends_an_authenticated_get_to_agoras_path(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(200, bodies.QUERY_STRING))
    assert hook.query(RID, SID, recording_mode="mix") == bodies.QUERY_STRING
    sent = requests_mock.last_request
    assert sent.method == "GET"
    expected = base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert sent.headers["Content-Type"].startswith("application/json")
    assert sent.timeout == 30.0
    assert hook.last_request_id == "rq-1"


def test_every_endpoint_uses_agoras_method_path_and_body(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    base = f"{PRIMARY}/v1/apps/{APP_ID}/cloud_recording"
    session = f"{base}/resourceid/{RID}/sid/{SID}/mode"
    requests_mock.post(f"{base}/acquire", **answer(200, {"resourceId": RID}))
    requests_mock.post(f"{base}/resourceid/{RID}/mode/web/start", **answer(200, {"sid": SID}))
    requests_mock.post(f"{session}/individual/update", **answer(200, {}))
    requests_mock.post(f"{session}/mix/updateLayout", **answer(200, {}))
    requests_mock.post(f"{session}/mix/stop", **answer(200, bodies.STOP_STRING))

    hook.acquire("room", 42, client_request={"scene": 0})
    assert requests_mock.last_request.json() == {"cname": "room", "uid": "42", "clientRequest": {"scene": 0}}
    hook.start(RID, "room", "42", recording_mode="web", client_request={"token": "t"})
    assert requests_mock.last_request.json() == {"cname": "room", "uid": "42", "clientRequest": {"token": "t"}}
    hook.update(RID, SID, "room", 42, recording_mode="individual", client_request={"streamSubscribe": {}})
    hook.update_layout(RID, SID, "room", 42, client_request={"mixedVideoLayout": 1})
    assert hook.stop(RID, SID, "room", 42, recording_mode="mix") == bodies.STOP_STRING
    assert requests_mock.last_request.json() == {"cname": "room", "uid": "42", "clientRequest": {"async_stop": False}}
    assert [r.method for r in requests_mock.request_history] == ["POST"] * 5


@pytest.mark.parametrize(
    ("method", "identifiers"),
    [
        ("acquire", ["cname", "uid"]),
        ("start", ["resource_id", "cname", "uid"]),
        ("query", ["resource_id", "sid"]),
        ("update", ["resource_id", "sid", "cname", "uid"]),
        ("update_layout", ["resource_id", "sid", "cname", "uid"]),
        ("stop", ["resource_id", "sid", "cname", "uid"]),
    ],
)
def test_only_identifiers_are_positional(method: str, identifiers: list[str]) -> None:
    """``recording_mode`` and the request bodies are named at every call, so no call can pass them
    in another method's order."""
    import inspect

    from airflow_provider_agora.hooks.agora import AgoraAsyncHook

    owners = [AgoraHook, AgoraAsyncHook] if method == "query" else [AgoraHook]
    for owner in owners:
        parameters = list(inspect.signature(getattr(owner, method)).parameters.values())[1:]
        positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional == identifiers, f"{owner.__name__}.{method}"


def test_one_session_is_kept_alive_across_calls(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(200, bodies.QUERY_STRING))
    hook.query(RID, SID, recording_mode="mix")
    first = hook.session
    hook.query(RID, SID, recording_mode="mix")
    assert hook.session is first


def test_429_is_retried_after_the_servers_retry_after(
    hook: AgoraHook, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    requests_mock.get(
        PRIMARY + QUERY_PATH,
        [answer(429, bodies.RATE_LIMITED, **{"Retry-After": "2"}), answer(200, bodies.QUERY_STRING)],
    )
    assert hook.query(RID, SID, recording_mode="mix") == bodies.QUERY_STRING
    assert requests_mock.call_count == 2
    assert waits == [2.0]  # FAST_RETRIES' own back-off (at most 0.06 s) is below Retry-After: 2 waits exactly that


@pytest.mark.parametrize(
    ("failure", "hosts"),
    [
        (answer(500, {"code": 500, "reason": "internal_error"}), ["api.agora.io"] * 3),
        (answer(502, {"message": "bad gateway"}), ["api.agora.io"] * 3),
        (answer(503, {"code": 503, "reason": "x"}), ["api.agora.io"] * 3),
        (answer(504, {"code": 62, "reason": "request timeout"}), ["api.agora.io"] * 3),
        (answer(206, {"code": 65, "reason": "request not completed"}), ["api.agora.io"] * 3),
        ({"exc": requests.ReadTimeout}, ["api.agora.io"] * 3),
        ({"exc": requests.exceptions.ChunkedEncodingError}, ["api.agora.io"] * 3),
        # A broken connection may have reached Agora: retried on the same domain.
        ({"exc": requests.ConnectionError}, ["api.agora.io"] * 3),
        # Failures to connect switch domain each time.
        ({"exc": requests.ConnectTimeout}, ["api.agora.io", "api.sd-rtn.com"] * 2 + ["api.agora.io"]),
        ({"exc": CONNECTION_REFUSED}, ["api.agora.io", "api.sd-rtn.com"] * 2 + ["api.agora.io"]),
        ({"exc": NAME_NOT_RESOLVED}, ["api.agora.io", "api.sd-rtn.com"] * 2 + ["api.agora.io"]),
    ],
)
def test_transient_failures_are_retried(
    hook: AgoraHook, requests_mock: rm.Mocker, failure: dict, hosts: list[str]
) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, [failure, failure, answer(200, bodies.QUERY_STRING)])
    requests_mock.get(SECONDARY + QUERY_PATH, [failure, failure, answer(200, bodies.QUERY_STRING)])
    results = hook.query(RID, SID, recording_mode="mix")
    assert results == bodies.QUERY_STRING
    assert [r.hostname for r in requests_mock.request_history] == hosts


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": 2, "reason": "invalid parameter"}, AgoraBadRequestError),
        (400, {"message": "appid is invalid"}, AgoraBadRequestError),
        (401, bodies.BAD_CREDENTIALS, AgoraAuthenticationError),
        (404, bodies.SERVICE_NOT_FOUND, AgoraNotFoundError),
        (404, bodies.NOT_FOUND_REAL, AgoraNotFoundError),
        (404, bodies.GATEWAY_NO_ROUTE, AgoraRouteNotFoundError),
        (206, {"code": 435, "reason": "no recorded data"}, AgoraNoRecordedDataError),
        (201, {"code": 7, "reason": "already started"}, AgoraApiError),  # no subclass fits a 201
    ],
)
def test_client_errors_are_never_retried_and_carry_agoras_details(
    hook: AgoraHook, requests_mock: rm.Mocker, status: int, body: dict, error: type
) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(status, body))
    with pytest.raises(error) as raised:
        hook.query(RID, SID, recording_mode="mix")
    assert type(raised.value) is error  # pytest.raises takes any subclass: a wrong, narrower class would pass
    assert requests_mock.call_count == 1
    assert raised.value.status == status
    assert raised.value.code == body.get("code")
    assert raised.value.reason == body.get("reason")
    assert raised.value.message == body.get("message")
    assert raised.value.request_id == "rq-1"
    assert f"sid={SID}" in str(raised.value)


def test_retries_are_bounded_and_the_last_error_is_raised(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(503, {"code": 503, "reason": "busy"}))
    with pytest.raises(AgoraServerError):
        hook.query(RID, SID, recording_mode="mix")
    assert requests_mock.call_count == FAST_RETRIES.max_attempts


def test_retry_total_time_is_bounded(monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(""))
    # One retry wait (1 s) outlasts the whole budget (0.9 s): the second attempt is the last, however
    # fast or slow the machine, although 100 attempts are allowed.
    hook = AgoraHook(
        retry_policy=RetryPolicy(max_attempts=100, initial_delay=1.0, max_delay=1.0, max_total_seconds=0.9)
    )
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(429, bodies.RATE_LIMITED))
    with pytest.raises(AgoraRateLimitError):
        hook.query(RID, SID, recording_mode="mix")
    assert requests_mock.call_count == 2


def test_connection_errors_fail_over_to_the_other_domain(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, exc=NAME_NOT_RESOLVED)
    requests_mock.get(SECONDARY + QUERY_PATH, **answer(200, bodies.QUERY_STRING))
    assert hook.query(RID, SID, recording_mode="mix") == bodies.QUERY_STRING
    hook.query(RID, SID, recording_mode="mix")
    hosts = [r.hostname for r in requests_mock.request_history]
    assert hosts == ["api.agora.io", "api.sd-rtn.com", "api.sd-rtn.com"]


def test_a_custom_host_has_no_fail_over(monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("api-eu-west-1.agora.io"))
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    requests_mock.get("https://api-eu-west-1.agora.io" + QUERY_PATH, exc=CONNECTION_REFUSED)
    with pytest.raises(AgoraConnectError):
        hook.query(RID, SID, recording_mode="mix")
    assert {r.hostname for r in requests_mock.request_history} == {"api-eu-west-1.agora.io"}


def test_timeouts_are_reported_as_such(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, exc=requests.ReadTimeout)
    with pytest.raises(AgoraTimeoutError, match="within 30 s"):
        hook.query(RID, SID, recording_mode="mix")


def test_a_non_json_success_body_is_a_clear_error(hook: AgoraHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(PRIMARY + QUERY_PATH, status_code=200, text="<html>oops</html>")
    with pytest.raises(AgoraResponseError, match=f"sid={SID}.*not a JSON object"):
        hook.query(RID, SID, recording_mode="mix")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"resource_id": "../../acquire"}, "resource_id '../../acquire'"),
        ({"sid": "abc/../../x"}, "sid 'abc/../../x'"),
        ({"sid": "a?b=c"}, "contains characters"),
        # requests and httpx both collapse /sid/../ and /sid/./: dots would change the endpoint.
        ({"sid": ".."}, "contains characters"),
        ({"sid": "."}, "contains characters"),
        ({"resource_id": "rid.."}, "contains characters"),
        ({"app_id": ".."}, "contains characters"),
        ({"sid": "a%2Fb"}, "contains characters"),
        ({"sid": "a\r\nX-Injected: 1"}, "contains characters"),
        ({"sid": ""}, "non-empty string"),
        ({"sid": None}, "non-empty string"),
        ({"app_id": "x/y"}, "app_id 'x/y'"),
        ({"recording_mode": "composite"}, "recording_mode 'composite'"),
    ],
)
def test_path_parameters_cannot_change_the_endpoint(
    hook: AgoraHook, requests_mock: rm.Mocker, kwargs: dict, words: str
) -> None:
    call = {"resource_id": RID, "sid": SID, "recording_mode": "mix", **kwargs}
    with pytest.raises(AgoraConfigurationError, match=words.replace("?", r"\?")):
        hook.query(**call)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("uid", [0, "0", -1, "abc", 2**32, True, "12 34"])
def test_invalid_uids_are_refused(hook: AgoraHook, uid: object) -> None:
    with pytest.raises(AgoraConfigurationError, match="uid"):
        hook.acquire("room", uid)  # type: ignore[arg-type]


def test_update_layout_is_mix_only_and_app_id_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT",
        json.dumps({"conn_type": "agora", "login": "id", "password": "secret"}),
    )
    with pytest.raises(AgoraConfigurationError, match="No Agora App ID for recording sid=abc"):
        AgoraHook().query(RID, "abc", recording_mode="mix")


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("http://api.agora.io", "plain http://api.agora.io"),
        ("http://10.0.0.5:8089", "plain http://10.0.0.5"),
        ("ftp://api.agora.io", "not a valid API URL"),
        ("https://api.agora.io/v1/apps", "without path"),
    ],
)
def test_unsafe_or_malformed_hosts_are_refused(monkeypatch: pytest.MonkeyPatch, host: str, words: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(host))
    with pytest.raises(AgoraConfigurationError, match=words):
        AgoraHook().query(RID, SID, recording_mode="mix")


@pytest.mark.parametrize(
    ("host", "urls"),
    [
        ("", (PRIMARY, SECONDARY)),
        ("api.agora.io", (PRIMARY, SECONDARY)),
        ("https://api.sd-rtn.com/", (SECONDARY, PRIMARY)),
        ("http://127.0.0.1:8089", ("http://127.0.0.1:8089",)),
        ("http://localhost:8089", ("http://localhost:8089",)),
        ("api-us-west-1.agora.io", ("https://api-us-west-1.agora.io",)),
    ],
)
def test_host_forms(monkeypatch: pytest.MonkeyPatch, host: str, urls: tuple) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(host))
    assert AgoraHook().settings.base_urls == urls


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"max_requests_per_second": 0}, "positive whole number"),
        ({"max_requests_per_second": "ten"}, "positive whole number"),
        ({"timeout": -1}, "positive number"),
    ],
)
def test_bad_extras_are_refused(monkeypatch: pytest.MonkeyPatch, extra: dict, words: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", **extra))
    with pytest.raises(AgoraConfigurationError, match=f"connection 'agora_default' must be a {words}"):
        AgoraHook().settings  # noqa: B018


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", json.dumps({"conn_type": "agora", "login": "id"}))
    with pytest.raises(AgoraConfigurationError, match=r"has no Customer Secret \(password\)"):
        AgoraHook().settings  # noqa: B018


def test_secret_and_authorization_are_registered_with_the_masker(hook: AgoraHook) -> None:
    settings = hook.settings
    for secret in (CUSTOMER_SECRET, settings.basic_token, settings.authorization):
        assert redact(f"value {secret} end") == "value *** end"
    assert CUSTOMER_SECRET not in repr(settings)


def test_tls_verification_cannot_be_turned_off_from_the_connection(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", verify=False, verify_ssl=False))
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(200, bodies.QUERY_STRING))
    AgoraHook().query(RID, SID, recording_mode="mix")
    verify = requests_mock.last_request.verify
    assert verify is True or (isinstance(verify, str) and verify)  # on, with the default or a CA bundle


def test_cname_travels_only_in_the_json_body(scripted: ScriptedAgora) -> None:
    """A hostile channel name cannot add a header or change the path: it is JSON-encoded in the body."""
    scripted.script((200, {"resourceId": "rid"}))
    hostile = "room\r\nX-Injected: 1\r\n\r\nGET /v1/apps/other/cloud_recording/acquire"
    AgoraHook(retry_policy=FAST_RETRIES).acquire(hostile, 42)
    method, path, headers = scripted.requests[0]
    assert (method, path) == ("POST", f"/v1/apps/{APP_ID}/cloud_recording/acquire")
    assert "X-Injected" not in headers
    assert scripted.bodies[0]["cname"] == hostile


def test_test_connection_tells_the_three_cases_apart(simulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url))
    assert AgoraHook().test_connection() == (True, f"Connected to Agora at {simulator.url}; credentials accepted.")
    without_app_id = json.dumps(
        {"conn_type": "agora", "host": simulator.url, "login": CUSTOMER_ID, "password": CUSTOMER_SECRET}
    )
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", without_app_id)
    ok, message = AgoraHook().test_connection()
    assert ok and "credentials accepted. App ID not checked" in message
    wrong = json.dumps({"conn_type": "agora", "host": simulator.url, "login": CUSTOMER_ID, "password": "wrong"})
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", wrong)
    ok, message = AgoraHook().test_connection()
    assert not ok and message.startswith("Credentials rejected by Agora")
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url, app_id="someoneelsesapp"))
    ok, message = AgoraHook().test_connection()
    assert not ok and "refused the App ID 'someoneelsesapp'" in message
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("http://127.0.0.1:9"))
    ok, message = AgoraHook().test_connection()
    assert not ok and message.startswith("Host unreachable")


@pytest.mark.parametrize("code", ["404", "failed to find worker"])
def test_a_404_with_any_code_is_the_recording_services_and_keeps_the_code_as_sent(
    hook: AgoraHook, requests_mock: rm.Mocker, code: str
) -> None:
    """Some clients and proxies send the code as a string: the body is still the service's, not the gateway's."""
    requests_mock.get(PRIMARY + QUERY_PATH, **answer(404, {"code": code, "reason": "failed to find worker"}))
    with pytest.raises(AgoraNotFoundError) as raised:
        hook.query(RID, SID, recording_mode="mix")
    assert type(raised.value) is AgoraNotFoundError
    assert raised.value.code == code


def test_a_retry_after_429_waits_at_least_what_agora_asked(scripted: ScriptedAgora) -> None:
    """The server's Retry-After is a floor for the next attempt, measured where Agora sees it."""
    scripted.script((429, bodies.RATE_LIMITED, {"Retry-After": "1"}), (200, bodies.QUERY_STRING))
    assert AgoraHook(retry_policy=FAST_RETRIES).query(RID, SID, recording_mode="mix") == bodies.QUERY_STRING
    assert len(scripted.times) == 2
    assert scripted.times[1] - scripted.times[0] >= 1.0


@pytest.mark.parametrize(
    ("retry_after", "planned"),
    [
        ("3600", 60.0),  # capped: a retry never waits longer than a minute
        ("7", 7.0),
    ],
)
def test_retry_after_seconds_are_honoured_up_to_a_minute(
    hook: AgoraHook, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch, retry_after: str, planned: float
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    requests_mock.get(
        PRIMARY + QUERY_PATH,
        [answer(429, bodies.RATE_LIMITED, **{"Retry-After": retry_after}), answer(200, bodies.QUERY_STRING)],
    )
    hook.query(RID, SID, recording_mode="mix")
    assert waits == [planned]  # FAST_RETRIES' own back-off is far below either


def test_retry_after_as_an_http_date(
    hook: AgoraHook, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    in_30_seconds = formatdate(time.time() + 30, usegmt=True)
    far_future = formatdate(time.time() + 3600, usegmt=True)
    requests_mock.get(
        PRIMARY + QUERY_PATH,
        [
            answer(429, bodies.RATE_LIMITED, **{"Retry-After": in_30_seconds}),
            answer(429, bodies.RATE_LIMITED, **{"Retry-After": far_future}),
            answer(200, bodies.QUERY_STRING),
        ],
    )
    hook.query(RID, SID, recording_mode="mix")
    assert len(waits) == 2
    assert 28.0 <= waits[0] <= 30.0  # the date has one-second resolution
    assert waits[1] == 60.0
