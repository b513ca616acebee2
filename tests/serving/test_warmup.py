"""Warmup records (written as TF Serving reads them, read back, replayed), request running and batching."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from make_test_data import SAME_PREDICTION
from tensorflow_serving.apis import prediction_log_pb2

from stellarpop.pipeline.training import warmup
from stellarpop.serving import requests as serving_requests
from stellarpop.serving import server


def test_write_read_round_trip(tmp_path, examples, add_version):
    export = add_version(tmp_path, 1)
    path = warmup.write_warmup(str(export), examples, batch_size=3)
    assert path == str(export / "assets.extra" / "tf_serving_warmup_requests")
    # The file is a TFRecord of PredictionLogs, as TF Serving's warmup reader expects.
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    assert len(logs) == -(-len(examples) // 3)
    requests = warmup.read_warmup(str(export))
    assert [r.SerializeToString() for r in requests] == [log.predict_log.request.SerializeToString() for log in logs]
    first = requests[0]
    assert first.model_spec.name == "stellarpop" and first.model_spec.signature_name == "serving_default"
    assert list(first.inputs) == ["examples"]
    assert first.inputs["examples"].dtype == tf.string.as_datatype_enum
    assert list(tf.make_ndarray(first.inputs["examples"])) == examples[:3]
    assert sum(len(r.inputs["examples"].string_val) for r in requests) == len(examples)


def test_record_limit_and_replay(tmp_path, examples, add_version):
    export = add_version(tmp_path, 1)
    warmup.write_warmup(str(export), examples * 3, max_records=2, batch_size=2)
    assert len(warmup.read_warmup(str(export))) == 2
    assert warmup.check_warmup(str(export)) == 2  # every record runs on the exported signature


def test_replay_answers_like_the_model(tmp_path, examples, reference, add_version):
    export = add_version(tmp_path, 1)
    warmup.write_warmup(str(export), examples, batch_size=len(examples))
    model = tf.saved_model.load(str(export))
    out = serving_requests.run_request(model, warmup.read_warmup(str(export))[0])
    for key, values in reference.items():
        np.testing.assert_allclose(out[key].reshape(-1), values, **SAME_PREDICTION)


def test_no_warmup_file(tmp_path):
    assert warmup.read_warmup(str(tmp_path)) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"serialized_examples": []}, "no serialized Examples"),
        ({"max_records": 1001}, "1 to 1000"),
        ({"max_records": 0}, "1 to 1000"),
        ({"batch_size": 0}, "batch_size"),
        ({"serialized_examples": ["text"]}, "bytes"),
    ],
)
def test_bad_arguments(tmp_path, examples, kwargs, message):
    args = {"export_dir": str(tmp_path), "serialized_examples": examples[:1], **kwargs}
    with pytest.raises(ValueError, match=message):
        warmup.write_warmup(**args)


def test_missing_export_dir(tmp_path, examples):
    with pytest.raises(FileNotFoundError, match="no such export"):
        warmup.write_warmup(str(tmp_path / "nope"), examples[:1])


def test_bad_record_is_a_clear_error(tmp_path):
    (tmp_path / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(warmup.warmup_path(str(tmp_path))) as writer:
        writer.write(prediction_log_pb2.PredictionLog(classify_log={}).SerializeToString())
    with pytest.raises(ValueError, match="record 0 is not a predict log"):
        warmup.read_warmup(str(tmp_path))


def test_failing_warmup_request_raises(tmp_path, examples, add_version):
    export = add_version(tmp_path, 1)
    warmup.write_warmup(str(export), [b"not an example"])
    with pytest.raises(ValueError, match="record 0 is refused by the export"):
        warmup.check_warmup(str(export))
    with pytest.raises(serving_requests.RequestError) as err:  # the server refuses to load it
        server.replay_warmup(tf.saved_model.load(str(export)), str(export))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def _length_model(calls: list[int]):
    """A stand-in signature: output ``n`` = byte length of each Example; b"bad" is refused."""

    def fn(examples):
        calls.append(int(examples.shape[0]))
        if b"bad" in examples.numpy().tolist():
            raise tf.errors.InvalidArgumentError(None, None, "Could not parse example input")
        return {"n": tf.strings.length(examples)}

    return fn


def _call_together(batcher, inputs: list[list[bytes]]) -> list:
    with ThreadPoolExecutor(len(inputs)) as pool:
        futures = [pool.submit(batcher, examples=tf.constant(x)) for x in inputs]
    return [f.exception() or f.result() for f in futures]


def test_batcher_merges_concurrent_calls_and_isolates_a_bad_one():
    calls: list[int] = []
    batcher = serving_requests.Batcher(_length_model(calls), max_batch=8, wait_s=0.5)
    inputs = [[b"a"], [b"bb", b"ccc"], [b"bad"], [b"dddd"]]
    results = _call_together(batcher, inputs)
    assert calls[0] == 5  # one merged call, which the bad Example failed; then each alone
    assert sorted(calls[1:]) == [1, 1, 1, 2]
    for x, result in zip(inputs, results):
        if x == [b"bad"]:
            assert isinstance(result, tf.errors.InvalidArgumentError)
        else:
            assert result["n"].numpy().tolist() == [len(s) for s in x]
    calls.clear()
    assert [r["n"].numpy().tolist() for r in _call_together(batcher, [[b"a"], [b"bb"], [b"ccc"]])] == [[1], [2], [3]]
    assert calls == [3]  # all good: one call
    batcher.close()
    assert batcher(examples=tf.constant([b"ee"]))["n"].numpy().tolist() == [2]  # closed: called directly


def test_batcher_keeps_batches_within_max_batch():
    calls: list[int] = []
    batcher = serving_requests.Batcher(_length_model(calls), max_batch=3, wait_s=0.5)
    results = _call_together(batcher, [[b"a", b"b"], [b"cc", b"dd"], [b"e"], [b"fff"]])
    assert all(not isinstance(r, Exception) for r in results)
    assert max(calls) <= 3 and sum(calls) == 6
    batcher.close()
