"""check_arguments keeps what the model said; validate_arguments prepares the same call for execution."""

from __future__ import annotations

from typing import Any

import pytest

from graph.schema import ArgumentError, check_arguments, validate_arguments

_PARAMS = {
    "type": "object", "required": ["x"],
    "properties": {
        "x": {"type": "number"},
        "limit": {"type": "integer"},
        "either": {"type": ["integer", "string"]},
        "any_of": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "points": {"type": "array", "items": {"type": "object", "properties": {"lat": {"type": "number"}}}},
    },
}


@pytest.mark.parametrize(("arguments", "stored", "executed"), [
    ({"x": 3}, {"x": 3}, {"x": 3.0}),  # a fitting int stays an int; the function still gets a float
    ({"x": 2.5}, {"x": 2.5}, {"x": 2.5}),
    ({"x": "4"}, {"x": 4.0}, {"x": 4.0}),  # wrong type: the documented safe coercion
    ({"x": 1, "limit": None}, {"x": 1, "limit": None}, {"x": 1.0}),  # explicit null kept; execution uses the default
    ({"x": 1, "either": "3"}, {"x": 1, "either": "3"}, {"x": 1.0, "either": "3"}),  # fits string: not made an int
    ({"x": 1, "any_of": "3"}, {"x": 1, "any_of": "3"}, {"x": 1.0, "any_of": "3"}),
    ({"x": 1, "either": 2.0}, {"x": 1, "either": 2}, {"x": 1.0, "either": 2}),  # fits neither as is: coerced
    ({"x": 1, "points": [{"lat": 48}]}, {"x": 1, "points": [{"lat": 48}]}, {"x": 1.0, "points": [{"lat": 48.0}]}),
])
def test_stored_versus_executed(arguments: dict[str, Any], stored: dict[str, Any], executed: dict[str, Any]):
    got = check_arguments(_PARAMS, arguments)
    assert got == stored and [type(v) for v in got.values()] == [type(v) for v in stored.values()]
    assert list(got) == list(arguments)
    ran = validate_arguments(_PARAMS, arguments)
    assert ran == executed and [type(v) for v in ran.values()] == [type(v) for v in executed.values()]
    assert check_arguments(_PARAMS, got) == got  # checking a stored call again changes nothing


@pytest.mark.parametrize("arguments", [
    {"x": None},  # null for a required parameter that does not allow it
    {"x": 1, "unknown": None},  # an unknown argument is reported even when null
    {"x": True}, {"x": "1e999"}, {"x": 1, "limit": 2.5}, {"x": 1, "points": [{"lat": "north"}]}, [1, 2],
])
def test_misfits_are_reported_never_dropped(arguments: Any):
    for check in (check_arguments, validate_arguments):
        with pytest.raises(ArgumentError):
            check(_PARAMS, arguments)


def test_null_is_kept_where_the_schema_allows_it():
    params = {"type": "object", "required": ["note"], "properties": {"note": {"type": ["string", "null"]}}}
    assert check_arguments(params, {"note": None}) == {"note": None}
    assert validate_arguments(params, {"note": None}) == {"note": None}  # required: passed on as given
