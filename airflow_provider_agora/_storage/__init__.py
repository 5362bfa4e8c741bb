"""Where Agora writes a recording's files, and what the files say, as pure functions.

``locations`` turns Agora's ``storageConfig`` (or a URI) into a ``StorageLocation`` that knows each
file's object key, the URI Airflow's ``ObjectStoragePath`` reads it with, its console link and its
OpenLineage name; ``playlists`` reads Agora's HLS playlists. Only the standard library is imported,
because this code is imported while DAG files are parsed; reading the bucket happens elsewhere.
"""
