import gzip
import pickle

import pytest

from megatron_ipt.io.cli import SKIP_BAD_LINES_HINT, report_error
from megatron_ipt.io.inputs import InputError, expand_inputs
from megatron_ipt.io.jsonl import BAD_LINE_EXAMPLES, BadLines, LineError, parse_keys, parse_line, read_jsonl

# One line of each kind the parser rejects, and the problem it must name.
BAD = {
    "malformed JSON": (b'{"text" 1}\n', "malformed JSON: Expecting ':' delimiter (column 9)"),
    "invalid UTF-8": (b'{"text": "caf\xe9"}\n', "invalid UTF-8: byte 13 of the line"),
    "invalid Unicode": (
        b'{"a": [{"b": "lone \\ud800"}]}\n',
        "invalid Unicode: key 'a'[0]['b'] has a lone surrogate U+D800",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_line_kind_is_named_with_file_and_line(tmp_path, kind):
    raw, problem = BAD[kind]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "fine"}\n\n' + raw)
    with pytest.raises(InputError) as info:
        list(read_jsonl(str(path), BadLines()))
    assert str(info.value) == f"{path}:3: {problem}" and info.value.skippable
    with pytest.raises(LineError) as line_info:
        parse_line(raw)
    assert line_info.value.kind == kind


def test_standard_json_that_orjson_rejects_is_accepted():
    assert parse_line(b'{"x": NaN, "s": "\\ud83d\\ude00"}')["s"] == "\U0001f600"


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udbff", b"\\udc00", b"\\uDFFF", b"\\udc00\\ud800"])
def test_orjson_refuses_lone_surrogates(escape):
    """parse_line/parse_keys skip the lone-surrogate check on a value orjson returned: orjson must refuse them."""
    import orjson

    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"text": "a' + escape + b'b"}')
    with pytest.raises(LineError, match="lone surrogate"):
        parse_keys(b'{"text": "a' + escape + b'b"}', ["text"])


def test_parse_keys_checks_only_the_keys_it_extracts():
    assert parse_keys(b'{"text": ["a", "b"], "meta": "\\udc00"}', ["text"]) == [["a", "b"]]
    with pytest.raises(LineError, match="key 'text' is a list with non-string items"):
        parse_keys(b'{"text": ["a", 1]}', ["text"])
    with pytest.raises(LineError, match=r"invalid Unicode: key 'text'\[1\] has a lone surrogate U\+DC00"):
        parse_keys(b'{"text": ["a", "\\udc00"]}', ["text"])
    with pytest.raises(LineError, match="not a JSON object: got a list"):
        parse_keys(b"[1]", ["text"])


def test_gz_input_and_blank_lines(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"text": "one"}\n\n  \n{"text": "two"}\n')
    assert expand_inputs(str(tmp_path)) == [str(path)]
    assert list(read_jsonl(str(path), BadLines())) == [(1, {"text": "one"}), (4, {"text": "two"})]


def test_bad_lines_counted_by_kind_with_the_first_examples(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("{broken\n" * (BAD_LINE_EXAMPLES + 5) + "[1]\n" + '{"ok": 1}\n')

    def objects_only(value):
        if not isinstance(value, dict):
            raise LineError("not a JSON object")
        return value

    bad = BadLines(skip=True)
    assert [v for _, v in read_jsonl(str(path), bad, objects_only)] == [{"ok": 1}]
    assert bad.counts == {"malformed JSON": BAD_LINE_EXAMPLES + 5, "not a JSON object": 1} and bad.total == 16
    assert len(bad.examples) == BAD_LINE_EXAMPLES and bad.examples[0].startswith(f"{path}:1: malformed JSON")
    merged = BadLines(skip=True)
    merged.add(bad)
    merged.add(bad)
    assert merged.total == 32 and merged.examples == bad.examples


def test_report_error_hints_at_skip_bad_lines_only_for_skippable_lines(capsys):
    assert report_error(InputError("a.jsonl", 3, "malformed JSON: x", skippable=True)) == 1
    assert capsys.readouterr().err == f"error: a.jsonl:3: malformed JSON: x\n{SKIP_BAD_LINES_HINT}\n"
    assert report_error(InputError("a.jsonl", 3, "evaluation set: x")) == 1
    assert capsys.readouterr().err == "error: a.jsonl:3: evaluation set: x\n"
    report_error(InputError("a.jsonl", 3, "malformed JSON: x", skippable=True), has_skip_flag=False)
    assert SKIP_BAD_LINES_HINT not in capsys.readouterr().err


def test_input_error_survives_pickling():  # preprocess workers raise it in another process
    error = pickle.loads(pickle.dumps(InputError("a.jsonl", 2, "missing key: 'text'", skippable=True)))
    assert (str(error), error.skippable) == ("a.jsonl:2: missing key: 'text'", True)


# A line nested deeper than the parser follows: RecursionError in `json` before; a line error now. Each variant
# takes a different path: orjson's own depth limit, a line orjson refuses for another reason (NaN) handed to
# `json`, a deep but valid value whose strings are checked for lone surrogates, and one in an unused key.
DEEP = [
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b"[" * 1000 + b"NaN" + b"]" * 1000,
    b'{"text": "fine", "meta": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("raw", DEEP, ids=["open", "balanced", "json-fallback", "unused-key"])
def test_deeply_nested_json_is_a_line_error_not_a_recursion_error(tmp_path, raw):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + raw + b"\n")
    with pytest.raises(InputError) as info:
        list(read_jsonl(str(path), BadLines()))
    assert str(info.value).startswith(f"{path}:2: too deeply nested") and info.value.skippable
    with pytest.raises(LineError, match="too deeply nested"):
        parse_keys(raw, ["text"])
    bad = BadLines(skip=True)
    assert [n for n, _ in read_jsonl(str(path), bad)] == [1] and bad.counts == {"too deeply nested": 1}


def test_deep_valid_values_are_checked_without_recursion():
    """orjson accepts 1000 levels, more than Python recurses: the lone-surrogate check must not recurse."""
    assert parse_line(b"[" * 1000 + b'"\\ud83d\\ude00"' + b"]" * 1000) is not None
    with pytest.raises(LineError, match=r"invalid Unicode: \[0\]\[0\]\[0\]\[0\]\.\.\.\(2 more\)\.\.\."):
        parse_line(b"[" * 10 + b'"\\ud800"' + b"]" * 10)
