"""Talk to a predictor with tritonclient's gRPC client, in its own process.

tritonclient.grpc and kserve register the same protobuf package (`inference`) under different
file names, so the two cannot be imported into one process; the tests run this script instead.

    python tests/triton_grpc.py HOST:PORT MODEL REQUESTS.npz PARAMS.json OUT.npz

PARAMS.json holds a list of cases `{"parameters": {...}, "drop": [...], "replace": {...}}`;
OUT.npz gets the outputs of the first case and `errors.json` beside it the status code and
message of every case (empty for success).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main(target: str, model: str, tensors_path: str, cases_path: str, out_path: str) -> None:
    tensors = dict(np.load(tensors_path))
    client = grpcclient.InferenceServerClient(target)
    results = []
    for k, case in enumerate(json.loads(Path(cases_path).read_text())):
        named = {n: a for n, a in tensors.items() if n not in case.get("drop", [])}
        named.update({n: np.load(p) for n, p in case.get("replace", {}).items()})
        inputs = []
        for name, values in named.items():
            dtype = {np.dtype("float64"): "FP64", np.dtype("int32"): "INT32"}.get(values.dtype, "FP32")
            inp = grpcclient.InferInput(name, list(values.shape), dtype)
            inp.set_data_from_numpy(values)
            inputs.append(inp)
        try:
            result = client.infer(model, inputs, parameters=case["parameters"])
        except InferenceServerException as e:
            results.append({"code": e.status(), "message": e.message()})
            continue
        results.append({"code": None, "message": ""})
        if k == 0:
            outputs = result.get_response().outputs
            np.savez(out_path, **{o.name: result.as_numpy(o.name) for o in outputs})
    Path(out_path).with_name("errors.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
