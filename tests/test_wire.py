"""Open-inference gRPC messages split and joined on the wire bytes agree with protobuf's own
parsing and serialisation, and bytes that are not a message are refused."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from serving import wire


def request_with_tensors() -> tuple[pb.ModelInferRequest, list[np.ndarray]]:
    tensors = [np.arange(6, dtype=np.float32).reshape(2, 3), np.full((300, 400), 7.5, dtype=np.float32)]
    request = pb.ModelInferRequest(model_name="aurora-medium-range", id="r1")
    request.parameters["init_time"].string_param = "2024-06-01T12:00"
    request.parameters["steps"].int64_param = 2
    for name, t in zip(("latitude", "t2m"), tensors):
        request.inputs.add(name=name, datatype="FP32", shape=list(t.shape))
        request.raw_input_contents.append(t.tobytes())
    return request, tensors


def test_split_gives_protobufs_message_without_the_tensors_and_the_tensors_as_views():
    request, tensors = request_with_tensors()
    header, raw = wire.split(request.SerializeToString(), wire.RAW_INPUT_CONTENTS)
    parsed = pb.ModelInferRequest.FromString(header)
    assert list(parsed.raw_input_contents) == []
    assert parsed.parameters["steps"].int64_param == 2 and [i.name for i in parsed.inputs] == ["latitude", "t2m"]
    assert all(isinstance(r, memoryview) for r in raw)
    for r, t in zip(raw, tensors):
        np.testing.assert_array_equal(np.frombuffer(r, dtype=np.float32).reshape(t.shape), t)


def test_join_makes_the_message_protobuf_makes():
    request, tensors = request_with_tensors()
    header = pb.ModelInferRequest()
    header.CopyFrom(request)
    del header.raw_input_contents[:]
    joined = wire.join(header.SerializeToString(), wire.RAW_INPUT_CONTENTS, tensors)
    assert joined == request.SerializeToString()
    assert pb.ModelInferRequest.FromString(joined) == request


@pytest.mark.parametrize("message, error", [
    (b"\x3a\xff\xff\xff\xff\x0f", "runs past the message's end"),  # field 7, a length longer than the bytes
    (b"\x08" + b"\xff" * 11, "varint"),  # a varint that never ends
    (b"\x0b", "wire type 3"),  # start-group: not in these messages
])
def test_bytes_that_are_not_a_message_are_refused(message, error):
    with pytest.raises(wire.WireError, match=error):
        wire.split(message, wire.RAW_INPUT_CONTENTS)
