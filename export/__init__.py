"""Export a Hugging Face BERT folder to a Triton model repository (needs `pip install bertserve[server]`).

The options (`ExportConfig`, `Pooling`, `Precision`, deployments) import no torch; `export_model`, which does, is
loaded on first use, so that reading or validating options stays cheap.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

# The exporter is the server extra's: where that is missing, importing this package fails at once and names what
# is missing (the CLI turns that into its install hint), as it did when it imported torch; it no longer does.
for _needed in ("torch", "tokenizers"):
    if importlib.util.find_spec(_needed) is None:
        raise ModuleNotFoundError(f"No module named {_needed!r}", name=_needed)

from bertserve.model_repository.deployment import Backend, Deployment, PerformanceHint, Runtime  # noqa: E402

from .config import ExportConfig, Precision, default_encoder  # noqa: E402
from .options import Pooling  # noqa: E402

if TYPE_CHECKING:
    from .exporter import export_model

__all__ = [
    "Backend", "Deployment", "ExportConfig", "PerformanceHint", "Pooling", "Precision", "Runtime", "default_encoder", "export_model",
]


def __getattr__(name: str) -> Any:
    """Load `export_model` (and with it torch) on first use (PEP 562)."""
    if name == "export_model":
        from .exporter import export_model

        globals()[name] = export_model  # later look-ups find it without this hook
        return export_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
