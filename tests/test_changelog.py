"""The changelog state store's format, without a broker: chunks, interrupted writes,
tombstones, and compaction (the reader finds the same checkpoint with or without it)."""

import numpy as np

from connectors.changelog import _chunk_messages, latest_checkpoints
from streamad import _state

TP = ("telemetry", 3)


def _tree(offset, rng):
    return {"offset": offset, "keys": {f"k{i}": {"w": rng.normal(size=300)} for i in range(3)}}


def _write(log, tp, blob, version, chunk=1000, upto=None):
    """Append a checkpoint's chunks to ``log`` (only the first ``upto``: a crash mid-write)."""
    msgs = list(_chunk_messages(tp, blob, version, chunk, offset=None))
    log += msgs[:upto]
    return {k for k, _ in msgs}


def _compacted(log):
    """What a compacting broker may keep: the last message per key, tombstones dropped."""
    last = {}
    for i, (k, v) in enumerate(log):
        last[k] = (i, v)
    return [(k, v) for k, (i, v) in sorted(last.items(), key=lambda kv: kv[1][0]) if v is not None]


def test_a_checkpoint_in_many_chunks_comes_back_whole():
    rng = np.random.default_rng(0)
    tree = _tree(120, rng)
    blob = _state.dumps(tree)
    log = []
    keys = _write(log, TP, blob, "v1", chunk=1000)
    assert len(log) == len(keys) > 5 and all(len(v) < 1000 + 300 for _, v in log)
    version, got, live = latest_checkpoints(log)[TP]
    assert version == "v1" and got == blob and live == keys
    assert _state.trees_equal(_state.loads(got), tree)


def test_the_latest_complete_checkpoint_wins_with_and_without_compaction_after_every_message():
    """A history with an interrupted write and tombstones: after every message, the reader
    finds the newest checkpoint whose every chunk was written, on the log as written and on
    its compacted form."""
    rng = np.random.default_rng(1)
    blobs = {"v1": _state.dumps(_tree(100, rng)), "v2": _state.dumps(_tree(200, rng)),
             "v3": _state.dumps(_tree(300, rng)), "v4": _state.dumps(_tree(400, rng))[:3000]}
    log = []
    k1 = _write(log, TP, blobs["v1"], "v1")
    k2 = _write(log, TP, blobs["v2"], "v2", upto=2)  # the writer crashed after two chunks
    # a new owner restores v1, writes v3, then tombstones every older chunk still live
    k3 = _write(log, TP, blobs["v3"], "v3")
    log += [(k, None) for k in sorted(k1 | set(sorted(k2)[:2]))]
    k4 = _write(log, TP, blobs["v4"], "v4")  # fewer chunks than v3
    log += [(k, None) for k in sorted(k3)]
    done_at = {v: 1 + max(i for i, (k, val) in enumerate(log) if val is not None and k.split(b"/")[2] == v.encode())
               for v in ("v1", "v3", "v4")}
    for n in range(1, len(log) + 1):
        want = max((v for v, at in done_at.items() if at <= n), key=done_at.get, default=None)
        for view in (log[:n], _compacted(log[:n])):
            got = latest_checkpoints(view).get(TP)
            assert (got[0] if got else None) == want, n
            if want:
                assert got[1] == blobs[want]
    assert latest_checkpoints(log)[TP][2] == k4  # only v4's chunks are still live at the end


def test_damaged_chunks_and_other_partitions_are_left_out():
    rng = np.random.default_rng(2)
    log = []
    _write(log, TP, _state.dumps(_tree(1, rng)), "good")
    bad = list(_chunk_messages(TP, _state.dumps(_tree(2, rng)), "bad", 1000, None))
    k, v = bad[1]
    bad[1] = (k, v[:-1] + bytes([v[-1] ^ 1]))  # one flipped bit: the digest does not match
    log += bad
    _write(log, ("telemetry", 4), b"other partition", "x")
    log.append((b"not a chunk key", b"junk"))
    found = latest_checkpoints(log, only={TP})
    assert set(found) == {TP} and found[TP][0] == "good"
