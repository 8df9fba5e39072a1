"""megatron_ipt/io/inputs.py: compressed inputs are read whole or refused; never a quietly shorter stream."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
import zstandard

from megatron_ipt.io.inputs import InputError, Shard, iter_lines
from tests.launch import REPO, environment

LINES = [b'{"text": "%d %d %d"}\n' % (i, i + 1, i + 2) for i in range(20000)]
DATA = b"".join(LINES)


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def _read(path):
    return [raw for _, _, raw in iter_lines(Shard(path))]


def test_whole_compressed_files_and_concatenated_zstd_frames_are_read_whole(tmp_path):
    assert _read(_write(tmp_path / "a.jsonl.gz", gzip.compress(DATA))) == LINES
    half = len(DATA) // 2
    frames = zstandard.ZstdCompressor().compress(DATA[:half]) + zstandard.ZstdCompressor().compress(DATA[half:])
    assert _read(_write(tmp_path / "a.jsonl.zst", frames)) == LINES


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_truncated_compressed_file_is_an_input_error_naming_it(tmp_path, suffix):
    compress = gzip.compress if suffix == ".gz" else zstandard.ZstdCompressor().compress
    whole = compress(DATA)
    path = _write(tmp_path / f"cut.jsonl{suffix}", whole[: len(whole) * 2 // 3])
    with pytest.raises(InputError, match=rf"cut\.jsonl\{suffix}: truncated or corrupt"):
        _read(path)


@pytest.mark.parametrize("tool", ["preprocess", "synthesize"])
def test_tools_refuse_a_truncated_gz_in_one_line(tmp_path, tool):
    whole = gzip.compress(DATA)
    path = _write(tmp_path / "cut.jsonl.gz", whole[: len(whole) // 2])
    argv = {
        "preprocess": ["tools/preprocess_data.py", "--input", path, "--output-prefix", str(tmp_path / "out")]
        + ["--tokenizer-type", "NullTokenizer", "--vocab-size", "20100"],
        "synthesize": [
            "tools/synthesize.py",
            "--input",
            path,
            "--output-dir",
            str(tmp_path / "syn"),
            "--engine",
            "rules",
        ],
    }[tool]
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=environment(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {path}: truncated or corrupt gzip file" in proc.stderr
