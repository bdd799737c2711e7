"""The recommendation API (FastAPI), served by ``recsys serve``."""

#: Where prometheus_client's multiprocess mode keeps every worker's samples. prometheus_client
#: reads it when it is imported, so ``recsys serve`` sets it before importing anything of the
#: service (its workers are forked from that process): hence here, not in ``service.metrics``.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
