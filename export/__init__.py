"""Export a Hugging Face BERT folder to a Triton model repository (needs `pip install bertserve[server]`)."""

from bertserve.model_repository.deployment import Backend, Deployment, PerformanceHint, Runtime

from .config import ExportConfig, Precision
from .exporter import export_model
from .pooling import Pooling

__all__ = [
    "Backend", "Deployment", "ExportConfig", "PerformanceHint", "Pooling", "Precision", "Runtime", "export_model",
]
