"""`TritonServer`: a real tritonserver process from the nvidia-pytriton wheel, owned from start to stop."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bertserve import contract
from bertserve.errors import ServerStartError

from ._child import client_host, die_with_parent, port_free
from .config import ServerConfig
from .supervisor import Supervisor, WatchedServer

_log = logging.getLogger("bertserve.server")
# glog error lines ("E1124 21:03:46.378245 ...") and the final "error: ..." line.
_ERROR_LINE = re.compile(r"^(E\d{4} |error: )")
_ADMIN_TIMEOUT = 10.0  # seconds for one call to the repository API


@dataclass(frozen=True)
class _TritonInstall:
    binary: Path
    libraries: Optional[Path]  # put on LD_LIBRARY_PATH (the wheel's); None for an installed server
    backends: Optional[Path]  # the backend directory of an installed server (NGC image)
    python_backend: Optional[Path] = None  # the wheel's Python backend and the stub for this interpreter,
    stub: Optional[Path] = None  # assembled into a backend directory at each start
    caches: Optional[Path] = None  # the response cache implementations (caches/local)


def _find_triton(binary: Optional[Path]) -> _TritonInstall:
    """An installed tritonserver (`binary`, as in the NGC image), else the one in the nvidia-pytriton wheel."""
    if binary is not None:
        root = Path(binary).resolve().parent.parent
        install = _TritonInstall(Path(binary), None, root / "backends", caches=root / "caches")
        for path in (install.binary, install.backends):
            if not path.exists():
                raise ServerStartError(f"{path} is missing: pass the tritonserver of a Triton install "
                                       "(e.g. /opt/tritonserver/bin/tritonserver)")
        return install
    # Located, not imported: only the wheel's files are used, not its Python package.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "the embedded server needs the tritonserver binary from nvidia-pytriton: "
            "pip install --no-deps nvidia-pytriton==0.7.0 (or run `make install`)"
        )
    package = Path(spec.submodule_search_locations[0])
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = _TritonInstall(
        binary=root / "bin" / "tritonserver",
        libraries=package.parent / "nvidia_pytriton.libs",
        backends=None,
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        caches=root / "caches",
    )
    for path in (install.binary, install.libraries, install.python_backend, install.stub):
        if not path.exists():
            raise ServerStartError(f"nvidia-pytriton is incomplete or has no stub for Python {version}: {path} is missing")
    return install


def _redacted(text: str, *secrets_: Optional[str]) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "<key>")
    return text


def _refuse_missing_backends(repository: Path) -> None:
    """Fail before start, naming the model and backend, when the embedded server cannot run a model."""
    from bertserve.model_repository.config import parse
    from bertserve.model_repository.deployment import EMBEDDED_BACKENDS

    for config_file in sorted(repository.glob("*/config.pbtxt")):
        config = parse(config_file.read_text())
        needed = config.backend or config.platform
        if needed and needed not in EMBEDDED_BACKENDS:
            raise ServerStartError(
                f"model {config_file.parent.name!r} needs Triton's {needed!r} backend, which the embedded server "
                "lacks (it has the Python backend only); re-export it with --backend python, or serve this "
                "repository with the NGC Triton image (docker compose up)"
            )


class TritonServer:
    """Start, wait for, and stop one tritonserver. Use as a context manager.

    The Python backend stub embeds this interpreter, so models run with the
    packages of the environment bertserve is installed in.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.admin_key = config.admin_key or secrets.token_urlsafe(24)
        self._process: Optional[subprocess.Popen] = None
        self._workdir: Optional[Path] = None
        self._supervisor: Optional[Supervisor] = None

    @property
    def _client_host(self) -> str:
        return client_host(self.config.host)

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.config.metrics_port}/metrics"

    def start(self) -> None:
        """Launch tritonserver and return once it reports ready, or raise `ServerStartError`."""
        if self._process is not None:
            raise ServerStartError("this server is already started")
        if not self.config.remote:  # Triton reads object storage itself, and says what it cannot find
            if not Path(self.config.repository).is_dir():
                raise ServerStartError(f"model repository {self.config.repository} does not exist; export a model first")
            if self.config.tritonserver is None:  # an installed server (NGC) has the native backends too
                _refuse_missing_backends(Path(self.config.repository))
        busy = {name: port for name, port in self.config.ports.items() if not port_free(self.config.host, port)}
        if busy:
            name, port = next(iter(busy.items()))
            raise ServerStartError(f"{name} port {port} is already in use; stop what uses it or pass --{name}-port")
        install = _find_triton(self.config.tritonserver)
        self._workdir = Path(tempfile.mkdtemp(prefix="bertserve-triton-"))
        backends = install.backends or self._workdir / "backends"
        if install.python_backend is not None:
            shutil.copytree(install.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(install.stub, backends / "python" / "triton_python_backend_stub")
        command = [str(install.binary), *self.config.arguments(backends, self.admin_key, install.caches)]
        _log.info("starting %s", _redacted(" ".join(command), self.admin_key, self.config.api_key))
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(install),
                # A group of its own: a crashed tritonserver can leave backend processes behind; stop() ends them.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_ready()
            if self.config.remote:
                self._refuse_empty_remote()
            if self.config.heal:
                self._supervisor = Supervisor(self.watched())
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise

    def watched(self) -> WatchedServer:
        """What a `Supervisor` needs to watch this running server."""
        return WatchedServer(self.pid, self.is_alive, self.grpc_url, self.http_url, self.admin_key,
                             self.config.api_key, str(self.config.repository), self.config.remote,
                             self.config.probe_interval)

    def _refuse_empty_remote(self) -> None:
        """Triton turns ready on an object-storage prefix that holds no model; a folder is checked before start."""
        from bertserve import Encoder

        with Encoder(self.grpc_url, api_key=self.config.api_key, timeout=10, retries=0) as encoder:
            if not encoder.models():
                raise ServerStartError(f"no bertserve model under {self.config.repository}; upload an exported "
                                       "repository there (deploy/upload-models.sh) or check the prefix")

    def stop(self) -> None:
        """Stop the server: finish the requests in flight and refuse new ones (`_drain`), then SIGINT, and SIGKILL
        past the grace period (stop_timeout); remove its scratch files."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            deadline = time.monotonic() + self.config.stop_timeout
            self._drain(process, deadline)
            process.send_signal(signal.SIGINT)
            try:
                # Triton gives what is still in flight stop_timeout (--exit-timeout-secs), then exits by itself.
                process.wait(timeout=max(deadline - time.monotonic(), 0) + 10)
            except subprocess.TimeoutExpired:
                _log.warning("tritonserver did not stop within %.0f s; killing it", self.config.stop_timeout)
                process.kill()
                process.wait()
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # what outlived it: backend stubs of a crashed server
            except ProcessLookupError:
                pass
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _drain(self, process: subprocess.Popen, deadline: float) -> None:
        """Unload the ensembles and wait, until `deadline`, for their requests in flight to answer.

        Triton's own stop (SIGINT) stops every model's scheduler at once, so an ensemble request mid-way fails on
        its next step ("Server is stopping"): Triton 2.51 drains sequences only. An unloaded ensemble instead
        refuses new requests at once ("has no available versions", which clients retry until the server is gone)
        while the model, and the handles on its composing models, live on until its last request has answered;
        Triton then marks it UNAVAILABLE. Best effort: a server that cannot answer is stopped all the same.
        """
        client, headers = self._admin_client(), {contract.ADMIN_KEY_HEADER: self.admin_key}
        try:
            ensembles = [model["name"] for model in client.get_model_repository_index(headers=headers)
                         if model.get("state") == "READY"
                         and client.get_model_config(model["name"]).get("platform") == "ensemble"]
            for name in ensembles:
                client.unload_model(name, headers=headers, unload_dependents=False)
            while ensembles and process.poll() is None:
                draining = {model["name"] for model in client.get_model_repository_index(headers=headers)
                            if model.get("state") in ("READY", "UNLOADING")} & set(ensembles)
                if not draining:
                    break
                if time.monotonic() >= deadline:
                    _log.warning("requests to %s were still in flight after %.0f s; stopping all the same",
                                 ", ".join(sorted(draining)), self.config.stop_timeout)
                    break
                time.sleep(0.1)
        except Exception as exc:  # a stop must go on whatever the server answers (or not)
            _log.debug("could not drain tritonserver before stopping it: %s", exc)
        finally:
            # Also what lets Triton stop at once: it waits for every open HTTP connection, up to its grace period.
            client.close()

    def _admin_client(self) -> Any:
        """A tritonclient HTTP client for the repository API (which needs the admin key); close it after use."""
        import tritonclient.http as httpclient

        timeout = min(self.config.stop_timeout, _ADMIN_TIMEOUT)  # a server that does not answer is stopped anyway
        return httpclient.InferenceServerClient(self.http_url.removeprefix("http://"), connection_timeout=timeout,
                                                network_timeout=timeout)

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise ServerStartError("the server has not been started")
        return self._workdir / "tritonserver.log"

    def logs(self) -> str:
        """Everything tritonserver printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, ServerStartError):
            return ""

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise ServerStartError(f"tritonserver exited while starting; its log ends with:\n{self._log_tail()}")
            # Triton opens its metrics port after turning ready on HTTP: started means every endpoint answers.
            if self.is_ready() and self._metrics_listening():
                return
            time.sleep(0.25)
        raise ServerStartError(
            f"tritonserver was not ready after {self.config.startup_timeout:.0f} s; its log ends with:\n{self._log_tail()}"
        )

    def _metrics_listening(self) -> bool:
        try:
            socket.create_connection((self._client_host, self.config.metrics_port), timeout=2).close()
        except OSError:
            return False
        return True

    def _log_tail(self, lines: int = 30) -> str:
        """Triton's error lines when it printed any (its banner tables bury them), else the last lines."""
        log = self.logs().splitlines()
        errors = [line for line in log if _ERROR_LINE.match(line)]
        return "\n".join(errors[-lines:] if errors else log[-lines:])

    @staticmethod
    def _environment(install: _TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        # The stub embeds whichever Python comes first on PATH: make it this one.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if install.libraries is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in [str(install.libraries), env.get("LD_LIBRARY_PATH", "")] if p
            )
        return env
