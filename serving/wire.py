"""Open-inference gRPC messages with their tensors left as views of the wire bytes.

A `ModelInferRequest` carries its tensors in `raw_input_contents` (field 7), a
`ModelInferResponse` in `raw_output_contents` (field 6): length-delimited entries of the
top-level message. Parsing such a message with protobuf copies every tensor into the
message and again into each `bytes` read from it; building one copies each tensor in and
then into the serialized message. `split` and `join` work on the serialized bytes instead:
the tensors are sliced out as views (no copy) or appended in the one concatenation that
makes the message, and protobuf handles only the small rest (names, shapes, parameters).
"""

from __future__ import annotations

from typing import Sequence

RAW_INPUT_CONTENTS = 7
"""`ModelInferRequest.raw_input_contents`."""
RAW_OUTPUT_CONTENTS = 6
"""`ModelInferResponse.raw_output_contents`."""

_LENGTH_DELIMITED = 2
_FIXED_SIZE = {1: 8, 5: 4}  # wire types 64-bit and 32-bit


class WireError(ValueError):
    """The bytes are not a protobuf message."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError(f"truncated or overlong varint at byte {pos}")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split(message: bytes, field: int) -> tuple[bytes, list[memoryview]]:
    """The message without the entries of the length-delimited `field`, and those entries,
    in order, as views of `message`."""
    data = memoryview(message)
    rest: list[memoryview] = []
    entries: list[memoryview] = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == _LENGTH_DELIMITED:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise WireError(f"field {key >> 3} of {size} bytes at byte {pos} runs past the message's end")
            if key >> 3 == field:
                entries.append(data[pos:pos + size])
                pos += size
                continue
            pos += size
        elif wire_type in _FIXED_SIZE:
            pos += _FIXED_SIZE[wire_type]
        else:
            raise WireError(f"wire type {wire_type} of field {key >> 3} at byte {start} is not supported")
        if pos > len(data):
            raise WireError(f"field {key >> 3} at byte {start} runs past the message's end")
        rest.append(data[start:pos])
    return b"".join(rest), entries


def join(message: bytes, field: int, entries: Sequence) -> bytes:
    """`message` with `entries` (bytes-like, C-contiguous) appended as entries of the
    length-delimited `field`: each copied once, into the result."""
    key = _encode_varint(field << 3 | _LENGTH_DELIMITED)
    parts = [message]
    for entry in entries:
        parts += [key, _encode_varint(memoryview(entry).nbytes), entry]
    return b"".join(parts)
