"""Registration as a real Airflow provider, checked through Airflow's own CLI and schema."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_cli(*args: str) -> str:
    result = subprocess.run([AIRFLOW, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_providers_get_shows_the_package() -> None:
    out = airflow_cli("providers", "get", "airflow-provider-agora", "-o", "json")
    (entry,) = json.loads(out)
    assert entry["Provider"] == "airflow-provider-agora"
    assert entry["Version"] == metadata.version("airflow-provider-agora")  # the installed distribution's


def test_providers_hooks_lists_the_agora_connection_type() -> None:
    rows = json.loads(airflow_cli("providers", "hooks", "-o", "json"))
    (agora,) = [row for row in rows if row["connection_type"] == "agora"]
    assert agora["class"] == "airflow_provider_agora.hooks.agora.AgoraHook"
    assert agora["conn_id_attribute_name"] == "agora_conn_id"


def test_providers_widgets_shows_the_extra_fields() -> None:
    rows = json.loads(airflow_cli("providers", "widgets", "-o", "json"))
    ours = {row["connection_parameter_name"] for row in rows if row["package_name"] == "airflow-provider-agora"}
    assert {"extra__agora__app_id", "extra__agora__max_requests_per_second", "extra__agora__timeout"} <= ours


def test_providers_behaviours_relabels_the_standard_fields() -> None:
    assert "agora" in airflow_cli("providers", "behaviours").split()
    code = (
        "import json; from airflow.providers_manager import ProvidersManager;"
        "print(json.dumps(ProvidersManager().field_behaviours['agora']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    behaviour = json.loads(out.strip().splitlines()[-1])
    assert behaviour["relabeling"] == {"login": "Customer ID", "password": "Customer Secret", "host": "API host"}
    assert set(behaviour["hidden_fields"]) == {"schema", "port"}


def test_get_provider_info_imports_nothing_but_its_own_declarations() -> None:
    code = (
        "import sys; from airflow_provider_agora.get_provider_info import get_provider_info; get_provider_info();"
        "print(sorted(m for m in sys.modules if m.startswith(('airflow', 'requests', 'tenacity'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == [
        "airflow_provider_agora",
        "airflow_provider_agora._connection_form",
        "airflow_provider_agora.get_provider_info",
    ]


def test_importing_the_provider_after_airflow_sdk_imports_only_the_provider() -> None:
    """Airflow parses DAG files constantly: requests and the HTTP stack load on first use only."""
    import airflow

    # What a DAG file has imported before it imports a provider: the Task SDK, or on Airflow 2 the sensor base.
    baseline = "airflow.sdk" if airflow.__version__.startswith("3") else "airflow.sensors.base"
    code = (
        f"import sys, json, {baseline}; before = set(sys.modules);"
        "import airflow_provider_agora.sensors.agora, airflow_provider_agora.hooks.agora;"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added = json.loads(out.strip().splitlines()[-1])
    assert [m for m in added if not m.startswith(("airflow_provider_agora", "airflow."))] == []
    assert not [m for m in added if m.split(".")[0] in ("requests", "urllib3", "httpx", "tenacity")]


def test_the_notification_receiver_option_is_declared_and_off_by_default() -> None:
    import os

    assert airflow_cli("config", "get-value", "agora", "notifications_receiver").strip() == "False"
    env = {**os.environ, "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True"}
    result = subprocess.run(
        [AIRFLOW, "config", "get-value", "agora", "notifications_receiver"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "True")
