"""The model repository in object storage, on a real S3-compatible server (moto's): uploaded with
deploy/upload-models.sh, read by tritonserver itself (s3://), healed from it, and synced by the init container's
script."""

from __future__ import annotations

import filecmp
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from bert_serving.client import BertClient

from bertserve import Encoder
from bertserve.errors import BertserveError, ServerStartError
from bertserve.frontdoor import FrontDoor
from bertserve.server import TritonServer, free_ports
from bertserve.server.supervisor import _PROBE_EVERY, PROBE, PROCESS_TABLE, backend_processes

from ..conftest import DEFAULT_NAME, server_config, settled
from ..frontdoor.conftest import door_config
from .conftest import DEPLOY, KUBERNETES, TOOLS, run, tool

BUCKET = "bertserve-models"
SENTENCES = ["First do it", "then do it right", "then do it better"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on loopback, and the environment the AWS CLI and tritonserver need to reach it."""
    moto = tool("moto_server", "s3")
    tool("aws", "s3")
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                assert process.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
               "PATH": os.pathsep.join([str(TOOLS / "s3" / "bin"), os.environ["PATH"]])}
        result = run(["aws", "s3", "mb", f"s3://{BUCKET}"], env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        yield endpoint, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def uploaded(s3, default_home):
    """The default model's repository, uploaded as deploy/README.md says; its s3:// prefix."""
    endpoint, env = s3
    uri = f"s3://{BUCKET}/cpu"
    result = run(["sh", DEPLOY / "upload-models.sh", default_home / "repository", uri], env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return uri


def _reference(server) -> np.ndarray:
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as encoder:
        return encoder.encode(SENTENCES)


def test_the_server_serves_the_repository_straight_from_s3_and_heals_from_it(s3, uploaded, server, monkeypatch,
                                                                             caplog):
    endpoint, env = s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    # Triton's form for an S3-compatible endpoint: s3://http://host:port/bucket/prefix
    url = f"s3://{endpoint}/{uploaded.removeprefix('s3://')}"
    tokenizer = f"{DEFAULT_NAME}_tokenizer"
    with caplog.at_level(logging.WARNING, logger="bertserve.server"), \
            TritonServer(server_config(url, heal=True, probe_interval=0.1)) as triton, \
            Encoder(triton.grpc_url, model=DEFAULT_NAME, timeout=60) as encoder:
        assert encoder.models() == [DEFAULT_NAME]
        vectors = encoder.encode(SENTENCES)
        # bert-as-service names no model: on object storage the door finds the one served by asking Triton.
        with FrontDoor(door_config(triton, openai_port=0, bert_as_service_model=None, api_key=None)) as door:
            port, port_out = door.config.bert_as_service_ports
            with BertClient(ip="127.0.0.1", port=port, port_out=port_out, timeout=60_000) as client:
                through_door = client.encode(SENTENCES)

        # A dead backend process is reloaded from S3 (no folder to touch there: unloaded, then loaded again).
        supervisor = triton._supervisor
        for pid in [pid for pid, model in backend_processes(triton.pid).items() if model == tokenizer]:
            os.kill(pid, signal.SIGKILL)
        settled(lambda: supervisor.reloads, lambda reloads: reloads >= 1, timeout=60)
        healed = settled(lambda: _encode_or_none(encoder), lambda got: got is not None, timeout=60)
        # Two rounds of probes more, which list the models through Triton (the remote branch): no second reload.
        checks = supervisor.checks
        settled(lambda: supervisor.checks, lambda done: done >= checks + 2 * _PROBE_EVERY, timeout=30)
        assert (supervisor.reloads, supervisor.detected) == (1, {PROCESS_TABLE: 1, PROBE: 0})
        assert tokenizer in {model for model in backend_processes(triton.pid).values()}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    reference = _reference(server)
    for got in (vectors, through_door, healed):
        np.testing.assert_allclose(got, reference, atol=1e-6)


def _encode_or_none(encoder: Encoder):
    """The vectors of SENTENCES, or None while the model is reloading (the ensemble is unknown meanwhile)."""
    try:
        return encoder.encode(SENTENCES)
    except BertserveError:
        return None


def test_the_server_refuses_an_s3_prefix_without_models(s3, monkeypatch, tmp_path):
    """A missing prefix is Triton's own error; a prefix holding no model would start serving nothing."""
    endpoint, env = s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    with pytest.raises(ServerStartError, match="repository path is not a valid directory"):
        TritonServer(server_config(f"s3://{endpoint}/{BUCKET}/no-such-prefix", startup_timeout=60)).start()
    (tmp_path / "README.txt").write_text("not a model\n")
    result = run(["aws", "s3", "cp", tmp_path / "README.txt", f"s3://{BUCKET}/no-models/README.txt"], env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    with pytest.raises(ServerStartError, match="no bertserve model under s3://.*/no-models"):
        TritonServer(server_config(f"s3://{endpoint}/{BUCKET}/no-models", startup_timeout=60)).start()


def test_init_container_script_syncs_the_repository_byte_for_byte(s3, uploaded, default_home, tmp_path):
    """The same files as the repository that serves (the test above serves it from S3): nothing to start here."""
    endpoint, env = s3
    models = tmp_path / "models"
    result = run(["sh", KUBERNETES / "base" / "sync-models.sh", models],
                 env={**env, "BERTSERVE_MODELS_URI": uploaded}, timeout=120)
    assert result.returncode == 0, result.stderr
    source = default_home / "repository"

    def tree(root) -> set:
        return {path.relative_to(root) for path in root.rglob("*") if "__pycache__" not in path.parts}

    # upload-models.sh keeps each empty version folder (the ensemble's) with a .keep file: object storage has no folders.
    empty = {relative / ".keep" for relative in tree(source) if (source / relative).is_dir()
             and not any((source / relative).iterdir())}
    assert empty and tree(models) == tree(source) | empty
    for relative in tree(source):
        path, copy = source / relative, models / relative
        assert copy.is_dir() if path.is_dir() else filecmp.cmp(path, copy, shallow=False), copy


def test_init_container_script_fails_plainly_on_an_empty_prefix(s3, tmp_path):
    endpoint, env = s3
    result = run(["sh", KUBERNETES / "base" / "sync-models.sh", tmp_path / "models"],
                 env={**env, "BERTSERVE_MODELS_URI": f"s3://{BUCKET}/no-such-prefix"}, timeout=120)
    assert result.returncode == 1 and "no model (*/config.pbtxt) under s3://" in result.stderr, result.stderr
