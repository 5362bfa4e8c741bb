"""Header of the compatibility run: which Airflow and which of its key dependencies it checks."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "apache-airflow",
    "apache-airflow-core",
    "apache-airflow-task-sdk",
    "fastapi",
    "pydantic",
    "cadwyn",
    "svcs",
    "sqlalchemy",
    "wtforms",
    "flask-appbuilder",
)


def installed(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return f"{name}: not installed"


def pytest_report_header() -> str:
    return "compat: " + ", ".join(installed(name) for name in PACKAGES)
