"""The embedded Triton server: a real tritonserver process, no Docker (needs `pip install bertserve[server]`)."""

from .config import ServerConfig, byte_size, free_ports, is_object_storage
from .home import DEFAULT_MODEL_NAME, bertserve_home, default_model_dir, default_repository, write_admin_key
from .process import TritonServer

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ServerConfig",
    "TritonServer",
    "bertserve_home",
    "byte_size",
    "default_model_dir",
    "default_repository",
    "free_ports",
    "is_object_storage",
    "write_admin_key",
]
