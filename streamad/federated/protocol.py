"""The federated round protocol: signed messages that carry subspaces, never records.

Two message kinds, both JSON bodies signed with HMAC-SHA256:

- :class:`Update` (client -> server): round id, client id, a fresh nonce, the client's basis
  ``U`` (d x k, orthonormal), its sample count and its feature moments (mean and variance
  per feature, so that every member standardises the same way). Signed with the client's key.
- :class:`GlobalModel` (server -> clients): round id, global basis ``Z``, pooled mean and
  scale, the clients that contributed. Signed with the server key; clients verify it.

Wire format: ``<64 hex chars of HMAC-SHA256(body)>.<JSON body>``; the signature covers the
body bytes exactly as sent.

Keys live in a JSON key file: ``{"server": "<hex>", "clients": {"<id>": "<hex>", ...}}``;
a client's copy holds only ``server`` and its own entry.

>>> ring = KeyRing(server=b"s" * 32, clients={"gw1": b"k" * 32})
>>> msg = Update(round=3, client="gw1", nonce="n1", basis=np.eye(4)[:, :2], n_samples=10,
...              mean=np.zeros(4), var=np.ones(4))
>>> gate = UpdateGate(ring, d=4, k=2)
>>> gate.check(sign_update(msg, ring), expected_round=3).client
'gw1'
>>> gate.check(sign_update(msg, ring), expected_round=3)
Traceback (most recent call last):
...
streamad.base.Rejected: replayed nonce 'n1' from client 'gw1'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base import ConfigError, Rejected

__all__ = [
    "GlobalModel",
    "KeyRing",
    "Rejected",
    "Update",
    "UpdateGate",
    "new_nonce",
    "open_global",
    "sign_global",
    "sign_update",
    "write_key_file",
]

log = logging.getLogger("streamad.federated")

_SIG_LEN = 64  # hex chars of a SHA-256 HMAC


# -- keys ------------------------------------------------------------------------------
@dataclass
class KeyRing:
    """Per-client HMAC keys and the server's key."""

    server: bytes
    clients: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> KeyRing:
        try:
            raw = json.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read key file {path}: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"key file {path} is not JSON: {e}") from e
        try:
            server = bytes.fromhex(raw["server"])
            clients = {str(c): bytes.fromhex(k) for c, k in raw.get("clients", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"key file {path} needs {{'server': hex, 'clients': {{id: hex}}}}: {e}") from e
        if len(server) < 16 or any(len(k) < 16 for k in clients.values()):
            raise ConfigError(f"key file {path}: keys must be at least 16 bytes (32 hex chars)")
        return cls(server, clients)

    def for_client(self, client: str) -> KeyRing:
        """The subset a client needs: the server key and its own key."""
        if client not in self.clients:
            raise ConfigError(f"client {client!r} has no key in the key file")
        return KeyRing(self.server, {client: self.clients[client]})


def write_key_file(path: str | os.PathLike, clients: list[str]) -> KeyRing:
    """Create a key file with fresh random keys (mode 0600) and return its key ring."""
    ring = KeyRing(secrets.token_bytes(32), {c: secrets.token_bytes(32) for c in clients})
    path = Path(path)
    path.write_text(json.dumps({"server": ring.server.hex(),
                                "clients": {c: k.hex() for c, k in ring.clients.items()}}, indent=1))
    path.chmod(0o600)
    return ring


def new_nonce() -> str:
    return secrets.token_hex(12)


# -- messages --------------------------------------------------------------------------
@dataclass
class Update:
    round: int
    client: str
    nonce: str
    basis: np.ndarray
    n_samples: int
    mean: np.ndarray
    var: np.ndarray

    def to_json(self) -> dict:
        return {"kind": "update", "round": int(self.round), "client": self.client, "nonce": self.nonce,
                "basis": np.asarray(self.basis, float).tolist(), "n_samples": int(self.n_samples),
                "mean": np.asarray(self.mean, float).tolist(), "var": np.asarray(self.var, float).tolist()}


@dataclass
class GlobalModel:
    round: int
    basis: np.ndarray
    mean: np.ndarray | None
    scale: np.ndarray | None
    clients: list[str] = field(default_factory=list)
    n_samples: int = 0
    dual_scale: dict[str, float] = field(default_factory=dict)
    # The server is idle: the subspace has converged and no client had new data. Clients
    # answer this round only once they have new records (see FedServer).
    idle: bool = False

    def to_json(self) -> dict:
        doc = {"kind": "global", "round": int(self.round), "basis": np.asarray(self.basis, float).tolist(),
               "mean": None if self.mean is None else np.asarray(self.mean, float).tolist(),
               "scale": None if self.scale is None else np.asarray(self.scale, float).tolist(),
               "clients": list(self.clients), "n_samples": int(self.n_samples),
               "dual_scale": {c: float(v) for c, v in self.dual_scale.items()}}
        if self.idle:
            doc["idle"] = True
        return doc


def _sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"." + body


def _split(raw: bytes) -> tuple[bytes, bytes]:
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < _SIG_LEN + 2 or raw[_SIG_LEN:_SIG_LEN + 1] != b".":
        raise Rejected("malformed message: no signature")
    return bytes(raw[:_SIG_LEN]), bytes(raw[_SIG_LEN + 1:])


def _body(raw: bytes) -> tuple[bytes, bytes, dict]:
    sig, body = _split(raw)
    try:
        obj = json.loads(body)  # NaN/Infinity parse, and are rejected by the shape checks
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Rejected(f"malformed message: body is not JSON ({e})") from e
    if not isinstance(obj, dict):
        raise Rejected("malformed message: body is not a JSON object")
    return sig, body, obj


def _verify(key: bytes, sig: bytes, body: bytes) -> bool:
    return hmac.compare_digest(sig, hmac.new(key, body, hashlib.sha256).hexdigest().encode())


def sign_update(msg: Update, ring: KeyRing) -> bytes:
    return _sign(ring.clients[msg.client], json.dumps(msg.to_json(), separators=(",", ":")).encode())


def sign_global(msg: GlobalModel, ring: KeyRing) -> bytes:
    return _sign(ring.server, json.dumps(msg.to_json(), separators=(",", ":")).encode())


def open_global(raw: bytes, ring: KeyRing, d: int | None = None) -> GlobalModel:
    """Verify the server's signature on a global model and decode it (clients call this)."""
    sig, body, obj = _body(raw)
    if not _verify(ring.server, sig, body):
        raise Rejected("bad server signature on global model")
    try:
        basis = np.asarray(obj["basis"], dtype=np.float64)
        mean = None if obj.get("mean") is None else np.asarray(obj["mean"], dtype=np.float64)
        scale = None if obj.get("scale") is None else np.asarray(obj["scale"], dtype=np.float64)
        msg = GlobalModel(int(obj["round"]), basis, mean, scale, list(obj.get("clients", [])),
                          int(obj.get("n_samples", 0)),
                          {str(c): float(v) for c, v in (obj.get("dual_scale") or {}).items()},
                          bool(obj.get("idle", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise Rejected(f"malformed global model: {e}") from e
    if basis.ndim != 2 or (d is not None and basis.shape[0] != d) or not np.all(np.isfinite(basis)):
        raise Rejected(f"global model has a bad basis of shape {basis.shape}")
    return msg


class UpdateGate:
    """The server's admission check for client updates.

    Refuses, with a reason: malformed messages, unknown clients, bad signatures, replayed
    nonces, updates for another round, wrong shapes, NaN/inf, non-orthonormal bases and
    non-positive sample counts. Remembers the last ``memory`` nonces per client.
    """

    def __init__(self, ring: KeyRing, d: int, k: int, tol: float = 1e-6, memory: int = 1024):
        self.ring, self.d, self.k, self.tol, self.memory = ring, d, k, tol, memory
        self.seen: dict[str, OrderedDict[str, None]] = {}

    def check(self, raw: bytes, expected_round: int | None = None) -> Update:
        sig, body, obj = _body(raw)
        client = obj.get("client")
        if not isinstance(client, str) or client not in self.ring.clients:
            raise Rejected(f"unknown client {client!r}")
        if not _verify(self.ring.clients[client], sig, body):
            raise Rejected(f"bad signature from client {client!r}")
        nonce = obj.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise Rejected(f"missing nonce from client {client!r}")
        seen = self.seen.setdefault(client, OrderedDict())
        if nonce in seen:
            raise Rejected(f"replayed nonce {nonce!r} from client {client!r}")
        try:
            rnd = int(obj["round"])
            basis = np.asarray(obj["basis"], dtype=np.float64)
            n = obj["n_samples"]
            mean = np.asarray(obj["mean"], dtype=np.float64)
            var = np.asarray(obj["var"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise Rejected(f"malformed update from client {client!r}: {e}") from e
        # the nonce is spent once the signature is good, even if the content is refused below
        seen[nonce] = None
        while len(seen) > self.memory:
            seen.popitem(last=False)
        # content first, round last: a bad update is reported as bad whenever it arrives
        if basis.shape != (self.d, self.k) or mean.shape != (self.d,) or var.shape != (self.d,):
            raise Rejected(f"wrong shape from client {client!r}: basis {basis.shape}, mean {mean.shape}, "
                           f"var {var.shape}; expected ({self.d}, {self.k}) and ({self.d},)")
        if not (np.all(np.isfinite(basis)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
            raise Rejected(f"non-finite values (NaN/inf) from client {client!r}")
        err = float(np.max(np.abs(basis.T @ basis - np.eye(self.k))))
        if err > self.tol:
            raise Rejected(f"non-orthonormal basis from client {client!r} (max |U^T U - I| = {err:.2e})")
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0 or np.any(var < 0):
            raise Rejected(f"bad sample count {n!r} or negative variance from client {client!r}")
        if expected_round is not None and rnd != expected_round:
            raise Rejected(f"update from client {client!r} is for round {rnd}, not the open round {expected_round}")
        return Update(rnd, client, nonce, basis, n, mean, var)

    def state(self) -> dict:
        return {c: list(s) for c, s in self.seen.items()}

    def load(self, state: dict) -> None:
        self.seen = {c: OrderedDict.fromkeys(v) for c, v in state.items()}
