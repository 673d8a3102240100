"""The encoder: envelope format, ids, every coercion rule, totality and redaction."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import orjson
import pydantic
import pytest
from _coercion import INT_MAX, INT_MIN, expected, texts
from _coercion import json_values as _json_values
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_client import events
from telemetry_client._internal import ids as _ids
from telemetry_client.encode import Encoder, format_ts
from telemetry_client.encode.coerce import MAX_DEPTH
from telemetry_client.encode.redact import Redactor

TS_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
ENVELOPE_KEYS = set(events.ENVELOPE_FIELDS)
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def make_encoder(*, redact: bool = True) -> Encoder:
    return Encoder(
        redactor=Redactor(enabled=redact),
        app="myapp",
        app_version="1.2.3",
        machine_id="machine-1",
        user_id="default-user",
        session_id="default-session",
    )


def encode(
    enc: Encoder,
    data: Any,
    *,
    kind: Any = "thing",
    ts_ns: int = TS_NS,
    seq: int = 1,
    session_id: Any = None,
    user_id: Any = None,
) -> dict[str, Any]:
    """Encode one record and parse the line back (which also proves it is valid JSON)."""
    line = enc.encode((kind, data, ts_ns, seq, session_id, user_id))
    assert isinstance(line, bytes)
    assert b"\n" not in line
    parsed = orjson.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def expected_ts(ts_ns: int) -> str:
    sec, rem = divmod(ts_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 1000:06d}Z"


# --- envelope ---------------------------------------------------------------------------------


def test_envelope_has_exactly_the_contract_keys_and_values() -> None:
    """An encoded event carries the envelope keys with the record's and encoder's values."""
    event = encode(make_encoder(), {"a": 1}, seq=42, session_id="sess", user_id="alice")
    assert set(event) == ENVELOPE_KEYS
    assert event["type"] == "thing"
    assert event["seq"] == 42
    assert event["session_id"] == "sess"
    assert event["user_id"] == "alice"
    assert event["machine_id"] == "machine-1"
    assert event["app"] == "myapp"
    assert event["app_version"] == "1.2.3"
    assert event["data"] == {"a": 1}


def test_envelope_falls_back_to_encoder_session_and_user() -> None:
    """Without per-record ids the envelope carries the encoder's default session and user."""
    event = encode(make_encoder(), {})
    assert event["session_id"] == "default-session"
    assert event["user_id"] == "default-user"


def test_id_is_a_uuid7_carrying_the_emit_time() -> None:
    """The id is a dashed lowercase UUIDv7 (RFC 9562 variant) whose time is the emit time."""
    event = encode(make_encoder(), {})
    assert UUID7_RE.match(event["id"]), event["id"]
    parsed = uuid.UUID(event["id"])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert _ids.uuid7_time_ns(event["id"]) == TS_NS // 1_000_000 * 1_000_000


def test_ts_is_rfc3339_utc_with_microseconds() -> None:
    """ts is RFC 3339 in UTC with exactly 6 fractional digits and a Z suffix."""
    event = encode(make_encoder(), {})
    assert TS_RE.match(event["ts"]), event["ts"]
    assert event["ts"] == "2023-11-14T22:13:20.123456Z"
    parsed = dt.datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0)


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), max_size=50))
def test_format_ts_matches_datetime_for_any_sequence_of_times(stamps: list[int]) -> None:
    """format_ts (with its per-second cache) is right for any order of timestamps."""
    for ts_ns in stamps:
        assert format_ts(ts_ns) == expected_ts(ts_ns)


def test_ids_are_unique_even_for_identical_timestamps() -> None:
    """Many events encoded with the very same timestamp still get distinct ids."""
    enc = make_encoder()
    ids = {enc.encode(("t", {}, TS_NS, i, None, None)) for i in range(5000)}
    parsed = {orjson.loads(line)["id"] for line in ids}
    assert len(parsed) == 5000


def test_ids_sort_in_emit_time_order() -> None:
    """Ids of events emitted at increasing times (1 us apart and more) sort in that order."""
    enc = make_encoder()
    stamps = [TS_NS + i * 1000 + (i // 100) * 10**9 for i in range(3000)]
    ids = [encode(enc, {}, ts_ns=ts, seq=i)["id"] for i, ts in enumerate(stamps)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


# --- coercion rules (module docstring table) ---------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: set[str]


class Model(pydantic.BaseModel):
    name: str
    when: dt.datetime


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Huge:
    def __repr__(self) -> str:
        return "x" * 5000


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
PI_TEXT = "3.14159265358979323846264338327950288"
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")

COERCIONS = [
    pytest.param(math.nan, None, "non_finite", id="nan"),
    pytest.param(math.inf, None, "non_finite", id="inf"),
    pytest.param(-math.inf, None, "non_finite", id="-inf"),
    pytest.param(2**64, str(2**64), "big_int", id="int-above-u64"),
    pytest.param(-(2**63) - 1, str(-(2**63) - 1), "big_int", id="int-below-i64"),
    pytest.param(10**40, "1" + "0" * 40, "big_int", id="int-huge"),
    pytest.param("a\ud800b", "a\ufffdb", "surrogate", id="lone-high-surrogate"),
    pytest.param("x\udfffy\udc00", "x\ufffdy\ufffd", "surrogate", id="lone-low-surrogates"),
    pytest.param(b"hello \xc3\xa9", "hello é", "bytes", id="bytes-utf8"),
    pytest.param(bytearray(b"abc"), "abc", "bytes", id="bytearray-utf8"),
    pytest.param(
        b"\xff\x00\xfe",
        {"$base64": base64.b64encode(b"\xff\x00\xfe").decode()},
        "bytes",
        id="bytes-invalid-utf8",
    ),
    pytest.param({3, 1, 2}, [1, 2, 3], "set", id="set-sorted"),
    pytest.param(frozenset({"b", "a"}), ["a", "b"], "set", id="frozenset-sorted"),
    pytest.param(WHEN, "2024-05-06T07:08:09.123456+00:00", "datetime", id="datetime"),
    pytest.param(dt.date(2024, 5, 6), "2024-05-06", "datetime", id="date"),
    pytest.param(dt.time(7, 8, 9), "07:08:09", "datetime", id="time"),
    pytest.param(Decimal(PI_TEXT), PI_TEXT, "decimal", id="decimal"),
    pytest.param(UID, str(UID), "object", id="uuid"),
    pytest.param(PurePosixPath("/tmp/a b/c.txt"), "/tmp/a b/c.txt", "object", id="path"),
    pytest.param(Color.RED, "red", "object", id="enum"),
    pytest.param(Color.PAIR, [1, 2], "object", id="enum-tuple-value"),
    pytest.param(Opaque(), "<Opaque thing>", "object", id="repr"),
    pytest.param({1: "one"}, {"1": "one"}, "non_str_key", id="int-key"),
    pytest.param({(1, 2): "t"}, {"(1, 2)": "t"}, "non_str_key", id="tuple-key"),
    pytest.param({UID: 1}, {str(UID): 1}, "non_str_key", id="uuid-key"),
    pytest.param({1.5: 1}, {"1.5": 1}, "non_str_key", id="float-key"),
    pytest.param({None: 1}, {"null": 1}, "non_str_key", id="none-key-as-json"),
    pytest.param({True: 1}, {"true": 1}, "non_str_key", id="bool-key-as-json"),
]


@pytest.mark.parametrize(("value", "expected", "kind"), COERCIONS)
def test_coercion_rule(value: Any, expected: Any, kind: str) -> None:
    """Each documented coercion gives valid JSON with the documented value, counted once by kind."""
    enc = make_encoder()
    event = encode(enc, {"v": value, "plain": [1, "two", 3.5]})
    assert event["data"] == {"v": expected, "plain": [1, "two", 3.5]}
    assert dict(enc.coerced) == {kind: 1}
    assert enc.failed == 0


def test_ints_at_the_64_bit_bounds_stay_numbers() -> None:
    """The extreme ints that fit in 64 bits (i64 min, u64 max) are kept as JSON numbers."""
    enc = make_encoder()
    event = encode(enc, {"lo": INT_MIN, "hi": INT_MAX})
    assert event["data"] == {"lo": INT_MIN, "hi": INT_MAX}
    assert not enc.coerced


def test_subclasses_of_str_int_float_keep_their_plain_value() -> None:
    """Values of str/int/float subclasses encode as the plain string or number, uncounted."""

    class Name(str):
        __slots__ = ()

    class Count(int):
        pass

    class Ratio(float):
        pass

    enc = make_encoder()
    event = encode(enc, {"s": Name("abc"), "i": Count(3), "f": Ratio(0.5), "bad": Name("\ud800")})
    assert event["data"] == {"s": "abc", "i": 3, "f": 0.5, "bad": "\ufffd"}
    assert dict(enc.coerced) == {"surrogate": 1}


def test_unsortable_set_becomes_a_list_of_its_members() -> None:
    """A set whose members cannot be ordered still becomes a list holding every member."""
    enc = make_encoder()
    event = encode(enc, {"v": {1, "a", None}})
    assert sorted(event["data"]["v"], key=repr) == sorted([1, "a", None], key=repr)
    assert dict(enc.coerced) == {"set": 1}


def test_dataclass_becomes_its_fields() -> None:
    """A dataclass becomes an object of its fields, themselves coerced."""
    enc = make_encoder()
    event = encode(enc, {"v": Point(x=1, y=math.nan, tags={"b", "a"})})
    assert event["data"]["v"] == {"x": 1, "y": None, "tags": ["a", "b"]}
    assert dict(enc.coerced) == {"object": 1, "non_finite": 1, "set": 1}


def test_pydantic_model_becomes_its_fields() -> None:
    """A pydantic model becomes an object of its fields in JSON mode."""
    enc = make_encoder()
    event = encode(enc, {"v": Model(name="n", when=WHEN)})
    assert event["data"]["v"] == {"name": "n", "when": "2024-05-06T07:08:09.123456Z"}
    assert dict(enc.coerced) == {"object": 1}


def test_typed_event_inside_data_becomes_its_payload() -> None:
    """A typed event nested in a payload becomes its non-None fields."""
    enc = make_encoder()
    event = encode(enc, {"v": events.ChangeDecision(op_id="op", decision="accept")})
    assert event["data"]["v"] == {"op_id": "op", "decision": "accept"}


def test_long_repr_is_truncated_to_one_kib() -> None:
    """An arbitrary object's repr is cut to 1024 characters."""
    enc = make_encoder()
    event = encode(enc, {"v": Huge()})
    assert event["data"]["v"] == "x" * 1024
    assert dict(enc.coerced) == {"object": 1}


def test_object_whose_repr_raises_does_not_break_encoding() -> None:
    """An object whose __repr__ raises becomes a placeholder naming its type; nothing raises."""
    enc = make_encoder()
    event = encode(enc, {"v": BadRepr(), "ok": 1})
    assert isinstance(event["data"]["v"], str)
    assert "BadRepr" in event["data"]["v"]
    assert event["data"]["ok"] == 1
    assert dict(enc.coerced) == {"object": 1}


def test_key_whose_str_raises_does_not_break_encoding() -> None:
    """A dict key whose __str__ raises becomes a placeholder; the value is kept."""

    class BadKey:
        def __str__(self) -> str:
            raise RuntimeError("str exploded")

    enc = make_encoder()
    event = encode(enc, {BadKey(): "kept"})
    [(key, value)] = event["data"].items()
    assert "BadKey" in key
    assert value == "kept"
    assert enc.coerced["non_str_key"] == 1


def test_huge_int_key_is_coerced_not_lost() -> None:
    """A dict key beyond 64 bits becomes its decimal string; the event is not lost."""
    enc = make_encoder()
    event = encode(enc, {2**70: "big", "other": 1})
    assert event["type"] == "thing"
    assert event["data"] == {str(2**70): "big", "other": 1}
    assert enc.failed == 0


def test_surrogates_in_keys_are_replaced_not_lost() -> None:
    """A str key holding a lone surrogate gets U+FFFD like any string; the event is not lost."""
    enc = make_encoder()
    event = encode(enc, {"k\ud800": 1, "ok": 2})
    assert event["type"] == "thing"
    assert event["data"] == {"k\ufffd": 1, "ok": 2}
    assert enc.coerced["surrogate"] == 1
    assert enc.failed == 0


def nest(levels: int) -> Any:
    """A chain of ``levels`` nested lists around a leaf: [[...["leaf"]...]]."""
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def depth_of_marker(value: Any) -> int | None:
    """How many list levels deep the max-depth marker sits (None if absent)."""
    level = 0
    while isinstance(value, list):
        value = value[0]
        level += 1
    return level if value == "[max depth exceeded]" else None


def test_nesting_up_to_64_levels_is_kept() -> None:
    """A payload nested exactly 64 containers deep (data object included) is kept whole."""
    enc = make_encoder()
    event = encode(enc, {"v": nest(MAX_DEPTH)})
    assert event["data"]["v"] == nest(MAX_DEPTH)
    assert not enc.coerced


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 5000])
def test_nesting_deeper_than_64_is_cut_with_a_marker(levels: int) -> None:
    """Containers beyond depth 64 are replaced by the max-depth marker (no RecursionError)."""
    enc = make_encoder()
    event = encode(enc, {"v": nest(levels)})
    # data is depth 0, so the list at depth 65 (the 65th list) is the one replaced.
    assert depth_of_marker(event["data"]["v"]) == MAX_DEPTH
    assert dict(enc.coerced) == {"depth": 1}


def test_self_referencing_list_becomes_circular_marker() -> None:
    """A list that contains itself encodes with the circular-reference marker."""
    loop: list[Any] = [1]
    loop.append(loop)
    enc = make_encoder()
    event = encode(enc, {"v": loop})
    assert event["data"]["v"] == [1, "[circular reference]"]
    assert dict(enc.coerced) == {"cycle": 1}


def test_self_referencing_data_dict_becomes_circular_marker() -> None:
    """A data dict that contains itself encodes with the circular-reference marker."""
    data: dict[str, Any] = {"a": 1}
    data["me"] = data
    enc = make_encoder()
    event = encode(enc, data)
    assert event["data"] == {"a": 1, "me": "[circular reference]"}
    assert dict(enc.coerced) == {"cycle": 1}


def test_shared_but_acyclic_references_are_not_cycles() -> None:
    """The same list referenced twice (no cycle) is encoded twice, not flagged."""
    shared = [1, 2]
    enc = make_encoder()
    event = encode(enc, {"a": shared, "b": shared, "c": {math.inf}})
    assert event["data"] == {"a": [1, 2], "b": [1, 2], "c": [None]}
    assert "cycle" not in enc.coerced


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param([1, 2], {"value": [1, 2]}, id="list"),
        pytest.param("text", {"value": "text"}, id="str"),
        pytest.param(7, {"value": 7}, id="int"),
        pytest.param(math.nan, {"value": None}, id="nan"),
    ],
)
def test_non_mapping_data_is_wrapped(data: Any, expected: dict[str, Any]) -> None:
    """Non-mapping data becomes {"value": data} and is counted."""
    enc = make_encoder()
    event = encode(enc, data)
    assert event["data"] == expected
    assert enc.coerced["non_mapping_data"] == 1


def test_none_data_is_an_empty_object() -> None:
    """data=None becomes an empty object without counting a coercion."""
    enc = make_encoder()
    assert encode(enc, None)["data"] == {}
    assert not enc.coerced


def test_mapping_that_is_not_a_dict_is_kept_as_an_object() -> None:
    """Any Mapping (not only dict) is encoded as an object."""

    class Frozen(Mapping[str, int]):
        def __getitem__(self, key: str) -> int:
            return {"a": 1}[key]

        def __iter__(self) -> Iterator[str]:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    enc = make_encoder()
    assert encode(enc, Frozen())["data"] == {"a": 1}
    assert "non_mapping_data" not in enc.coerced


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("chat_turn", "chat_turn"),
        ("ChatTurn", "chat_turn"),
        ("my-custom type", "my_custom_type"),
        ("  Spaced.Name!  ", "spaced_name"),
        ("a" * 100, "a" * 64),
        ("123abc", "invalid_type"),
        ("", "invalid_type"),
        ("!!!", "invalid_type"),
        ("\ud800", "invalid_type"),
        (42, "int"),
        (None, "none_type"),
    ],
)
def test_type_names_are_snake_cased_or_invalid(kind: Any, expected: str) -> None:
    """The type is snake_cased when it is not already valid, else "invalid_type"."""
    enc = make_encoder()
    event = encode(enc, {}, kind=kind)
    assert event["type"] == expected
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", event["type"])
    assert enc.coerced["type_name"] == (0 if kind == expected else 1)


def test_every_coerced_payload_still_has_the_full_envelope() -> None:
    """A payload needing every kind of coercion at once still yields the whole envelope."""
    loop: list[Any] = []
    loop.append(loop)
    enc = make_encoder()
    event = encode(
        enc,
        {
            "nan": math.nan,
            "big": 2**90,
            "s": "\udc80",
            "b": b"\x80",
            "set": {1},
            "when": WHEN,
            "dec": Decimal("1.5"),
            "obj": Opaque(),
            1: "int key",
            "deep": nest(100),
            "loop": loop,
        },
        kind="Bad Type",
    )
    assert set(event) == ENVELOPE_KEYS
    assert event["type"] == "bad_type"
    assert set(enc.coerced) == {
        "non_finite",
        "big_int",
        "surrogate",
        "bytes",
        "set",
        "datetime",
        "decimal",
        "object",
        "non_str_key",
        "depth",
        "cycle",
        "type_name",
    }


# --- totality -----------------------------------------------------------------------------------


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem exploded")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter exploded")

    def __len__(self) -> int:
        return 1


class ExplodingModel:
    def model_dump(self, **_: Any) -> Any:
        raise RuntimeError("dump exploded")

    def __repr__(self) -> str:
        return "ExplodingModel()"


@pytest.mark.parametrize(
    ("data", "session_id", "user_id"),
    [
        pytest.param(ExplodingMapping(), None, None, id="mapping-raises"),
        pytest.param({"v": ExplodingMapping()}, None, None, id="nested-mapping-raises"),
        pytest.param({"v": ExplodingModel()}, None, None, id="model-dump-raises"),
        pytest.param({"v": BadRepr()}, None, None, id="repr-raises"),
        pytest.param({}, object(), None, id="object-session-id"),
        pytest.param({}, "s\ud800", "u\udfff", id="surrogate-ids"),
        pytest.param({}, None, BadRepr(), id="user-id-repr-raises"),
    ],
)
def test_encode_never_raises(data: Any, session_id: Any, user_id: Any) -> None:
    """Whatever the record holds, encode returns one valid JSON envelope and never raises."""
    enc = make_encoder()
    event = encode(enc, data, session_id=session_id, user_id=user_id, seq=7)
    assert set(event) == ENVELOPE_KEYS
    assert event["seq"] == 7
    assert TS_RE.match(event["ts"])


def test_model_dump_failure_falls_back_to_repr() -> None:
    """An object whose model_dump raises is encoded as its repr."""
    enc = make_encoder()
    assert encode(enc, {"v": ExplodingModel()})["data"]["v"] == "ExplodingModel()"


def test_encoding_a_record_does_not_mutate_the_payload() -> None:
    """Coercion and redaction build new values; the caller's payload is left as it was."""
    payload = {"s": {3, 1}, "n": math.nan, "api_key": "sk-live", "nested": {"k": b"x"}}
    snapshot = {"s": {3, 1}, "n": payload["n"], "api_key": "sk-live", "nested": {"k": b"x"}}
    encode(make_encoder(), payload)
    assert payload == snapshot


# --- redaction ----------------------------------------------------------------------------------

TOKEN = "abcdef0123456789ABCDEFxyz"  # noqa: S105 - a fake bearer token
API_KEY = "k3y-value-that-must-not-leak"


def test_bearer_token_in_a_nested_value_is_redacted() -> None:
    """A Bearer token deep inside a value never reaches the encoded line."""
    enc = make_encoder()
    line = enc.encode(
        (
            "tool_call",
            {"args": {"headers": [{"h": f"Authorization: Bearer {TOKEN}"}]}, "note": "keep me"},
            TS_NS,
            1,
            None,
            None,
        )
    )
    assert TOKEN.encode() not in line
    event = orjson.loads(line)
    header = event["data"]["args"]["headers"][0]["h"]
    assert header.startswith("Authorization: Bearer ")
    assert "REDACTED" in header
    assert event["data"]["note"] == "keep me"
    assert enc.redacted >= 1


def test_value_under_api_key_is_redacted() -> None:
    """The value under an api_key key is masked whatever its type; other keys are kept."""
    enc = make_encoder()
    line = enc.encode(
        (
            "t",
            {"cfg": {"api_key": API_KEY, "x_api_key": [API_KEY], "model": "m"}},
            TS_NS,
            1,
            None,
            None,
        )
    )
    assert API_KEY.encode() not in line
    cfg = orjson.loads(line)["data"]["cfg"]
    assert set(cfg) == {"api_key", "x_api_key", "model"}
    assert cfg["model"] == "m"
    assert "REDACTED" in cfg["api_key"]
    assert enc.redacted >= 2


def test_secret_key_on_the_coercion_path_is_redacted() -> None:
    """A secret key is masked even when the payload also needs coercion."""
    enc = make_encoder()
    line = enc.encode(
        ("t", {"password": API_KEY, "n": math.nan, "b": b"\xff"}, TS_NS, 1, None, None)
    )
    assert API_KEY.encode() not in line
    assert orjson.loads(line)["data"]["n"] is None


def test_redaction_disabled_keeps_secrets() -> None:
    """With the redactor disabled the payload is written as given."""
    enc = make_encoder(redact=False)
    event = encode(enc, {"api_key": API_KEY})
    assert event["data"] == {"api_key": API_KEY}
    assert enc.redacted == 0


# --- round trip ---------------------------------------------------------------------------------


json_values = _json_values(max_leaves=25)
payloads = st.dictionaries(texts, json_values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(payloads)
def test_round_trip_matches_the_documented_coercions(payload: dict[str, Any]) -> None:
    """Any JSON-ish payload decodes to the payload after the documented coercions."""
    enc = make_encoder(redact=False)
    event = encode(enc, payload)
    assert event["data"] == expected(payload)
    assert event["type"] == "thing"
    assert enc.failed == 0
