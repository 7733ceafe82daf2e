"""Servers as child processes on free loopback ports (`auroraops serve`, and any other whose
readiness is an HTTP answer): for tests, benchmarks and demos."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from model_code.variants import get_variant


def free_port() -> int:
    """A loopback port free now, for a child server to listen on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(urls: Sequence[str], process: subprocess.Popen, log: Path, *, timeout: float,
                       name: str, interval: float = 0.2) -> None:
    """Return once every URL answers 2xx. A server that exits or stays silent for `timeout`
    seconds raises `RuntimeError` or `TimeoutError` with the tail of its `log`, which says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            for url in urls:
                with urllib.request.urlopen(url, timeout=2):
                    pass
            return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{name} not ready after {timeout:g} s:\n{log.read_text()[-3000:]}")


@dataclass
class ServerProcess:
    """One server process; `start()` returns once every model's `/v2/models/<name>/ready` says so.

    `variant`/`model` may be lists to serve several variants from one process."""

    variant: str | list[str]
    model: str | list[str]
    workdir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    started_s: float | None = None
    """Seconds from process start to ready."""

    @property
    def variants(self) -> list[str]:
        return [self.variant] if isinstance(self.variant, str) else list(self.variant)

    @property
    def name(self) -> str:
        """The model name (of the first variant)."""
        return get_variant(self.variants[0]).model_name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-{self.http_port}.log"

    def launch(self) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        models = [self.model] if isinstance(self.model, str) else list(self.model)
        pairs = [a for v, m in zip(self.variants, models) for a in ("--variant", v, "--model", m)]
        cmd = [sys.executable, "-m", "auroraops", "serve", *pairs, "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
               "--jobs-dir", str(self.workdir / "jobs"), *self.args]
        self._t0 = time.perf_counter()
        self.process = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, cwd=self.workdir)
        return self

    def wait_ready(self, timeout: float = 180) -> "ServerProcess":
        try:
            wait_until_answers([f"{self.url}/v2/models/{get_variant(v).model_name}/ready" for v in self.variants],
                               self.process, self.log, timeout=timeout, name=self.name, interval=0.05)
        except TimeoutError:
            self.stop()
            raise
        self.started_s = time.perf_counter() - self._t0
        return self

    def start(self, timeout: float = 180) -> "ServerProcess":
        return self.launch().wait_ready(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to clean up."""
        if self.alive():
            self.process.kill()
            self.process.wait(30)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
