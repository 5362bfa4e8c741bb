"""HTTP plumbing: a keep-alive ``ThreadingHTTPServer``, the request log and the control endpoints."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from airflow_provider_agora.simulator._faults import BACKUP_DELAY, Faults
from airflow_provider_agora.simulator._lifecycle import DEFAULT_BULK_HOLD, Clock
from airflow_provider_agora.simulator._notify import NOTIFY_TIMEOUT, NotificationRecord, Notifier
from airflow_provider_agora.simulator._responses import NO_ROUTE, Response, gateway_error, json_response
from airflow_provider_agora.simulator._service import CloudRecordingService
from airflow_provider_agora.simulator._storage import Uploader, UploadRecord

CONTROL_PREFIX = "/_simulator/"
_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the simulator answered it; ``time`` is ``time.time()`` at arrival."""

    method: str
    path: str
    status: int
    time: float
    customer_id: str | None
    request_id: str
    client_port: int = 0  # the client's TCP port: requests on one keep-alive connection share it


class _Handler(BaseHTTPRequestHandler):
    """Reads the whole body before answering so keep-alive connections stay in step."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are dropped after this many seconds

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; the request log replaces it."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        arrival_epoch = time.time()
        arrival = time.monotonic()
        request_id = uuid.uuid4().hex
        simulator = cast(_Server, self.server).simulator
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(gateway_error(400, "malformed request body"), request_id)
            return
        path = urlsplit(self.path).path
        if path.startswith(CONTROL_PREFIX):
            self._send(simulator._control(self.command, path, body), request_id)
            return
        result = simulator._service.handle(self.command, path, self.headers.get("Authorization"), body, arrival)
        latency = simulator.faults.latency
        if latency > 0:
            time.sleep(latency)
        simulator._log(
            RequestRecord(
                self.command,
                path,
                result.response.status,
                arrival_epoch,
                result.customer_id,
                request_id,
                client_port=self.client_address[1],
            )
        )
        self._send(result.response, request_id)

    def _send(self, response: Response, request_id: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Request-Id", request_id)
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so ``stop`` can cut idle keep-alive clients off."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: AgoraSimulator, backlog: int | None = None) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if backlog is not None:
            self.request_queue_size = backlog  # read by server_activate's listen()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        self.simulator._connection_accepted()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal here; anything else is reported as usual."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut every open connection so handler threads blocked on keep-alive reads return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class AgoraSimulator:
    """A local stand-in for Agora's Cloud Recording REST API, for tests and demos.

    ``speed`` scales simulated time (lifecycle, maxIdleTime, resource expiry, fault windows);
    the rate limit, ``Retry-After`` and ``faults.latency`` stay in real seconds because they
    concern real requests. ``rate_limit_per_second=None`` disables the limit.

    Where Agora's documentation is silent the simulator chooses:

    * ``stop`` answers at once. With ``async_stop: false`` the files are reported ``"uploaded"``;
      with ``async_stop: true`` the same file list comes with ``uploadingStatus: "unknown"``
      (a documented value: the upload outcome is not known yet). Both start the 6→7→8 tail.
    * A stop before the first slice (in any mode) answers 206 ``code 435`` and still ends the session.
    * Gateway 404s (unknown route) come before auth and consume no fault; ``faults.latency`` is
      added to every non-control answer. Control requests (``/_simulator/*``) are neither logged
      nor rate-limited nor faulted.

    For load tests: ``create_recordings`` makes many recordings with scheduled end times without
    any API request, ``stats`` counts accepted TCP connections and answers per HTTP status, and
    ``backlog`` sets the listen queue (``None`` keeps ``socketserver``'s 5, which drops the SYNs
    of a burst of new connections).

    Notifications (Agora's NCS): with ``notify_url`` and ``notify_secret`` the simulator POSTs
    signed lifecycle events (40, 30, 31, 11; 70/71 for web; 1 + 11 on an abnormal exit; 12 on a
    fail-over) to ``notify_url`` from a background thread, resending anything but a 200 up to three
    times; see :mod:`airflow_provider_agora.simulator._notify`. ``notify_timeout`` is the real
    seconds the sender waits for an answer. Every attempt is in ``notifications``; the faults
    ``duplicate``, ``reorder_31_after_11``, ``drop``, ``bad_signature``, ``backuped`` and
    ``redeliver`` change what is sent.

    Recording files: a recording whose ``storageConfig`` is ``vendor`` 11 with
    ``extensionParams.endpoint`` gets its playlists, TS segments and MP4s written to that
    S3-compatible storage as the simulated clock reaches them, from a background thread (see
    :mod:`airflow_provider_agora.simulator._storage`). ``storage_idle``/``wait_uploaded`` wait until
    everything due at the moment of the call is written; ``uploads`` lists every attempt. The storage
    faults (``missing_segment``, ``late_upload``, ``unfinished_playlist``, ``wrong_storage_credentials``)
    and ``backuped`` (files only ``backup_delay`` simulated seconds after the end) change what is written.
    """

    def __init__(
        self,
        customer_id: str = "sim-customer",
        customer_secret: str = "sim-secret",
        app_ids: Iterable[str] = ("sim-app",),
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        rate_limit_per_second: int | None = 10,
        backlog: int | None = None,
        notify_url: str | None = None,
        notify_secret: str | None = None,
        notify_timeout: float = NOTIFY_TIMEOUT,
        backup_delay: float = BACKUP_DELAY,
    ) -> None:
        if backlog is not None and backlog < 1:
            raise ValueError("backlog must be >= 1")
        if notify_url is not None and not notify_secret:
            raise ValueError("notify_url needs a notify_secret (the NCS secret that signs notifications)")
        self.customer_id = customer_id
        self.customer_secret = customer_secret
        self.app_ids: tuple[str, ...] = tuple(app_ids)
        self.host = host
        self.port = port
        self._clock = Clock(speed)
        self.faults = Faults(self._clock.now, backup_delay=backup_delay)
        self._service = CloudRecordingService(
            customer_id, customer_secret, self.app_ids, self._clock, self.faults, rate_limit_per_second
        )
        self._log_lock = threading.Lock()
        self._request_log: list[RequestRecord] = []
        self._backlog = backlog
        self._stats_lock = threading.Lock()
        self._connections_accepted = 0
        self._status_counts: Counter[int] = Counter()
        self._stats_since = time.time()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.notify_url = notify_url
        self._notifier: Notifier | None = None
        if notify_url is not None and notify_secret:
            self._notifier = Notifier(
                notify_url, notify_secret, self._clock, self.faults, self._service, timeout=notify_timeout
            )
            self.faults.listener = self._notifier.fault_changed
        self._uploader = Uploader(self._clock, self.faults, self._service)
        if self._notifier is not None:
            self._uploader.on_refused = self._notifier.storage_error
        self._service.on_change = self._timeline_changed

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AgoraSimulator:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((self.host, self.port), self, self._backlog)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="agora-simulator", daemon=True
        )
        self._thread.start()
        if self._notifier is not None:
            self._notifier.start()
        self._uploader.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._notifier is not None:
            self._notifier.stop()
        self._uploader.stop()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AgoraSimulator:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to configure as the Agora API host."""
        if self._server is None:
            raise RuntimeError("simulator is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self._clock.speed

    def simulated_time(self) -> float:
        """Simulated seconds since the simulator was created; lets tests wait on simulated time."""
        return self._clock.now()

    # -- observation and control ---------------------------------------------------------------

    @property
    def request_log(self) -> list[RequestRecord]:
        """Copy of every API request answered so far (control requests excluded)."""
        with self._log_lock:
            return list(self._request_log)

    def clear_request_log(self) -> None:
        """Forget logged requests, e.g. between phases of a test."""
        with self._log_lock:
            self._request_log.clear()

    @property
    def notifications(self) -> list[NotificationRecord]:
        """Copy of every notification attempt so far (empty without ``notify_url``), oldest first."""
        return self._notifier.records() if self._notifier is not None else []

    def clear_notifications(self) -> None:
        """Forget logged notification attempts (counters in ``notification_stats`` stay)."""
        if self._notifier is not None:
            self._notifier.clear()

    def notification_stats(self) -> dict[str, Any]:
        """Notification counters: ``notifications`` made, ``attempts``, ``delivered``, ``retries``,
        ``dropped`` (after the last retry), ``dropped_by_fault``, ``pending`` (queued sends)."""
        if self._notifier is None:
            return {"enabled": False}
        return self._notifier.stats()

    def leave_channel(self, cname: str) -> int:
        """Every user leaves ``cname``: its non-web recordings exit after their ``maxIdleTime``.

        Returns the number of recordings affected. Recordings started later on the same channel
        see the default users again.
        """
        return self._service.leave_channel(cname)

    def create_recordings(
        self,
        end_times: Sequence[float],
        *,
        hold: float = DEFAULT_BULK_HOLD,
        mode: str = "mix",
        app_id: str | None = None,
        client_request: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Make one recording per end time (epoch seconds) without API requests; see ``CloudRecordingService``.

        They are at status 5 with files until their end time, then 6, 7, 8 for ``hold`` simulated
        seconds, then gone. ``app_id`` defaults to the first accepted App ID. Returns
        ``{"resource_id", "sid", "end_time"}`` per recording, in the order of ``end_times``.
        """
        return self._service.create_recordings(
            end_times, hold=hold, mode=mode, app_id=app_id, client_request=client_request
        )

    def storage_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every file due at the simulated time of this call is in its storage (or refused
        for good), for every recording with an S3-compatible ``storageConfig``.

        Returns ``False`` if that is not so within ``timeout`` real seconds (e.g. the storage is down:
        the uploader keeps retrying). Move a manual clock first, then call this: the bucket then holds
        exactly the files due at that moment.
        """
        return self._uploader.wait_idle(timeout)

    def wait_uploaded(self, sid: str, timeout: float = 5.0) -> bool:
        """:meth:`storage_idle` for the one recording ``sid`` (``True`` at once if it uploads nothing)."""
        return self._uploader.wait_idle(timeout, sid)

    def uploads(self, sid: str | None = None) -> list[UploadRecord]:
        """Every upload attempt so far (of ``sid`` only, if given), oldest first; no credentials in it."""
        return self._uploader.records(sid)

    def clear_uploads(self) -> None:
        """Forget the logged upload attempts (what was written stays written)."""
        self._uploader.clear()

    def _timeline_changed(self, sids: Sequence[str]) -> None:
        """The service's change callback (lock held, must not block): tell the notifier and the uploader."""
        if self._notifier is not None:
            self._notifier.touch(sids)
        self._uploader.touch(sids)

    def stats(self) -> dict[str, Any]:
        """Counters since the last ``reset_stats``: TCP connections accepted, API answers per status.

        Cheaper to read than the request log when only totals matter (e.g. how many 429s).
        """
        with self._stats_lock:
            return {
                "since": self._stats_since,
                "connections_accepted": self._connections_accepted,
                "requests": sum(self._status_counts.values()),
                "by_status": {str(status): count for status, count in sorted(self._status_counts.items())},
            }

    def reset_stats(self) -> None:
        """Zero the counters (the request log is cleared separately, by ``clear_request_log``)."""
        with self._stats_lock:
            self._connections_accepted = 0
            self._status_counts.clear()
            self._stats_since = time.time()

    def _connection_accepted(self) -> None:
        with self._stats_lock:
            self._connections_accepted += 1

    def _log(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._request_log.append(record)
        with self._stats_lock:
            self._status_counts[record.status] += 1

    def _control(self, method: str, path: str, body: bytes) -> Response:
        """``/_simulator/*``: request and notification logs, faults and channel control for other processes."""
        name = path[len(CONTROL_PREFIX) :].rstrip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return gateway_error(400, "invalid JSON body")
        handler = self._control_routes().get((name, method))
        return NO_ROUTE if handler is None else handler(payload)

    def _control_routes(self) -> dict[tuple[str, str], Callable[[Any], Response]]:
        """The control endpoints, ``(name under /_simulator/, method)`` to a handler of the JSON body:
        a table, so that adding one endpoint adds one line, not one more branch."""
        return {
            ("requests", "GET"): lambda _: json_response(200, [asdict(record) for record in self.request_log]),
            ("requests", "DELETE"): self._control_clear_requests,
            ("faults", "GET"): lambda _: json_response(200, self.faults.state()),
            ("faults", "POST"): self._control_apply_faults,
            ("faults", "DELETE"): self._control_reset_faults,
            ("notifications", "GET"): lambda _: json_response(200, [asdict(record) for record in self.notifications]),
            ("notifications", "DELETE"): self._control_clear_notifications,
            ("notifications/stats", "GET"): lambda _: json_response(200, self.notification_stats()),
            ("stats", "GET"): lambda _: json_response(200, self.stats()),
            ("stats", "DELETE"): self._control_reset_stats,
            ("recordings", "POST"): self._control_create_recordings,
            ("leave_channel", "POST"): self._control_leave_channel,
            ("uploads", "GET"): lambda _: json_response(200, [asdict(record) for record in self.uploads()]),
            ("uploads", "DELETE"): self._control_clear_uploads,
            ("storage_idle", "POST"): self._control_storage_idle,
        }

    def _control_clear_uploads(self, payload: Any) -> Response:
        """``DELETE /_simulator/uploads``: the upload log is empty after it."""
        self.clear_uploads()
        return json_response(200, [])

    def _control_storage_idle(self, payload: Any) -> Response:
        """``POST /_simulator/storage_idle``: ``{"timeout"?: seconds (<= 30, default 5), "sid"?: "..."}``;
        answers ``{"idle": true|false}`` once everything due now is written, or at the timeout."""
        payload = {} if payload is None else payload
        if not isinstance(payload, dict) or set(payload) - {"timeout", "sid"}:
            return gateway_error(400, 'expected {"timeout"?: seconds, "sid"?: "..."}')
        timeout, sid = payload.get("timeout", 5.0), payload.get("sid")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= 30:
            return gateway_error(400, "timeout must be a number of seconds in [0, 30]")
        if sid is not None and not isinstance(sid, str):
            return gateway_error(400, "sid must be a string")
        idle = self.storage_idle(float(timeout)) if sid is None else self.wait_uploaded(sid, float(timeout))
        return json_response(200, {"idle": idle})

    def _control_clear_requests(self, payload: Any) -> Response:
        """``DELETE /_simulator/requests``: the request log is empty after it."""
        self.clear_request_log()
        return json_response(200, [])

    def _control_apply_faults(self, payload: Any) -> Response:
        """``POST /_simulator/faults``: a JSON object of faults to set; answers the faults now set."""
        if not isinstance(payload, dict):
            return gateway_error(400, "expected a JSON object of faults")
        try:
            self.faults.apply(payload)
        except (TypeError, ValueError) as exc:
            return gateway_error(400, str(exc))
        return json_response(200, self.faults.state())

    def _control_reset_faults(self, payload: Any) -> Response:
        """``DELETE /_simulator/faults``: no fault is set after it; answers the (default) faults."""
        self.faults.reset()
        return json_response(200, self.faults.state())

    def _control_clear_notifications(self, payload: Any) -> Response:
        """``DELETE /_simulator/notifications``: the notification log is empty after it."""
        self.clear_notifications()
        return json_response(200, [])

    def _control_reset_stats(self, payload: Any) -> Response:
        """``DELETE /_simulator/stats``: answers the counters just zeroed."""
        self.reset_stats()
        return json_response(200, self.stats())

    def _control_leave_channel(self, payload: Any) -> Response:
        """``POST /_simulator/leave_channel``: ``{"cname": "..."}``; answers how many recordings it affected."""
        cname = payload.get("cname") if isinstance(payload, dict) else None
        if not isinstance(cname, str):
            return gateway_error(400, 'expected {"cname": "..."}')
        return json_response(200, {"cname": cname, "recordings": self.leave_channel(cname)})

    def _control_create_recordings(self, payload: Any) -> Response:
        """``POST /_simulator/recordings``: ``{"end_times": [...], "hold"?, "mode"?, "app_id"?, "client_request"?}``."""
        if not isinstance(payload, dict) or "end_times" not in payload:
            return gateway_error(400, 'expected {"end_times": [epoch seconds, ...]}')
        unknown = set(payload) - {"end_times", "hold", "mode", "app_id", "client_request"}
        if unknown:
            return gateway_error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        try:
            created = self.create_recordings(
                payload["end_times"],
                hold=payload.get("hold", DEFAULT_BULK_HOLD),
                mode=payload.get("mode", "mix"),
                app_id=payload.get("app_id"),
                client_request=payload.get("client_request"),
            )
        except ValueError as exc:
            return gateway_error(400, str(exc))
        return json_response(200, created)
