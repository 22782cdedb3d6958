"""bertserve: BERT sentence and token embeddings from a Triton Inference Server.

    from bertserve import Encoder
    vectors = Encoder("localhost:8001").encode(["First do it", "then do it right"])
"""

from . import errors
from .client import Encoder
from .info import ModelInfo

__version__ = "0.1.0"
__all__ = ["Encoder", "ModelInfo", "errors", "__version__"]
