"""The one declaration of the ``agora`` connection form.

Airflow reads connection forms from two places: provider info (``conn-fields`` and
``ui-field-behaviour``, read by Airflow 3.2+ without importing the hook) and the hook's
classmethods (Airflow 2.x and 3.0/3.1). Both are generated from the dictionaries below so they
cannot drift apart. This module is imported by ``get_provider_info`` and must stay dependency-free.
"""

from __future__ import annotations

from typing import Any

CONNECTION_TYPE = "agora"
HOOK_NAME = "Agora Cloud Recording"
DEFAULT_CONN_ID = "agora_default"
DEFAULT_HOST = "https://api.agora.io"
DEFAULT_MAX_REQUESTS_PER_SECOND = 10
DEFAULT_TIMEOUT_SECONDS = 30.0

# Declarative form, in provider-info (kebab-case) spelling.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "login": "Customer ID",
        "password": "Customer Secret",
        "host": "API host",
    },
    "placeholders": {
        "login": "Customer ID from Agora Console > Developer Toolkit > RESTful API",
        "password": "Customer Secret (downloadable once from Agora Console)",
        "host": DEFAULT_HOST,
        "app_id": "32-character App ID with Cloud Recording enabled",
        "max_requests_per_second": str(DEFAULT_MAX_REQUESTS_PER_SECOND),
        "timeout": str(int(DEFAULT_TIMEOUT_SECONDS)),
    },
}

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "app_id": {
        "label": "App ID",
        "description": "Agora App ID used when a task does not pass app_id itself.",
        "schema": {"type": ["string", "null"]},
    },
    "max_requests_per_second": {
        "label": "Max requests per second",
        "description": "Default 10, Agora's limit. Every task and trigger of one process shares this budget.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Default 30. Timeout of one HTTP request; a synchronous stop can take up to 20 seconds.",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
}


def legacy_ui_field_behaviour() -> dict[str, Any]:
    """The same form behaviour in the snake_case spelling of ``get_ui_field_behaviour``."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
    }
