"""The one JSONL reader: values with their line numbers, and the callers' bad-line policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumos.jsonl import JsonlError, json_object, json_value, read_jsonl

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(values=st.lists(st.tuples(JSON, st.integers(0, 2))))
def test_every_value_comes_back_with_its_line_number_blank_lines_passed_over(
    tmp_path_factory: pytest.TempPathFactory, values: list[tuple[object, int]]
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "values.jsonl"
    lines: list[str] = []
    expected = []
    for value, blanks in values:
        lines += [" \t"] * blanks
        lines.append(json.dumps(value))
        expected.append((len(lines), value))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert list(read_jsonl(path, json_value)) == expected


def _file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_bad_line_raises_naming_the_file_the_line_and_why(tmp_path: Path) -> None:
    path = _file(tmp_path, '{"a": 1}', "", '{"a": 2', "[1]")
    rows = read_jsonl(path, json_object)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(JsonlError) as caught:
        next(rows)
    assert (caught.value.path, caught.value.line) == (path, 3)
    assert str(caught.value).startswith(f"{path}:3: not JSON (")
    with pytest.raises(JsonlError, match=r":2: expected a JSON object, got list$"):
        list(read_jsonl(_file(tmp_path, '{"a": 1}', "[1]"), json_object))


def test_expected_names_what_a_line_should_be(tmp_path: Path) -> None:
    path = _file(tmp_path, "7")
    with pytest.raises(JsonlError, match=r":1: not a row \(expected a JSON object, got int\)$"):
        list(read_jsonl(path, json_object, expected="a row"))


def test_skip_passes_over_bad_lines_such_as_a_torn_last_line(tmp_path: Path) -> None:
    path = _file(tmp_path, '{"id": 1}', "[2]", '{"id": 3}', '{"id": 4, "ans')
    assert list(read_jsonl(path, json_object, bad_lines="skip")) == [(1, {"id": 1}), (3, {"id": 3})]


def test_yield_puts_each_bad_lines_error_in_its_place_and_goes_on(tmp_path: Path) -> None:
    def positive(value: object) -> int:
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{value!r} is not a positive number")
        return value

    path = _file(tmp_path, "1", "-2", "x", "4")
    got = list(read_jsonl(path, positive, bad_lines="yield"))
    assert [(n, v) for n, v in got if not isinstance(v, JsonlError)] == [(1, 1), (4, 4)]
    errors = [(n, v.reason) for n, v in got if isinstance(v, JsonlError)]
    assert errors[0] == (2, "-2 is not a positive number")
    assert errors[1][0] == 3 and errors[1][1].startswith("not JSON (")
