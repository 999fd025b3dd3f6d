"""Connection settings come from params and the environment, checked like params; credentials never
show in a repr and never travel without TLS unless that is explicitly allowed."""

from __future__ import annotations

import time

import pytest

from pipeline.params import ExportParams, ParamsError
from serving import configs, control
from serving.client import ClientError, ClientSettings, ServerUnreachable, TritonClient, split_url
from serving.params import ServingParams
from serving.server import ServerSettings


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
        ({"TRITON_PROTOCOL": "ftp"}, "TRITON_PROTOCOL='ftp'"),
        ({"TRITON_HEADERS": "not json"}, "TRITON_HEADERS"),
        ({"TRITON_URL": "ftp://host:1"}, "scheme"),
        ({"TRITON_SSL": "maybe"}, "TRITON_SSL='maybe'"),
        ({"TRITON_PROTOCOL": "http", "TRITON_URL": "grpc://h:8001"}, "contradicts"),
    ],
)
def test_bad_environment_values_are_named(env, message):
    with pytest.raises(ParamsError, match=message):
        ClientSettings.from_params(ServingParams(), env=env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRITON_RETRIES": "-1"}, "TRITON_RETRIES='-1': Input should be greater than or equal to 0"),
        ({"TRITON_REQUEST_TIMEOUT_S": "0"}, "TRITON_REQUEST_TIMEOUT_S='0': Input should be greater than 0"),
        ({"TRITON_BACKOFF_S": "-0.5"}, "TRITON_BACKOFF_S='-0.5'"),
        ({"TRITON_RETRIES": "three"}, "TRITON_RETRIES='three'"),
        ({"TRITON_HTTP_PORT": "70000"}, "TRITON_HTTP_PORT='70000'"),
        ({"TRITON_HTTP_PORT": "8001"}, "must differ"),
    ],
)
def test_client_overrides_are_held_to_the_params_rules(env, message):
    with pytest.raises(ParamsError, match=message):
        ClientSettings.from_params(ServingParams(), env=env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRITON_HTTP_PORT": "0"}, "TRITON_HTTP_PORT='0'"),
        ({"TRITON_METRICS_PORT": "8000"}, "must differ"),
        ({"TRITON_START_TIMEOUT_S": "0"}, "TRITON_START_TIMEOUT_S='0'"),
        ({"TRITON_GRPC_PORT": "grpc"}, "TRITON_GRPC_PORT='grpc'"),
    ],
)
def test_server_overrides_are_held_to_the_params_rules(env, message):
    with pytest.raises(ParamsError, match=message):
        ServerSettings.from_params(ServingParams(), env=env)


def test_good_overrides_are_parsed():
    env = {"TRITON_RETRIES": "5", "TRITON_REQUEST_TIMEOUT_S": "2.5", "TRITON_URL": ""}  # empty = unset
    settings = ClientSettings.from_params(ServingParams(), env=env)
    assert (settings.retries, settings.timeout_s, settings.url) == (5, 2.5, "127.0.0.1:8000")
    server = ServerSettings.from_params(ServingParams(), env={"TRITON_HTTP_PORT": "8100", "TRITON_STATE_DIR": "s"})
    assert (server.http_port, str(server.state_dir)) == (8100, "s")


# --- credentials and TLS ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "env",
    [
        {"TRITON_URL": "http://triton.example.com:8000", "TRITON_AUTH_TOKEN": "s3cret"},
        {"TRITON_URL": "triton.example.com:8001", "TRITON_PROTOCOL": "grpc", "TRITON_AUTH_TOKEN": "s3cret"},
        {"TRITON_URL": "http://triton.example.com:8000", "TRITON_HEADERS": '{"authorization": "Basic eA=="}'},
        {"TRITON_URL": "http://127.0.0.1:8000", "TRITON_AUTH_TOKEN": "s3cret"},  # a token is a token
        {"TRITON_URL": "http://triton.example.com:8000", "TRITON_CONTROL_KEY": "k3y"},
    ],
)
def test_credentials_are_not_sent_without_tls(env):
    with pytest.raises(ParamsError, match="without TLS") as failure:
        ClientSettings.from_params(ServingParams(), env=env)
    assert "s3cret" not in str(failure.value) and "k3y" not in str(failure.value)


@pytest.mark.parametrize(
    "extra",
    [
        {"TRITON_ALLOW_INSECURE_TOKEN": "1"},
        {"TRITON_SSL": "1"},
        {"TRITON_SSL_CA_FILE": "ca.pem"},
        {"TRITON_SSL_INSECURE": "true"},
    ],
)
def test_credentials_go_with_tls_or_an_explicit_allowance(extra):
    env = {"TRITON_URL": "http://triton.example.com:8000", "TRITON_AUTH_TOKEN": "s3cret", **extra}
    settings = ClientSettings.from_params(ServingParams(), env=env)
    assert settings.headers["Authorization"] == "Bearer s3cret"
    assert settings.ssl == ("TRITON_ALLOW_INSECURE_TOKEN" not in extra)


def test_the_url_scheme_picks_the_protocol():
    settings = ClientSettings.from_params(ServingParams(), env={"TRITON_URL": "grpcs://triton.example.com:443"})
    assert (settings.protocol, settings.ssl, settings.url) == ("grpc", True, "triton.example.com:443")


# --- the model-control key ---------------------------------------------------------------------
def test_the_local_servers_key_is_read_from_its_state_folder(tmp_path):
    control.write_key(tmp_path, "local-k3y")
    assert (tmp_path / control.KEY_FILE).stat().st_mode & 0o777 == 0o600
    params = ServingParams(http_port=8100, grpc_port=8101, metrics_port=8102, state_dir=str(tmp_path))

    http = ClientSettings.from_params(params, env={})
    assert http.request_headers() == {control.HEADER: "local-k3y"}
    grpc = ClientSettings.from_params(params, env={"TRITON_PROTOCOL": "grpc"})
    assert grpc.request_headers() == {control.GRPC_PREFIX + control.HEADER: "local-k3y"}
    explicit = ClientSettings.from_params(params, env={"TRITON_URL": "http://localhost:8100"})
    assert explicit.control_key == "local-k3y"
    assert "local-k3y" not in repr(http) and "local-k3y" not in http.describe()

    # another server (another port or host) does not get this server's key
    other_port = ClientSettings.from_params(params, env={"TRITON_URL": "127.0.0.1:9000"})
    remote = ClientSettings.from_params(params, env={"TRITON_URL": "https://triton.example.com:443"})
    assert other_port.control_key is None and remote.control_key is None
    # the environment names the key for any server
    given = ClientSettings.from_params(params, env={"TRITON_URL": "https://h:443", "TRITON_CONTROL_KEY": "k"})
    assert given.request_headers() == {control.HEADER: "k"}


def test_split_url():
    assert split_url("127.0.0.1:8000") == ("127.0.0.1:8000", False)
    assert split_url("grpcs://h:8001") == ("h:8001", True)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_fails_after_bounded_retries(unused_port, protocol):
    settings = ClientSettings(url=f"127.0.0.1:{unused_port}", protocol=protocol, retries=2, backoff_s=0.01, timeout_s=2)
    with TritonClient(settings) as client, pytest.raises(ServerUnreachable, match="after 3 tries"):
        client.is_live()


# --- against a real server --------------------------------------------------------------------
SLOW_BACKEND = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep({seconds})  # a model that takes long to load (a big file, a cold cache)

    def execute(self, requests):
        outputs = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            zeros = np.zeros((rows.shape[0], 10), np.float32)
            outputs.append(pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", zeros)]))
        return outputs
"""


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_load_waits_for_the_load_timeout_not_the_request_timeout(triton_server, protocol):
    name = f"slow_load_{protocol}"
    folder = triton_server.repository / name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(SLOW_BACKEND.format(seconds=3))
    export = ExportParams(model_name=name, dynamic_batching=False)
    (folder / "config.pbtxt").write_text(configs.python_backend_config(export, configs.Signature(64, 10)))

    settings = ClientSettings.local(triton_server, protocol=protocol, timeout_s=1.0, retries=0)
    with TritonClient(settings) as client:
        started = time.monotonic()
        client.load(name, timeout_s=60.0)  # takes > 3 s: longer than the 1 s request timeout
        assert time.monotonic() - started >= 3.0
        assert client.model_ready(name, 1)
        client.unload(name)


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_load_past_its_timeout_fails(triton_server, protocol):
    name = f"slower_load_{protocol}"
    folder = triton_server.repository / name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(SLOW_BACKEND.format(seconds=4))
    export = ExportParams(model_name=name, dynamic_batching=False)
    (folder / "config.pbtxt").write_text(configs.python_backend_config(export, configs.Signature(64, 10)))

    settings = ClientSettings.local(triton_server, protocol=protocol, timeout_s=30.0, retries=0)
    with TritonClient(settings) as client, pytest.raises(ClientError, match=f"load of {name}"):
        client.load(name, timeout_s=1.0)
    with TritonClient(settings) as client:  # it went on loading on the server; leave nothing behind
        deadline = time.monotonic() + 30
        while not client.model_ready(name, 1) and time.monotonic() < deadline:
            time.sleep(0.2)
        client.unload(name)
