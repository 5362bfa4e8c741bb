"""The one declaration of the ``agora`` connection form.

Airflow reads connection forms from two places: provider info (``conn-fields`` and
``ui-field-behaviour``, read by Airflow 3.2+ without importing the hook) and the hook's
classmethods (Airflow 2.x and 3.0/3.1). Both are generated from the dictionaries below so they
cannot drift apart. This module is imported by ``get_provider_info`` and must stay dependency-free:
the form libraries are imported inside ``connection_form_widgets`` only.
"""

from __future__ import annotations

import importlib
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
        "redis_conn_id": "redis_default",
        "redis_fallback_share": "0.1",
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
        "description": "Default 10, Agora's limit. Shared by every task and trigger of one process, or of the "
        "whole deployment with a Redis connection below.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Default 30. Timeout of one HTTP request; a synchronous stop can take up to 20 seconds.",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "redis_conn_id": {
        "label": "Redis connection id (shared budget)",
        "description": "Optional: a connection of type redis. Every process of the deployment then shares one "
        "request budget for this account (needs airflow-provider-agora[redis]).",
        "schema": {"type": ["string", "null"]},
    },
    "ncs_secret": {
        "label": "Notification secret (NCS)",
        "description": "Optional: the Secret of Cloud Recording's notifications in Agora Console. Agora then posts "
        "recording events to /agora/ncs/<this connection id> on Airflow 3's API server (needs a Redis connection).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "ncs_previous_secret": {
        "label": "Previous notification secret",
        "description": "Optional: while you rotate the secret in Agora Console, the old one is accepted too.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "redis_fallback_share": {
        "label": "Share per process while Redis is down",
        "description": "Default 0.1: while Redis cannot be reached, each process keeps to this share of "
        "Max requests per second.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    },
}


def legacy_ui_field_behaviour() -> dict[str, Any]:
    """The same form behaviour in the snake_case spelling of ``get_ui_field_behaviour``."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
    }


def _optional_attribute(module: str, name: str) -> Any:
    """``module.name`` if that imports, else None. Read at call time, so that Airflow's mocks apply."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def connection_form_widgets() -> dict[str, Any]:
    """``CONN_FIELDS`` as WTForms fields: what ``AgoraHook.get_connection_form_widgets`` returns.

    Airflow 2.x renders these with Flask-AppBuilder. The API servers of Airflow 3.0 and 3.1 call
    this with wtforms, flask_babel and flask_appbuilder patched by mocks; 3.1 mocks the missing
    modules too, 3.0 only patches the ones that are installed. So each form library is optional
    here: without flask_babel a label is a plain string, without flask_appbuilder a field keeps
    wtforms' default widget, and without wtforms there are no extra fields ({}). This never raises
    ImportError: Airflow 3.0 would then also drop the hook's relabelings, hidden fields and
    placeholders (``get_ui_field_behaviour``).
    """
    try:
        from wtforms import IntegerField, PasswordField, StringField
        from wtforms.validators import NumberRange, Optional
    except ImportError:
        return {}
    lazy_gettext = _optional_attribute("flask_babel", "lazy_gettext") or str
    text_widget = _optional_attribute("flask_appbuilder.fieldwidgets", "BS3TextFieldWidget")
    password_widget = _optional_attribute("flask_appbuilder.fieldwidgets", "BS3PasswordFieldWidget")

    kinds = {"string": StringField, "integer": IntegerField, "number": StringField}
    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        json_type = next(t for t in spec["schema"]["type"] if t != "null")
        validators = [Optional()]
        if json_type == "integer" and "minimum" in spec["schema"]:
            validators.append(NumberRange(min=spec["schema"]["minimum"]))
        options: dict[str, Any] = {"description": spec.get("description"), "validators": validators}
        is_secret = spec["schema"].get("format") == "password"
        widget = password_widget if is_secret else text_widget
        if widget is not None:
            options["widget"] = widget()
        field_class = PasswordField if is_secret else kinds[json_type]
        widgets[name] = field_class(lazy_gettext(spec["label"]), **options)
    return widgets
