"""What the front-door process serves, on which ports, in front of which Triton server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bertserve import contract

DEFAULT_OPENAI_PORT = 8080
MAX_INPUTS = 2048  # OpenAI's own limit on inputs per /v1/embeddings request
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

    def __post_init__(self) -> None:
        for name in ("openai_port", "bert_as_service_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535 or (name == "bert_as_service_port" and port == 65535):
                raise ValueError(f"{name} {port} is not a usable port (0 turns it off)")
        if not self.openai_port and not self.bert_as_service_port:
            raise ValueError("both front doors are off; give --openai-port or --bert-as-service-port")
        if self.openai_port and self.bert_as_service_port and self.openai_port in self.bert_as_service_ports:
            raise ValueError(f"port {self.openai_port} is asked for twice")
        if self.timeout <= 0 or self.max_request_bytes < 1:
            raise ValueError("timeout and max_request_bytes must be positive")
        contract.check_key("api_key", self.api_key)

    @property
    def bert_as_service_ports(self) -> tuple[int, int]:
        """(requests, results)"""
        return self.bert_as_service_port, self.bert_as_service_port + 1
