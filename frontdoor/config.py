"""What the front-door process serves, on which ports, in front of which Triton server."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Optional

from bertserve import contract
from bertserve.errors import ConfigError

DEFAULT_OPENAI_PORT = 8080
MAX_INPUTS = 2048  # OpenAI's own limit on inputs per /v1/embeddings request
DEFAULT_MAX_DOCUMENTS = 1000  # documents per /v1/rerank request (Cohere's limit is 1,000 too)
BERT_AS_SERVICE_VERSION = "1.10.0"  # what bert-serving-client checks the server against


@dataclass(frozen=True)
class FrontDoorConfig:
    """`openai_port` 0 turns the OpenAI API off; `bert_as_service_port` 0 (the default) turns bert-as-service's
    protocol off, and otherwise takes that port for requests and the next one for results, as
    `bert-serving-start -port P -port_out P+1` did."""

    triton_url: str = "localhost:8001"  # Triton's gRPC address
    host: str = "0.0.0.0"
    openai_port: int = DEFAULT_OPENAI_PORT
    bert_as_service_port: int = 0
    bert_as_service_model: Optional[str] = None  # the protocol has no model names; default: the one served
    api_key: Optional[str] = None  # asked of OpenAI clients (Bearer) and passed on to Triton
    timeout: float = 60.0  # seconds per Triton call
    max_request_bytes: int = contract.DEFAULT_MAX_REQUEST_BYTES
    max_documents: int = DEFAULT_MAX_DOCUMENTS  # per rerank request
    max_windows: int = contract.DEFAULT_MAX_WINDOWS  # per embeddings request with long_input "chunk"

    def __post_init__(self) -> None:
        for name in ("openai_port", "bert_as_service_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535 or (name == "bert_as_service_port" and port == 65535):
                raise ConfigError(f"{name} {port} is not a usable port (0 turns it off)")
        if not self.openai_port and not self.bert_as_service_port:
            raise ConfigError("both front doors are off; give --openai-port or --bert-as-service-port")
        if self.openai_port and self.bert_as_service_port and self.openai_port in self.bert_as_service_ports:
            raise ConfigError(f"port {self.openai_port} is asked for twice")
        if self.timeout <= 0 or self.max_request_bytes < 1:
            raise ConfigError("timeout and max_request_bytes must be positive")
        for name in ("max_documents", "max_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        contract.check_key("api_key", self.api_key)

    def arguments(self) -> list[str]:
        """The command line (after `bertserve frontdoor`) that serves this config; the API key is left to the
        environment, where `ps` does not show it."""
        arguments = ["--url", self.triton_url, "--host", self.host, "--openai-port", str(self.openai_port),
                     "--bert-as-service-port", str(self.bert_as_service_port), "--timeout", str(self.timeout),
                     "--max-request-bytes", str(self.max_request_bytes), "--max-documents", str(self.max_documents),
                     "--max-windows", str(self.max_windows)]
        if self.bert_as_service_model:
            arguments += ["--bert-as-service-model", self.bert_as_service_model]
        return arguments

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, **given: object) -> FrontDoorConfig:
        """The config of a command line parsed with `add_arguments`; `given` sets the fields it has no option for."""
        options = {field.name: getattr(args, field.name) for field in fields(cls) if hasattr(args, field.name)}
        return cls(**{**options, **given})

    @property
    def bert_as_service_ports(self) -> tuple[int, int]:
        """(requests, results)"""
        return self.bert_as_service_port, self.bert_as_service_port + 1


def add_arguments(parser: argparse.ArgumentParser, standalone: bool) -> None:
    """Declare the front door's options, named as `FrontDoorConfig`'s fields: those of `bertserve serve`, and with
    `standalone` those of `bertserve frontdoor` besides (the address to listen on, the body limit, `--model`)."""
    parser.add_argument("--openai-port", type=int, default=FrontDoorConfig.openai_port,
                        help="port of the OpenAI-compatible API, POST /v1/embeddings (0: off; default: %(default)s)")
    parser.add_argument("--bert-as-service-port", type=int, default=FrontDoorConfig.bert_as_service_port,
                        metavar="PORT", help="speak bert-as-service's protocol for BertClient on PORT (requests) and "
                                             "PORT+1 (results), as bert-serving-start -port PORT -port_out PORT+1 "
                                             "(default: off)")
    parser.add_argument("--bert-as-service-model", *(["--model"] if standalone else []), metavar="NAME",
                        help="the model BertClient gets (default: the one served, else the default model)")
    if standalone:
        parser.add_argument("--host", default=FrontDoorConfig.host, help="address to listen on (default: %(default)s)")
        parser.add_argument("--max-request-bytes", type=int, default=FrontDoorConfig.max_request_bytes,
                            help="largest OpenAI request body (default: %(default)s)")
        parser.add_argument("--max-documents", type=int, default=FrontDoorConfig.max_documents,
                            help="most documents one POST /v1/rerank request may rank (default: %(default)s)")
        parser.add_argument("--max-windows", type=int, default=FrontDoorConfig.max_windows,
                            help="most windows of max_seq_len tokens one POST /v1/embeddings request with "
                                 "long_input 'chunk' may encode, over all its inputs (default: %(default)s)")
