"""The simulator's recording files in a real S3-compatible server (moto's, on loopback).

The simulator's clock is a manual one (the test sets ``reading``); after moving it a test waits with
``storage_idle``/``wait_uploaded`` until what is due then is written, and reads the bucket.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
import requests

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
pytest.importorskip("flask", reason="moto[server] is not installed (pip install -e '.[test]')")
pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[test]')")

from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.simulator._lifecycle import EXIT_TIMELINE, FIRST_SLICE_AT, SLICE_INTERVAL, Clock
from airflow_provider_agora.simulator._storage import storage_target, utc_name
from tests.storage_server import S3Server, running_s3_server
from tests.support import wait_for

ACCESS_KEY = "AKIASIMULATORTESTKEY"
SECRET_KEY = "sim-storage-secret-0123456789abcdef"
NCS_SECRET = "ncs-secret"
UID = "527841"
CNAME = "ch"
PREFIX = "agora/rec"
T = TypeVar("T")


class ManualClock(Clock):
    """A simulator clock that moves only when the test sets ``reading``."""

    def __init__(self, speed: float) -> None:
        super().__init__(speed)
        self.reading = 0.0

    def now(self) -> float:
        return self.reading


class Receiver:
    """Records every NCS POST body, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.bodies.append(json.loads(raw))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ncs"

    def events(self, event_type: int) -> list[dict[str, Any]]:
        with self._lock:
            return [body for body in self.bodies if body["eventType"] == event_type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Api:
    """Acquire, start, query and stop over HTTP, as the provider would."""

    def __init__(self, sim: AgoraSimulator) -> None:
        self.session = requests.Session()
        self.session.auth = (sim.customer_id, sim.customer_secret)
        self.base = f"{sim.url}/v1/apps/sim-app/cloud_recording"

    def start(self, client_request: dict[str, Any], mode: str = "mix", cname: str = CNAME) -> tuple[str, str]:
        ids = {"cname": cname, "uid": UID}
        rid = self.session.post(f"{self.base}/acquire", json={**ids, "clientRequest": {}}).json()["resourceId"]
        started = self.session.post(
            f"{self.base}/resourceid/{rid}/mode/{mode}/start", json={**ids, "clientRequest": client_request}
        )
        assert started.status_code == 200, started.text
        return rid, started.json()["sid"]

    def query(self, rid: str, sid: str, mode: str = "mix") -> requests.Response:
        return self.session.get(f"{self.base}/resourceid/{rid}/sid/{sid}/mode/{mode}/query")

    def stop(self, rid: str, sid: str, mode: str = "mix") -> requests.Response:
        body = {"cname": CNAME, "uid": UID, "clientRequest": {}}
        return self.session.post(f"{self.base}/resourceid/{rid}/sid/{sid}/mode/{mode}/stop", json=body)


def storage(endpoint: str, bucket: str, vendor: int = 11, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "vendor": vendor,
        "region": 0,
        "bucket": bucket,
        "accessKey": ACCESS_KEY,
        "secretKey": SECRET_KEY,
        "fileNamePrefix": PREFIX.split("/"),
        "extensionParams": {"endpoint": endpoint},
    }
    return {**config, **overrides}


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A server of the test's own, for tests that stop it or turn on its credential checks."""
    with running_s3_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.create_bucket(f"rec-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[AgoraSimulator, ManualClock]]]:
    """Simulators on a manual clock (at 100.0), stopped after the test."""
    started: list[AgoraSimulator] = []

    def factory(**kwargs: Any) -> tuple[AgoraSimulator, ManualClock]:
        clocks: list[ManualClock] = []

        def make_clock(speed: float) -> ManualClock:
            clocks.append(ManualClock(speed))
            return clocks[-1]

        monkeypatch.setattr("airflow_provider_agora.simulator._server.Clock", make_clock)
        kwargs.setdefault("rate_limit_per_second", None)
        sim = AgoraSimulator(**kwargs).start()
        started.append(sim)
        (clock,) = clocks
        clock.reading = 100.0
        return sim, clock

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim_clock(make_sim: Callable[..., tuple[AgoraSimulator, ManualClock]]) -> tuple[AgoraSimulator, ManualClock]:
    return make_sim()


def first_slice_ms(sim: AgoraSimulator, api: Api, rid: str, sid: str) -> int:
    return int(api.query(rid, sid).json()["serverResponse"]["sliceStartTime"])


def segment_key(sid: str, utc_ms: int) -> str:
    return f"{PREFIX}/{sid}_{CNAME}_{utc_name(utc_ms)}.ts"


def playlist_key(sid: str) -> str:
    return f"{PREFIX}/{sid}_{CNAME}.m3u8"


def record_and_stop(
    sim: AgoraSimulator, clock: ManualClock, client_request: dict[str, Any], slices: int = 3
) -> tuple[str, str, float]:
    """Start, run until ``slices`` segments are cut, stop, and run through the exit; returns (rid, sid, stop time)."""
    api = Api(sim)
    rid, sid = api.start(client_request)
    clock.reading += FIRST_SLICE_AT + (slices - 1) * SLICE_INTERVAL
    assert api.stop(rid, sid).status_code == 200
    stopped_at = clock.reading
    clock.reading += EXIT_TIMELINE[-1][0]
    return rid, sid, stopped_at


# --- files as the clock advances ------------------------------------------------------------------------


def test_first_slice_writes_its_segment_and_the_playlist_under_the_prefix(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    api = Api(sim)
    rid, sid = api.start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT
    assert sim.storage_idle(5.0)
    assert s3.keys(bucket) == sorted([segment_key(sid, first_slice_ms(sim, api, rid, sid)), playlist_key(sid)])


def test_nothing_is_written_before_the_first_slice(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    Api(sim).start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT - 0.1
    assert sim.storage_idle(5.0)
    assert s3.keys(bucket) == []


def test_a_segment_is_added_every_slice_interval(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    api = Api(sim)
    rid, sid = api.start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT + 2 * SLICE_INTERVAL
    assert sim.wait_uploaded(sid, 5.0)
    start_ms = first_slice_ms(sim, api, rid, sid)
    expected = [segment_key(sid, start_ms + round(i * SLICE_INTERVAL * 1000)) for i in range(3)]
    assert [key for key in s3.keys(bucket) if key.endswith(".ts")] == sorted(expected)


def test_running_playlist_has_agoras_header_and_no_endlist(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    api = Api(sim)
    rid, sid = api.start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT + SLICE_INTERVAL
    assert sim.storage_idle(5.0)
    start = first_slice_ms(sim, api, rid, sid)
    second = start + round(SLICE_INTERVAL * 1000)
    assert s3.read(bucket, playlist_key(sid)).decode().splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-ALLOW-CACHE:YES",
        "#EXT-X-TARGETDURATION:2",
        f"#EXT-X-AGORA-TRACK-EVENT:EVENT=START,TRACK_TYPE=AUDIO,TIME={utc_name(start)}",
        f"#EXT-X-AGORA-TRACK-EVENT:EVENT=START,TRACK_TYPE=VIDEO,TIME={utc_name(start)}",
        "#EXTINF:2.000000",
        f"{sid}_{CNAME}_{utc_name(start)}.ts",
        "#EXTINF:2.000000",
        f"{sid}_{CNAME}_{utc_name(second)}.ts",
    ]


def test_playlist_lists_exactly_the_segments_in_the_bucket_and_ends_with_endlist_after_exit(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    _, sid, _ = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)}, slices=4)
    assert sim.storage_idle(5.0)
    lines = s3.read(bucket, playlist_key(sid)).decode().splitlines()
    listed = [f"{PREFIX}/{line}" for line in lines if line and not line.startswith("#")]
    assert (listed, lines[-1]) == ([key for key in s3.keys(bucket) if key.endswith(".ts")], "#EXT-X-ENDLIST")


def test_segments_are_mpeg_ts(sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str) -> None:
    sim, clock = sim_clock
    Api(sim).start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT
    assert sim.storage_idle(5.0)
    (segment,) = [key for key in s3.keys(bucket) if key.endswith(".ts")]
    body = s3.read(bucket, segment)
    packets = [body[offset : offset + 188] for offset in range(0, len(body), 188)]
    assert len(body) % 188 == 0 and len(packets) >= 3 and all(packet[0] == 0x47 for packet in packets)


def test_mp4_is_written_at_the_end_when_avfiletype_has_mp4(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    request = {"storageConfig": storage(s3.endpoint_url, bucket), "recordingFileConfig": {"avFileType": ["hls", "mp4"]}}
    _, sid, _ = record_and_stop(sim, clock, request)
    assert sim.storage_idle(5.0)
    body = s3.read(bucket, f"{PREFIX}/{sid}_{CNAME}_0.mp4")
    assert (body[4:8], b"moov" in body, b"mdat" in body) == (b"ftyp", True, True)


def test_individual_mode_writes_one_playlist_per_user_and_track(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    request = {
        "storageConfig": storage(s3.endpoint_url, bucket),
        "recordingConfig": {"subscribeAudioUids": ["7"], "subscribeVideoUids": ["7"]},
    }
    _, sid = Api(sim).start(request, mode="individual")
    clock.reading += FIRST_SLICE_AT
    assert sim.storage_idle(5.0)
    assert [key for key in s3.keys(bucket) if key.endswith(".m3u8")] == [
        f"{PREFIX}/{sid}_{CNAME}__uid_s_7__uid_e_audio.m3u8",
        f"{PREFIX}/{sid}_{CNAME}__uid_s_7__uid_e_video.m3u8",
    ]


def test_bare_endpoint_host_means_https() -> None:
    target = storage_target({"storageConfig": storage("s3.example.com", "bucket")})
    assert target is not None and target.endpoint_url == "https://s3.example.com"


# --- without vendor 11 --------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{"vendor": 1}, {"extensionParams": {}}], ids=["vendor-1", "no-endpoint"])
def test_nothing_is_uploaded_without_vendor_11_and_an_endpoint(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str, config: dict[str, Any]
) -> None:
    sim, clock = sim_clock
    record_and_stop(sim, clock, {"storageConfig": {**storage(s3.endpoint_url, bucket), **config}})
    assert sim.storage_idle(5.0)
    assert (sim.uploads(), s3.keys(bucket)) == ([], [])


def test_boto3_is_imported_only_when_a_recording_uploads() -> None:
    script = (
        "import sys\n"
        "from airflow_provider_agora.simulator import AgoraSimulator\n"
        "sim = AgoraSimulator(rate_limit_per_second=None).start()\n"
        "sim.create_recordings([0.0], client_request={'storageConfig': {'vendor': 1, 'bucket': 'b'}})\n"
        "assert sim.storage_idle(5.0)\n"
        "sim.stop()\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]


# --- backuped (event 32) ------------------------------------------------------------------------------


def test_backuped_recording_writes_nothing_until_the_delay_after_its_end(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.backuped(delay=20.0)
    _, _, stopped_at = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading = stopped_at + 19.9
    assert sim.storage_idle(5.0)
    assert s3.keys(bucket) == []


def test_backuped_recording_writes_every_file_at_the_delay_after_its_end(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.backuped(delay=20.0)
    _, sid, stopped_at = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)}, slices=3)
    clock.reading = stopped_at + 20.0
    assert sim.storage_idle(5.0)
    keys = s3.keys(bucket)
    ended = s3.read(bucket, playlist_key(sid)).decode().endswith("#EXT-X-ENDLIST\n")
    assert (len([key for key in keys if key.endswith(".ts")]), ended) == (3, True)


def test_backup_delay_defaults_to_the_simulators_setting(
    make_sim: Callable[..., tuple[AgoraSimulator, ManualClock]],
) -> None:
    sim, _ = make_sim(backup_delay=7.5)
    sim.faults.backuped(delay=1.0)
    sim.faults.reset()
    assert sim.faults.state()["storage"]["backup_delay"] == 7.5


# --- storage faults -------------------------------------------------------------------------------------


def test_missing_segment_is_listed_but_never_written(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.missing_segment(1)
    _, sid, _ = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)}, slices=3)
    assert sim.storage_idle(5.0)
    lines = s3.read(bucket, playlist_key(sid)).decode().splitlines()
    listed = [f"{PREFIX}/{line}" for line in lines if line.endswith(".ts")]
    written = [key for key in s3.keys(bucket) if key.endswith(".ts")]
    assert (len(listed), [key for key in listed if key not in written]) == (3, [listed[1]])


def test_late_upload_writes_each_file_that_many_seconds_after_it_is_due(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.late_upload(10.0)
    _, sid = Api(sim).start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT + 9.9
    assert sim.wait_uploaded(sid, 5.0)
    before = s3.keys(bucket)
    clock.reading += 0.1
    assert sim.wait_uploaded(sid, 5.0)
    assert (before, len(s3.keys(bucket))) == ([], 2)


def test_unfinished_playlist_never_gets_endlist(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.unfinished_playlist()
    _, sid, _ = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += 600.0
    assert sim.storage_idle(5.0)
    assert "#EXT-X-ENDLIST" not in s3.read(bucket, playlist_key(sid)).decode()


def test_a_fault_for_one_sid_leaves_other_recordings_alone(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.unfinished_playlist(sid="some-other-sid")
    _, sid, _ = record_and_stop(sim, clock, {"storageConfig": storage(s3.endpoint_url, bucket)})
    assert sim.storage_idle(5.0)
    assert s3.read(bucket, playlist_key(sid)).decode().endswith("#EXT-X-ENDLIST\n")


def test_wrong_storage_credentials_fault_reports_agoras_uploader_error(
    make_sim: Callable[..., tuple[AgoraSimulator, ManualClock]], receiver: Receiver, s3: S3Server, bucket: str
) -> None:
    sim, clock = make_sim(notify_url=receiver.url, notify_secret=NCS_SECRET)
    sim.faults.wrong_storage_credentials()
    _, sid = Api(sim).start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT
    assert sim.storage_idle(5.0)
    (error,) = wait_for(lambda: receiver.events(1))
    assert (error["payload"]["sid"], error["payload"]["details"]) == (
        sid,
        {
            "msgName": "cloud_recording_error",
            "module": 1,
            "errorLevel": 4,
            "errorCode": 32,
            "stat": 0,
            "errorMsg": error["payload"]["details"]["errorMsg"],
        },
    )


def test_wrong_storage_credentials_fault_writes_nothing_and_query_goes_on(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    sim.faults.wrong_storage_credentials()
    api = Api(sim)
    rid, sid = api.start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT + SLICE_INTERVAL
    assert sim.storage_idle(5.0)
    query = api.query(rid, sid)
    outcomes = [record.outcome for record in sim.uploads(sid)]
    assert (s3.keys(bucket), outcomes, query.status_code, query.json()["serverResponse"]["status"]) == (
        [],
        ["refused"],
        200,
        5,
    )


def test_storage_that_refuses_the_key_stops_the_uploads(
    sim_clock: tuple[AgoraSimulator, ManualClock], own_s3: S3Server
) -> None:
    sim, clock = sim_clock
    bucket = own_s3.create_bucket("refusing-bucket")
    denied = own_s3.refusing_credentials()
    config = storage(own_s3.endpoint_url, bucket, accessKey=denied.access_key, secretKey=denied.secret_key)
    _, sid = Api(sim).start({"storageConfig": config})
    clock.reading += FIRST_SLICE_AT + SLICE_INTERVAL
    assert sim.storage_idle(5.0)
    (record,) = sim.uploads(sid)
    assert (record.outcome, (record.error or "").split(":")[0], own_s3.keys(bucket)) == ("refused", "AccessDenied", [])


def test_storage_down_then_back_gets_every_file_due(
    sim_clock: tuple[AgoraSimulator, ManualClock], own_s3: S3Server
) -> None:
    sim, clock = sim_clock
    bucket = own_s3.create_bucket("down-then-back")
    _, sid = Api(sim).start({"storageConfig": storage(own_s3.endpoint_url, bucket)})
    own_s3.stop()
    clock.reading += FIRST_SLICE_AT + SLICE_INTERVAL
    assert not sim.storage_idle(0.0)  # not written yet; the call also makes the uploader look now
    wait_for(lambda: [record for record in sim.uploads(sid) if record.outcome == "failed"])
    own_s3.start()
    assert sim.storage_idle(10.0)
    assert len(own_s3.keys(bucket)) == 3  # two segments and the playlist


# --- control endpoint, logs, reprs --------------------------------------------------------------------------


def test_control_endpoint_sets_storage_faults_and_waits_for_the_storage(
    sim_clock: tuple[AgoraSimulator, ManualClock], s3: S3Server, bucket: str
) -> None:
    sim, clock = sim_clock
    control = f"{sim.url}/_simulator"
    state = requests.post(
        f"{control}/faults",
        json={"missing_segment": 0, "late_upload": {"delay": 5, "sid": "x"}, "unfinished_playlist": True},
    ).json()
    _, sid = Api(sim).start({"storageConfig": storage(s3.endpoint_url, bucket)})
    clock.reading += FIRST_SLICE_AT
    idle = requests.post(f"{control}/storage_idle", json={"timeout": 5}).json()
    uploads = requests.get(f"{control}/uploads").json()
    assert (state["storage"]["missing_segment"], state["storage"]["late_upload"], idle) == (
        {"*": 0},
        {"x": 5.0},
        {"idle": True},
    )
    assert [(upload["sid"], upload["key"], upload["outcome"]) for upload in uploads] == [
        (sid, playlist_key(sid), "written")
    ]


def test_storage_faults_reject_bad_values_through_the_control_endpoint(
    sim_clock: tuple[AgoraSimulator, ManualClock],
) -> None:
    sim, _ = sim_clock
    control = f"{sim.url}/_simulator/faults"
    statuses = [
        requests.post(control, json=spec).status_code
        for spec in ({"missing_segment": -1}, {"late_upload": "soon"}, {"wrong_storage_credentials": "yes"})
    ]
    assert statuses == [400, 400, 400]


def test_no_secret_in_logs_reprs_or_control_answers(
    make_sim: Callable[..., tuple[AgoraSimulator, ManualClock]],
    receiver: Receiver,
    s3: S3Server,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_agora")
    sim, clock = make_sim(notify_url=receiver.url, notify_secret=NCS_SECRET)
    api = Api(sim)
    _, sid = api.start({"storageConfig": storage(s3.endpoint_url, bucket)})
    _, refused = api.start({"storageConfig": storage(f"{s3.endpoint_url}/", "no-such-bucket-here")}, cname="other")
    clock.reading += FIRST_SLICE_AT
    assert sim.storage_idle(5.0)
    with sim._service.locked_recording(sid) as recording:
        shown = [repr(recording), repr(storage_target(recording.client_request if recording else None))]
    shown += [repr(sim), repr(sim.uploads()), repr(sim._uploader), caplog.text]
    shown += [requests.get(f"{sim.url}/_simulator/{name}").text for name in ("uploads", "faults", "requests")]
    shown += [json.dumps(receiver.bodies)]
    assert [text for text in shown if SECRET_KEY in text or ACCESS_KEY in text] == []
    assert {record.outcome for record in sim.uploads(refused)} == {"refused"}  # the failure path was logged too


def test_cli_documents_storage_and_sets_the_backup_delay() -> None:
    from airflow_provider_agora.simulator.__main__ import _parser, build_simulator

    help_text = _parser().format_help()
    simulator = build_simulator(_parser().parse_args(["--backup-delay", "12.5"]))
    documented = all(word in help_text for word in ("--backup-delay", "vendor", "wrong_storage_credentials"))
    assert (documented, simulator.faults.backup_delay) == (True, 12.5)
