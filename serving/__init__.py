"""Serving: the KServe predictor of every variant, tensor codecs, forecast jobs by reference, the client.

`kserve.model_server` parses `sys.argv` when it is first imported and exits on values it does
not accept (`auroraops predict --protocol grpc` collides with its `--protocol v1|v2|grpc-v2`).
Our commands parse their own flags, so KServe is imported here once with an empty command
line and keeps its defaults; every setting it needs is passed explicitly (serving.server).
"""

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve.model_server  # noqa: F401
finally:
    sys.argv = _argv
