"""Import cost of provider modules on top of ``import airflow.sdk``.

Why: Airflow's DAG processor re-imports every DAG file again and again, so whatever a provider
module costs at import time is paid on every parse. This script measures what importing a module
adds *after* ``import airflow.sdk`` (which every DAG file pays anyway), for our sensor and hook and
for two comparable sensors from Apache's own providers (HTTP, dbt Cloud).

Method, per module:

* ``--repeat`` fresh interpreters (``sys.executable``), run round-robin across the modules so that
  machine noise hits all of them alike, after ``--warmup`` discarded rounds (these write the
  ``.pyc`` files and Airflow's config). Each one imports ``airflow.sdk``, then times
  ``importlib.import_module(module)`` with ``time.perf_counter()``: interpreter start-up and
  ``airflow.sdk`` itself are excluded. The import's process CPU time goes into ``--json`` too
  (wall time minus CPU time shows waiting for a core). It also reports how many entries ``sys.modules`` gained and
  which HTTP client libraries were newly loaded.
* one ``python -X importtime`` run as a cross-check: the sum of the self times of the modules
  loaded after ``airflow.sdk``, and the cumulative time of the module's own line.

All children share one throw-away ``AIRFLOW_HOME`` so that nothing is written to the user's.
A module whose distribution is not installed is reported as "not installed", not as a failure.
This is a benchmark: it asserts nothing about the figures.

Usage: ``python benchmarks/import_cost.py [--repeat N] [--warmup N] [--json]``
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import _harness as h

BASELINE = "airflow.sdk"
HTTP_LIBS: tuple[str, ...] = ("requests", "urllib3", "aiohttp", "httpx")


@dataclass(frozen=True)
class Target:
    """One module to measure and the distribution that ships it."""

    label: str
    module: str
    distribution: str


TARGETS: tuple[Target, ...] = (
    Target("AgoraRecordingQuerySensor (ours)", "airflow_provider_agora.sensors.agora", "airflow-provider-agora"),
    Target("AgoraHook (ours)", "airflow_provider_agora.hooks.agora", "airflow-provider-agora"),
    Target("HttpSensor", "airflow.providers.http.sensors.http", "apache-airflow-providers-http"),
    Target("DbtCloudJobRunSensor", "airflow.providers.dbt.cloud.sensors.dbt", "apache-airflow-providers-dbt-cloud"),
)

# Runs in a fresh interpreter: argv[1] is the module. Prints one JSON object on stdout.
TIMING_CHILD = """
import importlib, json, sys, time
module = sys.argv[1]
http_libs = sys.argv[2].split(",")
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
before = set(sys.modules)
try:
    c2, t2 = time.process_time(), time.perf_counter()
    importlib.import_module(module)
    t3, c3 = time.perf_counter(), time.process_time()
except ModuleNotFoundError as exc:
    parts = module.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    status = "not installed" if exc.name in prefixes else "error: " + repr(exc)
    print(json.dumps({"status": status}))
    sys.exit(0)
new = set(sys.modules) - before
print(json.dumps({
    "status": "ok",
    "baseline_ms": (t1 - t0) * 1000,
    "import_ms": (t3 - t2) * 1000,
    "import_cpu_ms": (c3 - c2) * 1000,
    "new_modules": len(new),
    "http_libs_new": sorted(lib for lib in http_libs if lib in new),
    "http_libs_before": sorted(lib for lib in http_libs if lib in before),
}))
"""

# Runs under ``-X importtime``. ``__import__`` goes through the C import path that -X importtime
# instruments; ``importlib.import_module`` does not (the module's own line would be missing).
MARK_START = "@@import-cost-start@@"
MARK_END = "@@import-cost-end@@"
IMPORTTIME_CHILD = f"""
import os, sys
import airflow.sdk
os.write(2, b"{MARK_START}\\n")
__import__(sys.argv[1])
os.write(2, b"{MARK_END}\\n")
"""


@dataclass
class Result:
    """Figures for one target; ``status`` is ``ok``, ``not installed`` or ``error: ...``."""

    label: str
    module: str
    distribution: str
    version: str | None
    status: str = "ok"
    samples_ms: list[float] = field(default_factory=list)
    cpu_samples_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_cpu_ms: float | None = None
    new_modules: int | None = None
    http_libs_new: list[str] = field(default_factory=list)
    http_libs_before: list[str] = field(default_factory=list)
    importtime_self_sum_ms: float | None = None
    importtime_cumulative_ms: float | None = None
    importtime_modules: int | None = None


def distribution_version(name: str) -> str | None:
    """Installed version of ``name``, or None (read from metadata: imports nothing)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_child(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable`` with ``args``, capturing text output."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)


def time_once(module: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter: import airflow.sdk, then time the import of ``module``."""
    proc = run_child(["-c", TIMING_CHILD, module, ",".join(HTTP_LIBS)], env)
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"error: exit {proc.returncode}: {tail}"}
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def parse_importtime(stderr: str, module: str) -> tuple[float, float | None, int]:
    """Sum of self times, the module's cumulative time (ms) and the line count between the marks."""
    self_us = 0
    cumulative_us: int | None = None
    count = 0
    inside = False
    for line in stderr.splitlines():
        if line == MARK_START:
            inside = True
            continue
        if line == MARK_END:
            break
        if not inside or not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        self_us += int(fields[0])
        count += 1
        if fields[2].strip() == module:
            cumulative_us = int(fields[1])
    return self_us / 1000, (cumulative_us / 1000 if cumulative_us is not None else None), count


def importtime_once(module: str, env: dict[str, str]) -> tuple[float, float | None, int] | None:
    """One ``-X importtime`` run; None if the child failed."""
    proc = run_child(["-X", "importtime", "-c", IMPORTTIME_CHILD, module], env)
    if proc.returncode != 0:
        return None
    return parse_importtime(proc.stderr, module)


def measure(targets: tuple[Target, ...], repeat: int, warmup: int) -> tuple[list[Result], list[float]]:
    """Measure every target; also return the ``import airflow.sdk`` times seen by the children."""
    results = [Result(t.label, t.module, t.distribution, distribution_version(t.distribution)) for t in targets]
    baseline_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="import-cost-airflow-home-") as airflow_home:
        env = {**os.environ, "AIRFLOW_HOME": airflow_home}
        # Whether a module is installed is the child's call (a source checkout on sys.path counts).
        for round_no in range(warmup + repeat):
            for r in results:
                if r.status != "ok":
                    continue
                data = time_once(r.module, env)
                if data["status"] != "ok":
                    r.status = data["status"]
                    continue
                if round_no < warmup:
                    continue
                r.samples_ms.append(data["import_ms"])
                r.cpu_samples_ms.append(data["import_cpu_ms"])
                baseline_ms.append(data["baseline_ms"])
                r.new_modules = data["new_modules"]
                r.http_libs_new = data["http_libs_new"]
                r.http_libs_before = data["http_libs_before"]
        for r in results:
            if r.status != "ok" or not r.samples_ms:
                continue
            r.median_ms = h.median(r.samples_ms)
            r.min_ms = min(r.samples_ms)
            r.max_ms = max(r.samples_ms)
            r.median_cpu_ms = h.median(r.cpu_samples_ms)
            cross = importtime_once(r.module, env)
            if cross is not None:
                r.importtime_self_sum_ms, r.importtime_cumulative_ms, r.importtime_modules = cross
    return results, baseline_ms


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "apache-airflow": distribution_version("apache-airflow"),
        "apache-airflow-task-sdk": distribution_version("apache-airflow-task-sdk"),
    }


def markdown(results: list[Result], baseline_ms: list[float], repeat: int) -> str:
    """The results as a Markdown table plus one line of context."""
    head = (
        "| Module | Distribution | Median ms | Min-max ms | New modules | HTTP libs newly loaded "
        "| -X importtime self-sum / cumulative ms |"
    )
    lines = [head, "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for r in results:
        dist = f"{r.distribution} {r.version}" if r.version else r.distribution
        if r.status != "ok":
            lines.append(f"| `{r.module}` | {dist} | {r.status} | | | | |")
            continue
        libs = ", ".join(r.http_libs_new) or "none"
        cross = f"{h.fmt(r.importtime_self_sum_ms, 1)} / {h.fmt(r.importtime_cumulative_ms, 1)}"
        lines.append(
            f"| `{r.module}` | {dist} | {h.fmt(r.median_ms, 1)} | {h.fmt(r.min_ms, 1)}-{h.fmt(r.max_ms, 1)} "
            f"| {r.new_modules} | {libs} | {cross} |"
        )
    env = environment()
    already = sorted({lib for r in results for lib in r.http_libs_before})
    baseline = h.fmt(h.median(baseline_ms), 1)
    lines.append("")
    lines.append(
        f"{repeat} fresh interpreters per module; Python {env['python']}, apache-airflow {env['apache-airflow']}, "
        f"{env['cpus']} CPUs, 1-min load average at the end {env['load_average_1m']}. "
        f"`import {BASELINE}` itself: median {baseline} ms; "
        f"HTTP libs it had already loaded: {', '.join(already) or 'none'}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=15, help="timed fresh interpreters per module (default 15)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds before timing (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    results, baseline_ms = measure(TARGETS, args.repeat, args.warmup)
    if args.json:
        payload = {
            "environment": environment(),
            "repeat": args.repeat,
            "warmup": args.warmup,
            "baseline": {
                "module": BASELINE,
                "median_ms": h.median(baseline_ms),
            },
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(markdown(results, baseline_ms, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
