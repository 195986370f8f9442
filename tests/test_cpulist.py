from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosttune.agent.sense.cpulist import format_cpulist, parse_cpulist, parse_cpumask
from hosttune.agent.sense.errors import ParseError


def test_parse_and_format() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("") == ()
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"


def test_mask() -> None:
    assert parse_cpumask("00000000,0000000f") == (0, 1, 2, 3)
    assert parse_cpumask("1,00000000") == (32,)


@given(st.sets(st.integers(0, 4095), max_size=64))
def test_roundtrip(cpus: set[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == tuple(sorted(cpus))


@given(st.text(max_size=30))
def test_garbage_is_parse_error_or_list(text: str) -> None:
    try:
        result = parse_cpulist(text)
    except ParseError as exc:
        assert "cpulist" in str(exc)
    else:
        assert all(isinstance(c, int) and c >= 0 for c in result)


def test_reversed_range_rejected() -> None:
    with pytest.raises(ParseError):
        parse_cpulist("5-2")
