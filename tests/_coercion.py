"""Reference model of the encoder's documented coercions, shared by the round-trip tests."""

from __future__ import annotations

import math
import re
from typing import Any

from hypothesis import strategies as st

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def expected(value: Any) -> Any:
    """The encoder's documented coercions for JSON-ish values."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if INT_MIN <= value <= INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, list):
        return [expected(v) for v in value]
    return {expected(k): expected(v) for k, v in value.items()}


# st.text() alone almost never yields surrogates: mix lone surrogates (category Cs) in on purpose.
texts = st.text() | st.lists(st.characters() | st.characters(categories=["Cs"]), max_size=12).map(
    "".join
)
integers = (
    st.integers()
    | st.integers(min_value=INT_MAX - 2, max_value=INT_MAX + 2)
    | st.integers(min_value=INT_MIN - 2, max_value=INT_MIN + 2)
    | st.integers(min_value=-(2**200), max_value=2**200)
)
scalars = st.none() | st.booleans() | st.floats() | integers | texts


def json_values(max_leaves: int) -> st.SearchStrategy[Any]:
    """Nested JSON-ish values (with NaN, huge ints, surrogates) of at most ``max_leaves``."""
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
