"""``verify_in_storage=True`` in poke, reschedule and deferrable mode: the simulator uploads a
recording's files to a real S3-compatible server (moto, on loopback) and the sensor reads them
through Airflow's own S3 filesystem (the Amazon provider, an ``aws`` connection with ``endpoint_url``).

Each scenario runs in the three modes and asserts what a user would check: how the task ends, the
message, and the result's files and playlists as they are in the bucket.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
pytest.importorskip("s3fs", reason="the s3 extra is not installed (pip install -e '.[test]')")
pytest.importorskip("airflow.providers.amazon", reason="the s3 extra is not installed (pip install -e '.[test]')")

from airflow_provider_agora._compat import AirflowFailException
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.testing import reset_process_state
from tests.integration.sensor_modes import MODES, RUNNERS
from tests.storage_server import S3Server, running_s3_server
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, TaskStateStore, connection_json

BUCKET = "recordings"
PREFIX = ["room1"]
ACCESS_KEY = "AKIASTORAGEWAITSKEY1"
SECRET_KEY = "storage-waits-secret-Hq7v2"
STORAGE_CONN_ID = "recording_storage"
SPEED = 10.0  # simulated seconds per real second


def _has_task_state_store() -> bool:
    try:
        from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def sim(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgoraSimulator]:
    with AgoraSimulator(
        customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=SPEED
    ).start() as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url))
        monkeypatch.setenv("AIRFLOW_CONN_" + STORAGE_CONN_ID.upper(), storage_connection(s3, ACCESS_KEY, SECRET_KEY))
        reset_process_state()
        yield simulator


def storage_connection(s3: S3Server, login: str, password: str) -> str:
    """The ``aws`` connection a DAG author creates for S3-compatible storage."""
    extra = {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}
    return json.dumps({"conn_type": "aws", "login": login, "password": password, "extra": extra})


def storage_config(s3: S3Server) -> dict[str, Any]:
    return {
        "vendor": 11,
        "region": 0,
        "bucket": BUCKET,
        "accessKey": ACCESS_KEY,
        "secretKey": SECRET_KEY,
        "fileNamePrefix": PREFIX,
        "extensionParams": {"endpoint": s3.endpoint_url},
    }


def recording(sim: AgoraSimulator, s3: S3Server, *, slices: int = 3) -> dict[str, Any]:
    """A recording with files in progress that ends by itself after ``slices`` slices (status 8 for
    a while, then gone); its files go to the bucket as Agora's uploader would send them."""
    ends_at = time.time() + (4.0 + 2.0 * (slices - 1)) / SPEED  # first slice at 4 s, then one per 2 s
    (created,) = sim.create_recordings([ends_at], hold=300.0, client_request={"storageConfig": storage_config(s3)})
    return {"resource_id": created["resource_id"], "sid": created["sid"], "recording_mode": "mix", "ends_at": ends_at}


def run(mode: str, started: dict[str, Any], **kwargs: Any) -> Any:
    """The sensor in ``mode`` as Airflow runs it; its result, or the exception that ended it."""
    store = TaskStateStore() if _has_task_state_store() else None
    context: dict[str, Any] = {"task_state_store": store} if store is not None else {}

    def make(**given: Any) -> AgoraRecordingQuerySensor:
        task = AgoraRecordingQuerySensor(task_id="wait", **given)
        task.hook = AgoraHook(retry_policy=FAST_RETRIES)
        return task

    arguments = {
        **{key: value for key, value in started.items() if key != "ends_at"},
        "target_status": 8,
        "storage": f"s3://{BUCKET}/{'/'.join(PREFIX)}",
        "verify_in_storage": True,
        "storage_conn_id": STORAGE_CONN_ID,
        "storage_grace_period": 30,
        "poke_interval": 0.3,
        "timeout": 60,
        **kwargs,
    }
    try:
        return RUNNERS[mode](partial(make), context, **arguments)
    except Exception as error:
        return error


def playlist_key(sid: str) -> str:
    return f"room1/{sid}_bulk_{sid}.m3u8"


@pytest.mark.parametrize("mode", MODES)
def test_files_already_in_the_bucket_finish_the_wait_with_their_uris(
    mode: str, sim: AgoraSimulator, s3: S3Server
) -> None:
    started = recording(sim, s3)
    result = run(mode, started)
    assert isinstance(result, dict), result
    sid = started["sid"]
    segments = [key for key in s3.keys(BUCKET) if key.startswith(f"room1/{sid}") and key.endswith(".ts")]
    assert result["verified_in_storage"] is True
    assert result["playlists"][playlist_key(sid)]["segments"] == len(segments)
    uris = [item["uri"] for item in result["files"]]
    assert f"s3://{BUCKET}/{playlist_key(sid)}" in uris


@pytest.mark.parametrize("mode", MODES)
def test_a_32_finishes_the_wait_only_once_the_forwarded_files_have_landed(
    mode: str, sim: AgoraSimulator, s3: S3Server
) -> None:
    sim.faults.backuped(delay=40.0)  # 4 s of real time after the end
    started = recording(sim, s3)
    result = run(mode, started)
    finished = time.time()
    assert isinstance(result, dict), result
    written = [upload.time for upload in sim.uploads(started["sid"]) if upload.outcome == "written"]
    # Nothing was in the bucket until well after Agora called the recording done (status 8 comes
    # 2 simulated seconds after its end), and the wait ended only once everything was.
    assert min(written) >= started["ends_at"] + 3.0
    assert max(written) <= finished
    assert result["verified_in_storage"] is True


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_segment_fails_the_wait_naming_it_after_the_grace_period(
    mode: str, sim: AgoraSimulator, s3: S3Server
) -> None:
    sim.faults.missing_segment(index=1)
    started = recording(sim, s3)
    ended = run(mode, started, storage_grace_period=2)
    assert isinstance(ended, AirflowFailException), ended
    assert "1 missing: room1/" in str(ended)
    missing = str(ended).split("1 missing: ", 1)[1].split(".", 1)[0] + ".ts"
    assert missing not in s3.keys(BUCKET)
    assert f"sid={started['sid']}" in str(ended)


@pytest.mark.parametrize("mode", MODES)
def test_a_playlist_that_is_never_finished_fails_the_wait(mode: str, sim: AgoraSimulator, s3: S3Server) -> None:
    sim.faults.unfinished_playlist()
    started = recording(sim, s3)
    ended = run(mode, started, storage_grace_period=2)
    assert isinstance(ended, AirflowFailException), ended
    assert f"1 without #EXT-X-ENDLIST: {playlist_key(started['sid'])}" in str(ended)


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_without_permission_fails_at_once_saying_what_it_lacks(
    mode: str, sim: AgoraSimulator, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = recording(sim, s3)
    assert sim.wait_uploaded(started["sid"], timeout=30)
    refused = s3.refusing_credentials()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_" + STORAGE_CONN_ID.upper(), storage_connection(s3, refused.access_key, refused.secret_key)
        )
        began = time.monotonic()
        ended = run(mode, started)
        took = time.monotonic() - began
    finally:
        s3.allow_any_credentials()
    assert isinstance(ended, AirflowFailException), ended
    assert f"Storage connection {STORAGE_CONN_ID!r} may not list or read bucket {BUCKET!r}" in str(ended)
    assert took < 30  # at once: well inside the storage grace period
    assert refused.secret_key not in str(ended)


@pytest.mark.parametrize("mode", MODES)
def test_a_bucket_that_does_not_exist_fails_at_once(mode: str, sim: AgoraSimulator, s3: S3Server) -> None:
    started = recording(sim, s3)
    ended = run(mode, started, storage="s3://no-such-bucket/room1")
    assert isinstance(ended, AirflowFailException), ended
    assert "Bucket 'no-such-bucket'" in str(ended) and "does not exist" in str(ended)


@pytest.mark.parametrize("mode", MODES)
def test_storage_down_then_back_never_fails_the_wait_early(
    mode: str,
    sim: AgoraSimulator,
    s3: S3Server,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    s3.stop()
    started = recording(sim, s3)
    met_outage = threading.Event()

    def restart_storage_once_the_sensor_met_the_outage() -> None:
        said: list[str] = []  # the task log: stdout on Airflow 3 (structlog), log records on 2.11
        deadline = time.monotonic() + 30
        while not any("storage did not answer" in text for text in said) and time.monotonic() < deadline:
            time.sleep(0.05)
            said += [capsys.readouterr().out, caplog.text]
        if any("storage did not answer" in text for text in said):
            met_outage.set()
        s3.start()  # the uploader retries, the files land, the wait ends

    # The sensor runs in this thread, as Airflow 2's operators must; the storage comes back from another.
    restarting = threading.Thread(target=restart_storage_once_the_sensor_met_the_outage)
    restarting.start()
    result = run(mode, started)
    restarting.join(60)
    assert met_outage.is_set()
    assert isinstance(result, dict), result
    assert result["verified_in_storage"] is True
