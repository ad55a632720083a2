import numpy as np
import pytest

from streamad.base import DimensionError
from streamad.windows import KeyedWindows, RingBuffer, Welford


def test_ring_buffer_keeps_the_newest_rows_in_order():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(57, 3))
    rb = RingBuffer(10, 3)
    for i, v in enumerate(data):
        out = rb.push(v)
        if i < 10:
            assert out is None
        else:
            np.testing.assert_array_equal(out, data[i - 10])
        lo = max(0, i - 9)
        np.testing.assert_array_equal(rb.values(), data[lo:i + 1])
        np.testing.assert_array_equal(rb.last(2), data[max(0, i - 1):i + 1])
    assert rb.full and len(rb) == 10


def test_ring_buffer_state_round_trip():
    rb = RingBuffer(4, 2)
    for i in range(7):
        rb.push([i, -i])
    rb2 = RingBuffer.from_state_dict(rb.state_dict())
    np.testing.assert_array_equal(rb.values(), rb2.values())
    rb.push([9, 9])
    rb2.push([9, 9])
    np.testing.assert_array_equal(rb.values(), rb2.values())


def test_ring_buffer_rejects_bad_sizes():
    with pytest.raises(DimensionError):
        RingBuffer(0)


def test_welford_matches_numpy():
    x = np.random.default_rng(1).normal(5, 3, size=(500, 2))
    w = Welford(2)
    for v in x:
        w.update(v)
    np.testing.assert_allclose(w.mean, x.mean(0))
    np.testing.assert_allclose(w.var, x.var(0, ddof=1))
    w2 = Welford.from_state_dict(w.state_dict())
    np.testing.assert_allclose(w2.standardize([5, 5]), w.standardize([5, 5]))


def test_welford_forgetting_follows_a_level_shift():
    w = Welford(1, halflife=20)
    for _ in range(500):
        w.update([0.0])
    for _ in range(200):
        w.update([10.0])
    assert w.mean[0] > 9.9


def test_keyed_windows_are_independent():
    kw = KeyedWindows(3)
    for i in range(5):
        kw.push("a", [i])
    kw.push("b", [100])
    assert kw.get("a").values().ravel().tolist() == [2, 3, 4]
    assert kw.get("b").values().ravel().tolist() == [100]
    assert sorted(kw) == ["a", "b"] and "c" not in kw


def test_ring_buffer_extend_equals_pushes():
    data = np.arange(40.0).reshape(20, 2)
    for n in (3, 10, 20):
        a, b = RingBuffer(7, 2), RingBuffer(7, 2)
        a.push([-1, -1])
        b.push([-1, -1])
        a.extend(data[:n])
        for r in data[:n]:
            b.push(r)
        np.testing.assert_array_equal(a.values(), b.values())
        a.push([99, 99])
        b.push([99, 99])
        np.testing.assert_array_equal(a.values(), b.values())


def test_replace_oldest_is_push_on_a_full_buffer():
    a, b = RingBuffer(4, 2), RingBuffer(4, 2)
    rows = np.arange(20, dtype=float).reshape(10, 2)
    for r in rows[:4]:
        a.push(r)
        b.push(r)
    for r in rows[4:]:
        a.push(r)
        b.replace_oldest(r)
        assert np.array_equal(a.values(), b.values()) and np.array_equal(a.last(3), b.last(3))
