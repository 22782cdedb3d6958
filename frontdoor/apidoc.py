"""The OpenAI door's route table, and the OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI page
(`GET /docs`) built from it, as TEI and FastAPI publish theirs: users generate clients from the document.

Each route is one `Operation`: the app serves it and the document describes it from that one entry, with the
request and response shapes taken from the pydantic types of `wire.py`, so a route added later is documented by
construction. Both published routes are open without the API key: they hold no secrets (TEI does the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence, Union

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .config import MAX_INPUTS
from .wire import RETRY_STATUSES, ErrorResponse

Endpoint = Callable[[Request], Awaitable[Response]]
_SCHEMAS = "#/components/schemas/{model}"
_BEARER = "bearer"
_RETRY_AFTER = "retry-after"
_REFUSALS = {
    400: "The input cannot be embedded as sent: the body is not JSON; the list is empty, has more than "
         f"{MAX_INPUTS} items or holds token ids or blank text; encoding_format or dimensions is out of range; "
         "the model does not pool to one vector per input; or the tokenizer refused a text",
    401: "The API key is missing or wrong: send `Authorization: Bearer <key>`",
    404: "No such model: `GET /v1/models` lists the served ones",
    413: "The body is over the door's size limit: send fewer or shorter inputs per request",
    422: "The body does not match the request's schema: a field is missing or of the wrong type",
    429: "The server is at capacity: retry after `retry-after` seconds",
    500: "The server failed; the body says no more, the door's log has the cause",
    503: "The embedding server is not reachable or did not answer in time: retry after `retry-after` seconds",
}


@dataclass(frozen=True)
class Answer:
    """One documented response: a pydantic type, or a raw JSON schema for bodies that have no type."""

    description: str
    body: Union[type[BaseModel], dict[str, Any]]
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description; every value is an integer


@dataclass(frozen=True)
class Operation:
    """One route: what Starlette serves and what the document says of it, from this one entry."""

    method: str
    path: str
    endpoint: Endpoint
    summary: str
    answers: Mapping[int, Answer]
    request: Optional[type[BaseModel]] = None  # a JSON body of this type
    keyed: bool = False  # asks for the API key when the door has one (a 401 otherwise)

    @property
    def name(self) -> str:
        """`POST /v1/embeddings`: how the door names the route to its clients."""
        return f"{self.method} {self.path}"


def refusals(*statuses: int, described: Optional[Mapping[int, str]] = None) -> dict[int, Answer]:
    """The error answers `statuses`, each with an OpenAI error body; `described` replaces our descriptions."""
    return {status: Answer({**_REFUSALS, **(described or {})}[status], ErrorResponse,
                           headers={_RETRY_AFTER: "Seconds to wait"} if status in RETRY_STATUSES else {})
            for status in statuses}


def listing(operations: Sequence[Operation]) -> str:
    """`POST /v1/embeddings, GET /v1/models and GET /health`: the routes, for a 404's message."""
    names = [operation.name for operation in operations]
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def published(operations: Sequence[Operation], title: str, version: str, secured: bool) -> tuple[Operation, ...]:
    """`operations` and the two routes that publish them: `GET /openapi.json` and `GET /docs`."""
    document = b""

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(_SWAGGER_UI.replace("{title}", title))

    everything = (
        *operations,
        Operation("GET", "/openapi.json", openapi, "This API's OpenAPI document",
                  {200: Answer("The OpenAPI 3.1 document", {"type": "object"})}),
        Operation("GET", "/docs", docs, "This API's documentation page (Swagger UI)",
                  {200: Answer("An HTML page that renders /openapi.json", {"type": "string"}, "text/html")}),
    )
    document = orjson.dumps(openapi_document(everything, title, version, secured))
    return everything


def openapi_document(operations: Sequence[Operation], title: str, version: str, secured: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`; `secured`: the door asks for a key on keyed routes."""
    types: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (operation.request, "validation") for operation in operations if operation.request]
    types += [(answer.body, "serialization") for operation in operations for answer in operation.answers.values()
              if isinstance(answer.body, type)]
    refs, schemas = _schemas(tuple(dict.fromkeys(types)))
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, refs, secured)
    components: dict[str, Any] = {"schemas": schemas.get("$defs", {})}
    if secured:
        components["securitySchemes"] = {_BEARER: {"type": "http", "scheme": "bearer",
                                                   "description": "The key the front door was started with"}}
    return {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths,
            "components": components}


@lru_cache(maxsize=None)
def _schemas(types: tuple[tuple[type[BaseModel], JsonSchemaMode], ...]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """pydantic's JSON schemas of `types`, built once per process (8 ms a time); shared, so never changed."""
    return models_json_schema(types, ref_template=_SCHEMAS)


def _operation(operation: Operation, refs: Mapping[Any, Any], secured: bool) -> dict[str, Any]:
    """The document's entry for one operation."""
    keyed = operation.keyed and secured
    answers = {**operation.answers, **(refusals(401) if keyed else {})}
    entry: dict[str, Any] = {
        "operationId": operation.endpoint.__name__,
        "summary": operation.summary,
        "security": [{_BEARER: []}] if keyed else [],
        "responses": {str(status): _answer(answers[status], refs) for status in sorted(answers)},
    }
    if operation.request is not None:
        entry["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(operation.request, "validation")]}}}
    return entry


def _answer(answer: Answer, refs: Mapping[Any, Any]) -> dict[str, Any]:
    schema = refs[(answer.body, "serialization")] if isinstance(answer.body, type) else answer.body
    entry: dict[str, Any] = {"description": answer.description, "content": {answer.media_type: {"schema": schema}}}
    if answer.headers:
        entry["headers"] = {name: {"description": description, "schema": {"type": "integer"}}
                            for name, description in answer.headers.items()}
    return entry


# As FastAPI's `get_swagger_ui_html` serves it; the document's address is relative, so a path prefix added by a
# proxy in front of the door still finds it.
_SWAGGER_UI = """<!DOCTYPE html>
<html>
<head>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
<title>{title} - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
const ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
})
</script>
</body>
</html>
"""
