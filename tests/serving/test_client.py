"""Connection settings come from params and the environment; credentials never show in a repr."""

from __future__ import annotations

import pytest

from pipeline.params import ServingParams
from serving.client import ClientSettings, ServerUnreachable, TritonClient, split_url


def test_default_url_is_the_local_server_for_the_protocol():
    params = ServingParams(http_port=8100, grpc_port=8101, metrics_port=8102)
    assert ClientSettings.from_params(params, env={}).url == "127.0.0.1:8100"
    grpc = ClientSettings.from_params(params, env={"TRITON_PROTOCOL": "grpc"})
    assert (grpc.protocol, grpc.url) == ("grpc", "127.0.0.1:8101")


def test_environment_overrides_url_tls_headers_and_retries():
    env = {
        "TRITON_URL": "https://triton.example.com:443/",
        "TRITON_AUTH_TOKEN": "s3cret",
        "TRITON_HEADERS": '{"X-Team": "ml"}',
        "TRITON_SSL_CA_FILE": "ca.pem",
        "TRITON_RETRIES": "0",
    }
    settings = ClientSettings.from_params(ServingParams(), env=env)
    assert (settings.url, settings.ssl, settings.ssl_ca_file, settings.retries) == (
        "triton.example.com:443",
        True,
        "ca.pem",
        0,
    )
    assert settings.headers == {"X-Team": "ml", "Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.describe()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRITON_PROTOCOL": "ftp"}, "TRITON_PROTOCOL"),
        ({"TRITON_HEADERS": "not json"}, "TRITON_HEADERS"),
        ({"TRITON_URL": "ftp://host:1"}, "scheme"),
    ],
)
def test_bad_environment_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        ClientSettings.from_params(ServingParams(), env=env)


def test_split_url():
    assert split_url("127.0.0.1:8000") == ("127.0.0.1:8000", False)
    assert split_url("grpcs://h:8001") == ("h:8001", True)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_fails_after_bounded_retries(unused_port, protocol):
    settings = ClientSettings(url=f"127.0.0.1:{unused_port}", protocol=protocol, retries=2, backoff_s=0.01, timeout_s=2)
    with TritonClient(settings) as client, pytest.raises(ServerUnreachable, match="after 3 tries"):
        client.is_live()
