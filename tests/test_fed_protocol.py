"""The federated round protocol: every bad update is refused with a reason; clients verify the
server's signature; key files load with one-line errors."""

import json

import numpy as np
import pytest

from streamad.base import ConfigError
from streamad.federated.grassmann import random_basis
from streamad.federated.protocol import (
    GlobalModel,
    KeyRing,
    Rejected,
    Update,
    UpdateGate,
    new_nonce,
    open_global,
    sign_global,
    sign_update,
    write_key_file,
)

D, K = 6, 2


@pytest.fixture
def ring():
    return KeyRing(server=b"S" * 32, clients={"gw1": b"a" * 32, "gw2": b"b" * 32})


def _update(client="gw1", rnd=1, basis=None, n=100, nonce=None):
    return Update(round=rnd, client=client, nonce=nonce or new_nonce(),
                  basis=random_basis(D, K, 0) if basis is None else basis, n_samples=n,
                  mean=np.zeros(D), var=np.ones(D))


def test_a_good_update_is_admitted(ring):
    got = UpdateGate(ring, D, K).check(sign_update(_update(), ring), expected_round=1)
    assert got.client == "gw1" and got.basis.shape == (D, K) and got.n_samples == 100


def _forged(ring):
    raw = sign_update(_update(), ring)
    body = json.loads(raw[65:])
    body["n_samples"] = 10_000  # tampered after signing
    return raw[:65] + json.dumps(body, separators=(",", ":")).encode()


def _signed_with_wrong_key(ring):
    other = KeyRing(server=ring.server, clients={"gw1": b"z" * 32})
    return sign_update(_update(), other)


def _raw_body(ring, body: bytes, client="gw1"):
    import hashlib
    import hmac
    return hmac.new(ring.clients[client], body, hashlib.sha256).hexdigest().encode() + b"." + body


def _nan(ring):
    U = random_basis(D, K, 1)
    U[0, 0] = np.nan
    return sign_update(_update(basis=U), ring)


CASES = {
    "unknown client": (lambda r: sign_update(_update(client="gw2"), KeyRing(r.server, {"gw2": b"b" * 32}))
                       .replace(b'"gw2"', b'"gw9"'), "unknown client"),
    "forged content": (_forged, "bad signature"),
    "wrong key": (_signed_with_wrong_key, "bad signature"),
    "no signature": (lambda r: b'{"client": "gw1"}', "no signature"),
    "not json": (lambda r: _raw_body(r, b"\xff\xfe"), "not JSON"),
    "nan basis": (_nan, "non-finite"),
    "wrong shape": (lambda r: sign_update(_update(basis=random_basis(D + 1, K, 2)), r), "wrong shape"),
    "not orthonormal": (lambda r: sign_update(_update(basis=2 * random_basis(D, K, 3)), r), "non-orthonormal"),
    "zero samples": (lambda r: sign_update(_update(n=0), r), "sample count"),
    "other round": (lambda r: sign_update(_update(rnd=7), r), "round 7"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_updates_are_rejected_with_a_reason(ring, case):
    make, reason = CASES[case]
    with pytest.raises(Rejected, match=reason):
        UpdateGate(ring, D, K).check(make(ring), expected_round=1)


def test_a_replayed_update_is_rejected_even_after_a_server_restart(ring):
    raw = sign_update(_update(), ring)
    gate = UpdateGate(ring, D, K)
    gate.check(raw, expected_round=1)
    with pytest.raises(Rejected, match="replayed nonce"):
        gate.check(raw, expected_round=1)
    restarted = UpdateGate(ring, D, K)
    restarted.load(json.loads(json.dumps(gate.state())))  # checkpointed as JSON
    with pytest.raises(Rejected, match="replayed nonce"):
        restarted.check(raw, expected_round=1)


def test_clients_verify_the_servers_signature(ring):
    model = GlobalModel(round=4, basis=random_basis(D, K, 5), mean=np.zeros(D), scale=np.ones(D), clients=["gw1"])
    raw = sign_global(model, ring)
    client_ring = ring.for_client("gw1")
    got = open_global(raw, client_ring, d=D)
    assert got.round == 4 and np.allclose(got.basis, model.basis)
    impostor = KeyRing(server=b"X" * 32, clients={})
    with pytest.raises(Rejected, match="bad server signature"):
        open_global(sign_global(model, impostor), client_ring)
    with pytest.raises(Rejected, match="bad basis"):
        open_global(raw, client_ring, d=D + 1)


def test_key_files(tmp_path):
    path = tmp_path / "keys.json"
    ring = write_key_file(path, ["gw1", "gw2"])
    assert (path.stat().st_mode & 0o777) == 0o600
    loaded = KeyRing.from_file(path)
    assert loaded.server == ring.server and loaded.clients == ring.clients
    assert set(loaded.for_client("gw1").clients) == {"gw1"}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError) as e:
        KeyRing.from_file(bad)
    assert "\n" not in str(e.value) and "bad.json" in str(e.value)
    with pytest.raises(ConfigError):
        KeyRing.from_file(tmp_path / "missing.json")
