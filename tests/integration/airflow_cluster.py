"""The Airflow cluster harness of the tests that run Airflow 3 components as separate processes
(``test_triggerer.py``, ``test_notifications_in_airflow.py``): each component in its own process group,
on one PostgreSQL metadata database, driven through the REST API.

Not a test module: the modules that use it skip themselves on Airflow 2 before importing it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STARTUP_TIMEOUT = 150.0  # db migrate is separate; this covers four cold Python processes on 2 cores
MIGRATE_TIMEOUT = 300.0
STOP_TIMEOUT = 20.0
POLL = 0.2

T = TypeVar("T")


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
    dag_id: str = ""  # the DAG ``trigger`` runs unless told another
    task_id: str = "wait"  # the task ``task_state`` and ``xcom`` look at
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

    def trigger(self, conf: dict[str, Any], dag_id: str | None = None) -> str:
        dag_id = dag_id or self.dag_id
        response = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{self.diagnostics()}"
        run_id = str(response.json()["dag_run_id"])
        self.dag_of[run_id] = dag_id
        return run_id

    def task_state(self, run_id: str) -> str | None:
        answer = self.get_json(f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}/taskInstances/{self.task_id}")
        return answer.get("state") if answer else None

    def run_state(self, run_id: str) -> str | None:
        answer = self.get_json(f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}")
        return answer.get("state") if answer else None

    def xcom(self, run_id: str, key: str = "return_value") -> Any:
        """The run's XCom of the task, from the REST API (the metadata database is PostgreSQL's)."""
        path = f"/api/v2/dags/{self.dag_of[run_id]}/dagRuns/{run_id}/taskInstances/{self.task_id}/xcomEntries/{key}"
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


def cluster_env(home: Path, *, api_port: int, database_url: str, dags_folder: Path, **settings: str) -> dict[str, str]:
    """The environment of every component of a cluster: the test process's own without any Airflow
    setting, a LocalExecutor on the PostgreSQL ``database_url`` (several Airflow processes write to it:
    not SQLite, see tests/integration/conftest.py), an API server on ``api_port``, fast heartbeats;
    ``settings`` (``AIRFLOW__…``, ``AIRFLOW_CONN_…``) added last."""
    from cryptography.fernet import Fernet

    api_url = f"http://127.0.0.1:{api_port}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    return {
        **inherited,
        "PATH": str(Path(AIRFLOW).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
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
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        # The task supervisor notices its task's exit up to this many seconds late, and the deferral
        # reaches the scheduler only then (see wait_scheduler_saw_deferral).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        # Not served (--skip-serve-logs), but never the default ports another Airflow may hold.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        **settings,
    }


@contextlib.contextmanager
def running_cluster(
    home: Path,
    env: dict[str, str],
    simulator: AgoraSimulator,
    *,
    triggerers: Iterable[str],
    dag_ids: Iterable[str],
    dag_id: str = "",
) -> Iterator[Cluster]:
    """``airflow db migrate``, then an API server, scheduler, DAG processor and the named triggerers;
    yields once the API server hands out a token and every DAG of ``dag_ids`` is parsed and unpaused.
    Every component's process group is ended on the way out."""
    migrate = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=MIGRATE_TIMEOUT
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    api_port = env["AIRFLOW__API__PORT"]
    airflow = Cluster(home=home, env=env, api_url=env["AIRFLOW__API__BASE_URL"], simulator=simulator, dag_id=dag_id)
    try:
        airflow.start("api-server", "api-server", "--host", "127.0.0.1", "--port", api_port, "--workers", "1")
        airflow.start("scheduler", "scheduler", "--skip-serve-logs")
        airflow.start("dag-processor", "dag-processor")
        for name in triggerers:
            airflow.start(name, "triggerer", "--skip-serve-logs")

        def token() -> str | None:
            answer = airflow.get_json("/auth/token")
            return answer.get("access_token") if answer else None

        airflow.token = airflow.wait_for("the API server to hand out a token", token, STARTUP_TIMEOUT)
        wanted = tuple(dag_ids)

        def dags_ready() -> bool:
            dags = [airflow.get_json(f"/api/v2/dags/{dag}") for dag in wanted]
            return all(dag and not dag["is_paused"] for dag in dags)

        airflow.wait_for(f"DAGs {', '.join(wanted)} to be parsed and unpaused", dags_ready, STARTUP_TIMEOUT)
        yield airflow
    finally:
        airflow.stop_all()


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
