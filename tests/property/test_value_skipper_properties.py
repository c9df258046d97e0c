"""Properties of ``ValueSkipper``: over any JSON value, written in any style and cut anywhere, it finds where the
value ends: exactly there, never earlier (a bracket or quote inside a string, an escaped quote cut from its
backslash) and never later (the next record must not be swallowed)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from s3_audit.value_skipper import ValueSkipper
from tests.property.strategies import GENERATED, json_styles, to_json

# Strings rich in what a scanner trips over: brackets, quotes, backslashes, commas, non-ASCII.
tricky_text = st.text(st.sampled_from(list('{}[]",\\:aé\u2028\U0001f600 \n')), max_size=30)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), tricky_text)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(tricky_text, children, max_size=4)),
    max_leaves=30,
)
containers = st.one_of(st.lists(values, max_size=4), st.dictionaries(tricky_text, values, max_size=4))


def end_found(chunks: list[bytes]) -> int | None:
    """Where a fresh skipper finds the end, as an offset into the joined chunks."""
    skipper, consumed = ValueSkipper(), 0
    for chunk in chunks:
        end = skipper.end_in(chunk)
        if end is not None:
            return consumed + end
        consumed += len(chunk)
    return None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@given(containers, json_styles, st.lists(st.integers(min_value=0), max_size=8))
def test_the_end_of_an_object_or_array_is_found_wherever_it_is_cut(
    value: Any, style: dict[str, Any], points: list[int]
) -> None:
    GENERATED.add("value_skipper.end_in", 1)
    record = to_json(value, **style)
    following = b' ,\n{"eventID": "next", "x": "}]"}]}'

    assert end_found(cut(record + following, points)) == len(record)


@given(scalars, st.sampled_from([b",", b" ,", b"]", b"\n]}"]), st.lists(st.integers(min_value=0), max_size=4))
def test_a_scalar_ends_at_the_comma_or_bracket_after_it(value: Any, after: bytes, points: list[int]) -> None:
    GENERATED.add("value_skipper.end_in", 1)
    data = json.dumps(value).encode()
    # A string ends at its closing quote; a number, true, false or null at what follows it (white space aside).
    expected = len(data) if isinstance(value, str) else len(data) + len(after) - len(after.lstrip())

    assert end_found(cut(data + after, points)) == expected


def test_a_value_cut_short_has_no_end() -> None:
    record = b'{"a": ["\\"}]", {"b": "\\\\"}], "c": '
    assert end_found(cut(record, [3, 9, 10, 11, 20])) is None
