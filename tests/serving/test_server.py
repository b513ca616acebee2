"""The local TF Serving stand-in, queried with the project's client and with bare
tensorflow_serving stubs: same values as in-process prediction, versions pushed while it
runs, labels, TF Serving's status codes, a storm of mixed requests, warmup, REST status."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from make_test_data import SAME_PREDICTION
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stellarpop.serving.client import Client, ServingError
from stellarpop.serving.server import LocalServer, parse_labels

MAX_BATCH = 16  # small limits, so that the oversize cases stay small (one Example is ~46 KB)
MAX_MESSAGE_MB = 1


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout_s} s")


def assert_matches(out: dict, reference: dict, rows=slice(None)):
    assert sorted(out) == sorted(reference)
    for key, values in reference.items():
        np.testing.assert_allclose(np.asarray(out[key]).reshape(-1), values[rows], err_msg=key, **SAME_PREDICTION)


@pytest.fixture(scope="module")
def server(tmp_path_factory, examples, add_version):
    """Version 1 (the shipped model, with 2 warmup records) on any free ports."""
    base = tmp_path_factory.mktemp("models")
    add_version(base, 1, warmup_examples=examples[:4])
    srv = LocalServer(str(base), port=0, rest_port=0, poll_s=0.2, max_batch=MAX_BATCH, max_message_mb=MAX_MESSAGE_MB)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def bare_request(serialized, name="stellarpop", version=None, label="", signature="serving_default", key="examples"):
    """A PredictRequest built with tensorflow_serving and TensorFlow only (no project code)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label  # version and version_label are a oneof
    request.inputs[key].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
    return request


def test_client_matches_in_process_prediction(server, examples, reference):
    with Client(server.target) as client:
        assert client.wait_until_available(timeout_s=10) == 1
        out = client.predict(examples, batch_size=3)  # several batches, the last one short
        assert client.last_versions == [1] and client.model_version() == 1
    assert_matches(out, reference)
    assert all(v.shape == (len(examples),) for v in out.values())


def test_bare_stubs_match_in_process_prediction(stubs, examples, reference):
    predict_stub, model_stub = stubs
    response = predict_stub.Predict(bare_request(examples), timeout=30)
    assert response.model_spec.version.value == 1
    assert_matches({k: tf.make_ndarray(v) for k, v in response.outputs.items()}, reference)
    status = model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "stellarpop"}))
    [entry] = status.model_version_status
    assert (entry.version, entry.state, entry.status.error_code) == (
        1,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        0,
    )
    meta = predict_stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "stellarpop"}, metadata_field=["signature_def"]
        )
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(signatures)
    assert list(signatures.signature_def["serving_default"].inputs) == ["examples"]
    assert set(signatures.signature_def["serving_default"].outputs) == set(reference)


def test_warmup_records_replayed_before_available(server):
    assert server.store.warmup_replayed == {1: 2}


def _missing_features_example() -> bytes:
    example = tf.train.Example()
    example.features.feature["z"].float_list.value.append(0.05)
    return example.SerializeToString()


ERROR_CASES = {
    "unknown model": (lambda ex: bare_request(ex[:1], name="other"), grpc.StatusCode.NOT_FOUND),
    "unknown version": (lambda ex: bare_request(ex[:1], version=7), grpc.StatusCode.NOT_FOUND),
    "unknown label": (lambda ex: bare_request(ex[:1], label="nope"), grpc.StatusCode.INVALID_ARGUMENT),
    "wrong signature": (lambda ex: bare_request(ex[:1], signature="predict"), grpc.StatusCode.INVALID_ARGUMENT),
    "wrong input name": (lambda ex: bare_request(ex[:1], key="inputs"), grpc.StatusCode.INVALID_ARGUMENT),
    "not an Example": (lambda ex: bare_request([b"\xff garbage"]), grpc.StatusCode.INVALID_ARGUMENT),
    "missing features": (lambda ex: bare_request([_missing_features_example()]), grpc.StatusCode.INVALID_ARGUMENT),
    "batch over max_batch": (
        lambda ex: bare_request((ex * MAX_BATCH)[: MAX_BATCH + 1]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    "message over the limit": (lambda ex: bare_request((ex * 30)[:30]), grpc.StatusCode.RESOURCE_EXHAUSTED),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_requests_get_tf_serving_codes(stubs, examples, case):
    make, code = ERROR_CASES[case]
    predict_stub, _ = stubs
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Predict(make(examples), timeout=30)
    assert err.value.code() == code, err.value.details()
    assert predict_stub.Predict(bare_request(examples[:1]), timeout=30).outputs  # still serving


def test_wrong_dtype_and_unimplemented_methods(stubs):
    predict_stub, _ = stubs
    request = bare_request([b"x"])
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.zeros(3, np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        predict_stub.Classify(classification_pb2.ClassificationRequest(model_spec={"name": "stellarpop"}), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_client_errors_are_one_line(server):
    with Client(server.target) as client:
        with pytest.raises(ServingError) as err:
            client.predict([b"\xff garbage"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(err.value).startswith(f"{server.target}: INVALID_ARGUMENT: ") and "\n" not in str(err.value)
    with Client(server.target, model_name="other") as client, pytest.raises(ServingError, match="NOT_FOUND"):
        client.wait_until_available(timeout_s=30)  # an unknown model fails at once
    with Client(server.target, version=9) as client, pytest.raises(ServingError, match="not AVAILABLE after 1 s"):
        client.wait_until_available(timeout_s=1)


def test_request_storm(server, examples, reference):
    """Threads mixing good and bad requests: every good one answered right, the bad ones
    refused with their code, the server answering afterwards."""
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(examples), size=1 + i % 8).tolist() for i in range(72)]

    def good(i):
        rows = picks[i]
        with Client(server.target) as client:
            out = client.predict([examples[r] for r in rows], batch_size=4)
        assert_matches(out, reference, rows)
        return "ok"

    def bad(i):
        payload = [b"\xff garbage"] if i % 2 else [_missing_features_example()]
        try:
            with Client(server.target, model_name="other" if i % 3 == 0 else "stellarpop") as client:
                client.predict(payload)
        except ServingError as err:
            return err.code
        return "answered"

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: good(i) if i % 3 else bad(i), range(72)))
    assert results.count("ok") == 48
    assert set(results) - {"ok"} <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    with Client(server.target) as client:
        assert_matches(client.predict(examples), reference)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_rest_status(server):
    root = f"http://localhost:{server.rest_port}/v1/models"
    available = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert _get(f"{root}/stellarpop") == (200, available)
    assert _get(f"{root}/stellarpop/versions/1") == (200, available)
    assert _get(f"{root}/stellarpop/versions/9")[0] == 404
    assert _get(f"{root}/other")[0] == 404
    assert _get(f"{root}/stellarpop/labels/nope")[0] == 400
    assert _get(f"http://localhost:{server.rest_port}/elsewhere")[0] == 404


def test_new_version_served_without_restart(base_path, add_version, examples, reference):
    with LocalServer(str(base_path), port=0, rest_port=None, poll_s=0.2) as srv, Client(srv.target) as client:
        assert client.model_version() == 1
        (base_path / "3").mkdir()  # incomplete: no saved_model.pb yet, so not a version
        add_version(base_path, 2)
        wait_for(lambda: client.model_version() == 2, what="version 2 served")
        assert_matches(client.predict(examples), reference)
        assert client.last_versions == [2]
        wait_for(lambda: client.status() == {1: "END", 2: "AVAILABLE"}, what="version 1 unloaded")
        with Client(srv.target, version=1) as old, pytest.raises(ServingError, match="NOT_FOUND"):
            old.predict(examples[:1])


def test_labels_promote_and_roll_back(base_path, add_version, examples):
    add_version(base_path, 2)
    with LocalServer(str(base_path), port=0, rest_port=None, poll_s=0.2, labels="stable=1,canary=2") as srv:

        def served(label):
            with Client(srv.target, label=label) as client:
                return client.model_version()

        assert (served("stable"), served("canary"), served(None)) == (1, 2, 2)
        srv.store.labels = {"stable": 2, "canary": 2}  # promote: version 1 is no longer wanted
        assert served("stable") == 2
        wait_for(lambda: srv.store.versions[1].state == state("END"), what="version 1 unloaded")
        srv.store.labels = {"stable": 1, "canary": 2}  # roll back: version 1 is loaded again
        with Client(srv.target, label="stable") as client:
            assert client.wait_until_available(timeout_s=30) == 1
            assert client.predict(examples[:2])["log_age"].shape == (2,)


def state(name: str) -> int:
    return get_model_status_pb2.ModelVersionStatus.State.Value(name)


def test_failed_load_is_reported_and_retried(tmp_path, base_path, add_version):
    broken = add_version(tmp_path, 9)
    good_graph = (broken / "saved_model.pb").read_bytes()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with LocalServer(str(base_path), port=0, rest_port=None, poll_s=0.2) as srv, Client(srv.target) as client:
        pushed = add_version(base_path, 2, source=broken)
        wait_for(lambda: client.status() == {1: "AVAILABLE", 2: "END"}, what="failed load of version 2")
        assert "saved_model.pb" in srv.store.versions[2].error  # reported, with the reason
        assert client.model_version() == 1  # the old version keeps serving
        (pushed / "saved_model.pb").write_bytes(good_graph)  # the folder changes: the load is retried
        wait_for(lambda: client.model_version() == 2, what="repaired version 2 served")


def test_client_against_no_server(examples):
    with Client("localhost:1", retries=1, timeout_s=2) as client:
        with pytest.raises(ServingError, match="^localhost:1: UNAVAILABLE: "):
            client.predict(examples[:1])
        with pytest.raises(ServingError, match="not AVAILABLE after 1 s .*UNAVAILABLE"):
            client.wait_until_available(timeout_s=1)


def test_client_arguments(server):
    with pytest.raises(ValueError, match="not both"):
        Client(server.target, version=1, label="stable")
    with Client(server.target) as client:
        assert client.predict([]) == {}
        with pytest.raises(ValueError, match="batch_size"):
            client.predict([b""], batch_size=0)


def test_serve_runs_until_sigterm(base_path):
    """``serve`` (what ``stellarpop serve`` runs): prints where it listens, answers, and exits
    cleanly on SIGTERM."""
    code = (
        f"from stellarpop.serving.server import serve; "
        f"serve({str(base_path)!r}, port=0, rest_port=0, labels='stable=1')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        line = proc.stdout.readline()
        target, rest_url = re.search(r"gRPC (\S+), REST status (\S+)", line).groups()
        with Client(target, label="stable") as client:
            assert client.wait_until_available(timeout_s=30) == 1
        assert _get(rest_url)[1]["model_version_status"][0]["state"] == "AVAILABLE"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_parse_labels():
    assert parse_labels(" stable=2, canary=3 ,") == {"stable": 2, "canary": 3}
    for bad in ("stable", "stable=two", "=2", "a=1=2"):
        with pytest.raises(ValueError, match="NAME=VERSION"):
            parse_labels(bad)
