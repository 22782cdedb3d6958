"""Keeps a running tritonserver serving after one of its backend processes dies.

Triton 2.51's Python backend never relaunches a stub process that died (killed, out of memory): every
request to that model fails with "Stub process ... is not healthy" while readiness stays true. The
supervisor notices, from the process table every `probe_interval` and from a real inference through each
model every `_PROBE_EVERY` intervals, and reloads the model through the repository API (explicit model
control, behind the admin key). The probes show in Triton's statistics as one request per model each time.

A reload loads before it unloads where it can: Triton reloads a loaded model in the background, and swaps
it in when ready, when its version folder changed since the last load (a `load` of an unchanged model does
nothing). So the supervisor touches the version folders of a local repository and asks for a load: the
model and its ensemble stay loaded throughout, and clients (which retry a model that cannot run, within
their timeout) see latency rather than errors. For object storage, or a folder it may not touch, it unloads
and loads: the ensemble is then unknown for the seconds the load takes ("has no available versions").
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bertserve import contract
from bertserve.errors import BertserveError, ModelUnavailableError

_log = logging.getLogger("bertserve.server")
_STUB = "triton_python_backend_stub"
_INSTANCE = re.compile(r"(.+)_\d+_\d+")  # a backend instance's name: <model>_<group>_<index>
_SHM_REGION = "triton_python_backend_shm_region"  # a stub argument that looks like an instance name too
_UNHEALTHY = re.compile(r"Stub process '(.+)_\d+_\d+' is not healthy")
_RELOAD_TIMEOUT = 120.0
_PROBE_EVERY = 10
PROCESS_TABLE, PROBE = "process table", "probe"  # how a death was found, the keys of `Supervisor.detected`


@dataclass(frozen=True)
class WatchedServer:
    """What the supervisor needs of the tritonserver it watches (`TritonServer.watched()`)."""

    pid: int
    is_alive: Callable[[], bool]
    grpc_url: str
    http_url: str
    admin_key: str
    api_key: Optional[str]
    repository: str  # a folder, or an object-storage URL when `remote`
    remote: bool
    probe_interval: float


class Supervisor:
    """A thread that probes every `probe_interval` seconds and reloads a model whose backend process died.

    `reloads` counts the reloads, `detected` the deaths found by each path (`PROCESS_TABLE`, `PROBE`), and
    `checks` the rounds of checking completed, so that an observer can tell that rounds passed.
    """

    def __init__(self, server: WatchedServer) -> None:
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bertserve-supervisor", daemon=True)
        self._stubs: dict[int, str] = {}  # backend process id -> its model
        self._probes: dict[str, object] = {}  # ensemble -> Encoder, used by the supervisor thread only
        self.reloads = 0
        self.detected = {PROCESS_TABLE: 0, PROBE: 0}
        self.checks = 0

    def start(self) -> None:
        self._stubs = backend_processes(self._server.pid)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=_RELOAD_TIMEOUT)

    def _run(self) -> None:
        rounds = 0
        while not self._stop.wait(self._server.probe_interval):
            if not self._server.is_alive():
                break
            rounds += 1
            try:
                self._check(probe=rounds % _PROBE_EVERY == 0)
            except Exception:  # the supervisor must outlive whatever it finds
                _log.exception("supervisor check failed")
            self.checks += 1
        for encoder in self._probes.values():
            encoder.close()

    def _check(self, probe: bool) -> None:
        # Probes first, the table after: a death the probe met is then in the table too, unless the table cannot
        # see it (a process it never listed), and `detected` credits the probe only with those.
        probed = {model for ensemble in (self._ensembles() if probe else ()) for model in self._probe(ensemble)}
        found = {model: PROCESS_TABLE for pid, model in self._stubs.items() if not _alive(pid)}
        found.update({model: PROBE for model in probed - found.keys()})
        try:
            for model, path in sorted(found.items()):
                self.detected[path] += 1
                _log.warning("a backend process of model %r died (found by the %s); reloading the model", model, path)
                self._reload(model)
        finally:
            # Also after a failed reload: the dead process leaves the table, and the probe retries it.
            if found:
                self._stubs = backend_processes(self._server.pid)

    def _ensembles(self) -> list[str]:
        if not self._server.remote:
            return sorted(path.parent.name for path in Path(self._server.repository).glob("*/bertserve.json"))
        # Object storage has no folder to read: the bertserve models the server has ready.
        from bertserve import Encoder

        with Encoder(self._server.grpc_url, api_key=self._server.api_key, timeout=10, retries=0) as encoder:
            return encoder.models()

    @property
    def _admin(self) -> dict[str, str]:
        return {contract.ADMIN_KEY_HEADER: self._server.admin_key}

    def _admin_client(self):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self._server.http_url.removeprefix("http://"),
                                                connection_timeout=10, network_timeout=_RELOAD_TIMEOUT)

    def _probe(self, ensemble: str) -> set[str]:
        """The models a real inference through `ensemble` reports as dead (none when it succeeds)."""
        from bertserve import Encoder
        from bertserve.health import probe

        if ensemble not in self._probes:
            self._probes[ensemble] = Encoder(self._server.grpc_url, model=ensemble, api_key=self._server.api_key,
                                             timeout=10, retries=0)
        try:
            probe(self._probes[ensemble])  # retries=0: a dead backend answers at once
        except ModelUnavailableError as exc:  # a dead backend, or a model being reloaded (nothing to match)
            return set(_UNHEALTHY.findall(str(exc)))
        except BertserveError as exc:  # busy, timed out, unreachable: not a reason to reload anything
            _log.debug("probe of %s failed: %s", ensemble, exc)
        return set()

    def _reload(self, model: str) -> None:
        started = time.monotonic()
        client, headers = self._admin_client(), self._admin
        try:
            if self._touch_versions(model):
                client.load_model(model, headers=headers)  # loaded beside the dead one, then swapped in
                how = "loaded beside the old one, then swapped"
            else:
                client.unload_model(model, headers=headers)
                deadline = time.monotonic() + _RELOAD_TIMEOUT
                while client.is_model_ready(model, headers=headers) and time.monotonic() < deadline:
                    time.sleep(0.1)
                client.load_model(model, headers=headers)
                how = "unloaded, then loaded"
        finally:
            client.close()
        self.reloads += 1
        _log.warning("model %r reloaded in %.1f s (%s)", model, time.monotonic() - started, how)

    def _touch_versions(self, model: str) -> bool:
        """Mark `model`'s version folders changed, so that a load reloads it in the background; False where the
        repository is not a folder this process may touch."""
        if self._server.remote:
            return False
        folder = Path(self._server.repository) / model
        try:
            versions = [path for path in folder.iterdir() if path.name.isdigit() and path.is_dir()]
            for version in versions:
                os.utime(version)  # Triton compares a version folder's newest modification time with its last load
        except OSError as exc:  # a read-only mount, or no such folder
            _log.debug("cannot touch the versions of %s: %s", model, exc)
            return False
        return bool(versions)


def backend_processes(triton_pid: Optional[int]) -> dict[int, str]:
    """The Python-backend processes of a tritonserver, by process id, with the model each runs.

    The model comes from the instance name on the stub's command line (`<model>_<group>_<index>`), not from
    its folder: a repository in object storage is downloaded to a folder named at random.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = [os.fsdecode(arg) for arg in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == triton_pid and args[0].endswith(_STUB):
            models = [match.group(1) for arg in args[1:] if not arg.startswith(_SHM_REGION)
                      and (match := _INSTANCE.fullmatch(arg))]
            if len(models) == 1:
                found[int(entry.name)] = models[0]
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
