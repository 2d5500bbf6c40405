"""Operations: what an operator watches. Health checks (``/healthz``, ``/readyz``), the
scheduled jobs' heartbeats and their admin page, Prometheus metrics (``/metrics``) and the
request log. It reads every domain (top layer, beside the scheduler, which records its
heartbeats through :mod:`datapass.operations.heartbeats`)."""
