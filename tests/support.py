"""Helpers shared by the unit and integration tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_provider_agora.hooks.agora import RetryPolicy
from airflow_provider_agora.simulator import max_in_sliding_second

__all__ = [
    "APP_ID",
    "CUSTOMER_ID",
    "CUSTOMER_SECRET",
    "FAST_RETRIES",
    "LogSignal",
    "RedisServer",
    "ScriptedAgora",
    "ScriptedAnswer",
    "TaskStateStore",
    "connection_json",
    "max_in_sliding_second",
    "redact",
    "running_redis",
]

CUSTOMER_ID = "test-customer"
CUSTOMER_SECRET = "test-secret-Zq8w"  # distinctive, so that a leak is easy to find
APP_ID = "testapp0123456789abcdef0123456789"
FAST_RETRIES = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05, max_total_seconds=10)


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
        import socket

        self.binary = shutil.which("redis-server")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
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
