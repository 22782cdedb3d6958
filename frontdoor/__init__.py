"""Front doors beside Triton's own HTTP/gRPC: an OpenAI-compatible `/v1/embeddings`, and bert-as-service's
ZeroMQ protocol so that `BertClient` code runs unchanged. One asyncio process talks to Triton over gRPC."""

from .config import FrontDoorConfig
from .process import FrontDoor

__all__ = ["FrontDoor", "FrontDoorConfig"]
