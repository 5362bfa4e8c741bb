"""Agora's notifications in a real Airflow 3.3: API server (the receiver), scheduler, DAG processor and
two triggerers, with a real ``redis-server`` and the simulator posting notifications as Agora would."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_agora._notification_store import notification_keys
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.notifications import namespace_of
from airflow_provider_agora.simulator import AgoraSimulator
from tests.integration.test_triggerer import (  # the same harness as the real-triggerer tests
    AIRFLOW,
    ROOT,
    STARTUP_TIMEOUT,
    Cluster,
    free_port,
    wait_scheduler_saw_deferral,
)
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, RedisServer, connection_json

NCS_SECRET = "ncs-secret-Rr5t1"
WAIT_DAG = "agora_notification_wait_check"
ASSET_DAG = "agora_finished_recordings_check"
WITH_FILES = {"recordingFileConfig": {"avFileType": ["hls", "mp4"]}}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, postgres_database_url: str
) -> Iterator[Cluster]:
    from cryptography.fernet import Fernet

    home = tmp_path_factory.mktemp("airflow-notifications-home")
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    simulator = AgoraSimulator(
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        app_ids=(APP_ID,),
        speed=10.0,
        notify_url=f"{api_url}/agora/ncs/agora_default",
        notify_secret=NCS_SECRET,
    ).start()
    connection = connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id="agora_ncs_redis")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env = {
        **inherited,
        "PATH": str(Path(AIRFLOW).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AIRFLOW_HOME": str(home),
        # Five Airflow processes write to it: PostgreSQL, not SQLite (see tests/integration/conftest.py).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_database_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "tests" / "dags_notifications"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_AGORA_DEFAULT": connection,
        "AIRFLOW_CONN_AGORA_NCS_REDIS": redis_server.connection_uri(),
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    airflow = Cluster(home=home, env=env, api_url=api_url, simulator=simulator)
    try:
        airflow.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")
        airflow.start("scheduler", "scheduler", "--skip-serve-logs")
        airflow.start("dag-processor", "dag-processor")
        airflow.start("triggerer", "triggerer", "--skip-serve-logs")
        airflow.start("triggerer-2", "triggerer", "--skip-serve-logs")

        def token() -> str | None:
            answer = airflow.get_json("/auth/token")
            return answer.get("access_token") if answer else None

        airflow.token = airflow.wait_for("the API server to hand out a token", token, STARTUP_TIMEOUT)

        def dags_ready() -> bool:
            dags = [airflow.get_json(f"/api/v2/dags/{dag_id}") for dag_id in (WAIT_DAG, ASSET_DAG)]
            return all(dag and not dag["is_paused"] for dag in dags)

        airflow.wait_for("the notification DAGs to be parsed and unpaused", dags_ready, STARTUP_TIMEOUT)
        yield airflow
    finally:
        airflow.stop_all()
        simulator.stop()


def recording_in_progress(simulator: AgoraSimulator, cname: str) -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    hook.__dict__["settings"] = hook.settings
    resource_id = hook.acquire(cname, 4242)["resourceId"]
    sid = hook.start(resource_id, cname, 4242, "mix", WITH_FILES)["sid"]
    return {"resource_id": resource_id, "sid": sid, "cname": cname}


@pytest.fixture
def agora_here(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(cluster.simulator.url))
    return cluster


def wait_until_recording(cluster: Cluster, recording: dict[str, str]) -> None:
    hook = AgoraHook(retry_policy=FAST_RETRIES)

    def has_files() -> bool:
        answer = hook.query(recording["resource_id"], recording["sid"], "mix")
        return answer["serverResponse"]["status"] == 5 and bool(answer["serverResponse"].get("fileList"))

    cluster.wait_for("the recording to have a file", has_files, 60)


def stop(recording: dict[str, str]) -> None:
    AgoraHook(retry_policy=FAST_RETRIES).stop(
        recording["resource_id"], recording["sid"], "mix", recording["cname"], 4242
    )


def test_a_real_triggerer_ends_a_ten_minute_poll_on_the_uploaded_notification(agora_here: Cluster) -> None:
    cluster = agora_here
    recording = recording_in_progress(cluster.simulator, "notified-room")
    wait_until_recording(cluster, recording)
    run_id = cluster.trigger({"resource_id": recording["resource_id"], "sid": recording["sid"]}, dag_id=WAIT_DAG)
    cluster.wait_for("the wait to be deferred", lambda: cluster.task_state(run_id) == "deferred", 120)
    wait_scheduler_saw_deferral(cluster, run_id)  # an Airflow race otherwise (see test_triggerer)
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
