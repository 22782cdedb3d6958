"""Who may do what: inference behind the API key, admin APIs behind the admin key, health open to all."""

from __future__ import annotations

import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bertserve import Encoder
from bertserve.errors import AuthenticationError

from ..conftest import DEFAULT_NAME, settled
from .conftest import API_KEY, assert_clean, infer_json, post, still_serves

pytestmark = pytest.mark.reliability
SHM_KEY = "triton_python_backend_shm_region_0123"  # the Python backend's own prefix (CVE-2025-23319/23320/23334)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-wrong-key-wrong"}, {"Authorization": API_KEY}],
                         ids=["missing", "wrong", "not a bearer"])
def test_inference_without_the_api_key_is_refused_over_http(guarded, headers):
    answer = post(guarded, infer_json("hello"), headers=headers)
    assert answer.status == 403 and answer.error == "This API is restricted, expecting header 'authorization'"
    still_serves(guarded)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("key", [None, "wrong-key-wrong-key-wrong"])
def test_sdk_without_the_api_key_raises_a_clear_error(guarded, protocol, key, monkeypatch):
    monkeypatch.delenv("BERTSERVE_API_KEY", raising=False)
    url = guarded.grpc_url if protocol == "grpc" else guarded.http_url
    with Encoder(url, model=DEFAULT_NAME, api_key=key) as enc:
        with pytest.raises(AuthenticationError, match="requires an API key.*api_key="):
            enc.encode(["hello"])
        assert enc.status().retries == 0, "a refused key is not worth retrying"
    monkeypatch.setenv("BERTSERVE_API_KEY", API_KEY)  # the SDK's default
    with Encoder(url, model=DEFAULT_NAME) as enc:
        assert enc.encode(["hello"]).shape == (1, 384)


def test_health_and_statistics_stay_open(guarded):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{DEFAULT_NAME}/ready"):
        with urllib.request.urlopen(f"{guarded.http_url}{path}", timeout=10) as response:
            assert response.status == 200
    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    try:
        assert client.is_server_ready() and client.get_inference_statistics().model_stats
    finally:
        client.close()


def _admin_calls(client):
    return {
        "register system shared memory with the backend's key": lambda: client.register_system_shared_memory(
            SHM_KEY, f"/{SHM_KEY}", 1024),
        "unregister system shared memory": lambda: client.unregister_system_shared_memory(),
        "unload a model": lambda: client.unload_model(DEFAULT_NAME),
        "load a model": lambda: client.load_model(DEFAULT_NAME),
        "repository index": lambda: client.get_model_repository_index(),
        "log settings": lambda: client.update_log_settings({"log_verbose_level": 1}),
        "trace settings": lambda: client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_admin_apis_need_the_admin_key(guarded, protocol):
    module = httpclient if protocol == "http" else grpcclient
    url = guarded.http_url.removeprefix("http://") if protocol == "http" else guarded.grpc_url
    client = module.InferenceServerClient(url)
    try:
        for name, call in _admin_calls(client).items():
            with pytest.raises(InferenceServerException) as refused:
                call()
            message = refused.value.message()
            assert "is restricted, expecting header" in message and "bertserve-admin-key" in message, name
            assert_clean(message)
    finally:
        client.close()
    still_serves(guarded)
    assert {m["name"] for m in _index(guarded) if m.get("state") == "READY"} >= {DEFAULT_NAME}


def _index(server):
    """The repository index, an admin API: read with the admin key."""
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        return client.get_model_repository_index(headers={"bertserve-admin-key": server.admin_key})
    finally:
        client.close()


def test_status_with_the_admin_key_also_lists_unloaded_models(throwaway_server, monkeypatch):
    monkeypatch.delenv("BERTSERVE_ADMIN_KEY", raising=False)
    admin = httpclient.InferenceServerClient(throwaway_server.http_url.removeprefix("http://"))
    admin.unload_model(f"{DEFAULT_NAME}_tokenizer", headers={"bertserve-admin-key": throwaway_server.admin_key})
    admin.close()
    tokenizer = f"{DEFAULT_NAME}_tokenizer"
    with Encoder(throwaway_server.grpc_url) as enc:
        status = settled(enc.server_status, lambda s: tokenizer not in {m.name for m in s.models})
        seen = {m.name: m.ready for m in status.models}
    expected = {DEFAULT_NAME: False, tokenizer: False, f"{DEFAULT_NAME}_encoder": True}
    with Encoder(throwaway_server.grpc_url, admin_key=throwaway_server.admin_key) as enc:
        seen_by_admin = settled(lambda: {m.name: m.ready for m in enc.server_status().models}, expected.__eq__)
    assert tokenizer not in seen and seen[f"{DEFAULT_NAME}_encoder"]
    assert seen_by_admin == expected
