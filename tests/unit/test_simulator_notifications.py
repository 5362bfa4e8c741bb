"""The simulator's Agora notifications (NCS): signed POSTs of lifecycle events to a receiver.

A tiny standard-library receiver on loopback records every POST (raw body, headers, arrival) and
can answer non-200 to the first few. Tests wait on what the receiver got, polling with a deadline;
the simulator runs 20 times faster than real time so every test takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
import requests

from airflow_provider_agora.simulator import NOTIFY_RETRY_DELAYS, AgoraSimulator, NotificationRecord
from airflow_provider_agora.simulator.__main__ import _parser, build_simulator, main
from tests.support import wait_for

SECRET = "ncs-secret"
AUTH = ("sim-customer", "sim-secret")
UID = "527841"
SPEED = 20.0
MP4: dict[str, Any] = {"recordingFileConfig": {"avFileType": ["hls", "mp4"]}}
T = TypeVar("T")


def wait_count(read: Callable[[], list[T]], count: int, timeout: float = 5.0) -> list[T]:
    """Poll ``read`` until it returns at least ``count`` items; returns that list."""
    found: list[list[T]] = []

    def enough() -> bool:
        found[:] = [read()]
        return len(found[0]) >= count

    wait_for(enough, timeout)
    return found[0]


# --- the receiver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    raw: bytes
    headers: dict[str, str]  # lower-case names
    arrived: float  # time.monotonic()
    answered: int

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)

    @property
    def event_type(self) -> int:
        return int(self.body["eventType"])


class Receiver:
    """Records every POST; answers ``fail_status`` to the first ``fail_first`` of them, 200 ``{}`` after."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.fail_status if len(receiver.posts) < receiver.fail_first else 200
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.posts.append(Post(raw, headers, time.monotonic(), status))
                answer = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/agora/ncs"

    def received(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def event_types(self, sid: str | None = None) -> list[int]:
        return [post.event_type for post in self.received() if sid is None or post.body["payload"]["sid"] == sid]

    def wait_posts(self, count: int, timeout: float = 5.0) -> list[Post]:
        return wait_count(self.received, count, timeout)

    def wait_event(self, event_type: int, sid: str | None = None, timeout: float = 5.0) -> Post:
        def find() -> Post | None:
            for post in self.received():
                if post.event_type == event_type and (sid is None or post.body["payload"]["sid"] == sid):
                    return post
            return None

        return wait_for(find, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verifies(post: Post, secret: str = SECRET) -> bool:
    """Both signatures as Agora computes them: lowercase hex HMAC of the raw body."""
    key = secret.encode()
    sha1 = hmac.new(key, post.raw, hashlib.sha1).hexdigest()
    sha256 = hmac.new(key, post.raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sha1, post.headers["agora-signature"]) and hmac.compare_digest(
        sha256, post.headers["agora-signature-v2"]
    )


# --- the API client ------------------------------------------------------------------------------


class Client:
    def __init__(self, sim: AgoraSimulator) -> None:
        self.session = requests.Session()
        self.session.auth = AUTH
        self.base = f"{sim.url}/v1/apps/sim-app/cloud_recording"

    def begin(self, mode: str = "mix", cname: str = "ch", **client_request: Any) -> tuple[str, str]:
        ids = {"cname": cname, "uid": UID}
        rid = self.session.post(f"{self.base}/acquire", json={**ids, "clientRequest": {}}).json()["resourceId"]
        started = self.session.post(
            f"{self.base}/resourceid/{rid}/mode/{mode}/start", json={**ids, "clientRequest": client_request}
        )
        assert started.status_code == 200, started.text
        return rid, started.json()["sid"]

    def url(self, rid: str, sid: str, mode: str) -> str:
        return f"{self.base}/resourceid/{rid}/sid/{sid}/mode/{mode}"

    def query(self, rid: str, sid: str, mode: str = "mix") -> requests.Response:
        return self.session.get(f"{self.url(rid, sid, mode)}/query")

    def stop(self, rid: str, sid: str, mode: str = "mix", cname: str = "ch") -> requests.Response:
        return self.session.post(
            f"{self.url(rid, sid, mode)}/stop", json={"cname": cname, "uid": UID, "clientRequest": {}}
        )

    def wait_files(self, rid: str, sid: str, mode: str = "mix") -> None:
        """Until the first slice is uploaded (status 5), so that a stop has files."""
        wait_for(lambda: self.query(rid, sid, mode).json()["serverResponse"].get("status") == 5)

    def stop_when_recorded(self, rid: str, sid: str, mode: str = "mix") -> dict[str, Any]:
        self.wait_files(rid, sid, mode)
        stopped = self.stop(rid, sid, mode)
        assert stopped.status_code == 200, stopped.text
        return stopped.json()["serverResponse"]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_sim(receiver: Receiver) -> Iterator[Callable[..., AgoraSimulator]]:
    started: list[AgoraSimulator] = []

    def factory(**kwargs: Any) -> AgoraSimulator:
        kwargs.setdefault("speed", SPEED)
        kwargs.setdefault("rate_limit_per_second", None)
        kwargs.setdefault("notify_url", receiver.url)
        kwargs.setdefault("notify_secret", SECRET)
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


# --- envelope, signature, normal sequence -----------------------------------------------------------


def test_normal_stop_sends_40_30_31_11_signed_in_agora_envelope(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    rid, sid = client.begin("mix", **MP4)
    stopped = client.stop_when_recorded(rid, sid)
    exit_post = receiver.wait_event(11, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 30, 31, 11]
    assert posts[-1] == exit_post
    for sequence, post in enumerate(posts):
        assert verifies(post), post.headers
        assert post.headers["content-type"] == "application/json"
        assert post.headers["agora-signature"] == post.headers["agora-signature"].lower()
        body = post.body
        assert list(body) == ["noticeId", "productId", "eventType", "notifyMs", "payload"]
        assert isinstance(body["noticeId"], str) and body["noticeId"]
        assert body["productId"] == 3
        assert isinstance(body["notifyMs"], int) and body["notifyMs"] >= body["payload"]["sendts"]
        payload = body["payload"]
        assert set(payload) == {"cname", "uid", "sid", "sequence", "sendts", "serviceType", "details"}
        assert (payload["cname"], payload["uid"], payload["sid"]) == ("ch", UID, sid)
        assert payload["sequence"] == sequence
    assert len({post.body["noticeId"] for post in posts}) == 4
    sendts = [post.body["payload"]["sendts"] for post in posts]
    assert sendts == sorted(sendts) and abs(sendts[0] / 1000 - time.time()) < 60
    assert [post.body["payload"]["serviceType"] for post in posts] == [1, 2, 2, 0]
    details = [post.body["payload"]["details"] for post in posts]
    assert details[0] == {"msgName": "recorder_started", "status": 0}
    assert details[1] == {"msgName": "uploader_started", "status": 0}
    assert details[3] == {"msgName": "session_exit", "exitStatus": 0}
    # 31 carries exactly the stop answer's final list, MP4 included, in Agora's item shape.
    assert details[2] == {"msgName": "uploaded", "status": 0, "fileList": stopped["fileList"]}
    assert [item["fileName"] for item in details[2]["fileList"]] == [f"{sid}_ch.m3u8", f"{sid}_ch_0.mp4"]
    assert all(
        set(item) == {"fileName", "trackType", "uid", "mixedAllUser", "isPlayable", "sliceStartTime"}
        and item["uid"] == "0"
        and item["mixedAllUser"] is True
        for item in details[2]["fileList"]
    )
    # The log: one delivered attempt per notification.
    log = wait_count(lambda: sim.notifications, 4)
    assert [(r.event_type, r.sid, r.attempt, r.status, r.error, r.outcome) for r in log] == [
        (event_type, sid, 1, 200, None, "delivered") for event_type in (40, 30, 31, 11)
    ]
    assert [r.notice_id for r in log] == [post.body["noticeId"] for post in posts]
    assert [r.notify_ms for r in log] == [post.body["notifyMs"] for post in posts]
    stats = sim.notification_stats()
    assert (stats["notifications"], stats["attempts"], stats["delivered"], stats["dropped"]) == (4, 4, 4, 0)


def test_individual_mode_31_lists_each_user_and_track(client: Client, receiver: Receiver) -> None:
    rid, sid = client.begin("individual", recordingConfig={"subscribeAudioUids": ["7"], "subscribeVideoUids": ["7"]})
    stopped = client.stop_when_recorded(rid, sid, "individual")
    uploaded = receiver.wait_event(31, sid).body["payload"]["details"]
    assert uploaded["fileList"] == stopped["fileList"]
    assert [(item["uid"], item["trackType"], item["mixedAllUser"]) for item in uploaded["fileList"]] == [
        ("7", "audio", False),
        ("7", "video", False),
    ]


def test_idle_exit_sends_31_with_the_mp4_that_polling_never_shows(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    rid, sid = client.begin("mix", recordingConfig={"maxIdleTime": 2}, **MP4)
    client.wait_files(rid, sid)
    polled: set[str] = set()

    def gone() -> bool:
        answer = client.query(rid, sid)
        if answer.status_code == 404:
            return True
        polled.update(item["fileName"] for item in answer.json()["serverResponse"]["fileList"])
        return False

    # One answer at status 5 before everybody leaves, so the poll has seen the HLS file even if the
    # machine stalls past the whole idle exit (0.25 s here) before its next query.
    assert not gone()
    assert sim.leave_channel("ch") == 1
    wait_for(gone)
    assert polled == {f"{sid}_ch.m3u8"}  # polling until the worker is gone never sees the MP4
    receiver.wait_event(11, sid)
    assert receiver.event_types(sid) == [40, 30, 31, 11]
    uploaded = receiver.wait_event(31, sid).body["payload"]["details"]
    assert [item["fileName"] for item in uploaded["fileList"]] == [f"{sid}_ch.m3u8", f"{sid}_ch_0.mp4"]


def test_bulk_recording_end_time_sends_its_notifications(sim: AgoraSimulator, receiver: Receiver) -> None:
    (created,) = sim.create_recordings([time.time() + 0.1], hold=2.0, client_request=MP4)
    sid = created["sid"]
    receiver.wait_event(11, sid)
    assert receiver.event_types(sid) == [40, 30, 31, 11]
    uploaded = receiver.wait_event(31, sid).body["payload"]
    assert uploaded["cname"] == f"bulk_{sid}" and uploaded["uid"] == "1"
    assert [item["fileName"] for item in uploaded["details"]["fileList"]] == [
        f"{sid}_bulk_{sid}.m3u8",
        f"{sid}_bulk_{sid}_0.mp4",
    ]


def test_web_recording_sends_71_with_its_files_and_31_without(client: Client, receiver: Receiver) -> None:
    rid, sid = client.begin("web", **MP4)
    stopped = client.stop_when_recorded(rid, sid, "web")
    receiver.wait_event(11, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 70, 71, 30, 31, 11]
    by_type = {post.event_type: post.body["payload"] for post in posts}
    assert by_type[70]["serviceType"] == 6 and by_type[70]["details"]["msgName"] == "web_recorder_started"
    web_service = next(s for s in stopped["extensionServiceState"] if s["serviceName"] == "web_recorder_service")
    assert by_type[71]["serviceType"] == 6
    assert by_type[71]["details"] == {
        "msgName": "web_recorder_stopped",
        "code": 0,
        "message": "ok",
        "fileList": web_service["payload"]["fileList"],
    }
    assert [item["filename"] for item in by_type[71]["details"]["fileList"]] == [f"{sid}_ch.m3u8", f"{sid}_ch_0.mp4"]
    assert by_type[31]["details"] == {"msgName": "uploaded", "status": 0}
    assert by_type[11]["details"] == {"msgName": "session_exit", "exitStatus": 0}


def test_abnormal_exit_sends_1_and_11_with_exit_status_1(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    rid, sid = client.begin("mix")
    client.wait_files(rid, sid)
    sim.faults.abnormal_exit(sid, after=0.5)
    receiver.wait_event(11, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 1, 11]
    error, exit_ = (post.body["payload"] for post in posts[1:])
    assert error["serviceType"] == 0 and exit_["serviceType"] == 0
    assert error["details"] == {
        "msgName": "cloud_recording_error",
        "module": 0,
        "errorLevel": 5,
        "errorCode": error["details"]["errorCode"],
        "stat": 0,
        "errorMsg": error["details"]["errorMsg"],
    }
    assert isinstance(error["details"]["errorCode"], int) and error["details"]["errorMsg"]
    assert exit_["details"] == {"msgName": "session_exit", "exitStatus": 1}


def test_failover_sends_12_and_later_events_carry_the_new_uid(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    rid, sid = client.begin("mix")
    client.wait_files(rid, sid)
    sim.faults.transient_not_found(sid, duration=1.0)
    failover = receiver.wait_event(12, sid).body["payload"]
    new_uid = failover["details"]["newUid"]
    assert failover["serviceType"] == 0 and failover["uid"] == UID
    assert failover["details"] == {"msgName": "session_failover", "newUid": new_uid}
    assert isinstance(new_uid, int) and 0 < new_uid < 2**32 and str(new_uid) != UID
    wait_for(lambda: client.stop(rid, sid).status_code == 200)  # 404 until the fail-over is over
    receiver.wait_event(11, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 12, 30, 31, 11]
    assert [post.body["payload"]["sequence"] for post in posts] == [0, 1, 2, 3, 4]
    assert {post.body["payload"]["uid"] for post in posts[2:]} == {str(new_uid)}


# --- delivery: resends -------------------------------------------------------------------------------


def test_non_200_is_resent_with_fresh_notify_ms_then_dropped_after_three_retries(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    receiver.fail_first = 4  # every send of the first notification (40) fails
    rid, sid = client.begin("mix")
    attempts = receiver.wait_posts(4)
    dropped = wait_for(lambda: [r for r in sim.notifications if r.outcome == "dropped"])
    assert [post.event_type for post in attempts] == [40] * 4
    assert len({post.body["noticeId"] for post in attempts}) == 1
    notify_ms = [post.body["notifyMs"] for post in attempts]
    assert notify_ms == sorted(set(notify_ms))  # a new notifyMs on every resend
    assert len({post.headers["agora-signature-v2"] for post in attempts}) == 4
    assert all(verifies(post) for post in attempts)
    bodies = [{**post.body, "notifyMs": 0} for post in attempts]
    assert all(body == bodies[0] for body in bodies)  # otherwise the same notification
    gaps = [later.arrived - earlier.arrived for earlier, later in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, NOTIFY_RETRY_DELAYS, strict=True):
        assert gap >= delay / SPEED - 0.005, (gaps, NOTIFY_RETRY_DELAYS)
    log = [r for r in sim.notifications if r.event_type == 40]
    assert [(r.attempt, r.status, r.outcome) for r in log] == [
        (1, 503, "retrying"),
        (2, 503, "retrying"),
        (3, 503, "retrying"),
        (4, 503, "dropped"),
    ]
    assert dropped == log[-1:]
    stats = sim.notification_stats()
    assert (stats["dropped"], stats["retries"], stats["delivered"]) == (1, 3, 0)
    # Later notifications are unaffected.
    client.stop_when_recorded(rid, sid)
    receiver.wait_event(11, sid)
    assert receiver.event_types() == [40, 40, 40, 40, 30, 31, 11]
    assert sim.notification_stats()["dropped"] == 1


def test_a_resend_that_gets_200_is_delivered(sim: AgoraSimulator, client: Client, receiver: Receiver) -> None:
    receiver.fail_first = 2
    client.begin("mix")
    receiver.wait_posts(3)
    log = wait_count(lambda: sim.notifications, 3)
    assert [(r.attempt, r.status, r.outcome) for r in log] == [
        (1, 503, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "delivered"),
    ]


def test_unreachable_receiver_is_logged_with_an_error_and_dropped(make_sim: Callable[..., AgoraSimulator]) -> None:
    closed = Receiver()
    url = closed.url
    closed.close()  # nothing listens there any more
    sim = make_sim(notify_url=url)
    Client(sim).begin("mix")
    log = wait_count(lambda: sim.notifications, 4)
    assert [(r.attempt, r.status, r.outcome) for r in log] == [
        (1, None, "retrying"),
        (2, None, "retrying"),
        (3, None, "retrying"),
        (4, None, "dropped"),
    ]
    assert all(r.error and "Connection" in r.error for r in log)


# --- notification faults --------------------------------------------------------------------------------


def test_duplicate_fault_sends_each_notification_twice_with_one_notice_id(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    sim.faults.duplicate()
    rid, sid = client.begin("mix")
    client.stop_when_recorded(rid, sid)
    posts = receiver.wait_posts(8)
    assert [post.event_type for post in posts] == [40, 40, 30, 30, 31, 31, 11, 11]
    for first, second in zip(posts[::2], posts[1::2], strict=True):
        assert first.body["noticeId"] == second.body["noticeId"]
        assert first.body["payload"] == second.body["payload"]
        assert verifies(first) and verifies(second)
    assert len({post.body["noticeId"] for post in posts}) == 4
    assert sim.faults.state()["notifications"]["duplicate"] is True


def test_reorder_fault_sends_11_before_31(sim: AgoraSimulator, client: Client, receiver: Receiver) -> None:
    sim.faults.reorder_31_after_11()
    rid, sid = client.begin("mix", **MP4)
    stopped = client.stop_when_recorded(rid, sid)
    receiver.wait_event(31, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 30, 11, 31]
    exit_, uploaded = (post.body["payload"] for post in posts[2:])
    # Still numbered and timed in the order the events happened, so a receiver can tell.
    assert uploaded["sequence"] < exit_["sequence"] and uploaded["sendts"] < exit_["sendts"]
    assert uploaded["details"]["fileList"] == stopped["fileList"]


def test_backuped_fault_sends_32_with_the_files_of_31_after_it(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    sim.faults.backuped()
    rid, sid = client.begin("mix", **MP4)
    stopped = client.stop_when_recorded(rid, sid)
    receiver.wait_event(11, sid)
    posts = receiver.received()
    assert [post.event_type for post in posts] == [40, 30, 31, 32, 11]
    uploaded, backuped = (post.body["payload"] for post in posts[2:4])
    assert backuped["details"] == {**uploaded["details"], "msgName": "backuped"}
    assert uploaded["details"]["fileList"] == stopped["fileList"]
    assert backuped["serviceType"] == 2 and backuped["sequence"] == uploaded["sequence"] + 1
    assert posts[2].body["noticeId"] != posts[3].body["noticeId"] and all(verifies(post) for post in posts)


def test_redeliver_fault_sends_each_notification_again_under_a_new_notice_id(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    sim.faults.redeliver()
    rid, sid = client.begin("mix")
    client.stop_when_recorded(rid, sid)
    posts = receiver.wait_posts(8)
    by_type: dict[int, list[Any]] = {}
    for post in posts:
        by_type.setdefault(post.event_type, []).append(post)
    assert {event_type: len(copies) for event_type, copies in by_type.items()} == {40: 2, 30: 2, 31: 2, 11: 2}
    for first, again in by_type.values():
        assert first.body["payload"] == again.body["payload"]
        assert first.body["noticeId"] != again.body["noticeId"]
        assert verifies(first) and verifies(again)
    # The simulator counts a delivery once it has read the receiver's answer, a moment after the post.
    wait_for(lambda: sim.notification_stats()["delivered"] == 8)


def test_drop_fault_by_count_and_by_event_type(sim: AgoraSimulator, client: Client, receiver: Receiver) -> None:
    sim.faults.drop(1)  # the next notification (40)
    sim.faults.drop(event_types=[31])  # every 31
    rid, sid = client.begin("mix")
    client.stop_when_recorded(rid, sid)
    receiver.wait_event(11, sid)
    assert receiver.event_types() == [30, 11]
    dropped = [(r.event_type, r.attempt, r.status, r.outcome) for r in sim.notifications if r.attempt == 0]
    assert dropped == [(40, 0, None, "dropped_by_fault"), (31, 0, None, "dropped_by_fault")]
    assert sim.notification_stats()["dropped_by_fault"] == 2
    assert sim.faults.state()["notifications"]["drop"] == [{"remaining": None, "event_types": [31]}]
    # The sequence shows the receiver what it missed.
    assert [post.body["payload"]["sequence"] for post in receiver.received()] == [1, 3]


def test_bad_signature_fault_signs_with_a_wrong_secret(sim: AgoraSimulator, client: Client, receiver: Receiver) -> None:
    sim.faults.bad_signature()
    rid, sid = client.begin("mix")
    forged = receiver.wait_event(40, sid)
    assert forged.headers["agora-signature"] and forged.headers["agora-signature-v2"]
    key = SECRET.encode()
    assert forged.headers["agora-signature"] != hmac.new(key, forged.raw, hashlib.sha1).hexdigest()
    assert forged.headers["agora-signature-v2"] != hmac.new(key, forged.raw, hashlib.sha256).hexdigest()
    sim.faults.bad_signature(False)
    client.stop_when_recorded(rid, sid)
    assert verifies(receiver.wait_event(11, sid))


def test_control_api_sets_notification_faults_and_serves_the_log(
    sim: AgoraSimulator, client: Client, receiver: Receiver
) -> None:
    control = f"{sim.url}/_simulator"
    state = requests.post(
        f"{control}/faults",
        json={"duplicate": True, "reorder_31_after_11": True, "bad_signature": False, "drop": {"count": 1}},
    ).json()
    assert state["notifications"] == {
        "duplicate": True,
        "reorder_31_after_11": True,
        "bad_signature": False,
        "backuped": False,
        "redeliver": False,
        "drop": [{"remaining": 1, "event_types": None}],
    }
    assert requests.post(f"{control}/faults", json={"duplicate": "yes"}).status_code == 400
    assert requests.post(f"{control}/faults", json={"drop": {"event_types": "31"}}).status_code == 400
    assert requests.post(f"{control}/faults", json={"drop": {}}).status_code == 400
    state = requests.post(f"{control}/faults", json={"duplicate": False, "drop": 2}).json()
    assert state["notifications"]["duplicate"] is False
    assert state["notifications"]["drop"] == [
        {"remaining": 1, "event_types": None},
        {"remaining": 2, "event_types": None},
    ]
    assert requests.delete(f"{control}/faults").json()["notifications"] == {
        "duplicate": False,
        "reorder_31_after_11": False,
        "bad_signature": False,
        "backuped": False,
        "redeliver": False,
        "drop": [],
    }
    _, sid = client.begin("mix")
    receiver.wait_event(40, sid)
    logged = wait_for(lambda: requests.get(f"{control}/notifications").json())
    assert logged == [
        {
            "notice_id": receiver.received()[0].body["noticeId"],
            "event_type": 40,
            "sid": sid,
            "attempt": 1,
            "status": 200,
            "error": None,
            "time": logged[0]["time"],
            "notify_ms": receiver.received()[0].body["notifyMs"],
            "outcome": "delivered",
        }
    ]
    assert abs(logged[0]["time"] - time.time()) < 60
    stats = requests.get(f"{control}/notifications/stats").json()
    assert stats["enabled"] is True and stats["url"] == receiver.url and stats["delivered"] == 1
    assert requests.delete(f"{control}/notifications").json() == []
    assert sim.notifications == []
    assert requests.get(f"{control}/requests").json()  # the API request log is separate


# --- configuration ------------------------------------------------------------------------------------


def test_without_notify_url_nothing_is_sent(make_sim: Callable[..., AgoraSimulator], receiver: Receiver) -> None:
    """Two simulators in one process, one with the receiver's URL: only that one's session reaches it,
    so nothing (no shared sender, no default URL) makes the other one send."""
    notifying = make_sim()
    silent = make_sim(notify_url=None, notify_secret=None)
    silent_rid, silent_sid = Client(silent).begin("mix")
    Client(silent).stop_when_recorded(silent_rid, silent_sid)
    rid, sid = Client(notifying).begin("mix")
    Client(notifying).stop_when_recorded(rid, sid)
    receiver.wait_event(11, sid)  # the notifying session's last event, due after the silent one's would be
    assert [(post.event_type, post.body["payload"]["sid"]) for post in receiver.received()] == [
        (event_type, sid) for event_type in (40, 30, 31, 11)
    ]
    assert silent.notifications == [] and silent.notification_stats() == {"enabled": False}
    assert requests.get(f"{silent.url}/_simulator/notifications").json() == []
    with pytest.raises(ValueError, match="notify_secret"):
        AgoraSimulator(notify_url=receiver.url)
    with pytest.raises(ValueError, match="http"):
        AgoraSimulator(notify_url="ftp://example.com/x", notify_secret=SECRET)


def test_cli_notify_options(receiver: Receiver) -> None:
    help_text = _parser().format_help()
    for option in ("--notify-url", "--notify-secret", "--notify-timeout", "--notify-fault", "--notify-drop-event-type"):
        assert option in help_text
    assert "Agora-Signature-V2" in help_text and "reorder_31_after_11" in help_text
    args = _parser().parse_args(
        [
            "--port",
            "0",
            "--speed",
            str(SPEED),
            "--notify-url",
            receiver.url,
            "--notify-secret",
            SECRET,
            "--notify-fault",
            "duplicate",
            "--notify-drop-event-type",
            "30",
        ]
    )
    sim = build_simulator(args)
    assert sim.notify_url == receiver.url
    assert sim.faults.state()["notifications"]["duplicate"] is True
    assert sim.faults.state()["notifications"]["drop"] == [{"remaining": None, "event_types": [30]}]
    with sim:
        Client(sim).begin("mix")
        posts = receiver.wait_posts(2)
    assert [post.event_type for post in posts] == [40, 40] and all(verifies(post) for post in posts)
    with pytest.raises(SystemExit):
        main(["--notify-url", receiver.url])  # no secret


def test_notification_record_fields() -> None:
    assert list(NotificationRecord.__dataclass_fields__) == [
        "notice_id",
        "event_type",
        "sid",
        "attempt",
        "status",
        "error",
        "time",
        "notify_ms",
        "outcome",
    ]
