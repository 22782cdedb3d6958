"""HTTP POSTs over one keep-alive connection per client thread, as a pooling HTTP client keeps them."""

from __future__ import annotations

import http.client
import threading


class KeepAliveClient:
    """POSTs JSON to one server; each thread keeps its own connection and reconnects once when the server has
    closed it while idle."""

    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._local = threading.local()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer."""
        try:
            return self._post(path, body)
        except (http.client.HTTPException, ConnectionError):  # closed by the server while idle: once more, anew
            self._local.connection.close()
            self._local.connection = None
            return self._post(path, body)

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if getattr(self._local, "connection", None) is None:
            self._local.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = self._local.connection.getresponse()
        return response.status, response.read()
