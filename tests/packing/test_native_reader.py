"""The packing stage's native JSONL reader (csrc/jsonl_scan.cpp + _process_shard_native) against the Python line
parser it stands in for: the same datasets byte for byte, the same errors, skip counts and examples."""

import filecmp
import importlib.util
import os
import random

import pytest

import megatron_ipt.packing.preprocess as pp
from megatron_ipt import _native
from megatron_ipt.io.inputs import Shard, iter_chunks, iter_lines
from megatron_ipt.io.jsonl import parse_keys
from megatron_ipt.packing.preprocess import PreprocessConfig, preprocess
from megatron_ipt.tokenizers import TokenizerSpec

HOSTILE = [
    b'{"text": "plain"}\n',
    b'{"id": 3, "text": "esc \\" \\\\ \\/ \\b \\f \\n \\r \\t end"}\n',
    b'{"text": "\\u00e9\\u00E9 \\ud83d\\ude00 \\uD83D\\uDE00 \\u0000 nul"}\n',
    '{"text": "utf8 é 😀 中文", "x": [1, 2.5, -3e10, true, false, null, {"a": {"text": 1}}]}\n'.encode(),
    b'{"x": {"text": "nested only"}}\n',
    b'{"text": "a", "text": "b"}\n',
    b'{"t\\u0065xt": "escaped key"}\n',
    b'{"text": "lone \\ud800"}\n',
    b'{"text": "lone low \\udc00 x"}\n',
    b'{"text": "pair reversed \\udc00\\ud800"}\n',
    b'{"other": "lone \\ud800", "text": "fine"}\n',
    b"   \n",
    b"\n",
    b"\t\x0b\x0c \r\n",
    b"[1, 2]\n",
    b'"just a string"\n',
    b'{"text": 5}\n',
    b'{"text": null}\n',
    b'{"text": ["s1", "", "s2"]}\n',
    b'{"text": [1]}\n',
    b'{"nottext": "x"}\n',
    b"{}\n",
    b'{"text": "trailing comma",}\n',
    b'{"text": "bad utf8 \xff"}\n',
    b'{"text": "ctrl \x01 char"}\n',
    b'{"text": "overlong \xc0\xaf"}\n',
    b'{"text": "surrogate in utf8 \xed\xa0\x80"}\n',
    b'{"text": "x"} garbage\n',
    b'  {  "text"  :  "spaces"  ,  "n" : 12345678901234567890123  }  \r\n',
    b'{"text": "numbers", "n": 1e999, "m": -0.0, "k": 0.000001, "j": 01}\n',
    b'{"text": "nan", "n": NaN}\n',
    b'{"text": "deep", "d": ' + b"[" * 40 + b"]" * 40 + b"}\n",
    b'{"text": "too deep", "d": ' + b"[" * 2000 + b"]" * 2000 + b"}\n",
    b'{"text": ""}\n',
    b'{"text": "   "}\n',
    b'{"text": "\\x"}\n',
    b'{"text": "\\u12"}\n',
    b'{"text": "unterminated}\n',
    b'\xef\xbb\xbf{"text": "bom"}\n',
    b'{"text": "no newline at the end"}',
]


def tokenizer_specs(mistral_model):
    specs = [TokenizerSpec("MistralTokenizer", mistral_model)]
    spec = importlib.util.find_spec("tiktoken_ext")
    if spec is not None:
        cl100k = os.path.join(list(spec.submodule_search_locations)[0], "data", "cl100k_base.tiktoken")
        if os.path.exists(cl100k):
            specs.append(TokenizerSpec("TiktokenFileTokenizer", cl100k))
    return specs


def run(monkeypatch, native, path, prefix, spec, **flags):
    monkeypatch.setattr(pp, "NATIVE_READER", native)
    try:
        s = preprocess(
            PreprocessConfig(input=path, output_prefix=prefix, tokenizer=spec, log_interval=1 << 40, **flags)
        )
    except Exception as e:
        return type(e).__name__, str(e)
    s = s.stats
    return s.documents, s.bytes, s.blank_lines, dict(s.bad_lines.counts), s.bad_lines.examples, dict(s.tokens)


def same_dataset(a, b):
    return all(filecmp.cmp(f"{a}_text_document{x}", f"{b}_text_document{x}", shallow=False) for x in (".bin", ".idx"))


@pytest.mark.parametrize(
    "flags",
    [
        dict(skip_bad_lines=True),
        dict(skip_bad_lines=True, append_eod=True),
        dict(skip_bad_lines=False),
        # shards start mid-file: line numbers found on demand (not without skipping: which worker's error comes
        # first is a race)
        dict(skip_bad_lines=True, workers=2, shard_bytes=300),
    ],
)
def test_hostile_lines_give_what_the_python_parser_gives(tmp_path, monkeypatch, mistral_model, flags):
    lines = HOSTILE[:-1] * 3
    random.Random(0).shuffle(lines)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join(lines) + HOSTILE[-1])
    for i, spec in enumerate(tokenizer_specs(mistral_model)):
        native = run(monkeypatch, True, str(path), str(tmp_path / f"n{i}"), spec, **flags)
        python = run(monkeypatch, False, str(path), str(tmp_path / f"p{i}"), spec, **flags)
        assert native == python
        if isinstance(native[0], int):
            assert native[0] >= 30 and same_dataset(tmp_path / f"n{i}", tmp_path / f"p{i}")


def test_hostile_lines_in_a_compressed_file(tmp_path, monkeypatch, mistral_model):
    import gzip

    path = tmp_path / "hostile.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"".join(HOSTILE))
    spec = TokenizerSpec("MistralTokenizer", mistral_model)
    for skip in (True, False):
        native = run(monkeypatch, True, str(path), str(tmp_path / "n"), spec, skip_bad_lines=skip)
        python = run(monkeypatch, False, str(path), str(tmp_path / "p"), spec, skip_bad_lines=skip)
        assert native == python
        if skip:
            assert same_dataset(tmp_path / "n", tmp_path / "p")


def test_real_text_datasets_are_identical(tmp_path, monkeypatch, mistral_model, real_texts):
    import json

    path = tmp_path / "real.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(real_texts * 3):
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=i % 2 == 0) + "\n")
    for i, spec in enumerate(tokenizer_specs(mistral_model)):
        native = run(monkeypatch, True, str(path), str(tmp_path / f"n{i}"), spec, append_eod=True)
        python = run(monkeypatch, False, str(path), str(tmp_path / f"p{i}"), spec, append_eod=True)
        assert native == python and same_dataset(tmp_path / f"n{i}", tmp_path / f"p{i}")


def test_scanner_takes_only_lines_the_parser_reads_the_same():
    """Mutated hostile lines: a line the scanner takes as a document parses to the same text; one it calls blank
    is blank; everything else is left to the parser."""
    rng = random.Random(1)
    alphabet = b'{}[]":,\\u0123456789abcdefDEtnrx -+.eE\t\r \xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x80\xff'
    seeds = [line.rstrip(b"\n") for line in HOSTILE]
    documents = 0
    for _ in range(20000):
        line = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 4)):
            at, op = rng.randint(0, len(line)), rng.random()
            if op < 0.4:
                line[at:at] = bytes([rng.choice(alphabet)])
            elif line and op < 0.7:
                del line[min(at, len(line) - 1)]
            elif line:
                line[min(at, len(line) - 1)] = rng.choice(alphabet)
        raw = bytes(line).replace(b"\n", b" ") + b"\n"
        kinds, ends, text, text_ends = _native.scan_jsonl(raw, "text")
        assert list(ends) == [len(raw)]
        if kinds[0] == 0:
            documents += 1
            assert parse_keys(raw, ["text"]) == [text.decode("utf-8")], raw
        elif kinds[0] == 1:
            assert raw.isspace(), raw
        else:
            assert not raw.isspace()
    assert documents > 1000


def test_chunks_are_the_lines(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "lines.jsonl"
    for trial in range(300):
        data = b"".join(b"x" * rng.randint(0, 30) + b"\n" for _ in range(rng.randint(0, 40)))
        data += b"tail" * rng.randint(0, 2)
        path.write_bytes(data)
        start = rng.randint(0, len(data))
        shard = Shard(str(path), start, rng.choice([None, rng.randint(start, len(data) + 3)]))
        got = []
        number = 1
        for offset, numbered, chunk in iter_chunks(shard, size=rng.randint(1, 50)):
            number = number if numbered else None
            for line in bytes(chunk).splitlines(keepends=True):
                got.append((offset, number, line))
                offset += len(line)
                number = None if number is None else number + 1
        assert got == list(iter_lines(shard)), trial
