"""The JSON side of the fake Kubernetes API servers the cluster-client tests talk to."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JsonApiHandler(BaseHTTPRequestHandler):
    """Answers in JSON, quietly; subclasses route the requests their client makes."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
