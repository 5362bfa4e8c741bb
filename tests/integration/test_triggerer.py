"""The deferrable sensor in a real Airflow: API server, scheduler (LocalExecutor), DAG processor and a
triggerer, each its own process, so the triggerer can be stopped and started on its own. They share a
metadata database on a real PostgreSQL server, as deployments do: SQLite is unfit for several writing
processes (the API server answered "Database error" on a busy machine).

``airflow dags test`` runs a trigger inline, which hides a blocking call on the event loop and a lost
deadline; here the trigger really runs on a triggerer's event loop, in another process than the task.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import airflow
import pytest

if not airflow.__version__.startswith("3."):
    pytest.skip(
        "starts Airflow 3 components (api-server, dag-processor); Airflow 2 has neither", allow_module_level=True
    )

from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.integration.test_end_to_end import AIRFLOW, ROOT, running_recording, start_recording, stop
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, connection_json

httpx = pytest.importorskip("httpx", reason="httpx (a core dependency of Airflow) is needed to call the REST API")

DAG_ID = "agora_deferrable_check"
TIMEOUT_DAG_ID = "agora_deferrable_timeout_check"  # the same sensor with a 6-second timeout
TASK_ID = "wait"
CNAME = "e2e-room"  # the channel tests.test_end_to_end.start_recording records
STARTUP_TIMEOUT = 150.0  # db migrate is separate; this covers four cold Python processes on 2 cores
RUN_TIMEOUT = 90.0  # the DAG's sensor times out after 60 s; a run must end well before this
STOP_TIMEOUT = 20.0
POLL = 0.2
FINISHED = ("success", "failed")

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"--- {path.name}: (missing)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def group_alive(self) -> bool:
        """Whether any process of the component's group (it leads its own session) is left."""
        self.process.poll()
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a reused id we do not own: not ours any more
            return False
        return True


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    api_url: str
    simulator: AgoraSimulator
    components: dict[str, Component] = field(default_factory=dict)
    stopped: list[Component] = field(default_factory=list)
    token: str = ""
    dag_of: dict[str, str] = field(default_factory=dict)  # run id -> DAG id

    # -- processes -----------------------------------------------------------------------------

    def start(self, name: str, *args: str) -> Component:
        index = sum(1 for c in [*self.stopped, *self.components.values()] if c.name == name) + 1
        log = self.home / f"{name}-{index}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [AIRFLOW, *args],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        component = self.components[name] = Component(name, process, log)
        return component

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Signal the component's whole process group; SIGKILL it if it is not gone in ``timeout``."""
        component = self.components.pop(name)
        self.stopped.append(component)
        stop_groups([component], sig, timeout)

    def stop_all(self) -> None:
        components = list(self.components.values())
        self.stopped.extend(components)
        self.components.clear()
        stop_groups(components, signal.SIGTERM, STOP_TIMEOUT)

    def check_running(self) -> None:
        for component in self.components.values():
            if component.process.poll() is not None:
                raise AssertionError(
                    f"airflow {component.name} exited with {component.process.returncode}\n{self.diagnostics()}"
                )

    def diagnostics(self) -> str:
        everything = [*self.stopped, *self.components.values()]
        race = [
            line
            for c in everything
            if c.name == "scheduler"
            for line in c.log.read_text(errors="replace").splitlines()
            if "but the task instance's state attribute is" in line
        ]
        parts = ["--- Airflow's executor-event race (see wait_scheduler_saw_deferral) hit:", *race] if race else []
        parts += [tail(c.log) for c in everything]
        task_logs = sorted((self.home / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        parts += [tail(path, 25) for path in task_logs[-3:]]
        parts.append(f"--- simulator requests: {[(r.path[-40:], r.status) for r in self.simulator.request_log[-15:]]}")
        return "\n".join(parts)

    def wait_for(self, what: str, condition: Callable[[], T | None], timeout: float) -> T:
        """Poll ``condition`` until it returns something truthy; fail with the logs at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            self.check_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}\n{self.diagnostics()}")
            time.sleep(POLL)

    # -- REST API ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(base_url=self.api_url, timeout=10, trust_env=False) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def get_json(self, path: str) -> Any:
        """The answer's JSON, or None while the API is not (yet) answering with success."""
        try:
            response = self.request("GET", path)
        except httpx.TransportError:
            return None
        return response.json() if response.is_success else None

    def trigger(self, conf: dict[str, Any], dag_id: str = DAG_ID) -> str:
        response = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{self.diagnostics()}"
        run_id = str(response.json()["dag_run_id"])
        self.dag_of[run_id] = dag_id
        return run_id

    def task_state(self, run_id: str) -> str | None:
        answer = self.get_json(f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}/taskInstances/{TASK_ID}")
        return answer.get("state") if answer else None

    def run_state(self, run_id: str) -> str | None:
        answer = self.get_json(f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}")
        return answer.get("state") if answer else None

    def xcom(self, run_id: str, key: str = "return_value") -> Any:
        """The run's XCom of the task, from the REST API (the metadata database is PostgreSQL's)."""
        path = f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/{key}"
        answer = self.get_json(path)
        assert answer is not None, f"no XCom {key!r} for run {run_id}\n{self.diagnostics()}"
        return answer["value"]


def stop_groups(components: list[Component], sig: signal.Signals, timeout: float) -> None:
    for component in components:
        signal_group(component, sig)
    deadline = time.monotonic() + timeout
    while any(c.group_alive for c in components) and time.monotonic() < deadline:
        time.sleep(POLL)
    for component in components:
        if component.group_alive:
            signal_group(component, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(c.group_alive for c in components) and time.monotonic() < deadline:
        time.sleep(POLL)
    for component in components:
        if component.process.poll() is None:
            component.process.wait(timeout=timeout)


def signal_group(component: Component, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(component.process.pid, sig)


@pytest.fixture(scope="module")
def sim() -> Iterator[AgoraSimulator]:
    with AgoraSimulator(customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,)).start() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, sim: AgoraSimulator, postgres_database_url: str
) -> Iterator[Cluster]:
    from cryptography.fernet import Fernet

    home = tmp_path_factory.mktemp("airflow-triggerer-home")
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    venv_bin = str(Path(AIRFLOW).parent)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env = {
        **inherited,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AIRFLOW_HOME": str(home),
        # Four Airflow processes write to it: PostgreSQL, not SQLite (see tests/integration/conftest.py).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_database_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "tests" / "dags"),
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
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        # The task supervisor notices its task's exit up to this many seconds late, and the deferral
        # reaches the scheduler only then (see wait_scheduler_saw_deferral).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        # A trigger that blocks the event loop shows up as a warning in the triggerer's log (see
        # assert_event_loop_never_blocked); one second leaves room for a busy 2-core machine.
        "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": "1.0",
        # A triggerer that died without saying so hands its triggers over after this many seconds.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        # Not served (--skip-serve-logs), but never the default ports another Airflow may hold.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(sim.url),
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    airflow = Cluster(home=home, env=env, api_url=api_url, simulator=sim)
    try:
        airflow.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")
        airflow.start("scheduler", "scheduler", "--skip-serve-logs")
        airflow.start("dag-processor", "dag-processor")
        airflow.start("triggerer", "triggerer", "--skip-serve-logs")

        def token() -> str | None:
            answer = airflow.get_json("/auth/token")
            return answer.get("access_token") if answer else None

        airflow.token = airflow.wait_for("the API server to hand out a token", token, STARTUP_TIMEOUT)

        def healthy() -> bool:
            health = airflow.get_json("/api/v2/monitor/health") or {}
            return all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("scheduler", "triggerer", "dag_processor")
            )

        airflow.wait_for("a healthy scheduler, triggerer and DAG processor", healthy, STARTUP_TIMEOUT)

        def dags_ready() -> bool:
            dags = [airflow.get_json(f"/api/v2/dags/{dag_id}") for dag_id in (DAG_ID, TIMEOUT_DAG_ID)]
            return all(dag and not dag["is_paused"] for dag in dags)

        airflow.wait_for(f"DAGs {DAG_ID} and {TIMEOUT_DAG_ID} to be parsed and unpaused", dags_ready, STARTUP_TIMEOUT)
        yield airflow
    finally:
        airflow.stop_all()


# -- helpers for the tests ------------------------------------------------------------------------


def recording_with_files(sim: AgoraSimulator, cluster: Cluster, uid: int) -> dict[str, str]:
    """A recording started elsewhere, once it is in progress with a file (status 5)."""
    recording = start_recording(sim, uid=uid)
    hook = AgoraHook(retry_policy=FAST_RETRIES)

    def has_files() -> bool:
        answer = hook.query(recording["resource_id"], recording["sid"], "mix")["serverResponse"]
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


def wait_scheduler_saw_deferral(cluster: Cluster, run_id: str) -> None:
    """Wait until the scheduler has handled the executor's report that the deferring worker exited.

    That report comes a few seconds after the deferral. If the trigger fires and the task is already
    running again before the scheduler handles it, Airflow 3.3.2 itself may fail the resumed task
    ("reported that the task instance ... finished with state success, but the task instance's state
    attribute is running", jobs/scheduler_job_runner.py, process_executor_events): a core race on a
    loaded machine, not the provider's. So the tests let the recording end only after this point.
    """
    scheduler = cluster.components["scheduler"].log

    def handled() -> bool:
        lines = scheduler.read_text(errors="replace").splitlines()
        return any(
            "TaskInstance Finished:" in line and f"run_id={run_id}," in line and "state=deferred" in line
            for line in lines
        )

    cluster.wait_for("the scheduler to handle the deferral", handled, 60)


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
