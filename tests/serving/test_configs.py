"""Triton configs build from params as ModelConfig messages, and parse back.

The GPU configs (onnxruntime, libtorch) cannot be loaded by the local server, so parsing with
Triton's ModelConfig protobuf is their check. The Python-backend model that reads these configs
is tested in test_backend.py.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from serving import configs

SIGNATURE = configs.Signature(n_features=64, n_classes=10)


def test_python_backend_config_parses(params):
    config = configs.check_config(configs.python_backend_config(params.export, SIGNATURE))
    assert config.name == params.export.model_name
    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == params.export.max_batch_size
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", pb.TYPE_FP32, [64])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("probabilities", [10])]
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (pb.ModelInstanceGroup.KIND_CPU, params.export.instance_count)
    ]
    assert config.HasField("dynamic_batching") == params.export.dynamic_batching


def test_onnxruntime_gpu_config_parses(params):
    config = configs.check_config(configs.onnx_gpu_config(params.export, SIGNATURE))
    assert (config.name, config.backend, config.default_model_filename) == (
        params.export.model_name,
        "onnxruntime",
        "model.onnx",
    )
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (pb.ModelInstanceGroup.KIND_GPU, params.export.gpu_instance_count)
    ]
    assert [t.name for t in config.input] == ["input"] and [t.name for t in config.output] == ["probabilities"]


def test_libtorch_gpu_config_parses(params):
    config = configs.check_config(configs.libtorch_gpu_config(params.export, SIGNATURE))
    assert config.name == f"{params.export.model_name}_torchscript"
    assert (config.platform, config.default_model_filename) == ("pytorch_libtorch", "model.pt")
    assert [(t.name, list(t.dims)) for t in config.input] == [("input__0", [64])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output__0", [10])]
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_batching_settings_come_from_params(params):
    tuned = params.export.model_copy(
        update={"preferred_batch_sizes": [8, 32], "max_queue_delay_microseconds": 500, "max_batch_size": 32}
    )
    config = configs.check_config(configs.python_backend_config(tuned, SIGNATURE))
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.max_batch_size == 32
    off = params.export.model_copy(update={"dynamic_batching": False})
    for render in (configs.python_backend_config, configs.onnx_gpu_config, configs.libtorch_gpu_config):
        assert not configs.check_config(render(off, SIGNATURE)).HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "m"\nbackend: "python"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }', "not a valid"),
        ('name: "m"\nbackend: "python"\nmax_batch_size: "many"', "not a valid"),
        ('name: "m"\nbackend: "python"\nbatch_size_max: 4', "not a valid"),  # unknown field
        ('name: "m"\ninput [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" dims: [ 2 ] } ]', "platform or backend"),
        ('backend: "python"\ninput [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" dims: [ 2 ] } ]', "lacks name"),
        ('name: "m"\nbackend: "python"\ninput [ { name: "x" dims: [ 4 ] } ]', "an output"),
    ],
)
def test_broken_config_is_rejected(text, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.check_config(text, source="m/config.pbtxt")


def test_backend_parameters_come_from_params(params):
    tuned = params.export.model_copy(update={"intra_op_threads": 2, "intra_op_spinning": True})
    config = configs.check_config(configs.python_backend_config(tuned, SIGNATURE))
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "intra_op_thread_count": "2",
        "session.intra_op.allow_spinning": "1",
    }
    # the GPU entries run the native backends, which do not read these
    assert not configs.check_config(configs.onnx_gpu_config(tuned, SIGNATURE)).parameters


def test_dynamic_batching_with_every_default_is_still_on(params):
    eager = params.export.model_copy(update={"max_queue_delay_microseconds": 0, "preferred_batch_sizes": []})
    for render in (configs.python_backend_config, configs.onnx_gpu_config, configs.libtorch_gpu_config):
        assert configs.check_config(render(eager, SIGNATURE)).HasField("dynamic_batching")


@pytest.mark.parametrize(
    "render", [configs.python_backend_config, configs.onnx_gpu_config, configs.libtorch_gpu_config]
)
def test_rendered_text_is_the_canonical_form_of_its_message(params, render):
    """The repository reads a config, changes its version policy and prints it again with
    text_format (serving/repository.py): a config exported in that same form reads back to the
    same text, so the text a candidate is hashed with is the text the repository recomputes for a
    stored version without a recorded hash. The hand-written f-string renderer failed this."""
    text = render(params.export, SIGNATURE)
    assert text_format.MessageToString(configs.check_config(text)) == text


@pytest.mark.parametrize("entry", ["onnxruntime", "libtorch"])
def test_the_rollout_router_fronts_gpu_backends_from_the_cpu(params, entry):
    """The router is a CPU Python model with the champion's tensors, whatever backend serves the
    versions behind it; versions on the same backend fit behind it, a switch of tensor names does not."""
    from serving.rollout.router_config import Routing, incompatible, router_config

    gpu = configs.onnx_gpu_config if entry == "onnxruntime" else configs.libtorch_gpu_config
    champion = candidate = configs.check_config(gpu(params.export, SIGNATURE))
    routing = Routing("r1", 0, "canary", 5.0, (f"{champion.name}.champion", 3), (f"{champion.name}.candidate", 4), 64)
    router = configs.check_config(text_format.MessageToString(router_config(champion, champion.name, 4, routing)))
    assert (router.name, router.backend, router.platform) == (champion.name, "python", "")
    assert [(g.kind, g.count) for g in router.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 1)]
    assert list(router.input) == list(champion.input) and list(router.output) == list(champion.output)
    assert router.parameters["rollout_candidate_model"].string_value == f"{champion.name}.candidate"
    assert incompatible(champion, candidate) is None
    cpu = configs.check_config(configs.python_backend_config(params.export, SIGNATURE))
    assert (incompatible(cpu, candidate) is None) == (entry == "onnxruntime")  # libtorch names its tensors input__0
