"""What the OpenAI door's requests and answers are, as types: parsed from and written to the wire, and described
in its OpenAPI document (`apidoc.py`) from the same classes, so the document cannot drift from what is parsed.

A request is parsed by one `model_validator(mode="before")` that runs the door's own checks and raises a
`Refusal` with OpenAI's error body (pydantic lets exceptions other than ValueError through); the annotations
only describe what those checks let pass, so pydantic's own validation never refuses anything they accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from bertserve import contract
from bertserve.quantize import OutputDtype

from .config import DEFAULT_MAX_DOCUMENTS, MAX_INPUTS

ErrorType = Literal["invalid_request_error", "rate_limit_error", "server_error"]
EncodingFormat = Literal["float", "base64"]
# The per-request options of POST /v1/embeddings beyond OpenAI's, named and valued as the SDK's `encode` takes them.
TruncationDirection = Literal[contract.TRUNCATION_DIRECTIONS]  # type: ignore[valid-type]
LongInput = Literal["truncate", "error", "chunk"]
OutputDtypeName = Literal[tuple(dtype.value for dtype in OutputDtype)]  # type: ignore[valid-type]
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
_Texts = Union[_Text, Annotated[list[_Text], Field(min_length=1, max_length=MAX_INPUTS)]]
_TEXTS = f"One text, or a list of 1 to {MAX_INPUTS} texts; token-id arrays are not supported"
_MODEL = "The name of a served model, as `GET /v1/models` lists it"


_R = TypeVar("_R", bound="_Request")


class _Request(BaseModel):
    """A request body: parsed strictly, fields the server has no use for ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    @classmethod
    def parse(cls: type[_R], body: Any) -> _R:
        """The request in `body` (decoded JSON), or the 400/422 `Refusal` saying what is wrong with it."""
        try:
            return cls.model_validate(body)
        except ValidationError as invalid:  # only if the annotations are stricter than `_checked`: a bug, said so
            error = invalid.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else None
            raise Refusal(422, f"The request does not match its schema (GET /openapi.json): {error['msg']}",
                          param=field, code="invalid_type") from None


class EmbeddingsRequest(_Request):
    """OpenAI's `POST /v1/embeddings` body, and bertserve's options as extra fields (TEI's and sentence-transformers'
    names). Fields OpenAI defines and this server has no use for are ignored."""

    input: _Texts = Field(description=_TEXTS)
    model: str = Field(min_length=1, description=_MODEL)
    encoding_format: Optional[EncodingFormat] = Field(
        default="float", description="`base64`: each vector as the base64 of its bytes: little-endian float32 for "
                                     "`output_dtype` float32, one byte per value for the others (see `output_dtype`)")
    # The upper bound is the model's own dimension; a value outside is a 400 that names it.
    dimensions: Optional[int] = Field(default=None, json_schema_extra={"minimum": 1},
                                      description="Keep the first `dimensions` values of each vector, renormalised "
                                                  "(float32 output only: a compact `output_dtype` is refused with it)")
    user: Union[str, SkipJsonSchema[None]] = Field(default=None, json_schema_extra=_no_default,
                                                   description="Accepted and ignored")
    prompt_name: Optional[Annotated[str, Field(min_length=1, max_length=contract.MAX_PROMPT_CHARS)]] = Field(
        default=None, json_schema_extra=_no_default,
        description="Put the model's prompt of this name before each input (`GET /v1/models` lists them). Without "
                    "`prompt_name` or `prompt`, the model's default prompt applies, if it has one")
    prompt: Optional[Annotated[str, Field(max_length=contract.MAX_PROMPT_CHARS)]] = Field(
        default=None, json_schema_extra=_no_default,
        description="Put this text before each input instead of a named prompt; `\"\"` for none (the default "
                    "prompt left out)")
    truncation_direction: Optional[TruncationDirection] = Field(
        default="right", description="Which end of an input longer than the model's max_seq_len is cut")
    long_input: Optional[LongInput] = Field(
        default="truncate",
        description="An input longer than max_seq_len: `truncate` cuts it (counted in the "
                    "`bertserve-truncated-inputs` header); `error` refuses the request (400); `chunk` encodes it "
                    "whole, in windows of max_seq_len tokens whose vectors are averaged, weighted by their tokens "
                    "(normalised where the model normalises), at most the door's --max-windows windows a request")
    output_dtype: Optional[OutputDtypeName] = Field(
        default="float32",
        description="What each vector is returned as, as sentence-transformers' `quantize_embeddings` computes it: "
                    "`float32`; `int8` / `uint8`: one code a dimension, each dimension's range (calibrated at "
                    "export) in 256 steps, -128..127 / 0..255; `binary` / `ubinary`: the sign bits (positive: 1), "
                    "8 dimensions a byte, as -128..127 / 0..255. Lists of integers, or with `encoding_format: "
                    "base64` the bytes themselves")

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, one text or many."""
        return _one_or_many(self.input)

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> dict[str, Any]:
        """The door's checks in its order, each with its own error body; the options defaulted."""
        _check_object(body, "'input' and 'model'")
        _check_present(body, "input")
        _check_model(body)
        _check_texts(body, "input")
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise Refusal(400, f"encoding_format must be 'float' or 'base64', got {encoding_format!r}",
                          param="encoding_format", code="invalid_value")
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
            raise Refusal(422, "dimensions must be an integer", param="dimensions", code="invalid_type")
        if "user" in body and not isinstance(body["user"], str):
            raise Refusal(422, "user must be a string", param="user", code="invalid_type")
        return {**body, "encoding_format": encoding_format, **_options(body)}


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The embeddings options of `body`, defaulted, or the 4xx of the first one that is not usable."""
    for name in (contract.PROMPT_NAME, contract.PROMPT):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise Refusal(422, f"{name} must be a string", param=name, code="invalid_type")
        if len(body.get(name) or "") > contract.MAX_PROMPT_CHARS:
            raise Refusal(400, contract.prompt_too_long(name, len(body[name])), param=name, code="invalid_value")
    if body.get(contract.PROMPT_NAME) == "":
        raise Refusal(400, "prompt_name is empty; name one of the model's prompts (GET /v1/models), or leave it out "
                           "for the model's default", param=contract.PROMPT_NAME, code="invalid_value")
    if body.get(contract.PROMPT_NAME) is not None and body.get(contract.PROMPT) is not None:
        raise Refusal(400, "prompt_name and prompt are both set; send one of them", param=contract.PROMPT,
                      code="invalid_value")
    options = {}
    for name, choices, default in ((contract.TRUNCATION_DIRECTION, get_args(TruncationDirection), "right"),
                                   ("long_input", get_args(LongInput), "truncate"),
                                   ("output_dtype", get_args(OutputDtypeName), OutputDtype.FLOAT32.value)):
        value = body.get(name)
        options[name] = default if value is None else value
        if options[name] not in choices:
            raise Refusal(400, f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}", param=name,
                          code="invalid_value")
    return options


def _one_or_many(texts: Union[str, list[str]]) -> list[str]:
    """One text or many, as a list."""
    return [texts] if isinstance(texts, str) else texts


def _check_object(body: Any, fields: str) -> None:
    if not isinstance(body, dict):
        raise Refusal(422, f"The request body must be a JSON object with {fields}", code="invalid_body")


def _check_model(body: dict[str, Any]) -> None:
    """Refuse a body without a model name."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Refusal(422, "'model' is required: the name of a served model (GET /v1/models)", param="model",
                      code="missing")


def _check_present(body: dict[str, Any], field: str) -> None:
    """Refuse a body without the texts `field`."""
    if field not in body:
        raise Refusal(422, f"'{field}' is required: a string or a list of strings", param=field, code="missing")


def _check_texts(body: dict[str, Any], field: str) -> None:
    """Refuse a `field` that is not one non-blank string or a list of 1 to MAX_INPUTS of them."""
    _check_present(body, field)
    raw = body[field]
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list):
        raise Refusal(422, f"'{field}' must be a string or a list of strings", param=field, code="invalid_type")
    if not texts:
        raise Refusal(400, f"'{field}' is an empty list; send at least one string", param=field, code="empty_input")
    if len(texts) > MAX_INPUTS:
        raise Refusal(400, f"'{field}' has {len(texts)} items, over the limit of {MAX_INPUTS}; split the request",
                      param=field, code="too_many_inputs")
    for i, text in enumerate(texts):
        if isinstance(text, (int, list)) and not isinstance(text, bool):
            raise Refusal(400, "Token-id arrays are not supported: this server tokenizes with the model's own "
                               "vocabulary; send the text instead", param=field, code="token_ids_unsupported")
        _check_text(text, f"{field}[{i}]", field)


def _check_text(text: Any, where: str, field: str, what: str = "input") -> None:
    """Refuse a `text` that is not a non-blank string; `where` names it, `field` is the request field at fault."""
    if not isinstance(text, str):
        raise Refusal(422, f"{where} is {type(text).__name__}; every {what} must be a string", param=field,
                      code="invalid_type")
    if not text.strip():
        raise Refusal(400, f"{where} is an empty string; send non-empty text", param=field, code="empty_input")


def _check_flag(body: dict[str, Any], field: str) -> bool:
    """The boolean `field` of `body` (absent or null: false), or the 422 of a value of another type."""
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise Refusal(422, f"{field} must be true or false", param=field, code="invalid_type")
    return bool(value)


class RerankDocument(BaseModel):
    """Jina's and Cohere v1's form of a document: its text under `text` (other fields are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    text: _Text


(_DOCUMENT_TEXT,) = RerankDocument.model_fields  # the field of a document object that holds its text

# Cohere's options this server does not implement: a request that sets one is refused rather than answered as if
# it had not (structured documents, and chunking or cutting documents other than to the model's max_seq_len).
_UNSUPPORTED_RERANK = ("rank_fields", "max_chunks_per_doc", "max_tokens_per_doc")


class RerankRequest(_Request):
    """Cohere's and Jina's `POST /v1/rerank` body. Other fields their clients send are ignored, except Cohere's
    `rank_fields`, `max_chunks_per_doc` and `max_tokens_per_doc`, which are refused when set."""

    model: str = Field(min_length=1, description=_MODEL + " (a rerank model)")
    query: _Text = Field(description="The query the documents are ranked against")
    documents: Annotated[list[Union[_Text, RerankDocument]], Field(min_length=1)] = Field(
        description="The documents to rank: strings, or objects with their text under `text` (Jina, Cohere v1); "
                    f"at most the door's --max-documents ({DEFAULT_MAX_DOCUMENTS:,} by default)")
    top_n: Optional[int] = Field(default=None, json_schema_extra={"minimum": 1},
                                 description="Answer with the best `top_n` documents only (default: all)")
    return_documents: Optional[bool] = Field(default=False,
                                             description="Send each document's text back with its result")

    @property
    def texts(self) -> list[str]:
        """The documents' texts, in order."""
        return [d if isinstance(d, str) else d.text for d in self.documents]

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> dict[str, Any]:
        """The door's checks in its order, each with its own error body; `return_documents` defaulted."""
        _check_object(body, "'model', 'query' and 'documents'")
        _check_model(body)
        if "query" not in body:
            raise Refusal(422, "'query' is required: a string", param="query", code="missing")
        _check_text(body["query"], "query", "query", "query")
        documents = body.get("documents")
        if not isinstance(documents, list):
            raise Refusal(422, "'documents' is required: a list of strings (or of {\"text\": string})",
                          param="documents", code="missing" if documents is None else "invalid_type")
        if not documents:
            raise Refusal(400, "'documents' is an empty list; send at least one document", param="documents",
                          code="empty_input")
        for i, document in enumerate(documents):
            text = document.get(_DOCUMENT_TEXT) if isinstance(document, dict) else document
            if isinstance(document, dict) and _DOCUMENT_TEXT not in document:
                raise Refusal(422, f"documents[{i}] has no 'text'; a document is a string or {{\"text\": string}}",
                              param="documents", code="invalid_type")
            _check_text(text, f"documents[{i}]" + (".text" if isinstance(document, dict) else ""), "documents",
                        "document")
        top_n = body.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool)):
            raise Refusal(422, f"top_n must be an integer, got {top_n!r}", param="top_n", code="invalid_type")
        if top_n is not None and top_n < 1:
            raise Refusal(400, f"top_n must be at least 1, got {top_n}", param="top_n", code="invalid_value")
        for name in _UNSUPPORTED_RERANK:
            if body.get(name) is not None:
                raise Refusal(400, f"{name} is not supported: documents are plain text, each ranked whole and cut "
                                   "to the model's max_seq_len as sentence-transformers' CrossEncoder cuts them; "
                                   f"leave {name} out", param=name, code="unsupported_parameter")
        return {**body, "return_documents": _check_flag(body, "return_documents")}


class ClassifyRequest(_Request):
    """Infinity's `POST /v1/classify` body."""

    model: str = Field(min_length=1, description=_MODEL + " (a classify model)")
    input: _Texts = Field(description=_TEXTS)
    raw_scores: Optional[bool] = Field(default=False,
                                       description="Each label's logit instead of the softmax over the labels")

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, one text or many."""
        return _one_or_many(self.input)

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> dict[str, Any]:
        """The door's checks in its order, each with its own error body; `raw_scores` defaulted."""
        _check_object(body, "'input' and 'model'")
        _check_model(body)
        _check_texts(body, "input")
        return {**body, "raw_scores": _check_flag(body, "raw_scores")}


class SparseRequest(_Request):
    """TEI's `POST /embed_sparse` body. TEI's other fields (`truncate`, `truncation_direction`, `prompt_name`) are
    ignored: over-long input is cut on the right, bertserve's default, and counted in a header."""

    inputs: _Texts = Field(description=_TEXTS)
    model: Optional[Annotated[str, Field(min_length=1)]] = Field(
        default=None, json_schema_extra=_no_default,
        description=_MODEL + " (a sparse model); may be left out where one sparse model is served")

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, one text or many."""
        return _one_or_many(self.inputs)

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> dict[str, Any]:
        """The door's checks in its order, each with its own error body."""
        _check_object(body, "'inputs'")
        if body.get("model") is not None:
            _check_model(body)
        _check_texts(body, "inputs")
        return body


class Embedding(_Answer):
    """One input's vector, at its input's `index`."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], list[int], str] = Field(
        description="The vector's values (integers for a compact `output_dtype`), or with `encoding_format: base64` "
                    "the base64 of its bytes: little-endian float32, or one byte per int8 / uint8 value (for "
                    "`binary` / `ubinary`, the packed sign bits: ceil(dimensions / 8) bytes)")


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


class RankedDocument(_Answer):
    """A document as the request sent it."""

    text: str


class RerankResult(_Answer):
    """One document's relevance to the query."""

    # `document` is sent only when asked for: the only field a client may not find.
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    index: int = Field(description="The document's position in the request's `documents`")
    relevance_score: float = Field(description="The sigmoid of the cross-encoder's logit, in [0, 1]")
    document: Union[RankedDocument, SkipJsonSchema[None]] = Field(
        default=None, json_schema_extra=_no_default, description="With `return_documents`: the document")


class RerankUsage(_Answer):
    """Tokens the model saw for every (query, document) pair, [CLS] and [SEP] included, after truncation."""

    total_tokens: int


class RerankResponse(_Answer):
    """The documents, most relevant first (ties: the earlier document first); with `top_n`, the best `top_n`."""

    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


class ClassLabel(_Answer):
    """One label and its score."""

    label: str
    score: float = Field(description="The softmax over the labels; with `raw_scores`, the label's logit")


class ClassifyResponse(_Answer):
    """Every label of the model for each input, best first, in input order."""

    object: Literal["classify"] = "classify"
    data: list[list[ClassLabel]]
    model: str
    usage: Usage
    id: str
    created: int = Field(description="When the answer was made, in seconds since the Unix epoch")


class SparseValue(_Answer):
    """One non-zero weight of a sparse vector."""

    index: int = Field(description="The vocabulary id of the token")
    value: float = Field(description="max over the input's tokens of log(1 + relu(logit)), above 0")


class SparseResponse(RootModel[list[list[SparseValue]]]):
    """Each input's non-zero weights, by ascending vocabulary id, in input order."""


class Model(_Answer):
    """A served model, and what it computes: `task` says which route takes it."""

    id: str
    task: Literal["embed", "rerank", "classify", "sparse"] = Field(
        description="embed: POST /v1/embeddings; rerank: POST /v1/rerank; classify: POST /v1/classify; "
                    "sparse: POST /embed_sparse")
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "bertserve"
    prompts: dict[str, str] = Field(
        default_factory=dict, description="The model's prompts, name -> the text put before an input: "
                                          "`prompt_name` in POST /v1/embeddings picks one")
    default_prompt_name: Optional[str] = Field(
        default=None, description="The prompt applied when a request names none; null for none")


class ModelList(_Answer):
    """The models Triton serves and has ready."""

    object: Literal["list"] = "list"
    data: list[Model]


class Health(_Answer):
    """Every served model answered a real inference (checked at most every 2 s)."""

    status: Literal["ready"] = "ready"
