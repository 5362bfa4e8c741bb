"""Helpers shared by the unit and integration tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from airflow_provider_agora.hooks.agora import AgoraHook, RetryPolicy
from airflow_provider_agora.simulator import AgoraSimulator, max_in_sliding_second

__all__ = [
    "APP_ID",
    "CUSTOMER_ID",
    "CUSTOMER_SECRET",
    "FAST_RETRIES",
    "LogSignal",
    "PostgresServer",
    "RedisServer",
    "ScriptedAgora",
    "ScriptedAnswer",
    "TaskStateStore",
    "connection_json",
    "free_port",
    "max_in_sliding_second",
    "postgres_bin_dir",
    "redact",
    "running_postgres",
    "running_redis",
]

CUSTOMER_ID = "test-customer"
CUSTOMER_SECRET = "test-secret-Zq8w"  # distinctive, so that a leak is easy to find
APP_ID = "testapp0123456789abcdef0123456789"
T = TypeVar("T")
FAST_RETRIES = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05, max_total_seconds=10)


def free_port() -> int:
    """A loopback TCP port that nothing listened on a moment ago: for a server a test starts, or for a
    closed port that refuses connections. The one free-port helper of the suite."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connection_json(host: str, **extra: Any) -> str:
    return json.dumps(
        {
            "conn_type": "agora",
            "host": host,
            "login": CUSTOMER_ID,
            "password": CUSTOMER_SECRET,
            "extra": {"app_id": APP_ID, **extra},
        }
    )


@dataclass
class ScriptedAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # "reset": send half the body, then drop the connection; "stall": answer only after `delay` seconds.
    fault: str | None = None
    delay: float = 0.0


class ScriptedAgora:
    """A real HTTP server on loopback that answers with exactly the bodies a test scripts.

    For Agora's documented example bodies and malformed answers, which the simulator does not make.
    The last scripted answer repeats once the script is used up.
    """

    def __init__(self) -> None:
        self.answers: list[ScriptedAnswer] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[Any] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sent = self.rfile.read(length) if length else b""
                with scripted._lock:
                    scripted.requests.append((self.command, self.path, dict(self.headers)))
                    scripted.bodies.append(json.loads(sent) if sent else None)
                    scripted.times.append(time.time())
                    answer = scripted.answers.pop(0) if len(scripted.answers) > 1 else scripted.answers[0]
                payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                if answer.fault == "stall":
                    time.sleep(answer.delay)  # the fault itself: a server that does not answer in time
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Request-Id", f"req-{len(scripted.requests)}")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if answer.fault == "reset":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *answers: tuple[int, Any] | ScriptedAnswer) -> None:
        with self._lock:
            self.answers = [a if isinstance(a, ScriptedAnswer) else ScriptedAnswer(*a) for a in answers]


class LogSignal(logging.Handler):
    """Sets ``seen`` (an asyncio event) once a record whose message contains ``text`` is logged, so
    that a test waits for what a component says instead of sleeping."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def redact(value: Any) -> Any:
    """Airflow's secrets masker, wherever this Airflow version keeps it."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as airflow_redact
    except ImportError:
        from airflow.utils.log.secrets_masker import redact as airflow_redact
    return airflow_redact(value)


class TaskStateStore:
    """Stands in for Airflow 3.3's ``context["task_state_store"]``: JSON values, kept between pokes."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class RedisServer:
    """A real ``redis-server`` (Debian's package) on a free loopback port, started and stopped by a test.

    ``stop`` and ``start`` again keep the port, so clients see an outage and a recovery.
    """

    PASSWORD = "redis-test-pw-Hq7v"  # distinctive, so that a leak is easy to find

    def __init__(self) -> None:
        import shutil

        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.process: Any = None

    @property
    def available(self) -> bool:
        return self.binary is not None

    def start(self) -> RedisServer:
        import subprocess

        assert self.binary is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_it_answers()
        return self

    def _wait_until_it_answers(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.PASSWORD, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)  # polling the server's readiness, with a deadline

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.PASSWORD, decode_responses=True)

    def connection_uri(self, password: str | None = None) -> str:
        """``AIRFLOW_CONN_…`` value of an Airflow ``redis`` connection to this server."""
        from urllib.parse import quote

        secret = quote(password if password is not None else self.PASSWORD, safe="")
        return f"redis://:{secret}@127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started ``RedisServer`` for a fixture; the test skips, saying why, without the package."""
    import pytest

    server = RedisServer()
    if not server.available:
        pytest.skip("redis-server is not installed (make test installs Debian's redis-server package)")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_bin_dir() -> Any:
    """The folder holding ``initdb`` and ``postgres`` (a ``pathlib.Path``), or None without them.

    Debian keeps them off PATH, in ``/usr/lib/postgresql/<major>/bin``: an ``initdb`` on PATH wins,
    else the highest major version there.
    """
    import shutil
    from pathlib import Path

    on_path = shutil.which("initdb")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "postgres").is_file():
            return folder
    versions = [
        (int(initdb.parent.parent.name), initdb.parent)
        for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if initdb.parent.parent.name.isdigit() and (initdb.parent / "postgres").is_file()
    ]
    return max(versions)[1] if versions else None


class PostgresServer:
    """A real PostgreSQL server (Debian's ``postgresql`` package) in a temporary data directory on a
    free loopback port, for Airflow's metadata database where several Airflow processes write to it.

    ``create_database`` gives each Airflow cluster a fresh database; ``stop`` ends the server and
    removes its data directory. ``initdb`` and ``postgres`` refuse to run as root, so as root (as CI
    runs) both run as the unprivileged ``postgres`` user that Debian's package creates (else
    ``nobody``), in a directory of their own in the system's temporary folder: pytest's base temporary
    directory is private to root.
    """

    USER = "airflow"
    PASSWORD = "pg-test-pw-Kd4x"  # distinctive, so that a leak is easy to find
    START_TIMEOUT = 60.0
    STOP_TIMEOUT = 30.0

    def __init__(self) -> None:
        import os
        import pwd

        self.bin_dir = postgres_bin_dir()
        self.port = free_port()
        self.run_as: Any = None  # the pwd entry of the user the server runs as, when we are root
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.run_as = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
        self.directory: Any = None
        self.process: Any = None
        self._databases = 0

    @property
    def unavailable(self) -> str | None:
        """Why the server cannot run here, or None when it can."""
        import os

        if self.bin_dir is None:
            return (
                "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin; "
                "make test installs Debian's postgresql package)"
            )
        if os.geteuid() == 0 and self.run_as is None:
            return "running as root, and initdb refuses root: no 'postgres' or 'nobody' user to run it as"
        return None

    def _as_server_user(self) -> dict[str, Any]:
        """``subprocess`` arguments that run a PostgreSQL program as the server's user."""
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}

    def _own(self, path: Any) -> None:
        import os

        if self.run_as is not None:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def start(self) -> PostgresServer:
        import subprocess
        import tempfile
        from pathlib import Path

        assert self.bin_dir is not None and self.process is None
        self.directory = Path(tempfile.mkdtemp(prefix="agora-postgres-"))
        try:
            data, sockets, password = self.directory / "data", self.directory / "sockets", self.directory / "pw"
            self._own(self.directory)
            sockets.mkdir(mode=0o700)
            self._own(sockets)
            password.write_text(self.PASSWORD + "\n")
            password.chmod(0o600)
            self._own(password)
            initdb = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    self.USER,
                    "--pwfile",
                    str(password),
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                cwd=self.directory,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                **self._as_server_user(),
            )
            password.unlink()
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb exited with {initdb.returncode}\n{initdb.stdout}{initdb.stderr}")
            with (self.directory / "postgres.log").open("wb") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(self.port),
                        "-k",
                        str(sockets),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        # A throw-away database: durability after a crash of the machine is not needed.
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self._as_server_user(),
                )
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        log = self.directory / "postgres.log" if self.directory is not None else None
        if log is None or not log.exists():
            return "(no server log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _wait_until_it_answers(self) -> None:
        import psycopg2

        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError as error:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"postgres exited with {self.process.returncode} while starting\n{self.log_tail()}"
                    ) from error
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not answering after {self.START_TIMEOUT:g} s\n{self.log_tail()}"
                    ) from error
                time.sleep(0.05)  # polling the server's readiness, with a deadline

    def connect(self, dbname: str = "postgres") -> Any:
        """A ``psycopg2`` connection to one of the server's databases, as its superuser."""
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.USER,
            password=self.PASSWORD,
            dbname=dbname,
            connect_timeout=2,
        )

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (``airflow_<n>`` unless named); returns its name."""
        from psycopg2 import sql

        if name is None:
            self._databases += 1
            name = f"airflow_{self._databases}"
        connection = self.connect()
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return name

    def sql_alchemy_conn(self, dbname: str) -> str:
        """``[database] sql_alchemy_conn`` (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) for a database."""
        from urllib.parse import quote

        return f"postgresql+psycopg2://{self.USER}:{quote(self.PASSWORD, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), then the data directory is removed."""
        import shutil
        import signal
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=self.STOP_TIMEOUT)
        self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started ``PostgresServer`` for a fixture; the test skips, saying why, without the package."""
    import pytest

    pytest.importorskip("psycopg2", reason="psycopg2 (the test extra's psycopg2-binary) is needed for PostgreSQL")
    server = PostgresServer()
    if server.unavailable is not None:
        pytest.skip(server.unavailable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- recordings made for a test, as another system would make them ----------------------------


def start_recording(sim: AgoraSimulator, uid: int) -> dict[str, str]:
    """Start a recording the way another system would (one uid per recorder: Agora refuses duplicates)."""
    os.environ["AIRFLOW_CONN_AGORA_DEFAULT"] = connection_json(sim.url)
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire("e2e-room", uid)["resourceId"]
    sid = hook.start(
        resource_id,
        "e2e-room",
        uid,
        recording_mode="mix",
        client_request={"recordingFileConfig": {"avFileType": ["hls"]}},
    )["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}


def running_recording(sim: AgoraSimulator, *, hold: float) -> dict[str, str]:
    """A recording already in progress with its file (status 5), made in the simulator without API
    requests. After a stop it shows 6, 7 and 8 for ``hold`` seconds in all (8 from the 2nd on), then is gone."""
    (created,) = sim.create_recordings([time.time() + 3600], hold=hold)
    return {"resource_id": created["resource_id"], "sid": created["sid"], "recording_mode": "mix"}


def stop(sim: AgoraSimulator, recording: dict[str, str]) -> None:
    """Stop a recording made by ``running_recording`` (its channel is ``bulk_<sid>``, its recorder uid 1)."""
    os.environ["AIRFLOW_CONN_AGORA_DEFAULT"] = connection_json(sim.url)
    sid = recording["sid"]
    AgoraHook(retry_policy=FAST_RETRIES).stop(recording["resource_id"], sid, f"bulk_{sid}", 1, recording_mode="mix")


def wait_for(condition: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.005) -> T:
    """Poll ``condition`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)
