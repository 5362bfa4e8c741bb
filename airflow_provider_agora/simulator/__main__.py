"""``python -m airflow_provider_agora.simulator``: serve the simulator until SIGINT/SIGTERM.

With ``--notify-url`` and ``--notify-secret`` it also POSTs signed Agora NCS notifications of its
recordings' lifecycle events to that URL; ``--help`` lists the events, retries and faults. Recordings
whose ``storageConfig`` is vendor 11 with ``extensionParams.endpoint`` get their files written to
that S3-compatible storage (``--help`` says how; ``--backup-delay`` for the ``backuped`` fault).
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_agora.simulator._faults import BACKUP_DELAY, NOTIFICATION_TOGGLES
from airflow_provider_agora.simulator._notify import NOTIFY_RETRY_DELAYS, NOTIFY_TIMEOUT, check_notify_url
from airflow_provider_agora.simulator._server import AgoraSimulator

_DELAYS = ", ".join(f"{delay:g}" for delay in NOTIFY_RETRY_DELAYS)
_NOTIFY_HELP = f"""\
notifications (Agora NCS):
  With --notify-url and --notify-secret the simulator POSTs each lifecycle event of its recordings
  to the URL as Agora's envelope {{"noticeId", "productId": 3, "eventType", "notifyMs", "payload":
  {{"cname", "uid", "sid", "sequence", "sendts", "serviceType", "details"}}}}, signed with the secret
  in Agora-Signature (hex HMAC-SHA1 of the raw body) and Agora-Signature-V2 (hex HMAC-SHA256).
  Events: 40 recorder_started; at the end 30 uploader_started, 31 uploaded (final fileList, MP4s
  included), 11 session_exit; web recordings also 70 and 71 web_recorder_stopped (31 without
  fileList); abnormal exit (fault abnormal_exit) 1 cloud_recording_error + 11 exitStatus 1;
  fail-over (fault transient_not_found) 12 session_failover.
  A send that does not get a 200 is resent (same noticeId, new notifyMs and signatures) up to
  {len(NOTIFY_RETRY_DELAYS)} times, after {_DELAYS} simulated seconds (divided by --speed), then dropped.
  Attempts are listed at GET /_simulator/notifications, counters at /_simulator/notifications/stats;
  notification faults can also be set at POST /_simulator/faults: {{"duplicate": true}},
  {{"reorder_31_after_11": true}}, {{"bad_signature": true}}, {{"backuped": true}} (32 after 31),
  {{"redeliver": true}} (each delivered notification again under a new noticeId), {{"drop": 2}} or
  {{"drop": {{"count": 1, "event_types": [31]}}}}.

recording files (S3-compatible storage):
  A start request whose clientRequest.storageConfig has "vendor": 11 and extensionParams.endpoint
  ("http://127.0.0.1:9000", or a bare host, which means https) gets its files uploaded to "bucket"
  with "accessKey"/"secretKey" (boto3 needed then; keys never logged), named as Agora names them,
  fileNamePrefix joined by "/" in front: a TS segment <sid>_<cname>_<utc>.ts every 2 simulated
  seconds from the first slice (individual mode: ...__uid_s_<uid>__uid_e_<audio|video>_<utc>.ts),
  the playlist <sid>_<cname>.m3u8 rewritten after each one (#EXTM3U, #EXT-X-VERSION:3,
  #EXT-X-TARGETDURATION, #EXT-X-AGORA-TRACK-EVENT, #EXTINF:<d>) with #EXT-X-ENDLIST once the
  recording has ended normally, and <sid>_<cname>_0.mp4 then if avFileType has "mp4" (mix, web).
  Uploads run in a background thread on the simulated clock; a storage that does not answer is
  retried, one that refuses (403, NoSuchBucket) stops the recording's uploads and is reported as
  NCS event 1 (module 1, errorCode 32). Upload attempts: GET /_simulator/uploads; wait until what
  is due now is written: POST /_simulator/storage_idle {{"timeout": 5, "sid"?: "..."}} -> {{"idle": true}}.
  Storage faults at POST /_simulator/faults (each also {{"sid": "...", ...}} for one recording):
  {{"missing_segment": 0}} (that segment is listed, never written), {{"late_upload": 30}} (every
  file 30 simulated seconds late), {{"unfinished_playlist": true}} (no #EXT-X-ENDLIST),
  {{"wrong_storage_credentials": true}} (every upload refused); with {{"backuped": true}} (or
  {{"backuped": {{"enabled": true, "delay": 120}}}}) a recording started then writes no file until
  --backup-delay simulated seconds after its end.
"""


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
        epilog=_NOTIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--backup-delay",
        type=float,
        default=BACKUP_DELAY,
        help=f"simulated seconds after its end at which a backuped recording's files appear (default {BACKUP_DELAY:g})",
    )
    notify = parser.add_argument_group("notifications")
    notify.add_argument("--notify-url", help="POST signed NCS notifications to this http(s) URL")
    notify.add_argument("--notify-secret", help="NCS secret that signs the notifications (required with --notify-url)")
    notify.add_argument(
        "--notify-timeout",
        type=float,
        default=NOTIFY_TIMEOUT,
        help=f"real seconds to wait for the receiver's answer (default {NOTIFY_TIMEOUT:g})",
    )
    notify.add_argument(
        "--notify-fault",
        action="append",
        choices=NOTIFICATION_TOGGLES,
        default=[],
        help="switch a notification fault on from the start (repeatable)",
    )
    notify.add_argument(
        "--notify-drop-event-type",
        action="append",
        type=int,
        default=[],
        metavar="EVENT_TYPE",
        help="never send notifications of this eventType (repeatable)",
    )
    return parser


def build_simulator(args: argparse.Namespace) -> AgoraSimulator:
    """The simulator the parsed command line describes (not started)."""
    simulator = AgoraSimulator(
        customer_id=args.customer_id,
        customer_secret=args.customer_secret,
        app_ids=args.app_ids or ("sim-app",),
        host=args.host,
        port=args.port,
        speed=args.speed,
        rate_limit_per_second=args.rate_limit or None,
        backlog=args.backlog,
        notify_url=args.notify_url,
        notify_secret=args.notify_secret,
        notify_timeout=args.notify_timeout,
        backup_delay=args.backup_delay,
    )
    for name in args.notify_fault:
        getattr(simulator.faults, name)(True)
    if args.notify_drop_event_type:
        simulator.faults.drop(event_types=args.notify_drop_event_type)
    return simulator


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
    if args.notify_url is not None:
        try:
            check_notify_url(args.notify_url)
        except ValueError as exc:
            parser.error(str(exc).replace("notify_url", "--notify-url"))
        if not args.notify_secret:
            parser.error("--notify-url needs --notify-secret")
    elif args.notify_secret or args.notify_fault or args.notify_drop_event_type:
        parser.error("--notify-secret and --notify-* faults need --notify-url")
    if args.notify_timeout <= 0:
        parser.error("--notify-timeout must be > 0")
    if not 0 <= args.backup_delay < float("inf"):
        parser.error("--backup-delay must be >= 0")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    simulator = build_simulator(args)
    try:
        simulator.start()
    except OSError as exc:
        print(f"cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Agora simulator listening on {simulator.url}", flush=True)
    if simulator.notify_url is not None:
        print(f"Sending notifications to {simulator.notify_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
