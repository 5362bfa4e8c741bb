"""The provider's metadata and connection form, as Airflow reads them (in process; the CLI checks
are in ``tests/integration/test_provider.py``)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_agora._connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_agora.get_provider_info import get_provider_info
from airflow_provider_agora.hooks.agora import AgoraHook


def test_provider_info_is_valid_for_airflow() -> None:
    import jsonschema

    try:
        from airflow._shared.providers_discovery import providers_discovery as discovery

        schema_path = Path(discovery.__file__).parent / "provider_info.schema.json"
        schema = json.loads(schema_path.read_text()) if schema_path.exists() else None
    except ImportError:
        schema = None
    if schema is None:
        import airflow

        schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


# -- the two declarations of the connection form cannot drift apart ----------------------------


def test_ui_field_behaviour_matches_provider_info() -> None:
    (declared,) = get_provider_info()["connection-types"]
    legacy = AgoraHook.get_ui_field_behaviour()
    assert legacy["hidden_fields"] == declared["ui-field-behaviour"]["hidden-fields"]
    assert legacy["relabeling"] == declared["ui-field-behaviour"]["relabeling"]
    assert legacy["placeholders"] == declared["ui-field-behaviour"]["placeholders"]
    assert declared["ui-field-behaviour"] == UI_FIELD_BEHAVIOUR
    assert declared["conn-fields"] == CONN_FIELDS


class _Field:
    """What Airflow 3.0/3.1's UI substitutes for wtforms fields when it reads hook widgets."""

    def __init__(self, label: Any, description: str | None = None, widget: Any = None, validators: Any = ()) -> None:
        self.label = label
        self.description = description
        self.validators = list(validators)


def _mocked_form_modules() -> dict[str, types.ModuleType]:
    modules = {
        name: types.ModuleType(name)
        for name in (
            "flask_appbuilder",
            "flask_appbuilder.fieldwidgets",
            "flask_babel",
            "wtforms",
            "wtforms.validators",
        )
    }
    modules["flask_appbuilder.fieldwidgets"].BS3TextFieldWidget = type("BS3TextFieldWidget", (), {})  # type: ignore[attr-defined]
    modules["flask_appbuilder.fieldwidgets"].BS3PasswordFieldWidget = type("BS3PasswordFieldWidget", (), {})  # type: ignore[attr-defined]
    modules["flask_babel"].lazy_gettext = lambda text: text  # type: ignore[attr-defined]
    modules["wtforms"].StringField = type("StringField", (_Field,), {})  # type: ignore[attr-defined]
    modules["wtforms"].IntegerField = type("IntegerField", (_Field,), {})  # type: ignore[attr-defined]
    modules["wtforms"].PasswordField = type("PasswordField", (_Field,), {})  # type: ignore[attr-defined]
    modules["wtforms.validators"].Optional = type("Optional", (), {})  # type: ignore[attr-defined]
    modules["wtforms.validators"].NumberRange = lambda **kw: ("NumberRange", kw)  # type: ignore[attr-defined]
    return modules


def test_connection_form_widgets_match_conn_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import wtforms  # noqa: F401  (Airflow 2.x: the real thing)
    except ImportError:  # Airflow 3.x: mocked, the way Airflow 3.0/3.1's UI reads them
        for name, module in _mocked_form_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
    widgets = AgoraHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    kinds = {"string": "StringField", "integer": "IntegerField", "number": "StringField"}
    for name, spec in CONN_FIELDS.items():
        field = widgets[name]
        field_args = getattr(field, "args", None) or (field.label,)
        assert str(field_args[0]) == spec["label"]
        json_type = next(t for t in spec["schema"]["type"] if t != "null")
        expected = "PasswordField" if spec["schema"].get("format") == "password" else kinds[json_type]
        # wtforms gives an unbound field that names its class; Airflow 3's mocks give the class itself
        assert getattr(field, "field_class", type(field)).__name__ == expected
