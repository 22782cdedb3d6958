"""The model repository in object storage, on a real S3-compatible server (moto's): uploaded with
deploy/upload-models.sh, read by tritonserver itself (s3://), and synced by the init container's script."""

from __future__ import annotations

import filecmp
import os
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from bertserve import Encoder
from bertserve.errors import ServerStartError
from bertserve.server import TritonServer, free_ports

from ..conftest import DEFAULT_NAME, server_config
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


def test_the_server_serves_the_repository_straight_from_s3(s3, uploaded, server, monkeypatch):
    endpoint, env = s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    # Triton's form for an S3-compatible endpoint: s3://http://host:port/bucket/prefix
    url = f"s3://{endpoint}/{uploaded.removeprefix('s3://')}"
    with TritonServer(server_config(url, heal=True)) as triton, Encoder(triton.grpc_url, model=DEFAULT_NAME) as encoder:
        assert encoder.models() == [DEFAULT_NAME]
        vectors = encoder.encode(SENTENCES)
    np.testing.assert_allclose(vectors, _reference(server), atol=1e-6)


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


def test_init_container_script_syncs_a_repository_that_serves(s3, uploaded, default_home, server, tmp_path):
    endpoint, env = s3
    models = tmp_path / "models"
    result = run(["sh", KUBERNETES / "base" / "sync-models.sh", models],
                 env={**env, "BERTSERVE_MODELS_URI": uploaded}, timeout=120)
    assert result.returncode == 0, result.stderr
    source = default_home / "repository"
    for path in source.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        copy = models / path.relative_to(source)
        assert copy.is_dir() if path.is_dir() else filecmp.cmp(path, copy, shallow=False), copy
    with TritonServer(server_config(models)) as triton, Encoder(triton.grpc_url, model=DEFAULT_NAME) as encoder:
        synced = encoder.encode(SENTENCES)
    np.testing.assert_allclose(synced, _reference(server), atol=1e-6)


def test_init_container_script_fails_plainly_on_an_empty_prefix(s3, tmp_path):
    endpoint, env = s3
    result = run(["sh", KUBERNETES / "base" / "sync-models.sh", tmp_path / "models"],
                 env={**env, "BERTSERVE_MODELS_URI": f"s3://{BUCKET}/no-such-prefix"}, timeout=120)
    assert result.returncode == 1 and "no model (*/config.pbtxt) under s3://" in result.stderr, result.stderr
