"""``python -m airflow_provider_agora.simulator``: serve the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_agora.simulator._server import AgoraSimulator


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_agora.simulator",
        description="Local stand-in for Agora's Cloud Recording REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless --allow-remote)")
    parser.add_argument("--port", type=int, default=8089, help="port to bind (default 8089)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--customer-id", default="sim-customer")
    parser.add_argument("--customer-secret", default="sim-secret")
    parser.add_argument(
        "--app-id", action="append", dest="app_ids", help="accepted App ID (repeatable; default sim-app)"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument(
        "--rate-limit", type=int, default=10, help="accepted requests per second per customer (0 disables)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="listen queue length (default: socketserver's 5; raise it for many new connections at once)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM; returns the exit status (0 on those signals)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not _is_loopback(args.host):
        parser.error(f"refusing to bind non-loopback host {args.host!r} without --allow-remote")
    if args.speed <= 0:
        parser.error("--speed must be > 0")
    if args.rate_limit < 0:
        parser.error("--rate-limit must be >= 0")
    if args.backlog is not None and args.backlog < 1:
        parser.error("--backlog must be >= 1")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    simulator = AgoraSimulator(
        customer_id=args.customer_id,
        customer_secret=args.customer_secret,
        app_ids=args.app_ids or ("sim-app",),
        host=args.host,
        port=args.port,
        speed=args.speed,
        rate_limit_per_second=args.rate_limit or None,
        backlog=args.backlog,
    )
    try:
        simulator.start()
    except OSError as exc:
        print(f"cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Agora simulator listening on {simulator.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
