"""Airflow plugins of the provider (Airflow 3: the notification receiver in the API server)."""
