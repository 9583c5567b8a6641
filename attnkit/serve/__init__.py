"""Serving a run over HTTP: `attnkit serve RUN_DIR` (FastAPI + uvicorn, the `serve` extra).

`attnkit.serve.app` needs fastapi; `attnkit.serve.batcher` does not."""

from attnkit.serve.batcher import MicroBatcher

__all__ = ["MicroBatcher"]
