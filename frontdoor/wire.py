"""What the OpenAI door's requests and answers are, as types: parsed from and written to the wire, and described
in its OpenAPI document (`apidoc.py`) from the same classes, so the document cannot drift from what is parsed.

A request is parsed by one `model_validator(mode="before")` that runs the door's own checks and raises a
`Refusal` with OpenAI's error body (pydantic lets exceptions other than ValueError through); the annotations
only describe what those checks let pass, so pydantic's own validation never refuses anything they accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from .config import MAX_INPUTS

ErrorType = Literal["invalid_request_error", "rate_limit_error", "server_error"]
EncodingFormat = Literal["float", "base64"]
RETRY_STATUSES = (429, 503)  # answered with `retry-after: 1`: the client may send the same request again


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class _Answer(BaseModel):
    """A response body: every field is always sent, so the document lists every field as required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ErrorDetail(_Answer):
    """OpenAI's error object: `param` names the request field at fault, `code` says what is wrong with it."""

    message: str
    type: ErrorType
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(_Answer):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class Refusal(Exception):
    """A request answered with an OpenAI error body; raised where the door refuses, answered by the app."""

    def __init__(self, status: int, message: str, kind: ErrorType = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code

    def body(self) -> ErrorResponse:
        """What the client reads."""
        return ErrorResponse(error=ErrorDetail(message=str(self), type=self.kind, param=self.param, code=self.code))

    def headers(self) -> Optional[dict[str, str]]:
        """`retry-after` where sending the same request later may succeed."""
        return {"retry-after": "1"} if self.status in RETRY_STATUSES else None


_Text = Annotated[str, Field(min_length=1, description="Text with at least one non-blank character")]


class EmbeddingsRequest(BaseModel):
    """OpenAI's `POST /v1/embeddings` body. Fields OpenAI defines and this server has no use for are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    input: Union[_Text, Annotated[list[_Text], Field(min_length=1, max_length=MAX_INPUTS)]] = Field(
        description=f"One text, or a list of 1 to {MAX_INPUTS} texts; token-id arrays are not supported")
    model: str = Field(min_length=1, description="The name of a served model, as `GET /v1/models` lists it")
    encoding_format: Optional[EncodingFormat] = Field(
        default="float", description="`base64`: each vector as the base64 of its little-endian float32 bytes")
    # The upper bound is the model's own dimension; a value outside is a 400 that names it.
    dimensions: Optional[int] = Field(default=None, json_schema_extra={"minimum": 1},
                                      description="Keep the first `dimensions` values of each vector, renormalised")
    user: Union[str, SkipJsonSchema[None]] = Field(default=None, json_schema_extra=_no_default,
                                                   description="Accepted and ignored")

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, one text or many."""
        return [self.input] if isinstance(self.input, str) else self.input

    @classmethod
    def parse(cls, body: Any) -> EmbeddingsRequest:
        """The request in `body` (decoded JSON), or the 400/422 `Refusal` saying what is wrong with it."""
        try:
            return cls.model_validate(body)
        except ValidationError as invalid:  # only if the annotations are stricter than `_checked`: a bug, said so
            error = invalid.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else None
            raise Refusal(422, f"The request does not match its schema (GET /openapi.json): {error['msg']}",
                          param=field, code="invalid_type") from None

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> dict[str, Any]:
        """The door's checks in its order, each with its own error body; `encoding_format` defaulted."""
        if not isinstance(body, dict):
            raise Refusal(422, "The request body must be a JSON object with 'input' and 'model'", code="invalid_body")
        if "input" not in body:
            raise Refusal(422, "'input' is required: a string or a list of strings", param="input", code="missing")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise Refusal(422, "'model' is required: the name of a served model (GET /v1/models)", param="model",
                          code="missing")
        _check_texts(body["input"])
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise Refusal(400, f"encoding_format must be 'float' or 'base64', got {encoding_format!r}",
                          param="encoding_format", code="invalid_value")
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
            raise Refusal(422, "dimensions must be an integer", param="dimensions", code="invalid_type")
        if "user" in body and not isinstance(body["user"], str):
            raise Refusal(422, "user must be a string", param="user", code="invalid_type")
        return {**body, "encoding_format": encoding_format}


def _check_texts(raw: Any) -> None:
    """Refuse an `input` that is not one non-blank string or a list of 1 to MAX_INPUTS of them."""
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list):
        raise Refusal(422, "'input' must be a string or a list of strings", param="input", code="invalid_type")
    if not texts:
        raise Refusal(400, "'input' is an empty list; send at least one string", param="input", code="empty_input")
    if len(texts) > MAX_INPUTS:
        raise Refusal(400, f"'input' has {len(texts)} items, over the limit of {MAX_INPUTS}; split the request",
                      param="input", code="too_many_inputs")
    for i, text in enumerate(texts):
        if isinstance(text, (int, list)) and not isinstance(text, bool):
            raise Refusal(400, "Token-id arrays are not supported: this server tokenizes with the model's own "
                               "vocabulary; send the text instead", param="input", code="token_ids_unsupported")
        if not isinstance(text, str):
            raise Refusal(422, f"input[{i}] is {type(text).__name__}; every input must be a string",
                          param="input", code="invalid_type")
        if not text.strip():
            raise Refusal(400, f"input[{i}] is an empty string; send non-empty text", param="input",
                          code="empty_input")


class Embedding(_Answer):
    """One input's vector, at its input's `index`."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str] = Field(
        description="The vector's values, or with `encoding_format: base64` the base64 of its little-endian "
                    "float32 bytes")


class Usage(_Answer):
    """Tokens the model saw, [CLS] and [SEP] included, after truncation to its max_seq_len."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(_Answer):
    """One vector per input, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(_Answer):
    """A served embedding model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "bertserve"


class ModelList(_Answer):
    """The embedding models Triton serves and has ready."""

    object: Literal["list"] = "list"
    data: list[Model]


class Health(_Answer):
    """Every served model answered a real inference (checked at most every 2 s)."""

    status: Literal["ready"] = "ready"
