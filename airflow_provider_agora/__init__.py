"""Apache Airflow provider for Agora Cloud Recording.

Nothing is imported here on purpose: Airflow imports provider packages while it parses DAG files,
so the package root must stay free of work.
"""

__version__ = "0.1.0"
