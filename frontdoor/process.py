"""`FrontDoor`: the front-door process beside a Triton server, owned from start to stop (as `TritonServer` is)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bertserve.errors import ServerStartError
from bertserve.server._child import PARENT_VARIABLE, client_host, port_free

from .config import FrontDoorConfig

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class FrontDoor:
    """Start `bertserve frontdoor` for `config`, wait until its ports answer, and stop it. A context manager."""

    def __init__(self, config: FrontDoorConfig) -> None:
        self.config = config
        self._process: Optional[subprocess.Popen] = None
        self._log = Path(tempfile.mkstemp(prefix="bertserve-frontdoor-", suffix=".log")[1])

    @property
    def _client_host(self) -> str:
        return client_host(self.config.host)

    @property
    def openai_url(self) -> Optional[str]:
        """The OpenAI API's base URL (what `OpenAI(base_url=...)` takes), or None when it is off."""
        return f"http://{self._client_host}:{self.config.openai_port}/v1" if self.config.openai_port else None

    def _ports(self) -> list[int]:
        bert = self.config.bert_as_service_ports if self.config.bert_as_service_port else ()
        return [port for port in (self.config.openai_port, *bert) if port]

    def start(self) -> None:
        taken = [port for port in self._ports() if not port_free(self.config.host, port)]
        if taken:
            raise ServerStartError(f"front-door port {taken[0]} is already in use; stop what uses it or pick "
                                   "another (--openai-port, --bert-as-service-port)")
        command = [sys.executable, "-m", "bertserve.frontdoor", *self.config.arguments()]
        environment = {**os.environ, PARENT_VARIABLE: str(os.getpid())}  # the door follows this process itself
        environment.pop("BERTSERVE_API_KEY", None)
        if self.config.api_key:  # in the environment, not on the command line where `ps` shows it
            environment["BERTSERVE_API_KEY"] = self.config.api_key
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(self._answers(port) for port in self._ports()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.logs()[-3000:]
                self.stop()
                raise ServerStartError(f"the front door did not start; its log ends with:\n{tail}")
            time.sleep(0.1)

    def _answers(self, port: int) -> bool:
        try:
            with socket.create_connection((self._client_host, port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def logs(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def __enter__(self) -> FrontDoor:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
