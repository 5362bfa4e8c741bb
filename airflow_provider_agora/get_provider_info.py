"""Provider metadata read by Airflow's providers manager.

Every Airflow component imports this, so it imports nothing but the form declaration, which is
plain data.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_agora import __version__
from airflow_provider_agora._connection_form import (
    CONN_FIELDS,
    CONNECTION_TYPE,
    HOOK_NAME,
    UI_FIELD_BEHAVIOUR,
)

_INTEGRATION = "Agora Cloud Recording"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-agora",
        "name": "Agora Cloud Recording",
        "description": "Hooks, sensors, triggers and operators for `Agora Cloud Recording "
        "<https://docs.agora.io/en/cloud-recording/overview/product-overview>`__.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.agora.io/en/cloud-recording/rest-api/overview",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_agora.hooks.agora"]}],
        "sensors": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_agora.sensors.agora"]}],
        "triggers": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_agora.triggers.agora"]}],
        "operators": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_agora.operators.agora"]}],
        "extra-links": ["airflow_provider_agora.links.AgoraRecordingStorageLink"],
        "config": {
            "agora": {
                "description": "Settings of the Agora Cloud Recording provider.",
                "options": {
                    "notifications_receiver": {
                        "description": "Mount the receiver of Agora's notifications (POST /agora/ncs/<conn_id>) "
                        "in Airflow 3's API server. Off by default: the route is reachable without Airflow's "
                        "authentication (the notification's signature is the authentication), so enable it "
                        "only where Agora must reach it.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    }
                },
            }
        },
        "connection-types": [
            {
                "connection-type": CONNECTION_TYPE,
                "hook-class-name": "airflow_provider_agora.hooks.agora.AgoraHook",
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
