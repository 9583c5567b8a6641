"""`attnkit serve`: a run's predictions over HTTP (FastAPI), with dynamic micro-batching. Needs the
`serve` extra (fastapi, uvicorn).

    POST /v1/predict  {"inputs": ["text", ...], ...options}  ->  {"predictions": [{...}, ...]}
    GET  /v1/info     task, classes, parameters, the options predict takes, batching settings
    GET  /health      {"status": "ok"}
    GET  /docs        the OpenAPI page

Each prediction has the fields of a line of `attnkit predict --output FILE.jsonl` (`Run.records`).
Every bad request gets a 4xx answer with a JSON body {"error": "..."}: a body that is not JSON or too
large, a missing or wrongly typed field, an unknown option, an empty list; a failure inside the model
is a 500 with the same body, and the server goes on. With an API key, requests to /v1/ without it
(`Authorization: Bearer KEY` or `X-API-Key: KEY`) get 401.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import secrets
import signal
import socket
import threading
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from attnkit.errors import UserError
from attnkit.serve.batcher import CallerThreadExecutor, MicroBatcher

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body larger than this is refused (413)
MAX_INPUTS = 1024  # inputs in one request

LOG = logging.getLogger("attnkit.serve")

REQUEST_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {"inputs": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "additionalProperties": True,
            },
            "example": {"inputs": ["Oil prices rose sharply today"], "top_k": 3},
        }
    },
}


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_request(body: bytes, options: dict[str, type], max_inputs: int = MAX_INPUTS) -> tuple[list[str], dict]:
    """The inputs and options of a predict request body, checked; a `RequestError` says what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise RequestError(422, 'the body must be a JSON object: {"inputs": [...]}')
    inputs = data.pop("inputs", None)
    if inputs is None:
        raise RequestError(422, "missing field 'inputs': a list of inputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise RequestError(422, "'inputs' must be a list of strings")
    if not inputs:
        raise RequestError(422, "'inputs' is empty: give at least one input")
    if len(inputs) > max_inputs:
        raise RequestError(413, f"{len(inputs)} inputs in one request; at most {max_inputs}")
    checked = {}
    for name, value in data.items():
        kind = options.get(name)
        if kind is None:
            known = ", ".join(options) or "none"
            raise RequestError(422, f"unknown field {name!r} (options: {known})")
        if value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(422, f"{name!r} must be a whole number, got {value!r}")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise RequestError(422, f"{name!r} must be a finite number, got {value!r}")
            value = float(value)
        checked[name] = value
    return inputs, checked


def build_app(
    run: Any,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    executor: Executor | None = None,
) -> Any:
    """The FastAPI application serving `run` (an opened run whose task has `records`); model calls run
    on `executor` (default: a thread of the batcher's own)."""
    batcher = MicroBatcher(run.records, max_batch=max_batch, max_wait_ms=max_wait_ms, executor=executor)

    @asynccontextmanager
    async def lifespan(_app: Any):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"attnkit {run.task} run",
        description=f"Predictions of the {run.task} run in {run.run_dir}.",
        lifespan=lifespan,
    )

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    # Checked in each /v1/ endpoint rather than by an HTTP middleware: Starlette's middleware wraps
    # every request in extra tasks and streams, a cost that is most of a small model's request.
    def refused(request: Request) -> JSONResponse | None:
        if not api_key:
            return None
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if secrets.compare_digest(given.encode(), api_key.encode()):
            return None
        return error(401, "missing or wrong API key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> Any:
        if (answer := refused(request)) is not None:
            return answer
        described = {
            "task": run.task,
            "run_dir": str(run.run_dir),
            "backend": getattr(run, "backend", "torch"),
            "parameters": run.parameter_count,
            "options": {name: kind.__name__ for name, kind in run.record_options.items()},
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "batches": batcher.batches,
        }
        if hasattr(run, "classes"):
            described["classes"] = list(run.classes)
        return described

    @app.post("/v1/predict", openapi_extra={"requestBody": REQUEST_SCHEMA})
    async def predict(request: Request) -> Any:
        if (answer := refused(request)) is not None:
            return answer
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error(413, f"the body is larger than {max_body_bytes:,} bytes")
        try:
            inputs, options = parse_request(body, run.record_options)
            predictions = await batcher.submit(inputs, options)
        except RequestError as bad:
            return error(bad.status, str(bad))
        except UserError as bad:  # the run's own checks of inputs and options
            return error(422, str(bad))
        except Exception:  # never let a request take the server down
            LOG.exception("request failed")
            return error(500, "internal error; the server logged it")
        # Records are plain JSON values: answered as they are, without FastAPI's generic encoder.
        return JSONResponse({"predictions": predictions})

    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` for the server to accept on, or a `UserError` that says why not.

    Bound before the run is opened (and, with `--backend onnx`, exported), so a port in use is one clear
    error at once; uvicorn, left to bind it itself, logs the failure from its own thread and the
    command would end with status 0."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise UserError(f"--host {host}: not an address to listen on ({error.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once after a stop
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = "the port is in use (another server?)" if error.errno == errno.EADDRINUSE else error.strerror
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def serve(
    run: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    api_key: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve `run` with uvicorn until interrupted, on `sock` (from `listen`) or a socket bound to
    `host`:`port`."""
    from attnkit.tasks.base import Run

    try:
        import uvicorn
    except ImportError:
        raise UserError("attnkit serve needs fastapi and uvicorn: pip install 'attnkit[serve]'") from None
    if type(run).records is Run.records:
        raise UserError(f"{run.task} runs cannot be served yet")
    # The model runs on this thread, the one that opened the run, and the HTTP server's event loop on
    # another: one thread ever runs PyTorch's CPU kernels (see MicroBatcher).
    sock = sock or listen(host, port)
    executor = CallerThreadExecutor()
    app = build_app(run, max_batch=max_batch, max_wait_ms=max_wait_ms, api_key=api_key, executor=executor)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    stopped = threading.Event()

    def run_server() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            stopped.set()

    def shut_down(*_: Any) -> None:
        server.should_exit = True  # uvicorn finishes the requests in flight, then stops

    thread = threading.Thread(target=run_server, name="attnkit-http")
    previous = signal.signal(signal.SIGTERM, shut_down)  # only the main thread receives signals
    thread.start()
    try:
        try:
            executor.work_until(stopped)
        except KeyboardInterrupt:
            shut_down()
            executor.work_until(stopped)  # answer what is in flight while the server shuts down
    finally:
        shut_down()
        thread.join()
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if not server.started:  # uvicorn ends its thread without raising when its start-up fails
        raise UserError(f"the server on {host}:{port} stopped before it started (its log above says why)")
