"""bertserve: BERT sentence and token embeddings, reranking, classification and sparse vectors from a Triton
Inference Server.

    from bertserve import Encoder
    vectors = Encoder("localhost:8001").encode(["First do it", "then do it right"])
"""

from . import errors
from .client import Encoded, Encoder, TruncationWarning
from .info import ModelInfo
from .results import Classified, Label, Ranked, SparseVector
from .status import ClientStatus, ModelStatus, ServerStatus

__version__ = "0.1.0"
__all__ = [
    "Classified",
    "ClientStatus",
    "Encoded",
    "Encoder",
    "Label",
    "ModelInfo",
    "ModelStatus",
    "Ranked",
    "ServerStatus",
    "SparseVector",
    "TruncationWarning",
    "errors",
    "__version__",
]
