"""OpenAI's embeddings API (`POST /v1/embeddings`, `GET /v1/models`) and a readiness route, on Starlette, with
their OpenAPI document (`GET /openapi.json`) and a docs page (`GET /docs`) built from the same route table.

Requests are parsed into `wire.py`'s types, encoded through the SDK (which splits large inputs into concurrent
Triton requests and keeps their order; small requests that arrive together share Triton calls, see
`Models.encode`) and answered in OpenAI's shapes, errors included:
`{"error": {"message", "type", "param", "code"}}`, with a 4xx for every client mistake.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any, Optional

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bertserve import __version__
from bertserve.errors import (
    AuthenticationError,
    BertserveError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerBusyError,
    ServerUnavailableError,
)
from bertserve.info import ModelInfo

from .apidoc import Answer, Endpoint, Operation, listing, published, refusals
from .config import FrontDoorConfig
from .models import FAILED, Models, client_message
from .wire import EmbeddingsRequest, EmbeddingsResponse, Health, Model, ModelList, Refusal

TRUNCATED_HEADER = "bertserve-truncated-inputs"  # how many inputs were cut to max_seq_len


def _json(body: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


def _error(refusal: Refusal) -> Response:
    return _json(refusal.body().model_dump(), refusal.status, refusal.headers())


def create_app(config: FrontDoorConfig, models: Models) -> Starlette:
    """The ASGI app of the OpenAI-compatible front door: the routes of `_operations`, and the OpenAPI document
    and docs page that describe them."""
    operations = published(_operations(config, models), "bertserve", __version__, secured=bool(config.api_key))
    routes = listing(operations)

    async def refused(request: Request, exc: Exception) -> Response:
        return _error(_refusal(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(Refusal(404, f"No route {request.url.path}; this server has {routes}", code="not_found"))

    return Starlette(
        routes=[Route(operation.path, _guarded(operation, config), methods=[operation.method])
                for operation in operations],
        # Refusals and SDK errors are answered where they happen; only a failure nobody foresaw reaches the
        # server-error layer (a 500 with a generic body, logged with its traceback).
        exception_handlers={Refusal: refused, BertserveError: refused, Exception: refused, 404: not_found,
                            405: _not_allowed},
    )


def _operations(config: FrontDoorConfig, models: Models) -> tuple[Operation, ...]:
    """The door's API: each route once, with what it answers, for Starlette and the OpenAPI document alike."""

    async def embeddings(request: Request) -> Response:
        parsed = EmbeddingsRequest.parse(await _read_json(request, config.max_request_bytes))
        info = await _served(models, parsed.model, parsed.dimensions)
        encoded = await models.encode(parsed.model, parsed.texts)
        vectors = np.asarray(encoded.vectors, dtype=np.float32)
        if parsed.dimensions is not None and parsed.dimensions < info.dim:
            vectors = vectors[:, :parsed.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if parsed.encoding_format == "base64":
            rows = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            rows = list(vectors)
        tokens = encoded.tokens_seen
        truncated = int(encoded.truncated.sum())
        # An `EmbeddingsResponse`, written by hand: orjson writes numpy rows directly, pydantic would copy them.
        return _json(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
                "model": parsed.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={TRUNCATED_HEADER: str(truncated)} if truncated else None,
        )

    async def list_models(request: Request) -> Response:
        names = await models.call(models.names)
        return _json(ModelList(data=[Model(id=name) for name in names]).model_dump())

    async def health(request: Request) -> Response:
        problem = await models.call(models.problem)
        if problem:
            return _error(Refusal(503, f"not ready: {problem}", "server_error", code="not_ready"))
        return _json(Health().model_dump())

    embedded = Answer("One vector per input, in input order", EmbeddingsResponse,
                      headers={TRUNCATED_HEADER: "How many inputs were cut to the model's max_seq_len; absent if none"})
    return (
        Operation("POST", "/v1/embeddings", embeddings, "Embed one text or a list of texts",
                  {200: embedded, **refusals(400, 404, 413, 422, 429, 500, 503)}, EmbeddingsRequest, keyed=True),
        Operation("GET", "/v1/models", list_models, "The served embedding models",
                  {200: Answer("The served embedding models", ModelList), **refusals(500, 503)}, keyed=True),
        Operation("GET", "/health", health, "Readiness: a real inference through every model",
                  {200: Answer("Ready", Health),
                   **refusals(500, 503, described={503: "Not ready; the message says why"})}),
    )


def _guarded(operation: Operation, config: FrontDoorConfig) -> Endpoint:
    """The operation's endpoint, behind the API key check where the operation is keyed and the door has a key."""
    key = config.api_key
    if not (operation.keyed and key):
        return operation.endpoint

    async def keyed(request: Request) -> Response:
        _authorize(request, key)
        return await operation.endpoint(request)

    return keyed


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(Refusal(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"))


async def _served(models: Models, name: str, dimensions: Optional[int]) -> ModelInfo:
    """What model `name` serves, or the 4xx of a request it cannot answer (unknown, token-level, `dimensions`)."""
    try:
        info = await models.info(name)
    except ModelNotFoundError:
        raise Refusal(404, f"The model '{name}' does not exist; GET /v1/models lists the served models",
                      param="model", code="model_not_found") from None
    if info.token_level:
        raise Refusal(400, f"The model '{name}' returns one vector per token; /v1/embeddings serves models "
                           "that pool to one vector per input", param="model", code="model_not_pooled")
    if dimensions is not None and not 1 <= dimensions <= info.dim:
        raise Refusal(400, f"dimensions must be between 1 and the model's {info.dim}, got {dimensions}",
                      param="dimensions", code="invalid_value")
    return info


def _refusal(exc: Exception) -> Refusal:
    """What a failure means to the client; internals (Triton's address, paths, tracebacks) never reach the body."""
    if isinstance(exc, Refusal):
        return exc
    message = client_message(exc)
    if isinstance(exc, InvalidInputError):
        return Refusal(400, message, param="input", code="invalid_input")
    if isinstance(exc, ServerBusyError):
        return Refusal(429, message, "rate_limit_error", code="busy")
    if isinstance(exc, (ServerUnavailableError, RequestTimeoutError)):
        return Refusal(503, message, "server_error", code="unavailable")
    if isinstance(exc, AuthenticationError):
        return Refusal(500, message, "server_error")
    return Refusal(500, FAILED, "server_error")


def _authorize(request: Request, key: str) -> None:
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), key.encode()):
        raise Refusal(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                      "invalid_request_error", code="invalid_api_key")


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"The request body is {int(declared):,} bytes, over the limit of {limit:,}; send fewer "
                           "or shorter inputs per request", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refusal(413, f"The request body is over the limit of {limit:,} bytes; send fewer or shorter "
                               "inputs per request", code="request_too_large")
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise Refusal(400, "The request body is not valid JSON", code="invalid_json") from None
