"""An echo model behind the same KServe server the predictor uses: payload transport alone.

    python benchmarks/serving_echo.py HTTP_PORT GRPC_PORT

Answers every v2 request with its input tensors, so bench_serving.py measures what gRPC raw,
REST binary and REST JSON cost to move a tensor in and out, without a model in the way.
"""

from __future__ import annotations

import sys

import serving  # noqa: F401  (imports KServe with an empty command line)
from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from serving.codec import Limits, raw_output
from serving.server import AuroraModelServer

LIMIT = 1 << 30


class Echo(Model):
    limits = Limits(max_steps=1, max_request_bytes=LIMIT // 2, max_response_bytes=LIMIT)

    def __init__(self):
        super().__init__("echo")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        outputs = [raw_output(inp.name, inp.as_numpy()) for inp in payload.inputs]  # views of the request
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs)


if __name__ == "__main__":
    echo = Echo()
    AuroraModelServer([echo], host="127.0.0.1", http_port=int(sys.argv[1]),
                      grpc_port=int(sys.argv[2])).start([echo])
