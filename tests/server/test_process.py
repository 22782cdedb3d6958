"""The tritonserver process: refusals before start, readiness, keys kept out of the log, and one stop under
load that lets in-flight requests finish, refuses new ones, frees its ports, and leaves clients raising in time."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple, Optional

import pytest
from google.protobuf import text_format

from bertserve import Encoder
from bertserve.errors import BertserveError, ServerStartError, ServerUnavailableError
from bertserve.model_repository.config import parse
from bertserve.model_repository.repository import component_names
from bertserve.server import TritonServer
from bertserve.server.supervisor import backend_processes

from ..conftest import DEFAULT_NAME, copy_model, server_config, settled

# About 200 tokens, 64 to a request (a full batch of the encoder): seconds of work on 2 CPU cores.
_LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 22)
_IN_FLIGHT = 0.5  # a request sent this long before the stop has reached the server, however loaded the machine
# How long the stop test's tokenizer holds a request before running it: a request in flight for 2 * _IN_FLIGHT is
# still there, before the ensemble's second step, where Triton's own stop would fail it.
_TOKENIZER_HOLD = 6 * _IN_FLIGHT


def port_free(port: int) -> bool:
    """Nothing listens on `port`, and a new server can bind it (with SO_REUSEADDR, as tritonserver does)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def alive(pid: int) -> bool:
    """Process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(ServerStartError, match="does not exist; export a model first"):
        TritonServer(server_config(tmp_path / "nowhere")).start()


def test_busy_port_is_refused_with_the_option_to_change(tmp_path):
    config = server_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", config.grpc_port))
        blocker.listen()
        with pytest.raises(ServerStartError, match=f"grpc port {config.grpc_port} is already in use.*--grpc-port"):
            TritonServer(config).start()


def test_keys_stay_out_of_the_log(tmp_path, caplog):
    """The command line carries both keys (Triton's flags); what bertserve logs of it must not."""
    binary = tmp_path / "triton" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    (tmp_path / "triton" / "backends").mkdir()
    binary.write_text("#!/bin/sh\necho 'no model here' >&2\nexit 1\n")
    binary.chmod(0o755)
    api_key, admin_key = "api-key-that-must-not-show-1234", "admin-key-that-must-not-show-5678"
    config = server_config(tmp_path, tritonserver=binary, api_key=api_key, admin_key=admin_key)
    with caplog.at_level(logging.DEBUG, logger="bertserve"), pytest.raises(ServerStartError) as refused:
        TritonServer(config).start()
    assert f"starting {binary}" in caplog.text and "<key>" in caplog.text, caplog.text  # the command was logged
    for key in (api_key, admin_key):
        assert key not in caplog.text and key not in str(refused.value)


@pytest.mark.server
def test_broken_model_fails_start_with_the_server_log(tmp_path):
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise RuntimeError('model failed to import')\n")
    with pytest.raises(ServerStartError, match="model failed to import"):
        TritonServer(server_config(tmp_path / "repo", startup_timeout=120)).start()


class _Outcome(NamedTuple):
    started: float
    ended: float
    error: Optional[BertserveError]


class _LongRequests:
    """Clients each sending 64 long items at a time, in a loop, recording when each request started and ended.

    They retry as the SDK does by default: a request refused while the server drains ("has no available
    versions") is retried until the server is gone, and must then end as unavailable.
    """

    def __init__(self, server: TritonServer, clients: int) -> None:
        self.outcomes: list[_Outcome] = []
        self.sending: dict[int, float] = {}  # client -> when its request now in flight started
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(server, i)) for i in range(clients)]

    def _client(self, server: TritonServer, i: int) -> None:
        with Encoder(server.grpc_url, model=DEFAULT_NAME, timeout=60) as enc:
            while not self._stop.is_set():
                self.sending[i] = started = time.monotonic()
                try:
                    enc.encode([_LONG] * 64)
                    error = None
                except BertserveError as exc:
                    error = exc
                del self.sending[i]
                self.outcomes.append(_Outcome(started, time.monotonic(), error))

    def mid_request(self) -> bool:
        """Served before, and now a request in flight for a while: the moment to stop the server."""
        now = time.monotonic()
        return (any(o.error is None for o in self.outcomes)
                and any(now - started > 2 * _IN_FLIGHT for started in list(self.sending.values())))

    def __enter__(self) -> "_LongRequests":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung after the stop"


def _hold_in_tokenizer(repository: Path, seconds: float) -> None:
    """Make the tokenizer wait `seconds` for a fuller batch before running a request alone: a request in flight is
    then between the ensemble's steps for that long, whatever the machine's speed."""
    tokenizer, _ = component_names(DEFAULT_NAME)
    path = repository / tokenizer / "config.pbtxt"
    config = parse(path.read_text())
    config.max_batch_size *= 2  # a request as large as the batch would run at once
    config.dynamic_batching.max_queue_delay_microseconds = int(seconds * 1e6)
    path.write_text(text_format.MessageToString(config))


@pytest.mark.reliability
def test_stop_under_load_drains_refuses_new_requests_and_frees_its_ports(default_home, tmp_path):
    repository = tmp_path / "repository"
    copy_model(default_home / "repository", repository, DEFAULT_NAME)
    _hold_in_tokenizer(repository, _TOKENIZER_HOLD)
    # A grace period long enough for the work in flight on a slow machine; a clean stop does not wait it out.
    server = TritonServer(server_config(repository, stop_timeout=30))
    server.start()
    try:
        assert server.is_alive() and server.is_ready()
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            assert b"nv_inference_request_success" in response.read()
        process, group, ports = server._process, server.pid, server.config.ports.values()
        late = Encoder(server.grpc_url, model=DEFAULT_NAME, timeout=5)
        assert late.encode(["up"]).shape == (1, 384)
        # One client: a second one's request would join the held one in the tokenizer's batch, and run at once.
        with _LongRequests(server, clients=1) as load:
            assert settled(load.mid_request, bool, timeout=120), "no request was ever in flight long enough"
            stopping = time.monotonic()
            server.stop()
            stopped = time.monotonic()
    finally:
        server.stop()
    # Exit code 0: Triton finished the requests in flight within its grace period (past it, Triton fails and
    # stop() kills it).
    assert process.returncode == 0, "tritonserver was killed or failed instead of stopping cleanly"
    assert stopped - stopping < server.config.stop_timeout
    # Every request in flight at the stop finished; it was held between the ensemble's steps, where Triton's own
    # stop refuses the next step ("Server is stopping, scheduler for model has stopped accepting new inference
    # requests").
    in_flight = [o for o in load.outcomes if o.started < stopping - _IN_FLIGHT and o.ended > stopping]
    assert in_flight, "no request was in flight at the stop: the test proves nothing"
    dropped = [(round(o.started - stopping, 2), str(o.error)) for o in in_flight if o.error]
    assert not dropped, f"{len(dropped)} of {len(in_flight)} requests in flight at the stop failed: {dropped[:2]}"
    # Sent while it drained: refused, and unavailable once the server is gone; none served. Those sent just after
    # the call may have reached the server before it began refusing, and may be served.
    draining = [o for o in load.outcomes if stopping <= o.started <= stopped]
    assert [o for o in draining if o.started > stopping + _IN_FLIGHT], "no request was sent while it drained"
    refused = [(round(o.started - stopping, 2), str(o.error)) for o in draining
               if not isinstance(o.error, ServerUnavailableError)
               and (o.error is not None or o.started > stopping + _IN_FLIGHT)]
    assert not refused, f"sent while it drained, and served or refused as other than unavailable: {refused[:2]}"
    # Sent once Triton is gone: refused, as unavailable.
    gone = [o.error for o in load.outcomes if o.started > stopped]
    assert all(isinstance(error, ServerUnavailableError) for error in gone), gone
    assert not server.is_alive() and not server.is_ready()
    assert [port for port in ports if not port_free(port)] == []
    assert settled(lambda: _alive_in_group(group), lambda left: not left) == set()  # no backend process outlives it
    # A client of the stopped server raises within its timeout, after its retries.
    with late:
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="could not reach a Triton server"):
            late.encode(["down"])
        assert time.monotonic() - started < late.timeout
        assert late.status().retries == 3 and late.status().failures == 1


def test_repository_needing_a_native_backend_is_refused_by_name(tiny_bert_dir, tmp_path):
    from bertserve.export import Backend, Deployment, ExportConfig, export_model

    repo = tmp_path / "repo"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name="native",
                              deployment=Deployment(Backend.ONNXRUNTIME)))
    with pytest.raises(ServerStartError, match="model 'native_encoder' needs Triton's 'onnxruntime_onnx' backend.*"
                                               "--backend python.*docker compose up"):
        TritonServer(server_config(repo)).start()


def test_missing_installed_tritonserver_is_named(tmp_path):
    with pytest.raises(ServerStartError, match="/nowhere/bin/tritonserver is missing.*/opt/tritonserver"):
        TritonServer(server_config(tmp_path, tritonserver=Path("/nowhere/bin/tritonserver"))).start()


def _alive_in_group(group: int) -> set[int]:
    """Processes of process group `group` that still run (not zombies)."""
    running = set()
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            running.add(int(entry.name))
    return running


def test_a_crashed_tritonserver_leaves_no_backend_process_behind(throwaway_server):
    """A backend stub busy when tritonserver aborts (one loading a model, say) outlives it by minutes, or for
    good; stop() ends it. Here a stub is frozen so that it cannot notice on its own."""
    group = throwaway_server.pid
    stubs = backend_processes(group)
    assert stubs, "no backend processes to watch: the test proves nothing"
    os.kill(next(iter(stubs)), signal.SIGSTOP)
    os.kill(group, signal.SIGKILL)  # as an abort ends it
    throwaway_server._process.wait()
    throwaway_server.stop()
    assert settled(lambda: _alive_in_group(group), lambda alive: not alive, timeout=5) == set()
