"""The deferrable sensor in a real Airflow: API server, scheduler (LocalExecutor), DAG processor and a
triggerer, each its own process, so the triggerer can be stopped and started on its own. They share a
metadata database on a real PostgreSQL server, as deployments do: SQLite is unfit for several writing
processes (the API server answered "Database error" on a busy machine).

``airflow dags test`` runs a trigger inline, which hides a blocking call on the event loop and a lost
deadline; here the trigger really runs on a triggerer's event loop, in another process than the task.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import airflow
import pytest

if not airflow.__version__.startswith("3."):
    pytest.skip(
        "starts Airflow 3 components (api-server, dag-processor); Airflow 2 has neither", allow_module_level=True
    )

from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import (
    APP_ID,
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    connection_json,
    free_port,
    running_recording,
    start_recording,
    stop,
)

pytest.importorskip("httpx", reason="httpx (a core dependency of Airflow) is needed to call the REST API")

from tests.integration.airflow_cluster import (
    ROOT,
    STARTUP_TIMEOUT,
    Cluster,
    cluster_env,
    running_cluster,
    wait_scheduler_saw_deferral,
)

DAG_ID = "agora_deferrable_check"
TIMEOUT_DAG_ID = "agora_deferrable_timeout_check"  # the same sensor with a 6-second timeout
TASK_ID = "wait"
CNAME = "e2e-room"  # the channel tests.test_end_to_end.start_recording records
RUN_TIMEOUT = 90.0  # the DAG's sensor times out after 60 s; a run must end well before this
FINISHED = ("success", "failed")


@pytest.fixture(scope="module")
def sim() -> Iterator[AgoraSimulator]:
    with AgoraSimulator(customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,)).start() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, sim: AgoraSimulator, postgres_database_url: str
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("airflow-triggerer-home")
    env = cluster_env(
        home,
        api_port=free_port(),
        database_url=postgres_database_url,
        dags_folder=ROOT / "tests" / "dags",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="30",
        # A trigger that blocks the event loop shows up as a warning in the triggerer's log (see
        # assert_event_loop_never_blocked); one second leaves room for a busy 2-core machine.
        AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD="1.0",
        # A triggerer that died without saying so hands its triggers over after this many seconds.
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
        AIRFLOW_CONN_AGORA_DEFAULT=connection_json(sim.url),
    )
    with running_cluster(
        home, env, sim, triggerers=["triggerer"], dag_ids=[DAG_ID, TIMEOUT_DAG_ID], dag_id=DAG_ID
    ) as airflow:

        def healthy() -> bool:
            health = airflow.get_json("/api/v2/monitor/health") or {}
            return all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("scheduler", "triggerer", "dag_processor")
            )

        airflow.wait_for("a healthy scheduler, triggerer and DAG processor", healthy, STARTUP_TIMEOUT)
        yield airflow


# -- helpers for the tests ------------------------------------------------------------------------


def recording_with_files(sim: AgoraSimulator, cluster: Cluster, uid: int) -> dict[str, str]:
    """A recording started elsewhere, once it is in progress with a file (status 5)."""
    recording = start_recording(sim, uid=uid)
    hook = AgoraHook(retry_policy=FAST_RETRIES)

    def has_files() -> bool:
        answer = hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")["serverResponse"]
        return answer.get("status") == 5 and bool(answer.get("fileList"))

    cluster.wait_for(f"recording {recording['sid']} to reach status 5 with a file", has_files, 30)
    return recording


def wait_deferred(cluster: Cluster, run_id: str, seen: list[str]) -> float:
    """Wait until the task instance is ``deferred``; return the wall-clock time it was seen so."""

    def deferred() -> float | None:
        state = cluster.task_state(run_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state in FINISHED:
            raise AssertionError(f"task ended {state} without being seen deferred ({seen})\n{cluster.diagnostics()}")
        return time.time() if state == "deferred" else None

    return cluster.wait_for(f"task {TASK_ID} of run {run_id} to be deferred", deferred, RUN_TIMEOUT)


def wait_finished(cluster: Cluster, run_id: str, seen: list[str]) -> str:
    def finished() -> str | None:
        state = cluster.task_state(run_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        run_state = cluster.run_state(run_id)
        return run_state if run_state in FINISHED else None

    return cluster.wait_for(f"run {run_id} to finish", finished, RUN_TIMEOUT)


def queries(sim: AgoraSimulator, sid: str, after: float = 0.0, before: float = float("inf")) -> list[Any]:
    return [r for r in sim.request_log if r.path.endswith(f"/sid/{sid}/mode/mix/query") and after < r.time < before]


def trigger_logs(cluster: Cluster, run_id: str) -> dict[str, str]:
    """What each triggerer wrote for this run's task; Airflow keeps it next to the task's log as
    ``attempt=1.log.trigger.<triggerer job id>.log``."""
    folder = cluster.home / "logs" / f"dag_id={cluster.dag_of[run_id]}" / f"run_id={run_id}" / f"task_id={TASK_ID}"
    return {path.name: path.read_text(errors="replace") for path in sorted(folder.glob("*.log.trigger.*"))}


def task_log(cluster: Cluster, run_id: str) -> str:
    folder = cluster.home / "logs" / f"dag_id={cluster.dag_of[run_id]}" / f"run_id={run_id}" / f"task_id={TASK_ID}"
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=*.log")))


def assert_no_throttling(cluster: Cluster) -> None:
    throttled = [r for r in cluster.simulator.request_log if r.status == 429]
    assert throttled == [], f"the simulator answered 429: {throttled}\n{cluster.diagnostics()}"


def assert_event_loop_never_blocked(cluster: Cluster) -> None:
    triggerers = [c for c in [*cluster.stopped, *cluster.components.values()] if c.name == "triggerer"]
    blocked = [
        line for c in triggerers for line in c.log.read_text(errors="replace").splitlines() if "was blocked" in line
    ]
    assert blocked == [], "\n".join(blocked)


# -- tests ----------------------------------------------------------------------------------------


def test_a_real_triggerer_waits_until_the_recording_exits(cluster: Cluster, sim: AgoraSimulator) -> None:
    # In progress (with its file) until the stop, then at 8 ("exited") for an hour: the trigger can
    # only end the wait on that status (a 404 would fail it: on_not_found="fail").
    recording = running_recording(sim, hold=3600)
    sid = recording["sid"]
    run_id = cluster.trigger(
        {"resource_id": recording["resource_id"], "sid": sid, "target_status": 8, "grace": 2, "on_not_found": "fail"}
    )
    states: list[str] = []
    deferred_at = wait_deferred(cluster, run_id, states)
    cluster.wait_for("a query from the triggerer", lambda: queries(sim, sid, after=deferred_at), 30)
    wait_scheduler_saw_deferral(cluster, run_id)
    stop(sim, recording)

    assert wait_finished(cluster, run_id, states) == "success", cluster.diagnostics()
    assert cluster.task_state(run_id) == "success"
    result = cluster.xcom(run_id)
    assert result["sid"] == sid, cluster.diagnostics()
    assert (result["status"], result["ended_by"]) == (8, "status"), result
    assert [item["fileName"] for item in result["files"]] == [f"{sid}_bulk_{sid}.m3u8"], result
    assert "deferred" in states, states
    assert "Pausing task as DEFERRED" in task_log(cluster, run_id), cluster.diagnostics()
    (log,) = trigger_logs(cluster, run_id).values()
    assert "Trigger fired event" in log and "'status': 'success'" in log, log
    assert len(queries(sim, sid, after=deferred_at)) >= 2  # polled from the triggerer before and after the stop
    assert_no_throttling(cluster)
    assert_event_loop_never_blocked(cluster)


def test_a_real_triggerer_fails_the_task_for_an_unknown_recording(cluster: Cluster, sim: AgoraSimulator) -> None:
    sid = "f" * 32
    before = time.time()
    run_id = cluster.trigger({"resource_id": "no-such-resource", "sid": sid, "grace": 3})
    states: list[str] = []
    assert wait_finished(cluster, run_id, states) == "failed", cluster.diagnostics()
    assert cluster.task_state(run_id) == "failed"
    seen = queries(sim, sid, after=before)
    # One poke, then at least one poll from the triggerer (how many fit in the grace period depends
    # on how soon the triggerer took the wait over).
    assert len(seen) >= 2 and {r.status for r in seen} == {404}, seen
    # Deferred (for about three seconds: the polled states may miss it, the logs do not), then
    # resumed to fail with the trigger's verdict (AirflowFailException, no retry).
    log_of_task = task_log(cluster, run_id)
    assert "Pausing task as DEFERRED" in log_of_task, cluster.diagnostics()
    assert "AirflowFailException" in log_of_task and "past not_found_grace_period=3 s" in log_of_task, log_of_task
    (log,) = trigger_logs(cluster, run_id).values()
    assert "past not_found_grace_period=3 s" in log and "'status': 'failure'" in log, f"{states}\n{log}"
    assert_no_throttling(cluster)
    assert_event_loop_never_blocked(cluster)


def test_a_real_triggerer_fails_the_task_on_an_abnormal_exit(cluster: Cluster, sim: AgoraSimulator) -> None:
    recording = recording_with_files(sim, cluster, uid=202)
    sid = recording["sid"]
    run_id = cluster.trigger({"resource_id": recording["resource_id"], "sid": sid, "target_status": 8})
    states: list[str] = []
    deferred_at = wait_deferred(cluster, run_id, states)
    cluster.wait_for("a query from the triggerer", lambda: queries(sim, sid, after=deferred_at), 30)
    wait_scheduler_saw_deferral(cluster, run_id)
    sim.faults.abnormal_exit(sid)

    assert wait_finished(cluster, run_id, states) == "failed", cluster.diagnostics()
    log_of_task = task_log(cluster, run_id)
    assert "AirflowFailException" in log_of_task, log_of_task
    assert "failure status 20 (exited abnormally). Last file list: 1 file(s)" in log_of_task, log_of_task
    assert f"{sid}_{CNAME}.m3u8" in log_of_task
    (log,) = trigger_logs(cluster, run_id).values()
    assert "'status': 'failure'" in log, log
    assert_no_throttling(cluster)
    assert_event_loop_never_blocked(cluster)


def test_a_real_triggerer_ends_the_wait_at_the_sensor_timeout(cluster: Cluster, sim: AgoraSimulator) -> None:
    recording = recording_with_files(sim, cluster, uid=203)  # in progress, and it never ends
    run_id = cluster.trigger(
        {"resource_id": recording["resource_id"], "sid": recording["sid"], "target_status": 8},
        dag_id=TIMEOUT_DAG_ID,
    )
    states: list[str] = []
    assert wait_finished(cluster, run_id, states) == "failed", cluster.diagnostics()
    log_of_task = task_log(cluster, run_id)
    assert "Pausing task as DEFERRED" in log_of_task, cluster.diagnostics()
    assert "AirflowSensorTimeout" in log_of_task, log_of_task  # failed without retry, as in poke mode
    assert_no_throttling(cluster)
    assert_event_loop_never_blocked(cluster)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_wait_survives_a_triggerer_restart(cluster: Cluster, sim: AgoraSimulator, sig: signal.Signals) -> None:
    # Agora often answers a recording that ended normally with 404 instead of 8: this one shows 6
    # for half a second after its stop, then is gone, so status 8 can never be reached.
    recording = running_recording(sim, hold=0.5)
    sid = recording["sid"]
    run_id = cluster.trigger(
        {"resource_id": recording["resource_id"], "sid": sid, "target_status": 8, "grace": 3, "on_not_found": "succeed"}
    )
    states: list[str] = []
    deferred_at = wait_deferred(cluster, run_id, states)
    cluster.wait_for("a query from the triggerer", lambda: queries(sim, sid, after=deferred_at), 30)
    wait_scheduler_saw_deferral(cluster, run_id)

    cluster.stop("triggerer", sig)
    stopped_at = time.time()
    stop(sim, recording)  # the recording ends while no triggerer runs
    restarted_at = time.time()
    cluster.start("triggerer", "triggerer", "--skip-serve-logs")

    assert wait_finished(cluster, run_id, states) == "success", cluster.diagnostics()
    assert cluster.task_state(run_id) == "success"
    result = cluster.xcom(run_id)
    assert result["sid"] == sid, cluster.diagnostics()
    # The restarted trigger starts from the memory the sensor handed over at the deferral (its first
    # poke saw status 5 with the file), so a recording gone by then still ends with its file list.
    assert result["ended_by"] == "not_found", result
    assert [item["fileName"] for item in result["files"]] == [f"{sid}_bulk_{sid}.m3u8"], result
    assert "deferred" in states, states
    # One log per triggerer job that ran the trigger: the first one, then the restarted one.
    logs = trigger_logs(cluster, run_id)
    assert len(logs) == 2, f"{sorted(logs)}\n{cluster.diagnostics()}"
    first, second = (logs[name] for name in sorted(logs, key=lambda name: int(name.rsplit(".", 2)[-2])))
    assert "Trigger fired event" not in first, first
    assert "Trigger fired event" in second and "'status': 'success'" in second, second
    assert queries(sim, sid, after=deferred_at, before=stopped_at), "no query from the first triggerer"
    assert queries(sim, sid, after=stopped_at, before=restarted_at) == [], "a query while no triggerer ran"
    assert queries(sim, sid, after=restarted_at), f"no query from the restarted triggerer\n{cluster.diagnostics()}"
    assert_no_throttling(cluster)
    assert_event_loop_never_blocked(cluster)
