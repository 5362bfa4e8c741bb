"""Verifying a long recording in storage: requests sent and time, the provider's way against one per file.

A 24-hour recording has thousands of HLS segments. This writes one recording with ``--segments``
segments (default 5,000: about 21 hours of 15-second slices) and its finished playlist into a real
S3-compatible server (moto's, on loopback), then verifies it the way ``verify_in_storage=True``
does (``_storage.reading.read_listing`` and ``verification.examine``, through Airflow's own S3
filesystem and an ``aws`` connection with ``endpoint_url``), and the way a per-file check does (one
``HEAD`` per segment, as ``S3KeySensor`` sends per key). A counting proxy in front of the server
counts the HTTP requests each way sends. Each way runs ``--runs`` times; times are medians
(``_harness.quantile``).

    .venv/bin/python benchmarks/storage_verification.py            # ~1-2 min; Markdown on stdout
    .venv/bin/python benchmarks/storage_verification.py --json /tmp/storage.json
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _harness as h

BUCKET = "bench-recordings"
PREFIX = ("bench", "room1")
SID = "5e1f0c2a9d7b4c38a1f6e2d04b9c7a15"
CONN_ID = "bench_storage"


class CountingProxy:
    """Forwards every HTTP request to the storage server and counts them by method."""

    def __init__(self, upstream_port: int) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.counts[self.command] = proxy.counts.get(self.command, 0) + 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{upstream_port}"
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)
                upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self) -> dict[str, int]:
        with self._lock:
            counts, self.counts = self.counts, {}
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def segment_names(count: int) -> list[str]:
    return [f"{SID}_room1_{20261206000000000 + 15_010 * n}.ts" for n in range(count)]


def playlist(names: list[str]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-TARGETDURATION:18"]
    for name in names:
        lines += ["#EXTINF:15.010000", name]
    return "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n"


@contextmanager
def storage(segments: int) -> Iterator[tuple[Any, CountingProxy]]:
    from tests.storage_server import running_s3_server

    with running_s3_server() as server:
        server.create_bucket(BUCKET)
        client = server.client()
        names = segment_names(segments)
        prefix = "/".join(PREFIX)
        for name in names:
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=b"G" * 188)
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{SID}_room1.m3u8", Body=playlist(names).encode())
        proxy = CountingProxy(server.port)
        try:
            yield server, proxy
        finally:
            proxy.close()


def verify_like_the_provider() -> tuple[float, bool, int]:
    from airflow_provider_agora._storage.locations import StorageLocation
    from airflow_provider_agora._storage.reading import read_listing
    from airflow_provider_agora._storage.verification import StorageCheck, examine

    location = StorageLocation(vendor=11, region=0, bucket=BUCKET, file_name_prefix=PREFIX, endpoint="bench")
    check = StorageCheck(location=location, storage_conn_id=CONN_ID, grace_period=60.0)
    files: list[Any] = [{"fileName": f"{SID}_room1.m3u8"}]
    began = time.perf_counter()
    listing = read_listing(check, files, SID)
    examination = examine(location, files, listing)  # type: ignore[arg-type]
    took = time.perf_counter() - began
    summary = examination.playlists.get(f"{'/'.join(PREFIX)}/{SID}_room1.m3u8", {})
    return took, examination.complete, int(summary.get("segments", 0))


def verify_one_request_per_file(client: Any, names: list[str]) -> float:
    prefix = "/".join(PREFIX)
    began = time.perf_counter()
    for name in names:
        client.head_object(Bucket=BUCKET, Key=f"{prefix}/{name}")
    return time.perf_counter() - began


def main() -> int:
    parser = h.argument_parser(__doc__)
    parser.add_argument("--segments", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    home = h.use_throwaway_airflow_home("agora-bench-storage-")
    try:
        with storage(args.segments) as (server, proxy):
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
                {
                    "conn_type": "aws",
                    "login": server.credentials.access_key,
                    "password": server.credentials.secret_key,
                    "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1"},
                }
            )
            h.silence_logs()
            provider: list[dict[str, Any]] = []
            for _ in range(args.runs):
                proxy.take()
                took, complete, segments = verify_like_the_provider()
                provider.append({"seconds": took, "requests": proxy.take(), "complete": complete, "segments": segments})
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=proxy.url,
                aws_access_key_id=server.credentials.access_key,
                aws_secret_access_key=server.credentials.secret_key,
                region_name="us-east-1",
            )
            names = segment_names(args.segments)
            per_file: list[dict[str, Any]] = []
            for _ in range(args.runs):
                proxy.take()
                per_file.append({"seconds": verify_one_request_per_file(client, names), "requests": proxy.take()})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    rows = [
        [
            "verify_in_storage (list the prefix, read the playlist)",
            " + ".join(f"{count} {method}" for method, count in sorted(provider[-1]["requests"].items())),
            h.fmt(h.median([run["seconds"] for run in provider]), 2),
            f"{provider[-1]['segments']} segments, complete: {provider[-1]['complete']}",
        ],
        [
            "one HEAD per segment (S3KeySensor's way)",
            " + ".join(f"{count} {method}" for method, count in sorted(per_file[-1]["requests"].items())),
            h.fmt(h.median([run["seconds"] for run in per_file]), 2),
            "existence only: no playlist read",
        ],
    ]
    print(f"Verifying one recording with {args.segments} segments in a moto S3 server on loopback ({h.run_meta()}):")
    print()
    print("\n".join(h.markdown_table(["way", "requests to storage", "median s", "what it knows"], rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"provider": provider, "per_file": per_file}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
