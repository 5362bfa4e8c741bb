"""Load benchmark: N deferred waits on one triggerer event loop against a 10 requests/s Agora account.

Scenario A ("ours") runs N ``AgoraRecordingQueryTrigger``s: one shared ``httpx.AsyncClient`` per
account and the process-wide request spacer. Scenario B ("anchor pattern") runs the same waits the
way Airflow's ``HttpSensorTrigger`` / ``DbtCloudRunJobTrigger`` poll: a new HTTP client session per
request, no shared limiter, ``poll_interval`` sleeps, tenacity retries like dbt's hook. Both decide
with the provider's own functions (``airflow_provider_agora._waiting``), so only the transport
pattern differs.

The Agora simulator runs in a separate process on loopback (so it shares neither the GIL nor the
event loop with what is measured), with fresh recordings created through its control API
(``POST /_simulator/recordings``) whose end times are spread uniformly over ``--window`` seconds.
Measured per scenario: 429s and peak requests in any sliding second (simulator's request log),
delay from each recording's end to its trigger event, RSS growth, CPU per poll, TCP connections
(simulator's accepted-connection counter). A script, not a test: nothing fails on timing.

    .venv/bin/python benchmarks/trigger_load.py            # Markdown table on stdout
    .venv/bin/python benchmarks/trigger_load.py --n 200 --window 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _harness as h

# Airflow reads AIRFLOW_HOME on import: give it a throw-away one before anything imports it.
_AIRFLOW_HOME = h.use_throwaway_airflow_home("agora-trigger-load-")

from airflow_provider_agora.simulator import max_in_sliding_second  # noqa: E402  (stdlib only)

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger, TriggerEvent

AGORA_RATE = h.AGORA_RATE
CONN_ID = h.CONN_ID
MAX_LISTED = 200  # 429 times / requests per wait kept in --json
WORST_LISTED = 5
MIB = 1024 * 1024
SimulatorProcess = h.SimulatorProcess


# -- scenario B: the anchor pattern -------------------------------------------------------------

# aiohttp (what HttpSensorTrigger and DbtCloudRunJobTrigger use) builds its default SSL context once
# per process; an httpx client builds a new one (loading the CA bundle, ~10 ms) unless given one.
# Sharing one keeps B's per-session cost at aiohttp's level: only the pattern is measured.
_SHARED_SSL_CONTEXT: ssl.SSLContext | None = None


def _anchor_trigger_class() -> type[BaseTrigger]:
    """Defined on first use, so that importing this script does not import Airflow."""
    import httpx
    import tenacity
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    from airflow_provider_agora._client.protocol import JSON_HEADERS, interpret_response, session_endpoint
    from airflow_provider_agora._client.retry import is_retryable
    from airflow_provider_agora._client.transport import USER_AGENT
    from airflow_provider_agora._compat import aget_connection
    from airflow_provider_agora._settings import settings_of
    from airflow_provider_agora._waiting import (
        Outcome,
        WaitMemory,
        WaitSpec,
        decide_on_answer,
        decide_on_error,
    )
    from airflow_provider_agora.exceptions import (
        AgoraConnectError,
        AgoraError,
        AgoraTimeoutError,
        AgoraTransportError,
    )

    class AnchorPatternTrigger(BaseTrigger):
        """``AgoraRecordingQueryTrigger``'s decisions over the HttpSensorTrigger/dbt transport pattern."""

        def __init__(
            self,
            *,
            resource_id: str,
            sid: str,
            recording_mode: str,
            target_status: int,
            poll_interval: float,
            end_time: float,
            agora_conn_id: str = CONN_ID,
        ) -> None:
            super().__init__()
            self.resource_id = resource_id
            self.sid = sid
            self.recording_mode = recording_mode
            self.target_status = target_status
            self.poll_interval = poll_interval
            self.end_time = end_time
            self.agora_conn_id = agora_conn_id

        def serialize(self) -> tuple[str, dict[str, Any]]:
            return (
                f"{type(self).__module__}.{type(self).__qualname__}",
                {
                    "resource_id": self.resource_id,
                    "sid": self.sid,
                    "recording_mode": self.recording_mode,
                    "target_status": self.target_status,
                    "poll_interval": self.poll_interval,
                    "end_time": self.end_time,
                    "agora_conn_id": self.agora_conn_id,
                },
            )

        async def _get_once(self, url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
            """One attempt in a brand-new client session, as ``async with aiohttp.ClientSession()`` does."""
            async with httpx.AsyncClient(
                headers=headers, timeout=timeout, verify=_SHARED_SSL_CONTEXT or True
            ) as session:
                try:
                    response = await session.get(url)
                except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                    raise AgoraConnectError(f"connect: {type(error).__name__}", url=url, operation="query") from error
                except httpx.TimeoutException as error:
                    raise AgoraTimeoutError(f"timeout: {type(error).__name__}", url=url, operation="query") from error
                except httpx.TransportError as error:
                    raise AgoraTransportError(
                        f"transport: {type(error).__name__}", url=url, operation="query"
                    ) from error
            return interpret_response("query", response.status_code, response.headers, response.content, sid=self.sid)

        async def run(self) -> AsyncIterator[TriggerEvent]:
            try:
                settings = settings_of(self.agora_conn_id, await aget_connection(self.agora_conn_id))
                spec = WaitSpec.checked(
                    resource_id=self.resource_id,
                    sid=self.sid,
                    recording_mode=self.recording_mode,
                    target_status=self.target_status,
                )
            except AgoraError as error:
                yield TriggerEvent({"status": "error", "message": str(error), "result": None})
                return
            endpoint = session_endpoint("query", settings.app_id or "", self.resource_id, self.sid, self.recording_mode)
            url = settings.base_urls[0] + endpoint.path
            headers = {**JSON_HEADERS, "User-Agent": USER_AGENT, "Authorization": settings.authorization}
            memory = WaitMemory()
            while time.time() < self.end_time:
                # dbt's hook: 3 attempts, exponential wait (1 s, 2 s, ... up to 8 s), on 429 and 5xx.
                retrying = tenacity.AsyncRetrying(
                    stop=tenacity.stop_after_attempt(3),
                    wait=tenacity.wait_exponential(multiplier=1, max=8),
                    retry=tenacity.retry_if_exception(is_retryable),
                    reraise=True,
                )
                try:
                    try:
                        body: dict[str, Any] = await retrying(self._get_once, url, headers, settings.timeout)
                    except AgoraError as error:
                        decision = decide_on_error(spec, memory, error, time.time())
                    else:
                        decision = decide_on_answer(spec, memory, body)
                except AgoraError as error:
                    yield TriggerEvent({"status": "error", "message": str(error), "result": memory.last_seen})
                    return
                memory = decision.memory
                self.log.info("%s", decision.message)
                if decision.outcome is Outcome.DONE:
                    yield TriggerEvent({"status": "success", "message": decision.message, "result": decision.result})
                    return
                if decision.outcome is Outcome.FAIL:
                    yield TriggerEvent({"status": "failure", "message": decision.message, "result": decision.result})
                    return
                await asyncio.sleep(self.poll_interval)
            yield TriggerEvent({"status": "timeout", "message": "timed out", "result": memory.last_seen})

    return AnchorPatternTrigger


# -- running one scenario -----------------------------------------------------------------------


@dataclass(frozen=True)
class WaitEnd:
    """One trigger's event: when it came (epoch s), what it said, about which recording."""

    at: float
    status: str
    sid: str
    end_time: float
    message: str = ""
    checkpoints: int = 0


@dataclass
class Scenario:
    """What one scenario measured; times are epoch seconds, sizes KiB, CPU seconds."""

    name: str
    n: int
    started_at: float = 0.0
    wall_seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    peak_per_second_all: int = 0
    peak_per_second_accepted: int = 0
    connections: int = 0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    peak_from_hwm: bool = False
    cpu_seconds: float = 0.0
    checkpoints: int = 0
    rate_limited_at: list[float] = field(default_factory=list)
    other_messages: list[str] = field(default_factory=list)
    worst: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[WaitEnd] = field(default_factory=list, repr=False)

    @property
    def rate_limited(self) -> int:
        return self.by_status.get("429", 0)

    @property
    def other_errors(self) -> int:
        return sum(count for status, count in self.by_status.items() if status not in ("200", "429"))

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_peak_kib - self.rss_before_kib) / 1024

    @property
    def cpu_ms_per_poll(self) -> float | None:
        return 1000 * self.cpu_seconds / self.requests if self.requests else None

    @property
    def cpu_ms_per_recording(self) -> float | None:
        return 1000 * self.cpu_seconds / self.n if self.n else None

    def summary(self, bound: float) -> dict[str, Any]:
        """Derived figures for the table and ``--json``."""
        worst = h.quantile(self.delays, 1.0)
        return {
            "delay_median_s": h.median(self.delays),
            "delay_p95_s": h.quantile(self.delays, 0.95),
            "delay_max_s": worst,
            "delay_max_over_bound": worst / bound if worst is not None else None,
            "http_429": self.rate_limited,
            "http_other_errors": self.other_errors,
            "rss_growth_mib": self.rss_growth_mib,
            "cpu_ms_per_poll": self.cpu_ms_per_poll,
            "cpu_ms_per_recording": self.cpu_ms_per_recording,
            "polls_per_recording": self.requests / self.n if self.n else None,
        }


async def _drive(trigger: BaseTrigger, recording: dict[str, Any], done: list[WaitEnd]) -> None:
    """Run one wait to its end (``_harness.run_wait_to_end``); note when it ended and how."""
    payload, checkpoints = await h.run_wait_to_end(trigger)
    status = str(payload.get("status"))
    message = "" if status == "success" else str(payload.get("message"))
    done.append(WaitEnd(time.time(), status, recording["sid"], float(recording["end_time"]), message, checkpoints))


async def _run_triggers(
    make: Callable[[dict[str, Any], float], BaseTrigger], recordings: list[dict[str, Any]], result: Scenario
) -> None:
    """Create every trigger, run them all on this loop, sample RSS meanwhile."""
    gc.collect()
    hwm_valid = h.reset_peak_rss()
    result.peak_from_hwm = hwm_valid
    result.rss_before_kib = h.proc_status_kib("VmRSS") or 0
    sampler = h.RssSampler()
    sampler.start()
    cpu_before = time.process_time()
    began = time.monotonic()
    done: list[WaitEnd] = []
    triggers = [(make(recording, result.started_at), recording) for recording in recordings]
    await asyncio.gather(*(_drive(trigger, recording, done) for trigger, recording in triggers))
    result.wall_seconds = time.monotonic() - began
    result.cpu_seconds = time.process_time() - cpu_before
    result.rss_peak_kib = await sampler.stop(hwm_valid)
    for outcome in done:
        result.events[outcome.status] = result.events.get(outcome.status, 0) + 1
    result.outcomes = done
    result.checkpoints = sum(o.checkpoints for o in done)
    result.other_messages = sorted({o.message for o in done if o.status != "success"})[:WORST_LISTED]
    result.delays = [o.at - o.end_time for o in done if o.status == "success"]
    await _close_shared_clients()


async def _close_shared_clients() -> None:
    """Close scenario A's shared client (a triggerer keeps it for its lifetime; a benchmark ends)."""
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook

    await AgoraAsyncHook.close_shared_clients()


def plain_httpx_cpu_ms(simulator: SimulatorProcess, bursts: int = 5) -> float:
    """CPU ms of one plain ``httpx`` keep-alive GET of ``query`` on this machine: the floor per request.

    Bursts of 10 a second apart, so the simulator's limit is never hit.
    """
    import httpx

    (recording,) = simulator.control("POST", "recordings", {"end_times": [time.time() + 3600]})
    url = (
        f"{simulator.url}/v1/apps/{simulator.app_id}/cloud_recording/resourceid/{recording['resource_id']}"
        f"/sid/{recording['sid']}/mode/mix/query"
    )

    async def measure() -> float:
        async with httpx.AsyncClient(auth=(simulator.customer_id, simulator.customer_secret)) as client:
            await client.get(url)  # connection set up outside the measurement
            await asyncio.sleep(1.05)
            began = time.process_time()
            for _ in range(bursts):
                for _ in range(AGORA_RATE):
                    (await client.get(url)).raise_for_status()
                await asyncio.sleep(1.05)
            return 1000 * (time.process_time() - began) / (bursts * AGORA_RATE)

    return asyncio.run(measure())


def _run_scenario(
    name: str,
    simulator: SimulatorProcess,
    make: Callable[[dict[str, Any], float], BaseTrigger],
    offsets: list[float],
    hold: float,
) -> Scenario:
    """Fresh recordings and counters, then one event loop running every trigger.

    ``make(recording, t0)`` builds one trigger; recordings end at ``t0 + offset``.
    """
    result = Scenario(name=name, n=len(offsets))
    t0 = time.time()
    result.started_at = t0
    recordings = simulator.control("POST", "recordings", {"end_times": [t0 + o for o in offsets], "hold": hold})
    simulator.control("DELETE", "requests")
    simulator.control("DELETE", "stats")
    asyncio.run(_run_triggers(make, recordings, result))
    stats = simulator.control("GET", "stats")
    result.connections = int(stats["connections_accepted"]) - 1  # minus this control request's own
    result.requests = int(stats["requests"])
    result.by_status = dict(stats["by_status"])
    log = simulator.control("GET", "requests")
    result.peak_per_second_all = max_in_sliding_second([r["time"] for r in log])
    result.peak_per_second_accepted = max_in_sliding_second([r["time"] for r in log if r["status"] != 429])
    result.rate_limited_at = [round(r["time"] - t0, 3) for r in log if r["status"] == 429][:MAX_LISTED]
    result.worst = _worst_waits(result, log)
    result.outcomes = []
    del log
    return result


def _worst_waits(result: Scenario, log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The longest waits with every request of theirs (seconds after T0, status): why they were late."""
    polls: dict[str, list[tuple[float, int]]] = {}
    for record in log:
        sid = record["path"].split("/sid/", 1)[-1].split("/", 1)[0]
        polls.setdefault(sid, []).append((round(record["time"] - result.started_at, 2), int(record["status"])))
    ranked = sorted(result.outcomes, key=lambda o: o.at - o.end_time, reverse=True)[:WORST_LISTED]
    return [
        {
            "delay_s": round(o.at - o.end_time, 2),
            "status": o.status,
            "end_at": round(o.end_time - result.started_at, 2),
            "event_at": round(o.at - result.started_at, 2),
            "requests": polls.get(o.sid, [])[-MAX_LISTED:],
        }
        for o in ranked
    ]


# -- report ---------------------------------------------------------------------------------------


def _events_cell(events: dict[str, int]) -> str:
    success, timeout = events.get("success", 0), events.get("timeout", 0)
    return f"{success} / {timeout} / {sum(events.values()) - success - timeout}"


def markdown(meta: dict[str, Any], a: Scenario, b: Scenario) -> str:
    """Both scenarios side by side, plus the run's parameters and the machine."""
    bound = meta["bound_seconds"]
    sa, sb = a.summary(bound), b.summary(bound)
    rows: list[tuple[str, Any, Any, int]] = [
        ("Events: success / timeout / other", None, None, 0),
        ("Checkpoint events (trigger re-deferred with its memory)", a.checkpoints, b.checkpoints, 0),
        ("HTTP requests sent (polls + retries)", a.requests, b.requests, 0),
        ("Requests per recording", sa["polls_per_recording"], sb["polls_per_recording"], 1),
        ("**429 answers** (target 0)", a.rate_limited, b.rate_limited, 0),
        ("Other non-200 answers", a.other_errors, b.other_errors, 0),
        ("**Peak requests in any 1 s** (all answers; target ≤ 10)", a.peak_per_second_all, b.peak_per_second_all, 0),
        ("Peak accepted (non-429) requests in any 1 s", a.peak_per_second_accepted, b.peak_per_second_accepted, 0),
        ("Delay end → event, median (s)", sa["delay_median_s"], sb["delay_median_s"], 1),
        ("Delay end → event, p95 (s)", sa["delay_p95_s"], sb["delay_p95_s"], 1),
        ("**Delay end → event, max (s)**", sa["delay_max_s"], sb["delay_max_s"], 1),
        (
            f"Max delay / bound N/10 = {bound:g} s (target ≤ 1.1)",
            sa["delay_max_over_bound"],
            sb["delay_max_over_bound"],
            2,
        ),
        ("**RSS growth, peak - before (MiB)** (target < 30)", sa["rss_growth_mib"], sb["rss_growth_mib"], 1),
        ("Process CPU time (s)", a.cpu_seconds, b.cpu_seconds, 1),
        ("**CPU per request (ms)**", sa["cpu_ms_per_poll"], sb["cpu_ms_per_poll"], 2),
        ("CPU per recording waited for (ms)", sa["cpu_ms_per_recording"], sb["cpu_ms_per_recording"], 1),
        ("**TCP connections opened**", a.connections, b.connections, 0),
        ("Wall time of the scenario (s)", a.wall_seconds, b.wall_seconds, 0),
    ]
    lines = [
        f"Trigger load benchmark, {meta['date']}: N = {meta['n']} recordings, end times uniform in "
        f"[T0 + {meta['lead']:g} s, T0 + {meta['lead']:g} s + W], W = {meta['window']:g} s, poll_interval = "
        f"{meta['poll_interval']:g} s, trigger timeout at T0 + {meta['deadline']:g} s, target_status = 6.",
        f"Machine: {meta['cores']} cores, {meta['platform']}, Python {meta['python']}, apache-airflow "
        f"{meta['airflow']}, httpx {meta['httpx']}; load average before the run {meta['loadavg']}. "
        f"A plain httpx keep-alive GET of query costs {meta['plain_httpx_cpu_ms']:.2f} ms CPU here.",
        f"Lower bound on the worst delay at 10 requests/s: N/10 = {bound:g} s (the provider's spacer "
        f"slots are 1.02/10 s apart, so its round-robin takes N x 0.102 = {bound * 1.02:g} s).",
        "",
        "| Metric | A: ours (shared client + spacer) | B: anchor pattern (session per poll) | B/A |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, va, vb, digits in rows:
        if va is None and vb is None and label.startswith("Events"):
            cells = [_events_cell(ev) for ev in (a.events, b.events)]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} | |")
            continue
        fa = h.fmt(va if not isinstance(va, float) or digits else round(va), digits)
        fb = h.fmt(vb if not isinstance(vb, float) or digits else round(vb), digits)
        lines.append(f"| {label} | {fa} | {fb} | {h.ratio(vb, va)} |")
    censored = b.events.get("timeout", 0) + a.events.get("timeout", 0)
    if censored:
        lines += [
            "",
            f"Delays count successful events only; {a.events.get('timeout', 0)} (A) and {b.events.get('timeout', 0)} "
            f"(B) waits timed out at T0 + {meta['deadline']:g} s, so their delay is more than "
            f"{meta['deadline'] - meta['lead'] - meta['window']:g} s and the max understates the tail.",
        ]
    if a.rate_limited:
        shown = ", ".join(f"{t:g}" for t in a.rate_limited_at[:20])
        lines += ["", f"A's 429s arrived at T0 + {shown} s."]
    if a.worst:
        lines += ["", "A's longest waits (their requests: seconds after T0, HTTP status):", ""]
        for wait in a.worst:
            requests = ", ".join(f"{t:g}:{status}" for t, status in wait["requests"])
            lines.append(f"- delay {wait['delay_s']:g} s, recording ended at T0 + {wait['end_at']:g} s: {requests}")
    if not (a.peak_from_hwm and b.peak_from_hwm):
        lines += ["", f"Peak RSS sampled every {h.RSS_SAMPLE_SECONDS * 1000:g} ms (VmHWM not resettable here)."]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = h.argument_parser(__doc__)
    parser.add_argument("--n", type=int, default=1000, help="recordings / concurrent triggers (default 1000)")
    parser.add_argument(
        "--window", type=float, default=60.0, help="W: end times spread uniformly over this many seconds (default 60)"
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help="trigger poll_interval, s (default 1)")
    parser.add_argument("--lead", type=float, default=10.0, help="first end time is T0 + lead seconds (default 10)")
    parser.add_argument(
        "--slack",
        type=float,
        default=None,
        help="trigger timeout = T0 + lead + W + slack (default 1.5 * N/10 s, room for one full round and a half)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the end-time offsets (same for A and B)")
    parser.add_argument(
        "--scenarios", default="AB", help="which to run, in order: A, B or AB (default AB; the table needs both)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (parameters, both scenarios) instead; the table goes to stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run A then B against one simulator process (fresh recordings and counters each) and report."""
    args = _parser().parse_args(argv)
    if args.n < 1 or args.window < 0 or args.poll_interval <= 0 or args.lead < 0:
        _parser().error("need --n >= 1, --window >= 0, --poll-interval > 0, --lead >= 0")
    scenarios = args.scenarios.upper()
    if not scenarios or set(scenarios) - {"A", "B"}:
        _parser().error("--scenarios takes A, B or AB")
    bound = args.n / AGORA_RATE
    slack = args.slack if args.slack is not None else 1.5 * bound
    deadline = args.lead + args.window + slack
    rng = random.Random(args.seed)
    offsets = [args.lead + rng.uniform(0.0, args.window) for _ in range(args.n)]

    global _SHARED_SSL_CONTEXT
    import httpx

    from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger

    _SHARED_SSL_CONTEXT = httpx.create_ssl_context()
    anchor_class = _anchor_trigger_class()
    h.silence_logs()

    meta: dict[str, Any] = {
        **h.run_meta(),
        "n": args.n,
        "window": args.window,
        "lead": args.lead,
        "poll_interval": args.poll_interval,
        "deadline": deadline,
        "bound_seconds": bound,
        "seed": args.seed,
        "httpx": httpx.__version__,
        "loadavg": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    # --backlog 4096: scenario B opens hundreds of new connections at once.
    simulator = SimulatorProcess(backlog=4096)
    results: dict[str, Scenario] = {}
    meta["plain_httpx_cpu_ms"] = None
    with h.terminate_on_sigterm():
        try:
            simulator.start()
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = simulator.connection_json()
            meta["plain_httpx_cpu_ms"] = plain_httpx_cpu_ms(simulator)
            hold = deadline + 600.0  # still at a terminal status for any poll before the timeout

            def maker(trigger_class: type[BaseTrigger]) -> Callable[[dict[str, Any], float], BaseTrigger]:
                """The same wait for either scenario: only the trigger class differs."""

                def make(recording: dict[str, Any], t0: float) -> BaseTrigger:
                    return trigger_class(
                        resource_id=recording["resource_id"],
                        sid=recording["sid"],
                        recording_mode="mix",
                        target_status=6,
                        poll_interval=args.poll_interval,
                        end_time=t0 + deadline,
                    )

                return make

            makers = {
                "A": ("A: ours", maker(AgoraRecordingQueryTrigger)),
                "B": ("B: anchor pattern", maker(anchor_class)),
            }
            for key in scenarios:
                name, maker = makers[key]
                print(f"running {name}: N={args.n}, W={args.window:g} s ...", file=sys.stderr, flush=True)
                results[key] = _run_scenario(name, simulator, maker, offsets, hold)
                print(f"  done in {results[key].wall_seconds:.0f} s", file=sys.stderr, flush=True)
        finally:
            simulator.stop()
            shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)

    table = markdown(meta, results["A"], results["B"]) if "A" in results and "B" in results else None
    if args.json:
        document = {
            "meta": meta,
            "scenarios": {key: {**asdict(result), **result.summary(bound)} for key, result in results.items()},
        }
        print(json.dumps(document, indent=2))
        if table is not None:
            print(table, file=sys.stderr)  # the same run as a table, for the record
    elif table is not None:
        print(table)
    else:
        for result in results.values():
            print(json.dumps({"name": result.name, **result.summary(bound)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
