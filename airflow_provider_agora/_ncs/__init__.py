"""Agora's Notification Center Service (NCS): notifications received, kept and read.

``receiver`` is the HTTP route Agora posts to (verifies, stores), ``receiver_connections`` finds
the ``agora`` connection a request names within a bounded budget, ``store`` keeps verified
notifications in Redis, and ``reader`` follows them for deferred waits. The notification model
itself is public: ``airflow_provider_agora.notifications``.
"""
