"""The REST client: what the hooks send to Agora and how.

``protocol`` builds requests and reads answers (pure), ``retry`` says what is retried,
``budget`` keeps one account's requests within Agora's limit in this process, ``shared_budget``
across every process through Redis, and ``transport`` moves the bytes (``requests`` or ``httpx``).
"""
