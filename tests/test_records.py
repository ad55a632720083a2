import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamad import records
from streamad.base import DecodeError
from streamad.records import Record, decode, encode


def test_full_record():
    r = decode(b'{"key": "k", "ts": 10, "values": {"b": 2, "a": 1.5}}')
    assert r == Record("k", 10.0, {"b": 2.0, "a": 1.5})


def test_plain_value_record_with_kafka_key_and_iso_time():
    r = decode(b'{"timestamp": "2014-07-01 00:30:00", "value": 10844}', key=b"nyc")
    assert r.key == "nyc" and r.values == {"value": 10844.0}
    assert r.ts == 1404174600.0


def test_milliseconds_are_recognised():
    assert decode(b'{"ts": 1700000000123, "value": 1}').ts == pytest.approx(1700000000.123)


def test_default_ts_and_default_key():
    r = decode(b'{"values": {"x": 1}}', default_ts=7.0)
    assert r.ts == 7.0 and r.key == records.DEFAULT_KEY


@pytest.mark.parametrize("data, cls, words", [
    (b"\xff\xfe", records.NotUtf8, "UTF-8"),
    (b"{not json", records.NotJson, "not JSON"),
    (b"[1, 2]", records.NotAnObject, "list"),
    (b'{"ts": 1}', records.NoValues, "neither"),
    (b'{"ts": 1, "values": {}}', records.NoValues, "empty"),
    (b'{"ts": 1, "values": [1]}', records.NoValues, "object"),
    (b'{"ts": 1, "values": {"x": "1"}}', records.NonNumericValue, "'x'"),
    (b'{"ts": 1, "values": {"x": true}}', records.NonNumericValue, "'x'"),
    (b'{"ts": 1, "values": {"x": null}}', records.NonNumericValue, "'x'"),
    (b'{"ts": 1, "values": {"x": NaN}}', records.NonFiniteValue, "NaN"),
    (b'{"ts": 1, "values": {"x": -Infinity}}', records.NonFiniteValue, "Infinity"),
    (b'{"ts": 1, "values": {"x": 1e999}}', records.NonFiniteValue, "finite"),
    (b'{"ts": "yesterday", "value": 1}', records.BadTimestamp, "ISO-8601"),
    (b'{"ts": [1], "value": 1}', records.BadTimestamp, "number"),
    (b'{"value": 1}', records.BadTimestamp, "no 'ts'"),
    (b'{"key": [1], "ts": 1, "value": 1}', records.BadKey, "string"),
    (b"[" * 100000, records.NotJson, ""),
])
def test_malformed_inputs_have_reasons(data, cls, words):
    with pytest.raises(cls) as e:
        decode(data)
    assert isinstance(e.value, DecodeError)
    assert words in e.value.reason and "\n" not in e.value.reason


def test_size_and_feature_limits():
    with pytest.raises(records.MessageTooLarge, match="limit"):
        decode(b" " * 100 + b'{"ts": 1, "value": 1}', max_bytes=50)
    msg = json.dumps({"ts": 1, "values": {f"f{i}": i for i in range(11)}}).encode()
    with pytest.raises(records.TooManyFeatures, match="11 features"):
        decode(msg, max_features=10)
    assert len(decode(msg, max_features=11).values) == 11


def test_over_one_mebibyte_by_default():
    with pytest.raises(records.MessageTooLarge):
        decode(b" " * (1 << 20) + b"{}")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else_on_bytes(data):
    try:
        r = decode(data)
    except DecodeError as e:
        assert e.reason
    else:
        assert all(math.isfinite(v) for v in r.values.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["key", "ts", "timestamp", "values", "value", "x"]),
                       json_values | st.dictionaries(st.text(max_size=3), json_values, max_size=3)))
def test_decode_never_raises_anything_else_on_json_objects(obj):
    try:
        r = decode(json.dumps(obj).encode())
    except DecodeError as e:
        assert e.reason
    else:
        assert isinstance(r.key, str) and math.isfinite(r.ts) and r.values


@given(st.text(max_size=10), st.floats(-1e10, 1e10),
       st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False),
                       min_size=1, max_size=5))
def test_encode_decode_round_trip(key, ts, values):
    r = Record(key, ts, values)
    assert decode(encode(r)) == r


def _outcome(data, fast):
    """decode's result, or its error class and reason, with or without the orjson parser."""
    saved = records._fast_loads
    records._fast_loads = fast
    try:
        return decode(data, key=b"k", default_ts=1.0)
    except DecodeError as e:
        return type(e).__name__, e.reason
    finally:
        records._fast_loads = saved


def _same_with_and_without_orjson(data):
    orjson = pytest.importorskip("orjson")
    assert _outcome(data, orjson.loads) == _outcome(data, None), data


@pytest.mark.parametrize("data", [
    b'{"key": "k", "ts": 10, "values": {"b": 2, "a": 1.5}}', b'{"key": 123456789012345678901234567890, "value": 1}',
    b'{"key": 1.5, "value": 1}', b'{"value": 123456789012345678901234567890}', b'{"ts": 1, "value": 1e999}',
    b'{"ts": 1, "value": NaN}', b'{"value": "\\ud800"}', b'{"key": "\\ud800", "value": 1}', b"\xff\xfe", b"null",
    b"[" * 100000, b'{"a": 1, "a": 2, "value": 3}', b' {"value": 1} ', b'{"value": 1}{}',
    b'{"ts": 99999999999999999999999, "value": 1}', b'{"ts": "2014-07-01 00:30:00", "value": 1}',
    b'{"":null,"values":-9223372036854775809}', b'{"ts": 1, "values": {"a": [18446744073709551616]}}',
    b'{"ts": 1, "value": -9223372036854775809}', b'{"ts": -9223372036854775809, "value": 1}',
    b'{"ts": 1, "value": 1' + b'0' * 400 + b'}',
])
def test_orjson_decodes_like_the_standard_parser(data):
    _same_with_and_without_orjson(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.dictionaries(
    st.sampled_from(["key", "ts", "timestamp", "values", "value", "x"]),
    json_values | st.dictionaries(st.text(max_size=3), json_values, max_size=3)).map(lambda o: json.dumps(o).encode()))
def test_orjson_decodes_like_the_standard_parser_on_generated_messages(data):
    _same_with_and_without_orjson(data)


def test_a_json_key_that_is_not_the_kafka_key_is_a_key_mismatch():
    from streamad.records import KeyMismatch

    with pytest.raises(KeyMismatch, match="key mismatch: the record's key 'a' is not its Kafka message key 'b'"):
        decode(b'{"key": "a", "ts": 1, "value": 2}', key=b"b")
    assert decode(b'{"key": "a", "ts": 1, "value": 2}', key=b"a").key == "a"
    assert decode(b'{"key": 7, "ts": 1, "value": 2}', key=b"7").key == "7"
    assert decode(b'{"key": "a", "ts": 1, "value": 2}').key == "a"  # no Kafka key: the JSON one
