"""bertserve: BERT sentence and token embeddings from a Triton Inference Server.

    from bertserve import Encoder
    vectors = Encoder("localhost:8001").encode(["First do it", "then do it right"])
"""

from . import errors
from .client import Encoded, Encoder, TruncationWarning
from .info import ModelInfo
from .status import ClientStatus, ModelStatus, ServerStatus

__version__ = "0.1.0"
__all__ = [
    "ClientStatus",
    "Encoded",
    "Encoder",
    "ModelInfo",
    "ModelStatus",
    "ServerStatus",
    "TruncationWarning",
    "errors",
    "__version__",
]
