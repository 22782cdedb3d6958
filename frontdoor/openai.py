"""OpenAI's embeddings API (`POST /v1/embeddings`, `GET /v1/models`), the task routes of the other servers' shapes
(rerank as Cohere and Jina, classify as Infinity, sparse vectors as TEI) and a readiness route, on Starlette, with
their OpenAPI document (`GET /openapi.json`) and a docs page (`GET /docs`) built from the same route table.

Requests are parsed into `wire.py`'s types, computed through the SDK (which splits large inputs into concurrent
Triton requests and keeps their order; small embedding requests with the same options that arrive together share
Triton calls, see `Models.encode`) and answered in their APIs' shapes, errors in OpenAI's for every route:
`{"error": {"message", "type", "param", "code"}}`, with a 4xx for every client mistake.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
import uuid
from typing import Any, Optional, Sequence

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bertserve import __version__
from bertserve.contract import CHARS_PER_TOKEN, PROMPT_NAME, Task
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
from bertserve.quantize import OutputDtype

from .apidoc import Answer, Endpoint, Operation, listing, published, refusals
from .config import MAX_INPUTS, FrontDoorConfig
from .models import FAILED, EncodeOptions, Models, client_message
from .wire import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Health,
    Model,
    ModelList,
    RankedDocument,
    Refusal,
    RerankRequest,
    RerankResponse,
    SparseRequest,
    SparseResponse,
)

TRUNCATED_HEADER = "bertserve-truncated-inputs"  # how many inputs were cut to max_seq_len
# The route that serves each task's models, for the 400 of a model sent to another.
ROUTES = {Task.EMBED: "POST /v1/embeddings", Task.RERANK: "POST /v1/rerank", Task.CLASSIFY: "POST /v1/classify",
          Task.SPARSE: "POST /embed_sparse"}


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
    routes = _Routes(config, models)
    truncated = {TRUNCATED_HEADER: "How many inputs were cut to the model's max_seq_len; absent if none"}
    ranked = Answer("The documents, most relevant first", RerankResponse, headers={
        TRUNCATED_HEADER: "How many (query, document) pairs were cut to the model's max_seq_len; absent if none"})
    ranking = {200: ranked, **refusals(400, 404, 413, 422, 429, 500, 503, described={400: _RERANK_400})}
    return (
        Operation("POST", "/v1/embeddings", routes.embeddings, "Embed one text or a list of texts",
                  {200: Answer("One vector per input, in input order", EmbeddingsResponse, headers=truncated),
                   **refusals(400, 404, 413, 422, 429, 500, 503, described={400: _EMBEDDINGS_400})},
                  EmbeddingsRequest, keyed=True),
        Operation("POST", "/v1/rerank", routes.rerank,
                  "Rank documents by relevance to a query (Cohere's and Jina's shape)", ranking, RerankRequest,
                  keyed=True),
        Operation("POST", "/rerank", routes.rerank_unversioned, "The same as POST /v1/rerank", ranking,
                  RerankRequest, keyed=True),
        Operation("POST", "/v1/classify", routes.classify, "Score every label for each text (Infinity's shape)",
                  {200: Answer("Every label, best first, for each input in input order", ClassifyResponse,
                               headers=truncated),
                   **refusals(400, 404, 413, 422, 429, 500, 503, described={400: _CLASSIFY_400})},
                  ClassifyRequest, keyed=True),
        Operation("POST", "/embed_sparse", routes.embed_sparse, "Sparse (SPLADE) vectors of texts (TEI's shape)",
                  {200: Answer("Each input's non-zero weights, in input order", SparseResponse, headers=truncated),
                   **refusals(400, 404, 413, 422, 429, 500, 503, described={400: _SPARSE_400, 404: _SPARSE_404})},
                  SparseRequest, keyed=True),
        Operation("GET", "/v1/models", routes.list_models, "The served models, their tasks and prompts",
                  {200: Answer("The served models, their tasks and prompts", ModelList), **refusals(500, 503)},
                  keyed=True),
        Operation("GET", "/health", routes.health, "Readiness: a real inference through every model",
                  {200: Answer("Ready", Health),
                   **refusals(500, 503, described={503: "Not ready; the message says why"})}),
    )


class _Routes:
    """The door's endpoints, over its config and the served models."""

    def __init__(self, config: FrontDoorConfig, models: Models) -> None:
        self.config, self.models = config, models

    async def embeddings(self, request: Request) -> Response:
        parsed = EmbeddingsRequest.parse(await _read_json(request, self.config.max_request_bytes))
        info = await _served(self.models, parsed.model, Task.EMBED)
        encoded = await self.models.encode(parsed.model, parsed.texts, _encode_options(parsed, info))
        tokens = encoded.tokens_seen
        # An `EmbeddingsResponse`, written by hand: orjson writes numpy rows directly, pydantic would copy them.
        return _json(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": row}
                         for i, row in enumerate(_rows(encoded.vectors, parsed, info))],
                "model": parsed.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers=_truncation(int(encoded.truncated.sum())),
        )

    async def rerank(self, request: Request) -> Response:
        parsed = RerankRequest.parse(await _read_json(request, self.config.max_request_bytes))
        documents = parsed.texts
        if len(documents) > self.config.max_documents:
            raise Refusal(400, f"'documents' has {len(documents):,} items, over this server's limit of "
                               f"{self.config.max_documents:,} per request; split them into several requests",
                          param="documents", code="too_many_documents")
        info = await _served(self.models, parsed.model, Task.RERANK)
        _check_lengths(info, [parsed.query], "query")
        _check_lengths(info, documents, "documents")
        ranked = await self.models.rerank(parsed.model, parsed.query, documents)
        # Usage counts every document, the ones `top_n` leaves out included: the model read them all.
        results = [{"index": r.index, "relevance_score": float(r.score),
                    **({"document": RankedDocument(text=r.document).model_dump()} if parsed.return_documents else {})}
                   for r in ranked[:parsed.top_n]]
        # A `RerankResponse`, written by hand like the embeddings' answer.
        return _json({"id": uuid.uuid4().hex, "model": parsed.model, "results": results,
                      "usage": {"total_tokens": sum(r.token_count for r in ranked)}},
                     headers=_truncation(sum(r.truncated for r in ranked)))

    async def rerank_unversioned(self, request: Request) -> Response:
        return await self.rerank(request)

    async def classify(self, request: Request) -> Response:
        parsed = ClassifyRequest.parse(await _read_json(request, self.config.max_request_bytes))
        texts = parsed.texts
        _check_lengths(await _served(self.models, parsed.model, Task.CLASSIFY), texts, "input")
        classified = await self.models.classify(parsed.model, texts, parsed.raw_scores)
        tokens = sum(c.token_count for c in classified)
        return _json({"object": "classify",
                      "data": [[{"label": label.label, "score": float(label.score)} for label in c.labels]
                               for c in classified],
                      "model": parsed.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                      "id": uuid.uuid4().hex, "created": int(time.time())},
                     headers=_truncation(sum(c.truncated for c in classified)))

    async def embed_sparse(self, request: Request) -> Response:
        parsed = SparseRequest.parse(await _read_json(request, self.config.max_request_bytes))
        name = parsed.model or await _only(self.models, Task.SPARSE)
        texts = parsed.texts
        _check_lengths(await _served(self.models, name, Task.SPARSE), texts, "inputs")
        vectors = await self.models.encode_sparse(name, texts)
        return _json([[{"index": i, "value": v} for i, v in zip(vector.indices.tolist(), vector.values.tolist())]
                      for vector in vectors], headers=_truncation(sum(v.truncated for v in vectors)))

    async def list_models(self, request: Request) -> Response:
        names = await self.models.call(self.models.names)
        infos = await asyncio.gather(*(self.models.info(name) for name in names))
        return _json(ModelList(data=[
            Model(id=name, task=info.task, prompts=dict(info.prompts), default_prompt_name=info.default_prompt_name
                  or None) for name, info in zip(names, infos)]).model_dump())

    async def health(self, request: Request) -> Response:
        problem = await self.models.call(self.models.problem)
        if problem:
            return _error(Refusal(503, f"not ready: {problem}", "server_error", code="not_ready"))
        return _json(Health().model_dump())


def _encode_options(parsed: EmbeddingsRequest, info: ModelInfo) -> EncodeOptions:
    """What the SDK is asked for, or the 400 of a request the model cannot answer as asked (named by its field)."""
    name = parsed.model
    if info.token_level:
        raise Refusal(400, f"The model '{name}' returns one vector per token; /v1/embeddings serves "
                           "models that pool to one vector per input", param="model", code="model_not_pooled")
    if parsed.dimensions is not None and not 1 <= parsed.dimensions <= info.dim:
        raise Refusal(400, f"dimensions must be between 1 and the model's {info.dim}, got {parsed.dimensions}",
                      param="dimensions", code="invalid_value")
    dtype = OutputDtype(parsed.output_dtype)
    if parsed.dimensions is not None and parsed.dimensions < info.dim and dtype is not OutputDtype.FLOAT32:
        raise Refusal(400, f"dimensions {parsed.dimensions} cannot be combined with output_dtype {dtype.value!r}: "
                           "compact vectors are codes of the model's whole vector; ask for float32 to shorten it",
                      param="dimensions", code="invalid_value")
    if dtype.calibrated and not info.quantization_ranges:
        raise Refusal(400, f"output_dtype {dtype.value!r} needs ranges calibrated at export, which the model "
                           f"'{name}' does not have (export it again with this bertserve); binary and ubinary need "
                           "none", param="output_dtype", code="invalid_value")
    if parsed.prompt_name is not None and parsed.prompt_name not in info.prompts:
        have = ", ".join(map(repr, info.prompts)) or "none"
        raise Refusal(400, f"The model '{name}' has no prompt named {parsed.prompt_name!r}; its prompts: {have} "
                           "(GET /v1/models lists them)", param=PROMPT_NAME, code="invalid_value")
    return EncodeOptions(prompt_name=parsed.prompt_name, prompt=parsed.prompt,
                         truncation_direction=parsed.truncation_direction or "right",
                         long_input=parsed.long_input or "truncate", output_dtype=dtype.value)


def _rows(vectors: Any, parsed: EmbeddingsRequest, info: ModelInfo) -> list[Any]:
    """Each vector as the answer carries it: its values (float32, shortened to `dimensions`, or the compact
    codes as integers), or with base64 its bytes (little-endian float32, or one byte per code)."""
    if parsed.output_dtype != OutputDtype.FLOAT32.value:
        codes = np.asarray(vectors)  # int8 or uint8: one byte each, in any byte order
        return [base64.b64encode(v.tobytes()).decode("ascii") for v in codes] if parsed.encoding_format == "base64" \
            else list(codes)
    floats = np.asarray(vectors, dtype=np.float32)
    if parsed.dimensions is not None and parsed.dimensions < info.dim:
        floats = floats[:, :parsed.dimensions]
        floats = floats / np.maximum(np.linalg.norm(floats, axis=1, keepdims=True), 1e-12)
    if parsed.encoding_format == "base64":
        return [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in floats]
    return list(floats)


_TOO_LONG = "longer than the model can read (over max_seq_len × 100 characters)"
_EMBEDDINGS_400 = (f"The input cannot be embedded as sent: the body is not JSON; the list is empty, has more than "
                   f"{MAX_INPUTS} items or holds token ids or blank text; encoding_format or dimensions is out of "
                   "range, or dimensions is set with a compact output_dtype; prompt_name is not one of the model's "
                   "prompts, or is set with prompt; truncation_direction, long_input or output_dtype is not one of "
                   "its values; output_dtype int8 or uint8 for a model without calibrated ranges; an input is over "
                   "max_seq_len with long_input 'error'; long_input 'chunk' needs more than the door's --max-windows "
                   "windows, or an input is too long to split; the model does not pool to one vector per input; or "
                   "the tokenizer refused a text")
_RERANK_400 = ("The documents cannot be ranked as sent: the body is not JSON; the query or a document is blank or "
               f"{_TOO_LONG}; the list is empty or over the door's --max-documents; top_n is below 1; a Cohere "
               "option this server does not implement is set; the model is not a rerank model; or the tokenizer "
               "refused a text")
_CLASSIFY_400 = (f"The input cannot be classified as sent: the body is not JSON; the list is empty, has more than "
                 f"{MAX_INPUTS} items or holds token ids, blank text or text {_TOO_LONG}; the model is not a classify "
                 "model; or the tokenizer refused a text")
_SPARSE_400 = (f"The input cannot be encoded as sent: the body is not JSON; the list is empty, has more than "
               f"{MAX_INPUTS} items or holds token ids, blank text or text {_TOO_LONG}; the model is not a sparse "
               "model, or none is named and several sparse models are served; or the tokenizer refused a text")
_SPARSE_404 = "No such model, or none named and no sparse model served: `GET /v1/models` lists the served ones"


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


async def _served(models: Models, name: str, task: Task) -> ModelInfo:
    """What model `name` serves, or the 4xx of a request it cannot answer: unknown, or made for another task."""
    try:
        info = await models.info(name)
    except ModelNotFoundError:
        raise Refusal(404, f"The model '{name}' does not exist; GET /v1/models lists the served models",
                      param="model", code="model_not_found") from None
    if info.task != task:
        raise Refusal(400, f"The model '{name}' is a {info.task} model; send it to "
                           f"{ROUTES.get(info.task, 'the route of its task')}, not {ROUTES[task]}",
                      param="model", code="wrong_task")
    return info


async def _only(models: Models, task: Task) -> str:
    """The one model of `task` served, for a request that names none; a 4xx if there are none or several."""
    names = await models.call(models.names)
    infos = await asyncio.gather(*(models.info(name) for name in names))
    fit = [name for name, info in zip(names, infos) if info.task == task]
    if not fit:
        raise Refusal(404, f"No {task.value} model is served here; GET /v1/models lists the served models and their "
                           "tasks", param="model", code="model_not_found")
    if len(fit) > 1:
        raise Refusal(400, f"Several {task.value} models are served ({', '.join(fit)}); name one in 'model'",
                      param="model", code="model_required")
    return fit[0]


def _check_lengths(info: ModelInfo, texts: Sequence[str], param: str) -> None:
    """Refuse a text far longer than the model can read: past max_seq_len × CHARS_PER_TOKEN characters the server
    does not even tokenize it all (a 10 MB document would cost the tokenizer for nothing, and be cut anyway)."""
    limit = info.max_seq_len * CHARS_PER_TOKEN
    for i, text in enumerate(texts):
        if len(text) > limit:
            where = param if param == "query" else f"{param}[{i}]"
            raise Refusal(400, f"{where} is {len(text):,} characters; the model '{info.name}' reads at most "
                               f"{info.max_seq_len} tokens, and this server refuses text over {limit:,} characters "
                               "rather than cut it unread: shorten or split it", param=param, code="input_too_long")


def _truncation(count: int) -> Optional[dict[str, str]]:
    """The header that says how many items were cut to max_seq_len; none if none were."""
    return {TRUNCATED_HEADER: str(count)} if count else None


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
