"""Agora's notifications in a real Airflow 3.3: API server (the receiver), scheduler, DAG processor and
two triggerers, with a real ``redis-server`` and the simulator posting notifications as Agora would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import airflow
import pytest

if not airflow.__version__.startswith("3."):
    pytest.skip(
        "starts Airflow 3 components (api-server, dag-processor, the receiver plugin); Airflow 2 has none",
        allow_module_level=True,
    )

from airflow_provider_agora._ncs.store import notification_keys
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.notifications import namespace_of
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import (
    APP_ID,
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    RedisServer,
    connection_json,
    free_port,
)

pytest.importorskip("httpx", reason="httpx (a core dependency of Airflow) is needed to call the REST API")

from tests.integration.airflow_cluster import (  # the same harness as the real-triggerer tests
    ROOT,
    Cluster,
    cluster_env,
    running_cluster,
    wait_scheduler_saw_deferral,
)

NCS_SECRET = "ncs-secret-Rr5t1"
WAIT_DAG = "agora_notification_wait_check"
ASSET_DAG = "agora_finished_recordings_check"
WITH_FILES = {"recordingFileConfig": {"avFileType": ["hls", "mp4"]}}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, postgres_database_url: str
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("airflow-notifications-home")
    api_port = free_port()
    simulator = AgoraSimulator(
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        app_ids=(APP_ID,),
        speed=10.0,
        notify_url=f"http://127.0.0.1:{api_port}/agora/ncs/agora_default",
        notify_secret=NCS_SECRET,
    ).start()
    try:
        env = cluster_env(
            home,
            api_port=api_port,
            database_url=postgres_database_url,
            dags_folder=ROOT / "tests" / "dags_notifications",
            AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER="True",
            AIRFLOW_CONN_AGORA_DEFAULT=connection_json(
                simulator.url, ncs_secret=NCS_SECRET, redis_conn_id="agora_ncs_redis"
            ),
            AIRFLOW_CONN_AGORA_NCS_REDIS=redis_server.connection_uri(),
        )
        with running_cluster(
            home, env, simulator, triggerers=["triggerer", "triggerer-2"], dag_ids=[WAIT_DAG, ASSET_DAG]
        ) as airflow:
            yield airflow
    finally:
        simulator.stop()


def recording_in_progress(simulator: AgoraSimulator, cname: str) -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    hook.__dict__["settings"] = hook.settings
    resource_id = hook.acquire(cname, 4242)["resourceId"]
    sid = hook.start(resource_id, cname, 4242, recording_mode="mix", client_request=WITH_FILES)["sid"]
    return {"resource_id": resource_id, "sid": sid, "cname": cname}


@pytest.fixture
def agora_here(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(cluster.simulator.url))
    return cluster


def wait_until_recording(cluster: Cluster, recording: dict[str, str]) -> None:
    hook = AgoraHook(retry_policy=FAST_RETRIES)

    def has_files() -> bool:
        answer = hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")
        return answer["serverResponse"]["status"] == 5 and bool(answer["serverResponse"].get("fileList"))

    cluster.wait_for("the recording to have a file", has_files, 60)


def stop(recording: dict[str, str]) -> None:
    AgoraHook(retry_policy=FAST_RETRIES).stop(
        recording["resource_id"], recording["sid"], recording["cname"], 4242, recording_mode="mix"
    )


def test_a_real_triggerer_ends_a_ten_minute_poll_on_the_uploaded_notification(agora_here: Cluster) -> None:
    cluster = agora_here
    recording = recording_in_progress(cluster.simulator, "notified-room")
    wait_until_recording(cluster, recording)
    run_id = cluster.trigger({"resource_id": recording["resource_id"], "sid": recording["sid"]}, dag_id=WAIT_DAG)
    cluster.wait_for("the wait to be deferred", lambda: cluster.task_state(run_id) == "deferred", 120)
    wait_scheduler_saw_deferral(cluster, run_id)  # an Airflow race otherwise (see airflow_cluster)
    stop(recording)
    cluster.wait_for("the wait to succeed", lambda: cluster.task_state(run_id) == "success", 120)
    result = cluster.get_json(f"/api/v2/dags/{WAIT_DAG}/dagRuns/{run_id}/taskInstances/wait/xcomEntries/return_value")[
        "value"
    ]
    assert result["ended_by"] == "notification"
    assert any(f["fileName"].endswith(".mp4") for f in result["files"])


def test_a_notification_that_arrives_while_the_triggerers_are_down_ends_the_wait_after_the_restart(
    agora_here: Cluster, redis_server: RedisServer
) -> None:
    cluster = agora_here
    recording = recording_in_progress(cluster.simulator, "restart-room")
    wait_until_recording(cluster, recording)
    run_id = cluster.trigger({"resource_id": recording["resource_id"], "sid": recording["sid"]}, dag_id=WAIT_DAG)
    cluster.wait_for("the wait to be deferred", lambda: cluster.task_state(run_id) == "deferred", 120)
    wait_scheduler_saw_deferral(cluster, run_id)
    cluster.stop("triggerer")
    cluster.stop("triggerer-2")
    stop(recording)
    keys = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))

    def uploaded_stored() -> bool:
        stored = redis_server.client().lrange(keys["sid"] + recording["sid"], 0, -1)
        return any(json.loads(raw)["event_type"] == 31 for raw in stored)

    cluster.wait_for("the uploaded notification, stored while no triggerer runs", uploaded_stored, 60)
    cluster.start("triggerer", "triggerer", "--skip-serve-logs")
    cluster.start("triggerer-2", "triggerer", "--skip-serve-logs")
    cluster.wait_for("the wait to succeed after the restart", lambda: cluster.task_state(run_id) == "success", 180)
    result = cluster.get_json(f"/api/v2/dags/{WAIT_DAG}/dagRuns/{run_id}/taskInstances/wait/xcomEntries/return_value")[
        "value"
    ]
    assert result["ended_by"] == "notification"


def test_the_asset_watcher_fires_once_per_finished_recording_with_two_triggerers(
    agora_here: Cluster, redis_server: RedisServer
) -> None:
    """One asset event per finished recording, with its files, though each recording ends twice
    (31 and the 32 of the backuped fault) and Agora sends everything twice (the redeliver fault);
    the DAG runs for them. (Airflow may hand events that arrive close together to one run: the DAG
    handles every event it is given.) The events are read once the watchers' group has consumed
    every notification and the DAG has run: an event yielded for a duplicate is acknowledged only
    after the triggerer took it, and it reaches the database in the triggerer's next loop, long
    before the DAG run it would join has finished."""
    from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP  # Airflow 3 only

    cluster = agora_here
    cluster.simulator.faults.backuped()
    cluster.simulator.faults.redeliver()
    try:
        recordings = [recording_in_progress(cluster.simulator, f"asset-room-{n}") for n in range(2)]
        for recording in recordings:
            wait_until_recording(cluster, recording)
            stop(recording)
        wanted = {recording["sid"] for recording in recordings}
        keys = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))

        def settled() -> bool:
            delivered = [
                record
                for record in cluster.simulator.notifications
                if record.sid in wanted and record.outcome == "delivered"
            ]
            if len(delivered) < len(wanted) * 2 * 5:  # 40, 30, 31, 32, 11, each twice
                return False
            client = redis_server.client()
            try:
                groups = client.xinfo_groups(keys["stream"])
            finally:
                client.close()
            return any(g["name"] == DEFAULT_CONSUMER_GROUP and g["lag"] == 0 and g["pending"] == 0 for g in groups)

        cluster.wait_for("the watchers to consume every notification Agora sent", settled, 180)

        def events() -> list[dict] | None:
            assets = cluster.get_json("/api/v2/assets?name_pattern=agora_finished_recordings_check") or {}
            ids = [asset["id"] for asset in assets.get("assets", [])]
            if not ids:
                return None
            answer = cluster.get_json(f"/api/v2/assets/events?asset_id={ids[0]}&limit=100") or {}
            payloads = [event["extra"]["payload"] for event in answer.get("asset_events", [])]
            return payloads if wanted <= {payload["sid"] for payload in payloads} else None

        cluster.wait_for("an asset event for each finished recording", events, 180)

        def ran() -> list[str] | None:
            answer = cluster.get_json(f"/api/v2/dags/{ASSET_DAG}/dagRuns") or {}
            return [run["dag_run_id"] for run in answer.get("dag_runs", []) if run["state"] == "success"] or None

        cluster.wait_for("the asset-triggered DAG to run", ran, 120)
        payloads = events() or []
    finally:
        cluster.simulator.faults.backuped(False)
        cluster.simulator.faults.redeliver(False)
    ours = [payload for payload in payloads if payload["sid"] in wanted]
    assert sorted(payload["sid"] for payload in ours) == sorted(wanted)  # each exactly once
    assert all(any(f["fileName"].endswith(".mp4") for f in payload["files"]) for payload in ours)
