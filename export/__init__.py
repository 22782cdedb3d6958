"""Export a Hugging Face BERT folder to a Triton model repository (needs `pip install bertserve[server]`)."""

from .config import ExportConfig
from .exporter import export_model
from .pooling import Pooling

__all__ = ["ExportConfig", "Pooling", "export_model"]
