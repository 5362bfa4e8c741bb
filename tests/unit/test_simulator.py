"""Tests of the Agora Cloud Recording simulator, driven over real HTTP with ``requests``.

Shapes are compared with the documented examples in the project's API reference (§9); timings use
``speed`` so that each test takes well under a few seconds, and waiting is done by polling with a
deadline, never by sleeping for a guessed duration.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from airflow_provider_agora.simulator import (
    ABNORMAL_STATUS,
    EXIT_DURATION,
    EXIT_TIMELINE,
    RESOURCE_TTL,
    SIMULATED_USERS,
    AgoraSimulator,
)
from airflow_provider_agora.simulator._lifecycle import Clock
from airflow_provider_agora.simulator._service import SlidingWindowLimiter
from tests.support import wait_for

AUTH = ("sim-customer", "sim-secret")
APP = "sim-app"
UID = "527841"
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
THROTTLED = -1  # status() while rate-limited: matches no real status

# --- documented bodies (reference §9), copied as data ------------------------------------------

EX1_QUERY_JSON = {
    "resourceId": "JyvK8nXHuV1BE64",
    "serverResponse": {
        "fileListMode": "json",
        "fileList": [
            {
                "fileName": "xxx.m3u8",
                "trackType": "audio_and_video",
                "uid": "123",
                "mixedAllUser": True,
                "isPlayable": True,
                "sliceStartTime": 1562724971626,
            },
        ],
        "status": 5,
        "sliceStartTime": 1562724971626,
    },
}
EX2_QUERY_MIX_STRING = {
    "resourceId": "xxxx",
    "sid": "yyy",
    "serverResponse": {"status": 5, "fileList": "zzzz.m3u8", "fileListMode": "string", "sliceStartTime": 1606357122528},
}
EX3_QUERY_WEB = {
    "cname": "httpClient463224",
    "uid": "527841",
    "resourceId": "JyvK8nXHuV1BE.....",
    "sid": "38f8e3c.....",
    "serverResponse": {
        "status": 0,
        "extensionServiceState": [
            {
                "payload": {
                    "fileList": [{"filename": "xxx.m3u8", "sliceStartTime": 0}],
                    "onhold": True,
                    "state": "inProgress",
                },
                "serviceName": "web_recorder_service",
            }
        ],
    },
}
EX3_RTMP_ITEM = {
    "payload": {"outputs": [{"rtmpUrl": "rtmp://xxx", "status": "publishing"}]},
    "serviceName": "rtmp_publish_service",
}
EX4_STOP_WEB_UPLOAD_ITEM = {"payload": {"uploadingStatus": "uploaded"}, "serviceName": "upload_service"}
EX4_STOP_JSON = {
    "resourceId": "JyvK8n",
    "sid": "38f8e3cfdc474cd56fc1ceba380d7e1a",
    "serverResponse": {
        "fileListMode": "json",
        "fileList": [
            {
                "fileName": "xxx.m3u8",
                "trackType": "audio_and_video",
                "uid": "123",
                "mixedAllUser": True,
                "isPlayable": True,
                "sliceStartTime": 1562724971626,
            }
        ],
        "uploadingStatus": "uploaded",
    },
}
EX5_STOP_MIX_STRING = {
    "resourceId": "xxxx",
    "sid": "yyy",
    "serverResponse": {"fileListMode": "string", "fileList": "zzzz.m3u8", "uploadingStatus": "uploaded"},
}


def shape(value: Any) -> Any:
    """Keys and JSON types of a body, with lists reduced to the distinct shapes of their items."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        distinct: list[Any] = []
        for item in map(shape, value):
            if item not in distinct:
                distinct.append(item)
        return distinct
    return type(value).__name__


# --- helpers -------------------------------------------------------------------------------------


class Client:
    """Thin Agora client over one keep-alive ``requests`` session."""

    def __init__(self, sim: AgoraSimulator, auth: tuple[str, str] | None = AUTH, app: str = APP) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.auth = auth
        self.base = f"{sim.url}/v1/apps/{app}/cloud_recording"

    def acquire(self, cname: str = "ch", uid: str = UID, **client_request: Any) -> requests.Response:
        return self.session.post(
            f"{self.base}/acquire", json={"cname": cname, "uid": uid, "clientRequest": client_request}
        )

    def start(
        self, rid: str, mode: str = "mix", cname: str = "ch", uid: str = UID, **client_request: Any
    ) -> requests.Response:
        return self.session.post(
            f"{self.base}/resourceid/{rid}/mode/{mode}/start",
            json={"cname": cname, "uid": uid, "clientRequest": client_request},
        )

    def begin(self, mode: str = "mix", cname: str = "ch", uid: str = UID, **client_request: Any) -> tuple[str, str]:
        """acquire + start; returns (resourceId, sid)."""
        rid = self.acquire(cname, uid).json()["resourceId"]
        response = self.start(rid, mode, cname, uid, **client_request)
        assert response.status_code == 200, response.text
        return rid, response.json()["sid"]

    def session_url(self, rid: str, sid: str, mode: str) -> str:
        return f"{self.base}/resourceid/{rid}/sid/{sid}/mode/{mode}"

    def query(self, rid: str, sid: str, mode: str = "mix") -> requests.Response:
        return self.session.get(f"{self.session_url(rid, sid, mode)}/query")

    def stop(
        self, rid: str, sid: str, mode: str = "mix", cname: str = "ch", uid: str = UID, async_stop: bool = False
    ) -> requests.Response:
        return self.session.post(
            f"{self.session_url(rid, sid, mode)}/stop",
            json={"cname": cname, "uid": uid, "clientRequest": {"async_stop": async_stop}},
        )

    def update(self, rid: str, sid: str, mode: str = "mix", **client_request: Any) -> requests.Response:
        return self.session.post(
            f"{self.session_url(rid, sid, mode)}/update",
            json={"cname": "ch", "uid": UID, "clientRequest": client_request},
        )

    def update_layout(self, rid: str, sid: str, mode: str = "mix", **client_request: Any) -> requests.Response:
        return self.session.post(
            f"{self.session_url(rid, sid, mode)}/updateLayout",
            json={"cname": "ch", "uid": UID, "clientRequest": client_request},
        )

    def status(self, rid: str, sid: str, mode: str = "mix") -> int | None:
        """``serverResponse.status``, ``None`` on a service 404, :data:`THROTTLED` on a 429."""
        response = self.query(rid, sid, mode)
        if response.status_code == 429:
            return THROTTLED
        if response.status_code == 404:
            assert response.json()["code"] == 404
            return None
        assert response.status_code == 200, response.text
        return int(response.json()["serverResponse"]["status"])

    def wait_status(self, rid: str, sid: str, wanted: int | None, mode: str = "mix", timeout: float = 5.0) -> None:
        wait_for(lambda: self.status(rid, sid, mode) == wanted, timeout)

    def wait_gone(self, rid: str, sid: str, mode: str = "mix", timeout: float = 5.0) -> None:
        wait_for(lambda: self.status(rid, sid, mode) is None, timeout)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., AgoraSimulator]]:
    """Start simulators (fast clock, no rate limit unless asked) and stop them after the test."""
    started: list[AgoraSimulator] = []

    def factory(**kwargs: Any) -> AgoraSimulator:
        kwargs.setdefault("speed", 20.0)
        kwargs.setdefault("rate_limit_per_second", None)
        sim = AgoraSimulator(**kwargs).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., AgoraSimulator]) -> AgoraSimulator:
    return make_sim()


@pytest.fixture
def client(sim: AgoraSimulator) -> Client:
    return Client(sim)


class ManualClock(Clock):
    """A simulator clock that moves only when the test sets ``reading``: each answer is then the
    lifecycle at a simulated moment the test chose, so no status is skipped by a slow request."""

    def __init__(self, speed: float) -> None:
        super().__init__(speed)
        self.reading = 0.0

    def now(self) -> float:
        return self.reading


@pytest.fixture
def manual_sim(
    make_sim: Callable[..., AgoraSimulator], monkeypatch: pytest.MonkeyPatch
) -> tuple[AgoraSimulator, ManualClock]:
    """A simulator whose clock (lifecycle, faults, expiry) is a :class:`ManualClock`, and that clock."""
    clocks: list[ManualClock] = []

    def make_clock(speed: float) -> ManualClock:
        clocks.append(ManualClock(speed))
        return clocks[-1]

    monkeypatch.setattr("airflow_provider_agora.simulator._server.Clock", make_clock)
    sim = make_sim()
    (clock,) = clocks
    clock.reading = 12.5
    assert sim.simulated_time() == 12.5  # the simulator reads this clock, not the wall clock
    return sim, clock


class LimiterClock:
    """The rate limit's clock (real seconds), set by the test: which one-second window a request falls
    in is then what the test says, not a race with a busy machine."""

    def __init__(self) -> None:
        self.reading = 0.0


@pytest.fixture
def limiter_clock(monkeypatch: pytest.MonkeyPatch) -> LimiterClock:
    """Every rate limiter admits requests as if they arrived at ``reading`` (its own logic unchanged)."""
    clock = LimiterClock()
    admit = SlidingWindowLimiter.admit

    def admit_at_the_tests_time(self: SlidingWindowLimiter, key: str, now: float) -> bool:
        return admit(self, key, clock.reading)

    monkeypatch.setattr(SlidingWindowLimiter, "admit", admit_at_the_tests_time)
    return clock


def expected_exit_status(elapsed: float) -> int:
    """Status ``elapsed`` simulated seconds into the exit tail (EXIT_TIMELINE)."""
    status = EXIT_TIMELINE[0][1]
    for begins, value in EXIT_TIMELINE:
        if elapsed >= begins:
            status = value
    return status


# --- lifecycle ------------------------------------------------------------------------------------


def test_startup_follows_the_timeline_and_files_appear_at_status_5(
    manual_sim: tuple[AgoraSimulator, ManualClock],
) -> None:
    sim, clock = manual_sim
    client = Client(sim)
    rid = client.acquire().json()["resourceId"]
    started_at = clock.reading
    sid = client.start(rid).json()["sid"]
    # (simulated seconds after the start, status): each status as it begins and just before the next.
    moments = [(0.0, 0), (0.49, 0), (0.5, 1), (0.99, 1), (1.0, 2), (1.49, 2), (1.5, 3), (1.99, 3), (2.0, 4)]
    moments += [(2.99, 4), (3.0, 5), (4.99, 5)]
    first_slice_ms = clock.epoch_ms(started_at + 3.0)
    seen: list[tuple[float, int, str, int]] = []
    for after_start, _ in moments:
        clock.reading = started_at + after_start
        body = client.query(rid, sid).json()["serverResponse"]
        seen.append((after_start, body["status"], body["fileList"], body["sliceStartTime"]))
    # No files and no slice start before status 5; from then on the file, and the first slice's epoch time.
    assert seen == [
        (after_start, status, f"{sid}_ch.m3u8" if status == 5 else "", first_slice_ms if status == 5 else 0)
        for after_start, status in moments
    ]
    assert first_slice_ms > 1_000_000_000_000  # epoch milliseconds


def test_resource_id_and_sid_formats(client: Client) -> None:
    acquired = client.acquire()
    assert acquired.status_code == 200
    body = acquired.json()
    assert body["cname"] == "ch" and body["uid"] == UID
    rid = body["resourceId"]
    assert len(rid) >= 64 and all(c.isalnum() or c in "-_" for c in rid)
    started = client.start(rid).json()
    assert set(started) == {"cname", "uid", "resourceId", "sid"}
    assert len(started["sid"]) == 32 and int(started["sid"], 16) >= 0


# --- query shapes against the documented examples -------------------------------------------------


def test_query_mix_hls_is_a_string_file_list_like_example_2(client: Client) -> None:
    rid, sid = client.begin("mix", recordingFileConfig={"avFileType": ["hls"]})
    client.wait_status(rid, sid, 5)
    body = client.query(rid, sid).json()
    assert shape(body["serverResponse"]) == shape(EX2_QUERY_MIX_STRING["serverResponse"])
    assert list(body) == ["cname", "uid", "resourceId", "sid", "serverResponse"]


def test_query_mix_with_mp4_is_a_json_file_list_like_example_1(client: Client) -> None:
    rid, sid = client.begin("mix", recordingFileConfig={"avFileType": ["hls", "mp4"]})
    client.wait_status(rid, sid, 5)
    server_response = client.query(rid, sid).json()["serverResponse"]
    assert shape(server_response) == shape(EX1_QUERY_JSON["serverResponse"])
    assert server_response["fileList"] == [
        {
            "fileName": f"{sid}_ch.m3u8",
            "trackType": "audio_and_video",
            "uid": "0",
            "mixedAllUser": True,
            "isPlayable": True,
            "sliceStartTime": server_response["sliceStartTime"],
        }
    ]
    stopped = client.stop(rid, sid).json()["serverResponse"]
    assert shape(stopped) == shape(EX4_STOP_JSON["serverResponse"])
    assert [item["fileName"] for item in stopped["fileList"]] == [f"{sid}_ch.m3u8", f"{sid}_ch_0.mp4"]


def test_query_individual_lists_each_user_and_track_like_example_1(client: Client) -> None:
    rid, sid = client.begin("individual", recordingFileConfig={"avFileType": ["hls"]})
    client.wait_status(rid, sid, 5, mode="individual")
    server_response = client.query(rid, sid, "individual").json()["serverResponse"]
    assert shape(server_response) == shape(EX1_QUERY_JSON["serverResponse"])
    assert [(item["uid"], item["trackType"], item["fileName"]) for item in server_response["fileList"]] == [
        (uid, track, f"{sid}_ch__uid_s_{uid}__uid_e_{track}.m3u8")
        for uid in SIMULATED_USERS
        for track in ("audio", "video")
    ]
    assert all(item["mixedAllUser"] is False for item in server_response["fileList"])


def test_individual_subscribe_lists_and_file_name_prefix(client: Client) -> None:
    rid, sid = client.begin(
        "individual",
        recordingConfig={"subscribeAudioUids": ["7"], "subscribeVideoUids": ["7", "8"]},
        storageConfig={"fileNamePrefix": ["dir1", "dir2"]},
    )
    client.wait_status(rid, sid, 5, mode="individual")
    files = client.query(rid, sid, "individual").json()["serverResponse"]["fileList"]
    assert [item["fileName"] for item in files] == [
        f"dir1/dir2/{sid}_ch__uid_s_7__uid_e_audio.m3u8",
        f"dir1/dir2/{sid}_ch__uid_s_7__uid_e_video.m3u8",
        f"dir1/dir2/{sid}_ch__uid_s_8__uid_e_video.m3u8",
    ]


def test_individual_snapshots_only_report_status_and_slice_start(client: Client) -> None:
    rid, sid = client.begin("individual", snapshotConfig={"captureInterval": 5, "fileType": ["jpg"]})
    client.wait_status(rid, sid, 5, mode="individual")
    server_response = client.query(rid, sid, "individual").json()["serverResponse"]
    assert set(server_response) == {"status", "sliceStartTime"}
    assert client.stop(rid, sid, "individual").json()["serverResponse"] == {"uploadingStatus": "uploaded"}


def test_query_web_before_the_first_slice_reports_init_and_no_files(make_sim: Callable[..., AgoraSimulator]) -> None:
    client = Client(make_sim(speed=0.1))  # the first slice 30 s after the start
    rid, sid = client.begin(
        "web",
        extensionServiceConfig={
            "extensionServices": [
                {"serviceName": "web_recorder_service", "serviceParam": {"url": "https://example.com"}},
            ]
        },
    )
    early = client.query(rid, sid, "web").json()["serverResponse"]
    assert early["status"] < 5
    payload = early["extensionServiceState"][0]["payload"]
    assert (payload["state"], payload["fileList"]) == ("init", [])


def test_query_web_like_example_3_with_cdn_push(client: Client) -> None:
    rid, sid = client.begin(
        "web",
        extensionServiceConfig={
            "extensionServices": [
                {"serviceName": "web_recorder_service", "serviceParam": {"url": "https://example.com"}},
                {"serviceName": "rtmp_publish_service", "serviceParam": {"outputs": [{"rtmpUrl": "rtmp://cdn/x"}]}},
            ]
        },
    )
    client.wait_status(rid, sid, 5, mode="web")
    body = client.query(rid, sid, "web").json()
    assert shape(body) == {**shape(EX3_QUERY_WEB), "serverResponse": shape(body["serverResponse"])}
    web_item, rtmp_item = body["serverResponse"]["extensionServiceState"]
    assert shape({**body["serverResponse"], "extensionServiceState": [web_item]}) == shape(
        EX3_QUERY_WEB["serverResponse"]
    )
    assert web_item["payload"]["state"] == "inProgress"
    assert web_item["payload"]["fileList"][0]["filename"] == f"{sid}_ch.m3u8"
    assert shape(rtmp_item) == shape(EX3_RTMP_ITEM)
    assert rtmp_item["payload"]["outputs"] == [{"rtmpUrl": "rtmp://cdn/x", "status": "publishing"}]


# --- stop -----------------------------------------------------------------------------------------


def test_stop_answers_files_then_6_7_8_then_404(make_sim: Callable[..., AgoraSimulator]) -> None:
    sim = make_sim(speed=10.0)
    client = Client(sim)
    rid, sid = client.begin("mix")
    client.wait_status(rid, sid, 5)
    stop_began = sim.simulated_time()
    stopped = client.stop(rid, sid)
    stop_ended = sim.simulated_time()
    assert stopped.status_code == 200
    body = stopped.json()
    assert shape(body["serverResponse"]) == shape(EX5_STOP_MIX_STRING["serverResponse"])
    assert body["serverResponse"] == {
        "fileListMode": "string",
        "fileList": f"{sid}_ch.m3u8",
        "uploadingStatus": "uploaded",
    }
    assert {"cname", "uid", "resourceId", "sid"} <= set(body)

    def expected(after_stop: float) -> int:
        """6, 7, 8 on EXIT_TIMELINE, then gone (9) after EXIT_DURATION simulated seconds."""
        return 9 if after_stop >= EXIT_DURATION else expected_exit_status(after_stop)

    samples: list[tuple[float, int, float]] = []

    def tail() -> bool:
        before = sim.simulated_time()
        status = client.status(rid, sid)
        samples.append((before, 9 if status is None else status, sim.simulated_time()))
        return status is None

    wait_for(tail)
    # Each answer is the tail's status at some moment during its request (the stop took effect
    # during the stop request). A 0.1 s step can fall between two samples on a busy machine.
    for before, status, after in samples:
        assert expected(before - stop_ended) <= status <= expected(after - stop_began), (before, status, after)
    gone = client.query(rid, sid)
    assert gone.status_code == 404
    assert gone.json()["code"] == 404 and gone.json()["reason"] == "failed to find worker"
    assert client.stop(rid, sid).status_code == 404


def test_second_stop_while_exiting_is_code_49(sim: AgoraSimulator, client: Client) -> None:
    # Exiting for an hour (simulated) after the stop: the second stop meets the exit, whatever the machine's pace.
    ((rid, sid),) = [(r["resource_id"], r["sid"]) for r in sim.create_recordings([time.time() + 3600], hold=3600)]
    assert client.stop(rid, sid, cname=f"bulk_{sid}", uid="1").status_code == 200
    again = client.stop(rid, sid, cname=f"bulk_{sid}", uid="1")
    assert again.status_code == 400
    assert again.json()["code"] == 49


def test_stop_web_has_upload_service_and_file_list(client: Client) -> None:
    rid, sid = client.begin("web")
    client.wait_status(rid, sid, 5, mode="web")
    states = client.stop(rid, sid, "web").json()["serverResponse"]["extensionServiceState"]
    assert states[0] == EX4_STOP_WEB_UPLOAD_ITEM
    assert states[1]["serviceName"] == "web_recorder_service"
    assert states[1]["payload"]["fileList"][0]["filename"] == f"{sid}_ch.m3u8"


def test_async_stop_answers_unknown_upload_status(client: Client) -> None:
    rid, sid = client.begin("mix")
    client.wait_status(rid, sid, 5)
    stopped = client.stop(rid, sid, async_stop=True)
    assert stopped.status_code == 200
    assert stopped.json()["serverResponse"]["uploadingStatus"] == "unknown"
    client.wait_gone(rid, sid)


def test_stop_before_first_slice_is_206_no_recorded_data(make_sim: Callable[..., AgoraSimulator]) -> None:
    client = Client(make_sim(speed=0.1))  # the first slice 30 s after the start, and 6 for 10 s after the stop
    rid, sid = client.begin("mix")
    stopped = client.stop(rid, sid)
    assert stopped.status_code == 206
    assert stopped.json()["code"] == 435
    assert client.status(rid, sid) == 6  # the session still ends


# --- start errors ----------------------------------------------------------------------------------


def test_duplicate_start_is_201_code_7(client: Client) -> None:
    rid = client.acquire().json()["resourceId"]
    assert client.start(rid).status_code == 200
    again = client.start(rid)
    assert again.status_code == 201
    assert again.json() == {"code": 7, "reason": "already started"}


def test_start_with_other_cname_or_unknown_resource_is_432(client: Client) -> None:
    rid = client.acquire().json()["resourceId"]
    wrong = client.start(rid, cname="other")
    assert wrong.status_code == 400 and wrong.json()["code"] == 432
    unknown = client.start("not-a-resource")
    assert unknown.status_code == 400 and unknown.json()["code"] == 432


def test_second_recorder_with_same_channel_and_uid_is_task_conflict(client: Client) -> None:
    client.begin("mix")
    rid = client.acquire().json()["resourceId"]
    conflict = client.start(rid)
    assert conflict.status_code == 400 and conflict.json()["code"] == 53


def test_resource_expires_after_five_simulated_minutes(make_sim: Callable[..., AgoraSimulator]) -> None:
    sim = make_sim(speed=3000.0)
    client = Client(sim)
    rid = client.acquire().json()["resourceId"]
    acquired_by = sim.simulated_time()  # the simulator took the acquire's time before this
    wait_for(lambda: sim.simulated_time() > acquired_by + RESOURCE_TTL)
    expired = client.start(rid)
    assert expired.status_code == 400
    assert expired.json()["code"] == 433


def test_invalid_acquire_parameters(client: Client) -> None:
    bad_uid = client.acquire(uid="0")
    assert bad_uid.status_code == 400 and bad_uid.json()["code"] == 2
    bad_hours = client.acquire(resourceExpiredHour=0)
    assert bad_hours.json() == {"code": 2, "reason": "Acquire: invalid resourceExpiredHour value!"}
    bad_json = client.session.post(
        f"{client.base}/acquire", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and "code" in bad_json.json()


# --- idle exit --------------------------------------------------------------------------------------


def test_leave_channel_idle_exit_after_max_idle_time(manual_sim: tuple[AgoraSimulator, ManualClock]) -> None:
    sim, clock = manual_sim
    client = Client(sim)
    rid, sid = client.begin("mix", recordingConfig={"maxIdleTime": 5})
    web_rid, web_sid = client.begin("web", uid="42")
    clock.reading += 3.0  # both at status 5, with their first slice
    assert sim.leave_channel("ch") == 1  # the web recording does not idle-exit
    left_at = clock.reading
    seen: list[tuple[float, int | None]] = []
    for after_leaving in (0.0, 4.99, 5.0, 5.99, 6.0, 6.99, 7.0, 7.99, 8.0, 60.0):
        clock.reading = left_at + after_leaving
        seen.append((after_leaving, client.status(rid, sid)))
    # Status 5 until maxIdleTime (5 simulated seconds) has passed, then 6, 7, 8 a second each, then gone.
    assert seen == [
        (0.0, 5),
        (4.99, 5),
        (5.0, 6),
        (5.99, 6),
        (6.0, 7),
        (6.99, 7),
        (7.0, 8),
        (7.99, 8),
        (8.0, None),
        (60.0, None),
    ]
    assert client.status(web_rid, web_sid, "web") == 5


# --- gateway and auth -----------------------------------------------------------------------------


def test_auth_missing_and_wrong_credentials(sim: AgoraSimulator) -> None:
    missing = Client(sim, auth=None).acquire()
    assert missing.status_code == 401
    assert missing.json() == {"message": "Unauthorized"}
    wrong = Client(sim, auth=("sim-customer", "nope")).acquire()
    assert wrong.status_code == 401
    assert wrong.json() == {"message": "Invalid authentication credentials"}
    assert [(r.status, r.customer_id) for r in sim.request_log] == [(401, None), (401, "sim-customer")]


def test_gateway_404_for_unknown_routes_wrong_methods_and_modes(client: Client) -> None:
    no_route = {"message": "no Route matched with those values"}
    assert client.session.get(f"{client.sim.url}/v1/nothing").json() == no_route
    assert client.session.get(f"{client.base}/acquire").status_code == 404
    rid, sid = client.begin("individual")
    assert client.session.post(f"{client.session_url(rid, sid, 'individual')}/query").json() == no_route
    layout = client.update_layout(rid, sid, "individual")
    assert layout.status_code == 404 and layout.json() == no_route
    bad_mode = client.start(client.acquire(uid="9").json()["resourceId"], mode="audio", uid="9")
    assert bad_mode.status_code == 404 and bad_mode.json() == no_route
    assert Client(client.sim, auth=None).session.get(f"{client.sim.url}/v1/nothing").status_code == 404


def test_unknown_app_id_is_400_appid_invalid(sim: AgoraSimulator) -> None:
    response = Client(sim, app="other-app").acquire()
    assert response.status_code == 400
    assert response.json() == {"message": "appid is invalid"}


def test_every_answer_has_json_content_type_and_request_id(sim: AgoraSimulator, client: Client) -> None:
    responses = [
        client.acquire(),
        Client(sim, auth=None).acquire(),
        client.session.get(f"{sim.url}/nope"),
        requests.get(f"{sim.url}/_simulator/requests"),
    ]
    for response in responses:
        assert response.headers["Content-Type"] == "application/json"
        assert len(response.headers["X-Request-Id"]) == 32
        int(response.headers["X-Request-Id"], 16)
    logged = [record.request_id for record in sim.request_log]
    assert logged == [response.headers["X-Request-Id"] for response in responses[:3]]


def test_keep_alive_serves_several_requests_on_one_connection(sim: AgoraSimulator) -> None:
    connection = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/_simulator/requests")
            response = connection.getresponse()
            assert response.status == 200
            json.loads(response.read())
            assert not response.will_close
    finally:
        connection.close()


def test_update_and_update_layout(client: Client) -> None:
    rid, sid = client.begin("mix")
    updated = client.update(rid, sid, streamSubscribe={"audioUidList": {"subscribeAudioUids": ["#allstream#"]}})
    assert updated.status_code == 200
    assert updated.json() == {"cname": "ch", "uid": UID, "resourceId": rid, "sid": sid}
    layout = client.update_layout(rid, sid, mixedVideoLayout=1)
    assert layout.status_code == 200 and layout.json()["sid"] == sid
    client.wait_status(rid, sid, 5)
    client.stop(rid, sid)
    client.wait_gone(rid, sid)
    assert client.update(rid, sid).status_code == 404
    assert client.update_layout(rid, sid).json()["code"] == 404


def test_update_web_onhold_and_rtmp_outputs(client: Client) -> None:
    rid, sid = client.begin("web")
    client.wait_status(rid, sid, 5, mode="web")
    assert client.update(rid, sid, "web", webRecordingConfig={"onhold": True}).status_code == 200
    assert client.update(rid, sid, "web", rtmpPublishConfig={"outputs": [{"rtmpUrl": "rtmp://b"}]}).status_code == 200
    states = client.query(rid, sid, "web").json()["serverResponse"]["extensionServiceState"]
    assert states[0]["payload"]["onhold"] is True
    assert states[1]["payload"]["outputs"] == [{"rtmpUrl": "rtmp://b", "status": "onhold"}]


def test_query_in_the_wrong_mode_is_failed_to_find_worker(client: Client) -> None:
    rid, sid = client.begin("mix")
    response = client.query(rid, sid, "individual")
    assert response.status_code == 404 and response.json()["reason"] == "failed to find worker"


# --- rate limit -------------------------------------------------------------------------------------


def test_rate_limit_sliding_window_and_rejections_do_not_count(
    make_sim: Callable[..., AgoraSimulator], limiter_clock: LimiterClock
) -> None:
    sim = make_sim(rate_limit_per_second=10)
    client = Client(sim)
    answers: list[requests.Response] = []

    def acquire_at(arrival: float) -> int:
        limiter_clock.reading = arrival
        answers.append(client.acquire(uid=str(len(answers) + 1)))
        return answers[-1].status_code

    # Sixteenths of a second: exact in binary, so each window edge is where the test puts it.
    ten = [acquire_at(i / 16) for i in range(10)]  # 0 .. 9/16 s: an empty window takes ten
    full = [acquire_at(t) for t in (12 / 16, 14 / 16, 15 / 16)]  # eleventh and later within (0, 1]
    # At 1 s the request of 0 s has left the window (t-1, t]. Had the refusals counted, it would still be full.
    cleared = acquire_at(1.0)
    refilled = acquire_at(1.0)  # 1/16 .. 9/16 and 1 s: ten again, sliding rather than a fixed second
    slid = acquire_at(17 / 16)  # 1/16 s has left the window
    assert (ten, full, cleared, refilled, slid) == ([200] * 10, [429] * 3, 200, 429, 200)
    refused = answers[10]
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {"message": "API rate limit exceeded"}
    assert [r.status for r in sim.request_log] == [answer.status_code for answer in answers]


def test_faulted_and_unauthenticated_requests_do_not_count_toward_the_rate_limit(
    make_sim: Callable[..., AgoraSimulator], limiter_clock: LimiterClock
) -> None:
    """All requests arrive at the same instant for the limiter, however long the machine takes."""
    sim = make_sim(rate_limit_per_second=2)
    client = Client(sim)
    sim.faults.fail_next(5)
    assert [client.acquire().status_code for _ in range(5)] == [503] * 5
    assert [Client(sim, auth=None).acquire().status_code for _ in range(3)] == [401] * 3
    assert [client.acquire(uid=str(i + 1)).status_code for i in range(3)] == [200, 200, 429]


# --- faults ----------------------------------------------------------------------------------------


def test_fail_next_default_and_504(sim: AgoraSimulator, client: Client) -> None:
    sim.faults.fail_next(2)
    sim.faults.fail_next(1, status=504)
    Client(sim, auth=None).acquire()  # unauthenticated: 401, consumes nothing
    answers = [client.acquire() for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 504, 200]
    assert answers[0].json() == {"code": 503, "reason": "internal error"}
    assert answers[2].json() == {"code": 62, "reason": "request timeout"}
    assert [r.status for r in sim.request_log] == [401, 503, 503, 504, 200]


def test_throttle_next_with_and_without_retry_after(sim: AgoraSimulator, client: Client) -> None:
    sim.faults.throttle_next(1, retry_after=7)
    sim.faults.throttle_next(1, retry_after=None)
    first, second, third = (client.acquire() for _ in range(3))
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert first.json() == {"message": "API rate limit exceeded"}
    assert second.status_code == 429 and "Retry-After" not in second.headers
    assert third.status_code == 200


def test_partial_next(sim: AgoraSimulator, client: Client) -> None:
    sim.faults.partial_next(1)
    partial = client.acquire()
    assert partial.status_code == 206
    assert partial.json() == {"code": 65, "reason": "request not completed"}
    assert client.acquire().status_code == 200


def test_non_json_next(sim: AgoraSimulator, client: Client) -> None:
    sim.faults.non_json_next(1, status=502)
    answer = client.acquire()
    assert answer.status_code == 502
    assert answer.headers["Content-Type"] == "text/html"
    assert answer.text == "<html><body>upstream error</body></html>"
    with pytest.raises(ValueError):
        answer.json()
    assert client.acquire().status_code == 200


def test_latency_is_added_to_api_answers(sim: AgoraSimulator, client: Client) -> None:
    sim.faults.latency = 0.2
    began = time.monotonic()
    client.acquire()
    assert time.monotonic() - began >= 0.2
    sim.faults.reset()
    assert sim.faults.latency == 0.0


def test_abnormal_exit_shows_20_then_404(sim: AgoraSimulator, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    rid, sid = client.begin("mix")
    client.wait_status(rid, sid, 5)
    # Status 20 lasts ABNORMAL_HOLD simulated seconds (a quarter of a second here): held for the
    # first part of the test, so that seeing it and stopping in it never depend on the machine's pace.
    monkeypatch.setattr("airflow_provider_agora.simulator._lifecycle.ABNORMAL_HOLD", 36_000.0)
    sim.faults.abnormal_exit(sid, after=1.0)
    client.wait_status(rid, sid, ABNORMAL_STATUS)
    assert client.stop(rid, sid).json()["code"] == 49
    monkeypatch.undo()  # back to ABNORMAL_HOLD: the worker is gone once it has passed
    client.wait_gone(rid, sid)


def test_transient_not_found_then_recording_resumes(sim: AgoraSimulator, client: Client) -> None:
    rid, sid = client.begin("mix")
    client.wait_status(rid, sid, 5)
    sim.faults.transient_not_found(sid, duration=36_000.0)
    missing = client.query(rid, sid)
    assert missing.status_code == 404
    assert missing.json()["code"] == 404 and missing.json()["reason"] == "failed to find worker"
    assert client.stop(rid, sid).status_code == 404  # the stop did not reach the worker
    sim.faults.transient_not_found(sid, duration=0)  # the fail-over ends
    assert client.status(rid, sid) == 5  # answers resume, still recording


# --- control endpoints ------------------------------------------------------------------------------


def test_control_endpoints(make_sim: Callable[..., AgoraSimulator]) -> None:
    sim = make_sim(rate_limit_per_second=2)
    client = Client(sim)
    control = f"{sim.url}/_simulator"
    rid, sid = client.begin("mix", recordingConfig={"maxIdleTime": 1})
    for _ in range(5):  # not rate-limited (2/s) and not logged
        assert requests.get(f"{control}/requests").status_code == 200
    logged = requests.get(f"{control}/requests").json()
    assert [(r["method"], r["status"], r["customer_id"]) for r in logged] == [
        ("POST", 200, "sim-customer"),
        ("POST", 200, "sim-customer"),
    ]
    assert set(logged[0]) == {"method", "path", "status", "time", "customer_id", "request_id", "client_port"}
    assert requests.delete(f"{control}/requests").status_code == 200
    assert sim.request_log == []

    state = requests.post(
        f"{control}/faults",
        json={
            "fail_next": {"count": 1, "status": 500},
            "throttle_next": 1,
            "latency": 0.0,
            "transient_not_found": {"sid": "x", "duration": 100},
        },
    ).json()
    assert [(f["kind"], f["remaining"]) for f in state["queued"]] == [("fail", 1), ("throttle", 1)]
    assert "x" in state["transient_not_found"]
    assert requests.post(f"{control}/faults", json={"bogus": 1}).status_code == 400
    assert requests.delete(f"{control}/faults").json()["queued"] == []

    left = requests.post(f"{control}/leave_channel", json={"cname": "ch"})
    assert left.json() == {"cname": "ch", "recordings": 1}
    client.wait_gone(rid, sid)  # polling meets 429s (2/s limit); they are simply retried


def test_bulk_recordings_are_at_5_with_files_then_6_7_8_for_hold_then_gone(
    make_sim: Callable[..., AgoraSimulator],
) -> None:
    sim = make_sim(speed=10.0, rate_limit_per_second=1000)
    client = Client(sim)
    now = time.time()
    created = requests.post(
        f"{sim.url}/_simulator/recordings", json={"end_times": [now + 0.3, now + 60.0], "hold": 5.0}
    ).json()
    assert [item["end_time"] for item in created] == [now + 0.3, now + 60.0]
    assert set(created[0]) == {"resource_id", "sid", "end_time"}
    assert len({item["sid"] for item in created}) == 2
    (soon, late) = [(item["resource_id"], item["sid"]) for item in created]
    answer = client.query(*late).json()["serverResponse"]
    assert answer["status"] == 5 and answer["fileList"].endswith(".m3u8") and answer["sliceStartTime"] > 0
    assert sim.request_log[-1].status == 200  # queried like any started recording

    def expected(at: float) -> int:
        """Status at wall-clock ``at``: 5 until the end time, 6, 7, 8 on EXIT_TIMELINE, gone (9) after hold."""
        after_end = (at - (now + 0.3)) * sim.speed
        return 5 if after_end < 0 else 9 if after_end >= 5.0 else expected_exit_status(after_end)

    samples: list[tuple[float, int, float]] = []

    def sample() -> bool:
        before = time.time()
        status = client.status(*soon)
        samples.append((before, 9 if status is None else status, time.time()))
        return status is None

    wait_for(sample, timeout=10.0, interval=0.01)
    # Each answer is the status of some moment during its request (1 ms for the two clock sources).
    for before, status, after in samples:
        assert expected(before - 0.001) <= status <= expected(after + 0.001), (before, status, after)
    assert client.status(*late) == 5
    assert client.start(late[0]).json()["code"] == 7  # its resourceId counts as started


def test_bulk_recordings_hold_a_terminal_status_and_past_end_times_have_files(
    make_sim: Callable[..., AgoraSimulator],
) -> None:
    sim = make_sim(speed=1.0, rate_limit_per_second=1)
    ((rid, sid),) = [(r["resource_id"], r["sid"]) for r in sim.create_recordings([time.time() - 30.0], hold=3600)]
    answer = Client(sim).query(rid, sid).json()["serverResponse"]
    assert answer["status"] == 8 and answer["fileList"] and answer["sliceStartTime"] > 0
    assert sim.create_recordings([], mode="web") == []
    created = sim.create_recordings([time.time() + 100] * 3, mode="individual")  # no rate limit, no requests
    assert len(created) == 3 and sim.stats()["requests"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"end_times": "soon"},
        {"end_times": [True]},
        {"end_times": [1e9], "hold": 0},
        {"end_times": [1e9], "mode": "audio"},
        {"end_times": [1e9], "app_id": "other"},
        {"end_times": [1e9], "client_request": []},
        {"end_times": [1e9], "colour": "red"},
        [1e9],
    ],
)
def test_bulk_recordings_refuse_bad_arguments(sim: AgoraSimulator, payload: Any) -> None:
    answer = requests.post(f"{sim.url}/_simulator/recordings", json=payload)
    assert answer.status_code == 400
    assert "message" in answer.json()


def test_stats_count_connections_and_answers_per_status_and_reset(make_sim: Callable[..., AgoraSimulator]) -> None:
    sim = make_sim(rate_limit_per_second=2)
    control = f"{sim.url}/_simulator/stats"
    assert requests.delete(control).json()["connections_accepted"] == 0  # accepted before the reset
    before = time.time()
    client = Client(sim)  # one keep-alive session: one connection
    statuses: list[int] = []
    while 429 not in statuses:  # two pass, then (within a second, however busy the machine) a 429
        assert len(statuses) < 1000, "never rate-limited"
        statuses.append(client.acquire(uid=str(len(statuses) + 1)).status_code)
    Client(sim, auth=None).acquire()  # second connection, 401
    stats = requests.get(control).json()
    assert stats["connections_accepted"] == 3  # two clients plus this control request's connection
    assert stats["requests"] == len(statuses) + 1  # control requests are not counted
    assert stats["by_status"] == {"200": len(statuses) - 1, "401": 1, "429": 1}
    reset = requests.delete(control).json()
    assert reset["requests"] == 0 and reset["by_status"] == {} and reset["since"] >= before
    assert len(sim.request_log) == len(statuses) + 1  # the log is cleared separately
    assert sim.stats()["connections_accepted"] == 0  # the DELETE's connection was accepted before it


def test_backlog_option(make_sim: Callable[..., AgoraSimulator]) -> None:
    with pytest.raises(ValueError):
        AgoraSimulator(backlog=0)
    sim = make_sim(backlog=512)
    assert sim._server is not None and sim._server.request_queue_size == 512
    assert Client(sim).acquire().status_code == 200
