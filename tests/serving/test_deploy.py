"""The GPU deployment files parse as what TF Serving reads, and agree with each other."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

DEPLOY = Path(__file__).resolve().parents[2] / "serving" / "deploy"
FLAG_FILES = ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file")


@functools.cache
def _message_classes() -> dict:
    """BatchingParameters and MonitoringConfig, whose generated modules the
    tensorflow-serving-api wheel does not ship, built from TF Serving 2.16's
    session_bundle_config.proto and monitoring_config.proto (the fields used here, with their
    names, types and numbers). Text format checks names and types: a typo fails to parse."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="stellarpop_test/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    F = descriptor_pb2.FieldDescriptorProto
    batching = proto.message_type.add(name="BatchingParameters")
    for number, name in enumerate(
        ["max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"], 1
    ):
        batching.field.add(
            name=name,
            number=number,
            type=F.TYPE_MESSAGE,
            label=F.LABEL_OPTIONAL,
            type_name=".google.protobuf.Int64Value",
        )
    batching.field.add(
        name="thread_pool_name",
        number=5,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_OPTIONAL,
        type_name=".google.protobuf.StringValue",
    )
    batching.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(proto.SerializeToString())
    make = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    names = ("BatchingParameters", "MonitoringConfig")
    return {name: make(pool.FindMessageTypeByName(f"tensorflow.serving.{name}")) for name in names}


def _parse(name: str, message):
    return text_format.Parse((DEPLOY / name).read_text(), message)


def _yaml(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


def _dockerfile() -> tuple[dict[str, str], list[str]]:
    """({copied file: destination}, the CMD's flags) of the Dockerfile."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    copies = dict(re.findall(r"^COPY\s+(\S+)\s+(\S+)\s*$", text, re.M))
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    return copies, yaml.safe_load(cmd[1])


def _container() -> dict:
    [container] = _yaml("k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def _flags(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in args)


def test_models_config():
    config = _parse("models.config", model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("stellarpop", "/models/stellarpop", "tensorflow")
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    versions = set(model.model_version_policy.specific.versions)
    assert set(model.version_labels) == {"stable", "canary"}
    assert set(model.version_labels.values()) <= versions  # every label names a loaded version
    assert (DEPLOY.parent / "models" / "default" / str(model.version_labels["stable"]) / "saved_model.pb").exists()


def test_batching_parameters():
    params = _parse("batching_parameters.txt", _message_classes()["BatchingParameters"]())
    assert params.max_batch_size.value >= 256  # the client's default batch must fit in one batch
    assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
    assert params.allowed_batch_sizes[-1] == params.max_batch_size.value  # TF Serving requires it
    assert 0 < params.batch_timeout_micros.value <= 10_000
    assert params.num_batch_threads.value >= 1 and params.max_enqueued_batches.value >= 1


def test_monitoring_config():
    config = _parse("monitoring.config", _message_classes()["MonitoringConfig"]())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_dockerfile_copies_every_config_the_flags_name():
    copies, cmd = _dockerfile()
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM tensorflow/serving:2\.16\.1-gpu$", text, re.M)
    assert set(copies) == {"models.config", "batching_parameters.txt", "monitoring.config"}
    assert all((DEPLOY / source).is_file() for source in copies)
    flags = _flags(cmd)
    assert {flags[f] for f in FLAG_FILES} == set(copies.values())
    assert flags["--enable_batching"] == "true" and flags["--port"] == "8500" and flags["--rest_api_port"] == "8501"


def test_kubernetes_deployment():
    deployment = _yaml("k8s/deployment.yaml")
    container = _container()
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["limits"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "rest": 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/v1/models/stellarpop", 8501)
    flags = _flags(container["args"])
    assert set(flags) >= set(FLAG_FILES) | {
        "--model_config_file_poll_wait_seconds",
        "--enable_batching",
        "--allow_version_labels_for_unavailable_models",
    }
    assert int(flags["--model_config_file_poll_wait_seconds"]) > 0
    copies, cmd = _dockerfile()
    assert {flags[f] for f in FLAG_FILES} <= set(copies.values())  # files the image has
    assert _flags(cmd) == flags  # the image alone runs as the cluster does
    # models.config comes from a ConfigMap mounted as its folder (updated in place, polled)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_dir = str(Path(flags["--model_config_file"]).parent)
    [config_volume] = [name for name, path in mounts.items() if path == config_dir]
    assert "configMap" in volumes[config_volume] and "subPath" not in str(container["volumeMounts"])
    models = _parse("models.config", model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]
    assert any(models.base_path.startswith(path) for path in mounts.values())
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kubernetes_service_routes_to_the_pods():
    service = _yaml("k8s/service.yaml")
    labels = _yaml("k8s/deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (8500, "grpc"),
        "rest": (8501, "rest"),
    }


def test_compose_runs_the_same_server():
    compose = _yaml("docker-compose.yml")
    [service] = compose["services"].values()
    assert service["build"] == "." and set(service["ports"]) == {"8500:8500", "8501:8501"}
    assert _flags(service["command"]) == _flags(_container()["args"])
    [gpu] = service["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and "gpu" in gpu["capabilities"]
    mounts = {
        dst: src for src, dst in (re.match(r"^(.*):(/[^:]*)(?::ro|:rw)?$", m).groups() for m in service["volumes"])
    }
    assert "/models/stellarpop" in mounts
    assert mounts[str(Path(_flags(service["command"])["--model_config_file"]).parent)].rstrip("/") == "."


@pytest.mark.parametrize(
    "name",
    [
        "models.config",
        "batching_parameters.txt",
        "monitoring.config",
        "Dockerfile",
        "docker-compose.yml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "README.md",
    ],
)
def test_deploy_files_exist(name):
    assert (DEPLOY / name).is_file()
