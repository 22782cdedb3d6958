"""OpenAI's embeddings API (`POST /v1/embeddings`, `GET /v1/models`) and a readiness route, on Starlette.

Requests are validated here, encoded through the SDK (which splits large inputs into concurrent Triton
requests and keeps their order; small requests that arrive together share Triton calls, see `Models.encode`)
and answered in OpenAI's shapes, errors included:
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

from .config import MAX_INPUTS, FrontDoorConfig
from .models import FAILED, Models, client_message

TRUNCATED_HEADER = "bertserve-truncated-inputs"  # how many inputs were cut to max_seq_len


class _Refusal(Exception):
    """A request answered with an OpenAI error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code


def _json(body: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


def _error(refusal: _Refusal) -> Response:
    body = {"error": {"message": str(refusal), "type": refusal.kind, "param": refusal.param, "code": refusal.code}}
    headers = {"retry-after": "1"} if refusal.status in (429, 503) else None
    return _json(body, refusal.status, headers)


def create_app(config: FrontDoorConfig, models: Models) -> Starlette:
    """The ASGI app of the OpenAI-compatible front door."""

    async def embeddings(request: Request) -> Response:
        _authorize(request, config)
        body = await _read_json(request, config.max_request_bytes)
        texts, name, encoding_format, dimensions = _parse(body)
        info = await _served(models, name, dimensions)
        encoded = await models.encode(name, texts)
        vectors = np.asarray(encoded.vectors, dtype=np.float32)
        if dimensions is not None and dimensions < info.dim:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if encoding_format == "base64":
            rows = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            rows = list(vectors)
        tokens = encoded.tokens_seen
        truncated = int(encoded.truncated.sum())
        return _json(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
                "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={TRUNCATED_HEADER: str(truncated)} if truncated else None,
        )

    async def list_models(request: Request) -> Response:
        _authorize(request, config)
        names = await models.call(models.names)
        return _json({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "bertserve"} for name in names]})

    async def health(request: Request) -> Response:
        problem = await models.call(models.problem)
        if problem:
            return _error(_Refusal(503, f"not ready: {problem}", "server_error", code="not_ready"))
        return _json({"status": "ready"})

    async def refused(request: Request, exc: Exception) -> Response:
        return _error(_refusal(exc))

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        # Refusals and SDK errors are answered where they happen; only a failure nobody foresaw reaches the
        # server-error layer (a 500 with a generic body, logged with its traceback).
        exception_handlers={_Refusal: refused, BertserveError: refused, Exception: refused, 404: _not_found,
                            405: _not_allowed},
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(_Refusal(404, f"No route {request.url.path}; this server has POST /v1/embeddings, "
                                "GET /v1/models and GET /health", code="not_found"))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(_Refusal(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"))


async def _served(models: Models, name: str, dimensions: Optional[int]) -> ModelInfo:
    """What model `name` serves, or the 4xx of a request it cannot answer (unknown, token-level, `dimensions`)."""
    try:
        info = await models.info(name)
    except ModelNotFoundError:
        raise _Refusal(404, f"The model '{name}' does not exist; GET /v1/models lists the served models",
                       param="model", code="model_not_found") from None
    if info.token_level:
        raise _Refusal(400, f"The model '{name}' returns one vector per token; /v1/embeddings serves models "
                            "that pool to one vector per input", param="model", code="model_not_pooled")
    if dimensions is not None and not 1 <= dimensions <= info.dim:
        raise _Refusal(400, f"dimensions must be between 1 and the model's {info.dim}, got {dimensions}",
                       param="dimensions", code="invalid_value")
    return info


def _refusal(exc: Exception) -> _Refusal:
    """What a failure means to the client; internals (Triton's address, paths, tracebacks) never reach the body."""
    if isinstance(exc, _Refusal):
        return exc
    message = client_message(exc)
    if isinstance(exc, InvalidInputError):
        return _Refusal(400, message, param="input", code="invalid_input")
    if isinstance(exc, ServerBusyError):
        return _Refusal(429, message, "rate_limit_error", code="busy")
    if isinstance(exc, (ServerUnavailableError, RequestTimeoutError)):
        return _Refusal(503, message, "server_error", code="unavailable")
    if isinstance(exc, AuthenticationError):
        return _Refusal(500, message, "server_error")
    return _Refusal(500, FAILED, "server_error")


def _authorize(request: Request, config: FrontDoorConfig) -> None:
    if not config.api_key:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
        raise _Refusal(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                       "invalid_request_error", code="invalid_api_key")


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, f"The request body is {int(declared):,} bytes, over the limit of {limit:,}; send fewer "
                            "or shorter inputs per request", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refusal(413, f"The request body is over the limit of {limit:,} bytes; send fewer or shorter "
                                "inputs per request", code="request_too_large")
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise _Refusal(400, "The request body is not valid JSON", code="invalid_json") from None


def _parse(body: Any) -> tuple[list[str], str, str, Optional[int]]:
    """(texts, model, encoding_format, dimensions) from an embeddings request, or a 400/422 saying what is wrong."""
    if not isinstance(body, dict):
        raise _Refusal(422, "The request body must be a JSON object with 'input' and 'model'", code="invalid_body")
    if "input" not in body:
        raise _Refusal(422, "'input' is required: a string or a list of strings", param="input", code="missing")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Refusal(422, "'model' is required: the name of a served model (GET /v1/models)", param="model",
                       code="missing")
    raw = body["input"]
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list):
        raise _Refusal(422, "'input' must be a string or a list of strings", param="input", code="invalid_type")
    if not texts:
        raise _Refusal(400, "'input' is an empty list; send at least one string", param="input", code="empty_input")
    if len(texts) > MAX_INPUTS:
        raise _Refusal(400, f"'input' has {len(texts)} items, over the limit of {MAX_INPUTS}; split the request",
                       param="input", code="too_many_inputs")
    for i, text in enumerate(texts):
        if isinstance(text, (int, list)) and not isinstance(text, bool):
            raise _Refusal(400, "Token-id arrays are not supported: this server tokenizes with the model's own "
                                "vocabulary; send the text instead", param="input", code="token_ids_unsupported")
        if not isinstance(text, str):
            raise _Refusal(422, f"input[{i}] is {type(text).__name__}; every input must be a string",
                           param="input", code="invalid_type")
        if not text.strip():
            raise _Refusal(400, f"input[{i}] is an empty string; send non-empty text", param="input",
                           code="empty_input")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise _Refusal(400, f"encoding_format must be 'float' or 'base64', got {encoding_format!r}",
                       param="encoding_format", code="invalid_value")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise _Refusal(422, "dimensions must be an integer", param="dimensions", code="invalid_type")
    if "user" in body and not isinstance(body["user"], str):
        raise _Refusal(422, "user must be a string", param="user", code="invalid_type")
    return texts, body["model"], encoding_format, dimensions
