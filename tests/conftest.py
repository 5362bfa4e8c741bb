"""Shared fixtures. Airflow is pointed at a throw-away AIRFLOW_HOME before anything imports it."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="agora-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest  # noqa: E402

from airflow_provider_agora import _rate_limit  # noqa: E402
from airflow_provider_agora._retry import RetryPolicy  # noqa: E402
from airflow_provider_agora.simulator import AgoraSimulator  # noqa: E402

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


@pytest.fixture(autouse=True)
def fresh_rate_limiters() -> Iterator[None]:
    """Each test gets its own per-process request budget, as a fresh worker process would."""
    _rate_limit._spacers.clear()
    yield
    _rate_limit._spacers.clear()


@pytest.fixture
def simulator() -> Iterator[AgoraSimulator]:
    """The embedded Agora simulator on loopback, ten times faster than real time."""
    with AgoraSimulator(
        customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=10.0
    ).start() as sim:
        yield sim


@pytest.fixture
def agora_conn(simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> AgoraSimulator:
    """``agora_default`` pointing at the simulator."""
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url))
    return simulator


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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *answers: tuple[int, Any] | ScriptedAnswer) -> None:
        with self._lock:
            self.answers = [a if isinstance(a, ScriptedAnswer) else ScriptedAnswer(*a) for a in answers]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedAgora]:
    server = ScriptedAgora()
    server.thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(server.url))
    yield server
    server.server.shutdown()
    server.server.server_close()


def redact(value: Any) -> Any:
    """Airflow's secrets masker, wherever this Airflow version keeps it."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as airflow_redact
    except ImportError:
        from airflow.utils.log.secrets_masker import redact as airflow_redact
    return airflow_redact(value)


def max_in_sliding_second(times: list[float]) -> int:
    """The most requests that fall in any one-second window (measured at arrival)."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best
